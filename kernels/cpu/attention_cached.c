/*
 * attention_cached.c: attention of new queries against a key/value cache, for
 * incremental decoding. q [B, n, NH, hd] at positions pos..pos+n-1; kc, vc
 * [B, cap, NKV, hd]; query i sees keys 0..pos+i.
 *
 * One pass over the keys per query with a running maximum (online softmax,
 * as flash attention does): no score buffer, whatever the context length.
 * Decoding feeds one query at a time, so there is no GEMM to win here.
 */
#include <math.h>
#include "cpu_ops.h"

void cpu_attention_cached(float *out, const float *q, const float *kc, const float *vc, int B, int n, int pos,
                          int cap, int NH, int NKV, int hd) {
    int group = NH / NKV, qs = NH * hd, ks = NKV * hd;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(3) if (CPU_PARALLEL((size_t)B * n * NH * hd * (pos + n))) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < n; i++) {
            for (int h = 0; h < NH; h++) {
                const float *qv = q + ((size_t)b * n + i) * qs + (size_t)h * hd;
                const float *kk = kc + (size_t)b * cap * ks + (size_t)(h / group) * hd;
                const float *vv = vc + (size_t)b * cap * ks + (size_t)(h / group) * hd;
                float *o = out + ((size_t)b * n + i) * qs + (size_t)h * hd;
                float mx = -INFINITY, sum = 0.0f;
                for (int d = 0; d < hd; d++) o[d] = 0.0f;
                for (int j = 0; j <= pos + i; j++) {
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
        }
    }
}
