/*
 * operands.cu: the f32 activations a 16-bit model's GEMMs read, rounded to
 * the weights' dtype for the tensor cores, and kept while they are unchanged.
 *
 * A rounding costs a read and a write of the operand, about a tenth of a 7B
 * step when every GEMM rounds its own: q, k and v share one input, gate and
 * up another, and the LOMO update reads the very output gradient that its dX
 * GEMM has just rounded. So the last two rounded operands stay in scratch
 * slots 0 and 1, found again by (source, length, dtype), until something may
 * have written device memory: every backend op that can write forgets them
 * first (cuda_backend.cu wraps those ops), and a GEMM forgets the ones its own
 * output overlaps. Ops that only read (the finiteness checks, norms, copies
 * to the host) keep them. Gated operands (zeros while the update's gate is
 * raised) are never kept, and a kept one that a gated update reuses is zeroed
 * in place if the gate is raised, then forgotten.
 *
 * The rounding also notes whether its source held a NaN or an inf, so the
 * update pass's finiteness check of an output gradient its dX GEMM has just
 * rounded reads one word instead of the tensor again (cuda_operand_check):
 * about two thirds of the bytes those checks read in a 7B step (by count of the tensors checked).
 *
 * The cache is per process like the scratch slots it lives in; the backend
 * runs on one stream.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include "cuda_ops.h"

/* One dtype per instantiation, so the loop carries no per-element branch. */
template <typename T> __device__ __forceinline__ T to16(float x);
template <> __device__ __forceinline__ __nv_bfloat16 to16<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half to16<__half>(float x) { return __float2half_rn(x); }

#define OPERAND_SLOTS 2   /* scratch slots 0 and 1 */

/* Slot s's word holds the stamp of the last rounding into it whose source was not all finite. A
 * stamp numbers each rounding, so no reset is queued before one; a kept operand's source was
 * finite unless the word holds its own stamp. */
__device__ unsigned operand_nonfinite[OPERAND_SLOTS];

