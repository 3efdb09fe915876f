/*
 * adalomo.c: the AdaLomo update (DESIGN.md 1): Adafactor-style factored
 * second moments, per-tensor update clipping, lr scaled by the weights' RMS.
 * The gradient buffer is overwritten with the update u.
 */
#include <math.h>
#include <stdlib.h>
#include "cpu_ops.h"
#include "../../runtime/dtype.h"

static inline float load(const void *w, lomo_dtype dt, size_t i) {
    if (dt == LOMO_F32) return ((const float *)w)[i];
    if (dt == LOMO_BF16) return lomo_bf16_to_f32(((const uint16_t *)w)[i]);
    return lomo_f16_to_f32(((const uint16_t *)w)[i]);
}

/* Sum of squares of the weights, as f32 values, in fixed chunks (reproducible). */
static double weights_sumsq(const void *w, lomo_dtype dt, size_t n) {
    if (dt == LOMO_F32) return cpu_sumsq(w, n);
    size_t nch = (n + 4095) / 4096;
    double *part = malloc(nch * sizeof(double)), total = 0.0;
    if (!part) return NAN;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < nch; c++) {
        size_t i1 = (c + 1) * 4096 < n ? (c + 1) * 4096 : n;
        double s = 0.0;
        for (size_t i = c * 4096; i < i1; i++) { double v = load(w, dt, i); s += v * v; }
        part[c] = s;
    }
    for (size_t c = 0; c < nch; c++) total += part[c];
    free(part);
    return total;
}

void cpu_adalomo_update(void *w, lomo_dtype dt, float *g, float *row, float *col, int rows, int cols,
                        float beta, float lr, float wd, float eps1, float eps2, float clip_threshold,
                        uint64_t sr_seed) {
    size_t n = (size_t)rows * (cols > 0 ? cols : 1);
    float ob = 1.0f - beta;
    if (cols > 0) {
        /* row means of g^2 + eps1, then column means (columns split across threads) */
#pragma omp parallel for schedule(static)
        for (int i = 0; i < rows; i++) {
            const float *gi = g + (size_t)i * cols;
            double s = 0.0;
            for (int j = 0; j < cols; j++) s += (double)gi[j] * gi[j] + eps1;
            row[i] = beta * row[i] + ob * (float)(s / cols);
        }
#pragma omp parallel for schedule(static)
        for (int j0 = 0; j0 < cols; j0 += 64) {
            int j1 = j0 + 64 < cols ? j0 + 64 : cols;
            double s[64] = {0};
            for (int i = 0; i < rows; i++) {
                const float *gi = g + (size_t)i * cols;
                for (int j = j0; j < j1; j++) s[j - j0] += (double)gi[j] * gi[j] + eps1;
            }
            for (int j = j0; j < j1; j++) col[j] = beta * col[j] + ob * (float)(s[j - j0] / rows);
        }
        double rs = 0.0;
        for (int i = 0; i < rows; i++) rs += row[i];
        float mean_row = (float)(rs / rows);
#pragma omp parallel for schedule(static)
        for (int i = 0; i < rows; i++) {
            float ri = 1.0f / sqrtf(row[i] / mean_row);
            float *gi = g + (size_t)i * cols;
            for (int j = 0; j < cols; j++) gi[j] = gi[j] * ri / sqrtf(col[j]);
        }
    } else {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < rows; i++) {
            row[i] = beta * row[i] + ob * (g[i] * g[i] + eps1);
            g[i] = g[i] / sqrtf(row[i]);
        }
    }
    float rms_u = (float)sqrt(cpu_sumsq(g, n) / (double)n);
    float inv_d = 1.0f / fmaxf(1.0f, rms_u / clip_threshold);
    float rms_w = (float)sqrt(weights_sumsq(w, dt, n) / (double)n);
    float lr_t = lr * fmaxf(eps2, rms_w);
    cpu_sgd_update(w, dt, g, n, lr_t, wd, inv_d, 0.0f, 1.0f, sr_seed, NULL);
}
