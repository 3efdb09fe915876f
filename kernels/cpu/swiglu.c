/* swiglu.c: the gated MLP activation silu(gate) * up, and a residual add. */
#include "cpu_ops.h"
#include "vector_math.h"

/*
 * Fixed blocks of elements, whatever the number of threads: within a block the
 * vectorized loop (libmvec's vector expf) and its scalar remainder (glibc's
 * expf, whose last bits can differ) always cover the same elements, so the
 * results are the same bits on any number of threads. One parallel-for-simd
 * over all n would move the remainders with the threads' shares.
 */
enum { SWIGLU_BLOCK = 4096 };

#if LOMO_VECTOR_EXP
#define SWIGLU_SIMD _Pragma("omp simd")
#else
#define SWIGLU_SIMD
#endif

void cpu_swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    size_t nb = (n + SWIGLU_BLOCK - 1) / SWIGLU_BLOCK;
#pragma omp parallel for if (CPU_PARALLEL(n)) schedule(static)
    for (size_t blk = 0; blk < nb; blk++) {
        size_t i1 = (blk + 1) * SWIGLU_BLOCK < n ? (blk + 1) * SWIGLU_BLOCK : n;
        SWIGLU_SIMD
        for (size_t i = blk * SWIGLU_BLOCK; i < i1; i++) {
            float g = gate[i];
            out[i] = g / (1.0f + expf(-g)) * up[i];
        }
    }
}

/* silu'(g) = s * (1 + g * (1 - s)) with s = sigmoid(g) */
void cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                         const float *up, size_t n) {
    size_t nb = (n + SWIGLU_BLOCK - 1) / SWIGLU_BLOCK;
#pragma omp parallel for if (CPU_PARALLEL(n)) schedule(static)
    for (size_t blk = 0; blk < nb; blk++) {
        size_t i1 = (blk + 1) * SWIGLU_BLOCK < n ? (blk + 1) * SWIGLU_BLOCK : n;
        SWIGLU_SIMD
        for (size_t i = blk * SWIGLU_BLOCK; i < i1; i++) {
            float g = gate[i], s = 1.0f / (1.0f + expf(-g)), d = dout[i];
            dgate[i] = d * up[i] * s * (1.0f + g * (1.0f - s));
            dup[i] = d * g * s;
        }
    }
}

void cpu_add_inplace(float *a, const float *b, size_t n) {
#pragma omp parallel for if (CPU_PARALLEL(n)) schedule(static)
    for (size_t i = 0; i < n; i++) a[i] += b[i];
}
