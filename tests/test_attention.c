/* test_attention.c: causal GQA attention forward and backward, and decoding's attention against a
 * key/value cache, against PyTorch. */
#include <string.h>
#include "op_check.h"

int main(void) {
    fixture fx;
    if (fx_load(&fx, fx_path("ops.bin"))) return 1;
    const lomo_backend *be = lomo_backend_cpu();
    int B = op_dim(&fx, "attention.q", 0), T = op_dim(&fx, "attention.q", 1);
    int NH = op_dim(&fx, "attention.q", 2), hd = op_dim(&fx, "attention.q", 3);
    int NKV = op_dim(&fx, "attention.k", 2);
    size_t nq = (size_t)B * T * NH * hd, nk = (size_t)B * T * NKV * hd, na = (size_t)B * NH * T * T;
    float *q = fx_f32(&fx, "attention.q", nq), *k = fx_f32(&fx, "attention.k", nk);
    float *v = fx_f32(&fx, "attention.v", nk), *dout = fx_f32(&fx, "attention.dout", nq);
    float *out = op_zeros(nq), *att = op_zeros(na), *datt = op_zeros(na);
    float *dq = op_zeros(nq), *dk = op_zeros(nk), *dv = op_zeros(nk);

    be->attention_forward(out, att, q, k, v, B, T, NH, NKV, hd, LOMO_F32);
    op_compare(&fx, "attention.out", out);
    /* stale values must not leak in: backward overwrites its outputs */
    for (size_t i = 0; i < nk; i++) dk[i] = dv[i] = 1e3f;
    be->attention_backward(dq, dk, dv, datt, dout, out, att, q, k, v, B, T, NH, NKV, hd, LOMO_F32);
    op_compare(&fx, "attention.dq", dq);
    op_compare(&fx, "attention.dk", dk);
    op_compare(&fx, "attention.dv", dv);

    /* causality: probabilities above the diagonal are exactly zero, rows sum to 1 */
    int causal = 1;
    for (size_t r = 0; r < (size_t)B * NH * T; r++) {
        int t = (int)(r % T);
        double s = 0;
        for (int u = 0; u < T; u++) {
            if (u > t && att[r * T + u] != 0.0f) causal = 0;
            s += att[r * T + u];
        }
        if (s < 0.99999 || s > 1.00001) causal = 0;
    }
    CHECK(causal, "attention probabilities are not causal rows summing to 1");

    /* decoding's attention against a key/value cache (3 spare positions past T, holding noise):
     * the whole sequence as one call (GEMM path), one query a call (one-pass path), and a chunk
     * after a prefix; each time every output against PyTorch's */
    int cap = T + 3, qs = NH * hd, ks = NKV * hd;
    float *kc = op_zeros((size_t)B * cap * ks), *vc = op_zeros((size_t)B * cap * ks);
    for (size_t i = 0; i < (size_t)B * cap * ks; i++) kc[i] = vc[i] = 1e3f;
    for (int b = 0; b < B; b++) {
        memcpy(kc + (size_t)b * cap * ks, k + (size_t)b * T * ks, (size_t)T * ks * sizeof(float));
        memcpy(vc + (size_t)b * cap * ks, v + (size_t)b * T * ks, (size_t)T * ks * sizeof(float));
    }
    float *qpart = op_zeros(nq), *opart = op_zeros(nq);
    static const char *const ways[] = {"the whole sequence", "one query a call", "3 queries, then the rest"};
    for (int w = 0; w < 3; w++) {
        printf("  attention_cached: %s\n", ways[w]);
        for (size_t i = 0; i < nq; i++) out[i] = 0.0f;
        for (int pos = 0, n; pos < T; pos += n) {
            n = w == 0 ? T : w == 1 ? 1 : pos == 0 ? 3 : T - pos;
            for (int b = 0; b < B; b++)
                memcpy(qpart + (size_t)b * n * qs, q + ((size_t)b * T + pos) * qs, (size_t)n * qs * sizeof(float));
            be->attention_cached(opart, qpart, kc, vc, B, n, pos, cap, NH, NKV, hd);
            for (int b = 0; b < B; b++)
                memcpy(out + ((size_t)b * T + pos) * qs, opart + (size_t)b * n * qs, (size_t)n * qs * sizeof(float));
        }
        op_compare(&fx, "attention.out", out);
    }
    free(kc); free(vc); free(qpart); free(opart);
    free(q); free(k); free(v); free(dout); free(out); free(att); free(datt); free(dq); free(dk); free(dv);
    fx_free(&fx);
    return test_summary("test_attention");
}
