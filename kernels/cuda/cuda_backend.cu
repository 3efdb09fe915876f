/*
 * cuda_backend.cu: the CUDA backend table and the state its ops share: the
 * device, one stream, one cuBLAS handle, the first error, and the scratch
 * slots. The state is per process (a GPU's handle and stream are shared by
 * every context that runs on it); it is created on first use and lives until
 * exit. Device memory is plain cudaMalloc, never managed memory.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cuda_ops.h"

/* attention kernel families for 16-bit models (LOMO_ATTENTION=simt|mma|pipe) */
enum { ATT_SIMT, ATT_MMA, ATT_PIPE };

static struct {
    pthread_once_t once;
    int usable;
    char why[256];
    cudaStream_t stream;
    cublasHandle_t blas;
    pthread_mutex_t lock;      /* guards err and the scratch slots */
    char err[512];
    void *scratch[CUDA_SCRATCH_SLOTS];
    size_t scratch_cap[CUDA_SCRATCH_SLOTS];
} S = {PTHREAD_ONCE_INIT, 0, "", 0, 0, PTHREAD_MUTEX_INITIALIZER, "", {0}, {0}};

static void init_once(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        snprintf(S.why, sizeof S.why, "no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "count is 0");
        cudaGetLastError();
        return;
    }
    if ((e = cudaSetDevice(0)) != cudaSuccess || (e = cudaStreamCreateWithFlags(&S.stream, cudaStreamNonBlocking))) {
        snprintf(S.why, sizeof S.why, "CUDA device 0: %s", cudaGetErrorString(e));
        return;
    }
    cublasStatus_t bs = cublasCreate(&S.blas);
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetStream(S.blas, S.stream);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        snprintf(S.why, sizeof S.why, "cuBLAS: %s", cublasGetStatusString(bs));
        return;
    }
    S.usable = 1;
}

cudaStream_t cuda_stream(void) { return S.stream; }
cublasHandle_t cuda_blas(void) { return S.blas; }

static void record(const char *what, const char *detail) {
    pthread_mutex_lock(&S.lock);
    if (!S.err[0]) snprintf(S.err, sizeof S.err, "%s: %s", what, detail);
    pthread_mutex_unlock(&S.lock);
}

int cuda_ok(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return 1;
    record(what, cudaGetErrorString(e));
    return 0;
}

int cublas_ok(cublasStatus_t s, const char *what) {
    if (s == CUBLAS_STATUS_SUCCESS) return 1;
    record(what, cublasGetStatusString(s));
    return 0;
}

void *cuda_scratch(int slot, size_t bytes) {
    pthread_mutex_lock(&S.lock);
    void *p = S.scratch[slot];
    if (bytes > S.scratch_cap[slot]) {
        /* grow by half again, so a slowly rising need does not reallocate every call */
        size_t cap = bytes + bytes / 2;
        cudaStreamSynchronize(S.stream);   /* queued kernels may still read the old buffer */
        cudaFree(S.scratch[slot]);
        S.scratch[slot] = NULL;
        S.scratch_cap[slot] = 0;
        if (cudaMalloc(&p, cap) != cudaSuccess) {
            cudaGetLastError();
            p = NULL;
        } else {
            S.scratch[slot] = p;
            S.scratch_cap[slot] = cap;
        }
    }
    pthread_mutex_unlock(&S.lock);
    if (!p) {
        char msg[96];
        snprintf(msg, sizeof msg, "out of device memory for %zu bytes of scratch (slot %d)", bytes, slot);
        record("scratch", msg);
    }
    return p;
}

/* cudaFree waits for the device, so no queued kernel still reads a freed slot */
static void cu_release_scratch(void) {
    pthread_mutex_lock(&S.lock);
    for (int i = 0; i < CUDA_SCRATCH_SLOTS; i++) {
        cuda_ok(cudaFree(S.scratch[i]), "cudaFree (scratch)");
        S.scratch[i] = NULL;
        S.scratch_cap[i] = 0;
    }
    pthread_mutex_unlock(&S.lock);
}

size_t cuda_scratch_bytes(void) {
    size_t n = 0;
    for (int i = 0; i < CUDA_SCRATCH_SLOTS; i++) n += S.scratch_cap[i];
    return n;
}

/* ---- memory ---- */

static void *cu_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 256) != cudaSuccess) {
        cudaGetLastError();   /* out of memory is reported by the caller, by name; not a device fault */
        return NULL;
    }
    return p;
}

