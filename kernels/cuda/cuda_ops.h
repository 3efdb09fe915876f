/*
 * cuda_ops.h: the CUDA implementations behind the backend table
 * (runtime/backend.h documents every op's shapes and semantics; these follow
 * it exactly). Every kernel runs on cuda_stream(); every CUDA and cuBLAS
 * status goes through cuda_ok / cublas_ok, which keep the first failure for
 * the backend's error() so the runtime can report it by name.
 */
#ifndef LOMO_CUDA_OPS_H
#define LOMO_CUDA_OPS_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include "../../runtime/backend.h"
#include "cuda_shape.h"

#ifdef __cplusplus
extern "C" {
#endif

/* bytes of one element of a storage dtype (the module resolves nothing from the runtime) */
static inline size_t cuda_dtype_bytes(lomo_dtype dt) { return dt == LOMO_F32 ? 4 : 2; }

/* ---- shared state (cuda_backend.cu) ---- */
cudaStream_t cuda_stream(void);
cublasHandle_t cuda_blas(void);
/* 1 if e is cudaSuccess; otherwise records "what: cuda error text" (first failure wins) and returns 0 */
int cuda_ok(cudaError_t e, const char *what);
int cublas_ok(cublasStatus_t s, const char *what);
/* checks the launch just made (cudaGetLastError) */
#define CUDA_LAUNCHED(what) cuda_ok(cudaGetLastError(), what)
/*
 * A growable device scratch for temporaries an op needs only during the call
 * (16-bit copies of GEMM operands, reduction partials). slot 0..CUDA_SCRATCH_SLOTS-1
 * are independent buffers; contents do not survive the next call with that slot.
 * NULL (error recorded) if the device is out of memory.
 */
#define CUDA_SCRATCH_SLOTS 7   /* 0, 1: GEMM operands (operands.cu keeps them); 2: update.cu; 3: attention; 4: GEMM f32 chunks;
                                  5: a gated update's alpha, beta; 6: the pipe attention's 16-bit inputs */
#define CUDA_SCRATCH_ATTENTION16 6
void *cuda_scratch(int slot, size_t bytes);
/* bytes held by the scratch slots (reported by benchmarks) */
size_t cuda_scratch_bytes(void);

/* 1-D launch helper: blocks of `threads` covering n */
static inline unsigned cuda_blocks(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 1048576 ? 1048576 : b);   /* kernels grid-stride past this */
}

/* ---- ops.cu ---- */
void cuda_embedding_forward(float *out, const int32_t *tokens, const void *wte, lomo_dtype dt, int BT, int C);
void cuda_embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int BT, int C);
void cuda_gather_cols(float *out, const float *in, const int32_t *cols, int N, int V, int n);
void cuda_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int BT, int C, float eps);
void cuda_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                           const float *rstd, int BT, int C);
void cuda_rope(float *x, const float *cos, const float *sin, int B, int T, int H, int hd, int pos_offset,
               int inverse);
void cuda_swiglu_forward(float *out, const float *gate, const float *up, size_t n);
void cuda_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                          size_t n);
void cuda_add_inplace(float *a, const float *b, size_t n);
void cuda_crossentropy_forward(float *losses, float *lse, const float *logits, const int32_t *targets, int N,
                               int n, int v0, int V);
void cuda_crossentropy_backward(float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                                float dloss, int N, int n, int v0);

/* ---- operands.cu: 16-bit GEMM operands, kept while unchanged ---- */
/*
 * src f32 [n] as a GEMM operand of dtype dt (src itself for f32 unless gated),
 * in scratch slot 0 or 1, never in the one holding `keep` (NULL or the call's
 * other operand); all zeros while gate (NULL: none) is raised. NULL on failure.
 */
const void *cuda_gemm_operand(lomo_dtype dt, const float *src, size_t n, const int *gate, const void *keep);
/*
 * check_finite (backend.h) of src [n] when src is a kept operand's source: the
 * gate raised from what its rounding noted, one word read instead of n floats.
 * 1 if queued so, 0 if src is not kept (the caller reads it).
 */
int cuda_operand_check(int *gate, const float *src, size_t n, int tag);
/* device memory may have been written: nothing kept is reused */
void cuda_operands_forget(void);
/* out [n] = src [n] rounded to the 16-bit dt (not kept, no finiteness note); 0 (error recorded) if the launch failed */
int cuda_round16(void *out, const float *src, size_t n, lomo_dtype dt);
/* bytes at p were written: what was rounded from there is not reused */
void cuda_operands_forget_range(const void *p, size_t bytes);

#ifdef __CUDACC__
/* a finiteness gate (backend.h check_finite) is raised; NULL is no gate */
__device__ __forceinline__ bool cuda_gate_raised(const int *gate) { return gate && *gate; }

/* a grid-stride loop: i visits this thread's indices in [0, n) */
#define CUDA_GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)
#endif

/* ---- gemm.cu (cuBLAS) ---- */
void cuda_matmul_forward(float *out, const float *inp, const void *w, lomo_dtype dt, float *wbuf, int BT, int IC,
                         int OC);
