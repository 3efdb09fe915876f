/* embedding.c: token embedding lookup, its scatter-add backward, and the column gather of a tied head. */
#include "cpu_ops.h"
#include "../../runtime/dtype.h"

void cpu_embedding_forward(float *out, const int32_t *tokens, const void *wte, lomo_dtype dt,
                           int BT, int C) {
    size_t es = dt == LOMO_F32 ? 4 : 2;
#pragma omp parallel for if (CPU_PARALLEL((size_t)BT * C)) schedule(static)
    for (int i = 0; i < BT; i++) {
        const char *row = (const char *)wte + (size_t)tokens[i] * (size_t)C * es;
        cpu_to_f32(out + (size_t)i * C, row, dt, (size_t)C);
    }
}

void cpu_embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int BT, int C) {
    /* Rows are visited in order so repeated tokens sum deterministically; the
     * columns are split across threads instead. */
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += 64) {
        int c1 = c0 + 64 < C ? c0 + 64 : C;
        for (int i = 0; i < BT; i++) {
            float *d = dwte + (size_t)tokens[i] * C;
            const float *g = dout + (size_t)i * C;
            for (int c = c0; c < c1; c++) d[c] += g[c];
        }
    }
}

void cpu_gather_cols(float *out, const float *in, const int32_t *cols, int N, int V, int n) {
#pragma omp parallel for if (CPU_PARALLEL((size_t)N * n)) schedule(static)
    for (int i = 0; i < N; i++) {
        const float *src = in + (size_t)i * V;
        float *dst = out + (size_t)i * n;
        for (int j = 0; j < n; j++) dst[j] = src[cols[j]];
    }
}
