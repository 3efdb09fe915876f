/*
 * adalomo.c: the AdaLomo update (DESIGN.md 1): Adafactor-style factored
 * second moments, per-tensor update clipping, lr scaled by the weights' RMS.
 * The gradient buffer is overwritten with the update u.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "cpu_ops.h"
#include "../../runtime/dtype.h"

static inline float load(const void *w, lomo_dtype dt, size_t i) {
    if (dt == LOMO_F32) return ((const float *)w)[i];
    if (dt == LOMO_BF16) return lomo_bf16_to_f32(((const uint16_t *)w)[i]);
    return lomo_f16_to_f32(((const uint16_t *)w)[i]);
}

/* Sum of squares of the weights, as f32 values, in fixed chunks (reproducible). */
double cpu_weights_sumsq(const void *w, lomo_dtype dt, size_t n) {
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

/* Row means of g^2 + eps1; column sums carried on from colsum, each column's rows added in order
 * (columns split across threads in blocks of 64), so blocks of rows sum as the whole would. */
void cpu_adalomo_rows(float *rmean, double *colsum, const float *g, int n, int cols, float eps1) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const float *gi = g + (size_t)i * cols;
        double s = 0.0;
        for (int j = 0; j < cols; j++) s += (double)gi[j] * gi[j] + eps1;
        rmean[i] = (float)(s / cols);
    }
#pragma omp parallel for schedule(static)
    for (int j0 = 0; j0 < cols; j0 += 64) {
        int j1 = j0 + 64 < cols ? j0 + 64 : cols;
        double s[64];
        for (int j = j0; j < j1; j++) s[j - j0] = colsum[j];
        for (int i = 0; i < n; i++) {
            const float *gi = g + (size_t)i * cols;
            for (int j = j0; j < j1; j++) s[j - j0] += (double)gi[j] * gi[j] + eps1;
        }
        for (int j = j0; j < j1; j++) colsum[j] = s[j - j0];
    }
}

void cpu_adalomo_factors(float *row, float *col, float *mean_row, const float *rmean, const double *colsum, int rows,
                         int cols, float beta) {
    float ob = 1.0f - beta;
    double rs = 0.0;
    for (int i = 0; i < rows; i++) {
        row[i] = beta * row[i] + ob * rmean[i];
        rs += row[i];
    }
    for (int j = 0; j < cols; j++) col[j] = beta * col[j] + ob * (float)(colsum[j] / rows);
    *mean_row = (float)(rs / rows);
}

void cpu_adalomo_scale(float *g, const float *row, const float *col, const float *mean_row, int n, int cols) {
    float mr = *mean_row;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        float ri = 1.0f / sqrtf(row[i] / mr);
        float *gi = g + (size_t)i * cols;
        for (int j = 0; j < cols; j++) gi[j] = gi[j] * ri / sqrtf(col[j]);
    }
}

void cpu_adalomo_update(void *w, lomo_dtype dt, float *g, float *row, float *col, int rows, int cols,
                        float beta, float lr, float wd, float eps1, float eps2, float clip_threshold,
                        uint64_t sr_seed) {
    size_t n = (size_t)rows * (cols > 0 ? cols : 1);
    float ob = 1.0f - beta;
    if (cols > 0) {
        /* the parts, on the whole tensor at once (the row means and column sums in host scratch) */
        float *rmean = malloc((size_t)rows * sizeof(float) + sizeof(float));
        double *colsum = calloc((size_t)cols, sizeof(double));
        if (!rmean || !colsum) {
            /* a few hundred KB, where the step's own buffers are GBs: said, not hidden (no error channel here) */
            fprintf(stderr, "lomo: out of host memory for AdaLomo's row and column sums of a [%d, %d] tensor; "
                    "its weights stay as they were this step\n", rows, cols);
            free(rmean);
            free(colsum);
            return;
        }
        float *mean_row = rmean + rows;
        cpu_adalomo_rows(rmean, colsum, g, rows, cols, eps1);
        cpu_adalomo_factors(row, col, mean_row, rmean, colsum, rows, cols, beta);
        cpu_adalomo_scale(g, row, col, mean_row, rows, cols);
        free(rmean);
        free(colsum);
    } else {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < rows; i++) {
            row[i] = beta * row[i] + ob * (g[i] * g[i] + eps1);
            g[i] = g[i] / sqrtf(row[i]);
        }
    }
    float lr_t, inv_d;
    lomo_adalomo_scalars(&lr_t, &inv_d, cpu_sumsq(g, n), cpu_weights_sumsq(w, dt, n), n, lr, eps2, clip_threshold);
    cpu_sgd_update(w, dt, g, n, lr_t, wd, inv_d, 0.0f, 1.0f, sr_seed, NULL);
}
