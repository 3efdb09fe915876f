/*
 * attention.c: causal self-attention with grouped-query heads.
 * q [B, T, NH, hd], k and v [B, T, NKV, hd]; query head h reads kv head
 * h / (NH / NKV). The probabilities att [B, NH, T, T] are kept for backward
 * (the CPU reference; the CUDA backend never stores them).
 */
#include <math.h>
#include "cpu_ops.h"

void cpu_attention_forward(float *out, float *att, const float *q, const float *k,
                           const float *v, int B, int T, int NH, int NKV, int hd) {
    int group = NH / NKV;
    size_t qs = (size_t)NH * hd, ks = (size_t)NKV * hd;  /* row strides */
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            int kh = h / group;
            for (int t = 0; t < T; t++) {
                const float *qt = q + ((size_t)b * T + t) * qs + (size_t)h * hd;
                float *a = att + (((size_t)b * NH + h) * T + t) * T;
                float mx = -INFINITY;
                for (int u = 0; u <= t; u++) {
                    const float *ku = k + ((size_t)b * T + u) * ks + (size_t)kh * hd;
                    float s = 0.0f;
                    for (int d = 0; d < hd; d++) s += qt[d] * ku[d];
                    s *= scale;
                    a[u] = s;
                    mx = s > mx ? s : mx;
                }
                float sum = 0.0f;
                for (int u = 0; u <= t; u++) { a[u] = expf(a[u] - mx); sum += a[u]; }
                float inv = 1.0f / sum;
                for (int u = 0; u <= t; u++) a[u] *= inv;
                for (int u = t + 1; u < T; u++) a[u] = 0.0f;
                float *o = out + ((size_t)b * T + t) * qs + (size_t)h * hd;
                for (int d = 0; d < hd; d++) o[d] = 0.0f;
                for (int u = 0; u <= t; u++) {
                    const float *vu = v + ((size_t)b * T + u) * ks + (size_t)kh * hd;
                    float w = a[u];
                    for (int d = 0; d < hd; d++) o[d] += w * vu[d];
                }
            }
        }
    }
}

/* One thread owns one (batch, kv head): it alone writes that head's dk and dv,
 * summing over its query heads in order, so the result is deterministic. */
void cpu_attention_backward(float *dq, float *dk, float *dv, float *datt, const float *dout,
                            const float *att, const float *q, const float *k, const float *v,
                            int B, int T, int NH, int NKV, int hd) {
    int group = NH / NKV;
    size_t qs = (size_t)NH * hd, ks = (size_t)NKV * hd;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int kh = 0; kh < NKV; kh++) {
            for (int t = 0; t < T; t++) {
                float *dkt = dk + ((size_t)b * T + t) * ks + (size_t)kh * hd;
                float *dvt = dv + ((size_t)b * T + t) * ks + (size_t)kh * hd;
                for (int d = 0; d < hd; d++) { dkt[d] = 0.0f; dvt[d] = 0.0f; }
            }
            for (int h = kh * group; h < (kh + 1) * group; h++) {
                for (int t = 0; t < T; t++) {
                    const float *a = att + (((size_t)b * NH + h) * T + t) * T;
                    float *da = datt + (((size_t)b * NH + h) * T + t) * T;
                    const float *go = dout + ((size_t)b * T + t) * qs + (size_t)h * hd;
                    const float *qt = q + ((size_t)b * T + t) * qs + (size_t)h * hd;
                    float *dqt = dq + ((size_t)b * T + t) * qs + (size_t)h * hd;
                    /* datt = dout . v ; dv += att * dout */
                    float dot = 0.0f;
                    for (int u = 0; u <= t; u++) {
                        const float *vu = v + ((size_t)b * T + u) * ks + (size_t)kh * hd;
                        float *dvu = dv + ((size_t)b * T + u) * ks + (size_t)kh * hd;
                        float s = 0.0f;
                        for (int d = 0; d < hd; d++) { s += go[d] * vu[d]; dvu[d] += a[u] * go[d]; }
                        da[u] = s;
                        dot += s * a[u];
                    }
                    /* softmax backward, then the score = scale * q.k backward */
                    for (int d = 0; d < hd; d++) dqt[d] = 0.0f;
                    for (int u = 0; u <= t; u++) {
                        float ds = a[u] * (da[u] - dot) * scale;
                        const float *ku = k + ((size_t)b * T + u) * ks + (size_t)kh * hd;
                        float *dku = dk + ((size_t)b * T + u) * ks + (size_t)kh * hd;
                        for (int d = 0; d < hd; d++) { dqt[d] += ds * ku[d]; dku[d] += ds * qt[d]; }
                    }
                }
            }
        }
    }
}