__device__ __forceinline__ bool nonfinite(float x) { return (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u; }

/* gate raised (cuda_gate_raised): the operand is all zeros, so a gated update adds exactly nothing;
 * slot >= 0: a source element that is NaN or inf stamps the slot's word */
template <typename T>
__global__ void round_operand_kernel(T *out, const float *src, size_t n, const int *gate, int slot, unsigned stamp) {
    bool z = cuda_gate_raised(gate), bad = false;
    CUDA_GRID_STRIDE(i, n) {
        float v = z ? 0.0f : src[i];
        bad |= nonfinite(v);
        out[i] = to16<T>(v);
    }
    if (bad && slot >= 0) operand_nonfinite[slot] = stamp;
}

/* Four elements a thread: 16-byte loads and 8-byte stores, about twice the scalar kernel's rate. n4 = n / 4. */
template <typename T>
__global__ void round_operand4_kernel(T *out, const float4 *src, size_t n4, const int *gate, int slot, unsigned stamp) {
    bool z = cuda_gate_raised(gate), bad = false;
    CUDA_GRID_STRIDE(i, n4) {
        float4 v = z ? make_float4(0.0f, 0.0f, 0.0f, 0.0f) : src[i];
        bad |= nonfinite(v.x) | nonfinite(v.y) | nonfinite(v.z) | nonfinite(v.w);
        T *o = out + 4 * i;
        o[0] = to16<T>(v.x), o[1] = to16<T>(v.y), o[2] = to16<T>(v.z), o[3] = to16<T>(v.w);
    }
    if (bad && slot >= 0) operand_nonfinite[slot] = stamp;
}

/* check_finite's result for a kept operand's source: the gate raised (first tag wins) if its
 * rounding found a NaN or an inf */
__global__ void gate_from_operand_kernel(int *gate, int slot, unsigned stamp, int tag) {
    if (operand_nonfinite[slot] == stamp) atomicCAS(gate, 0, tag + 1);
}

/* f32 operands of a gated f32 update: a copy, or zeros while the gate is raised */
__global__ void gated_copy_kernel(float *out, const float *src, size_t n, const int *gate) {
    bool z = cuda_gate_raised(gate);
    CUDA_GRID_STRIDE(i, n)
        out[i] = z ? 0.0f : src[i];
}

/* bytes [n] of p zeroed if the gate is raised; a fixed grid, as the common case only reads the gate */
__global__ void zero_if_raised_kernel(unsigned char *p, size_t n, const int *gate) {
    if (!cuda_gate_raised(gate)) return;
    CUDA_GRID_STRIDE(i, n)
        p[i] = 0;
}

template <typename T>
static void launch_round(void *out, const float *src, size_t n, const int *gate, int slot, unsigned stamp) {
    cudaStream_t st = cuda_stream();
    if (n % 4 == 0 && (uintptr_t)src % 16 == 0 && (uintptr_t)out % 8 == 0)
        round_operand4_kernel<T><<<cuda_blocks(n / 4, 256), 256, 0, st>>>((T *)out, (const float4 *)src, n / 4, gate,
                                                                           slot, stamp);
    else
        round_operand_kernel<T><<<cuda_blocks(n, 256), 256, 0, st>>>((T *)out, src, n, gate, slot, stamp);
}

static struct kept {
    const float *src;       /* NULL: nothing kept */
    const void *buf;        /* the slot's buffer when last filled */
    size_t n;
    lomo_dtype dt;
    unsigned long used;     /* last use, for the choice of slot to reuse */
    unsigned stamp;         /* its rounding's number (operand_nonfinite) */
} K[OPERAND_SLOTS];
static unsigned long K_clock;
static unsigned K_stamps;   /* roundings so far; wraps after 2^32, far beyond any slot's life */

int cuda_operand_check(int *gate, const float *src, size_t n, int tag) {
    for (int i = 0; i < OPERAND_SLOTS; i++) {
        if (K[i].src != src || K[i].n != n) continue;
        gate_from_operand_kernel<<<1, 1, 0, cuda_stream()>>>(gate, i, K[i].stamp, tag);
        CUDA_LAUNCHED("gate_from_operand_kernel");
        return 1;
    }
    return 0;
}

int cuda_round16(void *out, const float *src, size_t n, lomo_dtype dt) {
    if (dt == LOMO_BF16) launch_round<__nv_bfloat16>(out, src, n, NULL, -1, 0);
    else launch_round<__half>(out, src, n, NULL, -1, 0);
    return CUDA_LAUNCHED("rounding to 16 bits");
}

void cuda_operands_forget(void) {
    for (int i = 0; i < OPERAND_SLOTS; i++) K[i].src = NULL;
}

void cuda_operands_forget_range(const void *p, size_t bytes) {
    const char *a = (const char *)p;
    for (int i = 0; i < OPERAND_SLOTS; i++) {
        const char *s = (const char *)K[i].src;
        if (s && s < a + bytes && a < s + K[i].n * sizeof(float)) K[i].src = NULL;
    }
}

const void *cuda_gemm_operand(lomo_dtype dt, const float *src, size_t n, const int *gate, const void *keep) {
    if (dt == LOMO_F32 && !gate) return src;
    size_t bytes = n * cuda_dtype_bytes(dt);
    for (int i = 0; i < OPERAND_SLOTS; i++) {
        if (K[i].src != src || K[i].n != n || K[i].dt != dt) continue;
        void *buf = cuda_scratch(i, bytes);   /* holds at least bytes: the same buffer */
        if (!buf) return NULL;
        if (buf != K[i].buf) {   /* the slot was reallocated: round again */
            K[i].src = NULL;
            break;
        }
        K[i].used = ++K_clock;
        if (gate) {
            zero_if_raised_kernel<<<264, 256, 0, cuda_stream()>>>((unsigned char *)buf, bytes, gate);
            K[i].src = NULL;
            if (!CUDA_LAUNCHED("zeroing a kept GEMM operand behind a raised gate")) return NULL;
        }
        return buf;
    }
    /* the least recently used slot, but never the one holding `keep` (the call's other operand) */
    int slot = -1;
    for (int i = 0; i < OPERAND_SLOTS; i++) {
        if (keep && K[i].buf == keep) continue;
        if (slot < 0 || K[i].used < K[slot].used) slot = i;
    }
    K[slot].src = NULL;
    void *buf = cuda_scratch(slot, bytes);
    if (!buf) return NULL;
    /* only an ungated rounding is kept, and only a kept one notes its source's finiteness */
    int kept = !gate && dt != LOMO_F32;
    unsigned stamp = ++K_stamps;
    if (dt == LOMO_F32)
        gated_copy_kernel<<<cuda_blocks(n, 256), 256, 0, cuda_stream()>>>((float *)buf, src, n, gate);
    else if (dt == LOMO_BF16)
        launch_round<__nv_bfloat16>(buf, src, n, gate, kept ? slot : -1, stamp);
    else
        launch_round<__half>(buf, src, n, gate, kept ? slot : -1, stamp);
    if (!CUDA_LAUNCHED("rounding a GEMM operand")) return NULL;
    K[slot] = (struct kept){kept ? src : NULL, buf, n, dt, ++K_clock, stamp};
    return buf;
}
