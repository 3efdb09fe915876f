/* swiglu.c: the gated MLP activation silu(gate) * up, and a residual add. */
#include "cpu_ops.h"
#include "vector_math.h"

void cpu_swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
/* no CPU_PARALLEL here: an if clause changes how GCC vectorizes the loop, and so which elements
 * take libmvec's vector expf and which the scalar one, whose last bits differ */
#if LOMO_VECTOR_EXP
#pragma omp parallel for simd schedule(static)
#else
#pragma omp parallel for schedule(static)
#endif
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

/* silu'(g) = s * (1 + g * (1 - s)) with s = sigmoid(g) */
void cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                         const float *up, size_t n) {
#if LOMO_VECTOR_EXP
#pragma omp parallel for simd schedule(static)
#else
#pragma omp parallel for schedule(static)
#endif
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], s = 1.0f / (1.0f + expf(-g)), d = dout[i];
        dgate[i] = d * up[i] * s * (1.0f + g * (1.0f - s));
        dup[i] = d * g * s;
    }
}

void cpu_add_inplace(float *a, const float *b, size_t n) {
#pragma omp parallel for if (CPU_PARALLEL(n)) schedule(static)
    for (size_t i = 0; i < n; i++) a[i] += b[i];
}