static void cu_free(void *p) {
    if (p) cuda_ok(cudaFree(p), "cudaFree");
}

static void cu_memset0(void *p, size_t bytes) {
    if (bytes) cuda_ok(cudaMemsetAsync(p, 0, bytes, S.stream), "cudaMemsetAsync");
}

static void cu_d2d(void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src)
        cuda_ok(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, S.stream), "cudaMemcpyAsync (d2d)");
}

static void cu_to_host(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    if (cuda_ok(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, S.stream), "cudaMemcpyAsync (to host)"))
        cuda_ok(cudaStreamSynchronize(S.stream), "cudaStreamSynchronize (to host)");
}

/* synchronous: the caller may reuse the host buffer at once */
static void cu_to_device(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    if (cuda_ok(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, S.stream), "cudaMemcpyAsync (to device)"))
        cuda_ok(cudaStreamSynchronize(S.stream), "cudaStreamSynchronize (to device)");
}

static const char *cu_error(void) {
    /* also catch faults raised asynchronously by kernels already finished */
    cudaError_t e = cudaStreamQuery(S.stream);
    if (e != cudaSuccess && e != cudaErrorNotReady) cuda_ok(e, "device");
    return S.err[0] ? S.err : NULL;
}

static void cu_sync(void) { cuda_ok(cudaStreamSynchronize(S.stream), "cudaStreamSynchronize"); }

/*
 * Attention: tensor cores for 16-bit models (products in the model's dtype, as
 * for the linear layers), the f32 kernels for f32 models and for head sizes
 * the tensor-core kernels lack. The default is attention_tc.cu's mma.sync
 * kernels; LOMO_ATTENTION=pipe asks for its pipe family (the same products,
 * tiles staged asynchronously; where the GPU's shared memory holds them, else
 * the default), LOMO_ATTENTION=simt for the f32 kernels. The variable is read
 * at every call, so a test or a benchmark can compare the families in one
 * process; the families give the same results bit for bit but simt's.
 */
static int attention_kind(int hd, lomo_dtype dt) {
    static int noted;   /* a value that is not followed is said once a process */
    if (dt == LOMO_F32) return ATT_SIMT;
    const char *want = getenv("LOMO_ATTENTION");
    if (want && *want && strcmp(want, "simt") && strcmp(want, "mma") && strcmp(want, "pipe") && !noted++)
        fprintf(stderr, "lomo: LOMO_ATTENTION=%s is none of simt, mma, pipe: the default (mma) runs\n", want);
    if (want && !strcmp(want, "simt")) return ATT_SIMT;
    if (want && !strcmp(want, "pipe")) {
        if (cuda_attention_pipe_supported(hd)) return ATT_PIPE;
        if (!noted++)
            fprintf(stderr, "lomo: LOMO_ATTENTION=pipe: this GPU's shared memory a block is too small for the pipe "
                            "kernels at head size %d: mma runs\n", hd);
    }
    return cuda_attention_tc_supported(hd) ? ATT_MMA : ATT_SIMT;
}

static void cu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                                 int NH, int NKV, int hd, lomo_dtype dt) {
    switch (attention_kind(hd, dt)) {
    case ATT_MMA: cuda_attention_tc_forward(out, lse, q, k, v, B, T, NH, NKV, hd, dt); break;
    case ATT_PIPE: cuda_attention_pipe_forward(out, lse, q, k, v, B, T, NH, NKV, hd, dt); break;
    default: cuda_attention_forward(out, lse, q, k, v, B, T, NH, NKV, hd);
    }
}

static void cu_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *out,
                                  const float *lse, const float *q, const float *k, const float *v, int B, int T,
                                  int NH, int NKV, int hd, lomo_dtype dt) {
    switch (attention_kind(hd, dt)) {
    case ATT_MMA:
        cuda_attention_tc_backward(dq, dk, dv, scratch, dout, out, lse, q, k, v, B, T, NH, NKV, hd, dt);
        break;
    case ATT_PIPE:
        cuda_attention_pipe_backward(dq, dk, dv, scratch, dout, out, lse, q, k, v, B, T, NH, NKV, hd, dt);
        break;
    default: cuda_attention_backward(dq, dk, dv, scratch, dout, out, lse, q, k, v, B, T, NH, NKV, hd);
    }
}

