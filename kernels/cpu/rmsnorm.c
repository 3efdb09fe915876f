/* rmsnorm.c: RMSNorm, out = x / sqrt(mean(x^2) + eps) * w. */
#include <math.h>
#include "cpu_ops.h"

void cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w,
                         int BT, int C, float eps) {
#pragma omp parallel for if (CPU_PARALLEL((size_t)BT * C)) schedule(static)
    for (int i = 0; i < BT; i++) {
        const float *x = inp + (size_t)i * C;
        float *o = out + (size_t)i * C;
        double ss = 0.0;
        for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
        float r = (float)(1.0 / sqrt(ss / C + (double)eps));
        for (int c = 0; c < C; c++) o[c] = x[c] * r * w[c];
        rstd[i] = r;
    }
}

/* With n = x*rstd and dn = dout*w: dx = rstd * (dn - n * mean(dn*n)); dw = sum_rows dout*n. */
void cpu_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                          const float *w, const float *rstd, int BT, int C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < BT; i++) {
        const float *x = inp + (size_t)i * C, *g = dout + (size_t)i * C;
        float *dx = dinp + (size_t)i * C;
        float r = rstd[i];
        double dot = 0.0;
        for (int c = 0; c < C; c++) dot += (double)(g[c] * w[c]) * (x[c] * r);
        float m = (float)(dot / C);
        for (int c = 0; c < C; c++) dx[c] += r * (g[c] * w[c] - x[c] * r * m);
    }
    /* dw by columns so every row sums in order: deterministic across threads */
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += 64) {
        int c1 = c0 + 64 < C ? c0 + 64 : C;
        for (int i = 0; i < BT; i++) {
            const float *x = inp + (size_t)i * C, *g = dout + (size_t)i * C;
            float r = rstd[i];
            for (int c = c0; c < c1; c++) dw[c] += g[c] * x[c] * r;
        }
    }
}
