/*
 * crossentropy.c: softmax cross-entropy per row with the -100 ignore
 * convention, over the vocabulary in chunks (backend.h): the model's LM head
 * may form its logits a block of vocabulary columns at a time.
 */
#include <math.h>
#include "cpu_ops.h"
#include "vector_math.h"

#define IGNORE_INDEX (-100)

/* log(exp(a) + exp(b)) in double, exact when either is -inf */
static float log_add_exp(float a, float b) {
    float mx = a > b ? a : b;
    if (mx == -INFINITY) return mx;
    return mx + (float)log(exp((double)(a - mx)) + exp((double)(b - mx)));
}

void cpu_crossentropy_forward(float *losses, float *lse, const float *logits, const int32_t *targets, int N,
                              int n, int v0, int V) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * n;
        float mx = z[0];
        for (int j = 1; j < n; j++) mx = z[j] > mx ? z[j] : mx;
        double s = 0.0;
#if LOMO_VECTOR_EXP
#pragma omp simd reduction(+ : s)
#endif
        for (int j = 0; j < n; j++) s += exp((double)(z[j] - mx));
        float l = mx + (float)log(s);
        int t = targets[i] - v0;
        /* losses carries -z[target] until the last chunk adds the log-sum-exp */
        float picked = t >= 0 && t < n ? -z[t] : 0.0f;
        lse[i] = v0 == 0 ? l : log_add_exp(lse[i], l);
        losses[i] = v0 == 0 ? picked : losses[i] + picked;
        if (v0 + n == V) losses[i] = targets[i] == IGNORE_INDEX ? 0.0f : lse[i] + losses[i];
    }
}

void cpu_crossentropy_backward(float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                               float dloss, int N, int n, int v0) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *z = logits + (size_t)i * n;
        float *d = dlogits + (size_t)i * n;
        if (targets[i] == IGNORE_INDEX) {
            for (int j = 0; j < n; j++) d[j] = 0.0f;
            continue;
        }
        float l = lse[i];
#if LOMO_VECTOR_EXP
#pragma omp simd
#endif
        for (int j = 0; j < n; j++) d[j] = dloss * expf(z[j] - l);
        int t = targets[i] - v0;
        if (t >= 0 && t < n) d[t] -= dloss;
    }
}