/*
 * Ops that may write device memory forget the kept GEMM operands first
 * (operands.cu); the GEMMs manage them themselves, and the ops that only read
 * (checks, norms, copies to the host) keep them.
 */
template <auto F> struct writes;
template <typename R, typename... A, R (*F)(A...)> struct writes<F> {
    static R call(A... a) {
        cuda_operands_forget();
        return F(a...);
    }
};
#define WRITES(f) writes<f>::call

static const lomo_backend cuda_backend = {
    .name = "cuda",
    .wbuf_floats = 0,
    .max_head_dim = CUDA_MAX_HEAD_DIM,   /* attention.cu's kernels */
    .prefill_with_forward = 1,
    .error = cu_error,
    .sync = cu_sync,
    .release_scratch = WRITES(cu_release_scratch),
    .alloc = WRITES(cu_alloc),
    .free = WRITES(cu_free),
    .memset0 = WRITES(cu_memset0),
    .memcpy_d2d = WRITES(cu_d2d),
    .to_host = cu_to_host,
    .to_device = WRITES(cu_to_device),
    .to_f32 = WRITES(cuda_to_f32),
    .from_f32 = WRITES(cuda_from_f32),
    .upload_f32 = WRITES(cuda_upload_f32),
    .download_f32 = cuda_download_f32,
    .embedding_forward = WRITES(cuda_embedding_forward),
    .embedding_backward = WRITES(cuda_embedding_backward),
    .gather_cols = WRITES(cuda_gather_cols),
    .rmsnorm_forward = WRITES(cuda_rmsnorm_forward),
    .rmsnorm_backward = WRITES(cuda_rmsnorm_backward),
    .matmul_forward = cuda_matmul_forward,
    .matmul_backward_input = cuda_matmul_backward_input,
    .matmul_backward_weight = WRITES(cuda_matmul_backward_weight),
    .linear_update = cuda_linear_update,
    .rope = WRITES(cuda_rope),
    .attention_forward = WRITES(cu_attention_forward),
    .attention_backward = WRITES(cu_attention_backward),
    .attention_cached = WRITES(cuda_attention_cached),
    .attention_saved_floats = cuda_attention_saved_floats,
    .attention_scratch_floats = cuda_attention_scratch_floats,
    .swiglu_forward = WRITES(cuda_swiglu_forward),
    .swiglu_backward = WRITES(cuda_swiglu_backward),
    .add_inplace = WRITES(cuda_add_inplace),
    .crossentropy_forward = WRITES(cuda_crossentropy_forward),
    .crossentropy_backward = WRITES(cuda_crossentropy_backward),
    .sumsq = cuda_sumsq,
    .check_finite = cuda_check_finite,
    .gate_read = cuda_gate_read,
    .round_from_f32 = WRITES(cuda_round_from_f32),
    .sgd_update = WRITES(cuda_sgd_update),
    .sgd_update_rows = WRITES(cuda_sgd_update_rows),
    .rows_add = WRITES(cuda_rows_add),
    .grad_prepare = WRITES(cuda_grad_prepare),
    .adalomo_update = WRITES(cuda_adalomo_update),
    .adalomo_rows = WRITES(cuda_adalomo_rows),
    .adalomo_factors = WRITES(cuda_adalomo_factors),
    .adalomo_scale = WRITES(cuda_adalomo_scale),
    .weights_sumsq = cuda_weights_sumsq,
    .adamw_update = WRITES(cuda_adamw_update),
    .linear_grad_sumsq_gram = WRITES(cuda_linear_grad_sumsq_gram),
    .fill_uniform = WRITES(cuda_fill_uniform),
};

/* the module's entry (backend.h): the runtime's cuda_loader.c finds it by name */
extern "C" __attribute__((visibility("default"))) const lomo_backend *lomo_cuda_module_open(const char *abi, char *why,
                                                                                            size_t why_len, int *abi_ok) {
    int same = abi && strcmp(abi, LOMO_BACKEND_ABI) == 0;
    if (abi_ok) *abi_ok = same;
    if (!same) {
        if (why && why_len)
            snprintf(why, why_len, "built against another backend.h (digest %s; the runtime's is %s): rebuild lomo",
                     LOMO_BACKEND_ABI, abi ? abi : "none");
        return NULL;
    }
    pthread_once(&S.once, init_once);
    if (!S.usable) {
        if (why && why_len) snprintf(why, why_len, "%s", S.why);
        return NULL;
    }
    return &cuda_backend;
}
