/*
 * attention.c: causal self-attention with grouped-query heads.
 * q [B, T, NH, hd], k and v [B, T, NKV, hd]; query head h reads kv head
 * h / (NH / NKV). The probabilities att [B, NH, T, T] are kept for backward
 * (the CPU reference; the CUDA backend never stores them).
 *
 * Each (batch, head) is a few small GEMMs on strided views (OpenBLAS runs
 * single-threaded inside the OpenMP loop over heads). The full T x T score
 * matrix is formed and the upper triangle discarded: BLAS on the whole square
 * beats hand loops on the triangle.
 */
#include <cblas.h>
#include "cpu_ops.h"
#include "vector_math.h"

/* Row-wise causal softmax of scores s [rows, cols] (scaled), in place: row t sees columns
 * 0..first+t, the rest become 0. */
void cpu_causal_softmax(float *s, int rows, int cols, int first, float scale) {
    for (int t0 = 0; t0 < rows; t0++) {
        int t = first + t0;
        float *a = s + (size_t)t0 * cols, mx = -INFINITY;
        for (int u = 0; u <= t; u++) {
            a[u] *= scale;
            mx = a[u] > mx ? a[u] : mx;
        }
#if LOMO_VECTOR_EXP
#pragma omp simd
#endif
        for (int u = 0; u <= t; u++) a[u] = expf(a[u] - mx);
        float sum = 0.0f;
        for (int u = 0; u <= t; u++) sum += a[u];   /* in order, as before */
        float inv = 1.0f / sum;
        for (int u = 0; u <= t; u++) a[u] *= inv;
        for (int u = t + 1; u < cols; u++) a[u] = 0.0f;
    }
}

/* dt is unused: the CPU takes every product in f32 */
void cpu_attention_forward(float *out, float *att, const float *q, const float *k, const float *v, int B, int T,
                           int NH, int NKV, int hd, lomo_dtype dt) {
    (void)dt;
    int group = NH / NKV;
    int qs = NH * hd, ks = NKV * hd;   /* row strides */
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            int kh = h / group;
            const float *qh = q + (size_t)b * T * qs + (size_t)h * hd;
            const float *kk = k + (size_t)b * T * ks + (size_t)kh * hd;
            const float *vv = v + (size_t)b * T * ks + (size_t)kh * hd;
            float *a = att + ((size_t)b * NH + h) * T * T;
            float *o = out + (size_t)b * T * qs + (size_t)h * hd;
            /* scores = q k^T [T, T]; probabilities; out = att v [T, hd] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, qh, qs, kk, ks, 0.0f, a, T);
            cpu_causal_softmax(a, T, T, 0, scale);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, a, T, vv, ks, 0.0f, o, qs);
        }
    }
}

/* One thread owns one (batch, kv head): it alone writes that head's dk and dv,
 * summing over its query heads in order, so the result is deterministic. */
void cpu_attention_backward(float *dq, float *dk, float *dv, float *datt, const float *dout, const float *out_unused,
                            const float *att,
                            const float *q, const float *k, const float *v, int B, int T, int NH, int NKV, int hd,
                            lomo_dtype dt) {
    (void)out_unused;   /* the CPU keeps the probabilities; flash-style backends need out */
    (void)dt;
    int group = NH / NKV;
    int qs = NH * hd, ks = NKV * hd;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int kh = 0; kh < NKV; kh++) {
            const float *kk = k + (size_t)b * T * ks + (size_t)kh * hd;
            const float *vv = v + (size_t)b * T * ks + (size_t)kh * hd;
            float *dkk = dk + (size_t)b * T * ks + (size_t)kh * hd;
            float *dvv = dv + (size_t)b * T * ks + (size_t)kh * hd;
            for (int h = kh * group; h < (kh + 1) * group; h++) {
                const float *a = att + ((size_t)b * NH + h) * T * T;
                float *da = datt + ((size_t)b * NH + h) * T * T;
                const float *go = dout + (size_t)b * T * qs + (size_t)h * hd;
                const float *qh = q + (size_t)b * T * qs + (size_t)h * hd;
                float *dqh = dq + (size_t)b * T * qs + (size_t)h * hd;
                float first = h == kh * group ? 0.0f : 1.0f;   /* the group's first head overwrites */
                /* dv (+)= att^T dout ; datt = dout v^T */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, a, T, go, qs, first, dvv, ks);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, go, qs, vv, ks, 0.0f, da, T);
                /* softmax backward, with the score scale folded in: ds = att * (datt - <att, datt>) * scale */
                for (int t = 0; t < T; t++) {
                    const float *ar = a + (size_t)t * T;
                    float *dr = da + (size_t)t * T, dot = 0.0f;
                    for (int u = 0; u <= t; u++) dot += ar[u] * dr[u];
                    for (int u = 0; u <= t; u++) dr[u] = ar[u] * (dr[u] - dot) * scale;
                    for (int u = t + 1; u < T; u++) dr[u] = 0.0f;
                }
                /* dq = ds k ; dk (+)= ds^T q */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, da, T, kk, ks, 0.0f, dqh, qs);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, da, T, qh, qs, first, dkk, ks);
            }
        }
    }
}

/* The CPU keeps the probabilities: [B, NH, T, T] saved, the same again as scratch. */
size_t cpu_attention_saved_floats(int B, int T, int NH) { return (size_t)B * NH * T * T; }