void cuda_matmul_backward_input(float *dinp, const float *dout, const void *w, lomo_dtype dt, float *wbuf,
                                float beta, int BT, int IC, int OC);
void cuda_matmul_backward_weight(float *dw, const float *dout, const float *inp, float alpha, float beta, int BT,
                                 int IC, int OC);
void cuda_linear_update(void *w, lomo_dtype dt, float *wbuf, const float *dout, const float *inp, float alpha,
                        float beta, int BT, int IC, int OC, uint64_t sr_seed, const int *gate);
double cuda_linear_grad_sumsq_gram(float *gram, int inp_gram_valid, const float *dout, const float *inp, int BT,
                                   int IC, int OC);

/* ---- attention.cu (flash attention: never stores [T, T]) ---- */
void cuda_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                            int NH, int NKV, int hd);
void cuda_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *out,
                             const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                             int NKV, int hd);
/* the sizes of its saved statistics and scratch: cuda_shape.h */

/* ---- attention_cached.cu: new queries against a key/value cache (incremental decoding; f32, hd <= 256) ---- */
void cuda_attention_cached(float *out, const float *q, const float *kc, const float *vc, int B, int n, int pos,
                           int cap, int NH, int NKV, int hd);

/* ---- attention_tc.cu: the same on tensor cores for 16-bit models (mma.sync, products in dt,
 * f32 accumulation; scores and probabilities kept in registers) ---- */
int cuda_attention_tc_supported(int hd);
void cuda_attention_tc_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                               int NH, int NKV, int hd, lomo_dtype dt);
void cuda_attention_tc_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                const float *out, const float *lse, const float *q, const float *k, const float *v,
                                int B, int T, int NH, int NKV, int hd, lomo_dtype dt);

/* ---- attention_tc.cu too: the pipe family, the same products with the tiles staged with cp.async
 * from 16-bit copies of the inputs, the next tile's copy in flight while the current one is
 * multiplied (sm_80 / sm_90 shared memory) ---- */
int cuda_attention_pipe_supported(int hd);
void cuda_attention_pipe_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B,
                                 int T, int NH, int NKV, int hd, lomo_dtype dt);
void cuda_attention_pipe_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                  const float *out, const float *lse, const float *q, const float *k, const float *v,
                                  int B, int T, int NH, int NKV, int hd, lomo_dtype dt);

/* ---- update.cu (optimizer math, f32, rounding to storage) ---- */
void cuda_to_f32(float *out, const void *src, lomo_dtype dt, size_t n);
void cuda_from_f32(void *out, lomo_dtype dt, const float *src, size_t n);
/* host f32 <-> device storage, through a bounded staging buffer */
void cuda_upload_f32(void *out, lomo_dtype dt, const float *src_host, size_t n);
void cuda_download_f32(float *out_host, const void *src, lomo_dtype dt, size_t n);
double cuda_sumsq(const float *x, size_t n);
void cuda_check_finite(int *gate, const float *x, size_t n, int tag);
int cuda_gate_read(const int *gate);
/* stochastic rounding as cuda_round_from_f32, skipped while gate (NULL: none) is raised */
void cuda_round_from_f32_gated(void *out, lomo_dtype dt, const float *src, size_t n, uint64_t sr_seed,
                               const int *gate);
void cuda_round_from_f32(void *out, lomo_dtype dt, const float *src, size_t n, uint64_t sr_seed);
void cuda_sgd_update(void *w, lomo_dtype dt, const float *g, size_t n, float lr, float wd, float gscale,
                     float clip_value, float coef, uint64_t sr_seed, const int *gate);
void cuda_sgd_update_rows(void *w, lomo_dtype dt, const float *g, const int32_t *rows, int nrows, int V, int C,
                          float lr, float wd, float gscale, float clip_value, float coef, uint64_t sr_seed);
void cuda_rows_add(float *dst, const float *src, const int32_t *rows, int nrows, int C);
void cuda_grad_prepare(float *g, size_t n, float gscale, float clip_value, float coef);
void cuda_adalomo_rows(float *rmean, double *colsum, const float *g, int n, int cols, float eps1);
void cuda_adalomo_factors(float *row, float *col, float *mean_row, const float *rmean, const double *colsum, int rows,
                          int cols, float beta);
void cuda_adalomo_scale(float *g, const float *row, const float *col, const float *mean_row, int n, int cols);
double cuda_weights_sumsq(const void *w, lomo_dtype dt, size_t n);
void cuda_adalomo_update(void *w, lomo_dtype dt, float *g, float *row, float *col, int rows, int cols, float beta,
                         float lr, float wd, float eps1, float eps2, float clip_threshold, uint64_t sr_seed);
void cuda_adamw_update(void *w, lomo_dtype dt, const float *g, float *m, float *v, size_t n, float lr, float wd,
                       float b1, float b2, float eps, float bc1, float bc2, uint64_t sr_seed);
void cuda_fill_uniform(void *w, lomo_dtype dt, size_t n, uint64_t seed, float scale);

#ifdef __cplusplus
}
#endif

#endif /* LOMO_CUDA_OPS_H */
