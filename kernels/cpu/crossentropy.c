/* crossentropy.c: softmax cross-entropy per row with the -100 ignore convention. */
#include "cpu_ops.h"
#include "vector_math.h"

#define IGNORE_INDEX (-100)

void cpu_crossentropy_forward(float *losses, float *lse, const float *logits,
                              const int32_t *targets, int N, int V) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * V;
        float mx = z[0];
        for (int j = 1; j < V; j++) mx = z[j] > mx ? z[j] : mx;
        double s = 0.0;
#if LOMO_VECTOR_EXP
#pragma omp simd reduction(+ : s)
#endif
        for (int j = 0; j < V; j++) s += exp((double)(z[j] - mx));
        float l = mx + (float)log(s);
        lse[i] = l;
        losses[i] = targets[i] == IGNORE_INDEX ? 0.0f : l - z[targets[i]];
    }
}

void cpu_crossentropy_backward(float *dlogits, const float *logits, const float *lse,
                               const int32_t *targets, float dloss, int N, int V) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * V;
        float *d = dlogits + (size_t)i * V;
        int tgt = targets[i];
        if (tgt == IGNORE_INDEX) {
            for (int j = 0; j < V; j++) d[j] = 0.0f;
            continue;
        }
        float l = lse[i];
#if LOMO_VECTOR_EXP
#pragma omp simd
#endif
        for (int j = 0; j < V; j++) d[j] = dloss * expf(z[j] - l);
        d[tgt] -= dloss;
    }
}
