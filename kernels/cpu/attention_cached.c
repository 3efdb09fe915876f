/*
 * attention_cached.c: attention of new queries against a key/value cache, for
 * incremental decoding. q [B, n, NH, hd] at positions pos..pos+n-1; kc, vc
 * [B, cap, NKV, hd]; query i sees keys 0..pos+i.
 *
 * One query (a token being generated): one pass over the keys with a running
 * maximum (online softmax, as flash attention does), no score buffer. Several
 * (a prompt, a chat turn): per row and head, the scores [n, pos+n] as one
 * GEMM, the causal softmax, and a second GEMM, as attention.c does; a head
 * whose score buffer cannot be had takes the one-pass way.
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include "cpu_ops.h"

/* out [hd] for one query q [hd] over keys kk and values vv (row stride ks), the first `keys` of them */
static void one_pass(float *o, const float *qv, const float *kk, const float *vv, int keys, int ks, int hd,
                     float scale) {
    float mx = -INFINITY, sum = 0.0f;
    for (int d = 0; d < hd; d++) o[d] = 0.0f;
    for (int j = 0; j < keys; j++) {
        const float *kj = kk + (size_t)j * ks, *vj = vv + (size_t)j * ks;
        float s = 0.0f;
        for (int d = 0; d < hd; d++) s += qv[d] * kj[d];
        s *= scale;
        if (s > mx) {   /* a new maximum: rescale what was summed so far */
            float c = expf(mx - s);
            sum *= c;
            for (int d = 0; d < hd; d++) o[d] *= c;
            mx = s;
        }
        float p = expf(s - mx);
        sum += p;
        for (int d = 0; d < hd; d++) o[d] += p * vj[d];
    }
    float inv = 1.0f / sum;
    for (int d = 0; d < hd; d++) o[d] *= inv;
}

void cpu_attention_cached(float *out, const float *q, const float *kc, const float *vc, int B, int n, int pos,
                          int cap, int NH, int NKV, int hd) {
    int group = NH / NKV, qs = NH * hd, ks = NKV * hd, keys = pos + n;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) if (CPU_PARALLEL((size_t)B * n * NH * hd * keys)) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float *qh = q + (size_t)b * n * qs + (size_t)h * hd;
            const float *kk = kc + (size_t)b * cap * ks + (size_t)(h / group) * hd;
            const float *vv = vc + (size_t)b * cap * ks + (size_t)(h / group) * hd;
            float *oh = out + (size_t)b * n * qs + (size_t)h * hd;
            float *s = n > 1 ? malloc((size_t)n * keys * sizeof *s) : NULL;
            if (s) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, keys, hd, 1.0f, qh, qs, kk, ks, 0.0f, s, keys);
                cpu_causal_softmax(s, n, keys, pos, scale);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, keys, 1.0f, s, keys, vv, ks, 0.0f, oh,
                            qs);
                free(s);
            } else {
                for (int i = 0; i < n; i++)
                    one_pass(oh + (size_t)i * qs, qh + (size_t)i * qs, kk, vv, pos + i + 1, ks, hd, scale);
            }
        }
    }
}
