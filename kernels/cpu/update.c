/*
 * update.c: optimizer element math on the CPU: norms, finiteness, rounding
 * to the storage dtype (nearest or stochastic), the SGD/LOMO and AdamW
 * updates, and the Gram-matrix gradient norm of a linear layer.
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include "cpu_ops.h"
#include "../../runtime/dtype.h"

/* Fixed-size chunks summed in order: the result does not depend on the thread count. */
#define SUM_CHUNK 4096

double cpu_sumsq(const float *x, size_t n) {
    size_t nchunks = (n + SUM_CHUNK - 1) / SUM_CHUNK;
    double stack[64], *part = nchunks <= 64 ? stack : malloc(nchunks * sizeof(double));
    if (!part) return NAN;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < nchunks; c++) {
        size_t i0 = c * SUM_CHUNK, i1 = i0 + SUM_CHUNK < n ? i0 + SUM_CHUNK : n;
        double s = 0.0;
        for (size_t i = i0; i < i1; i++) s += (double)x[i] * x[i];
        part[c] = s;
    }
    double total = 0.0;
    for (size_t c = 0; c < nchunks; c++) total += part[c];
    if (part != stack) free(part);
    return total;
}

/* The CPU's device memory is host memory: the check runs now, and the gate is a plain int. */
void cpu_check_finite(int *gate, const float *x, size_t n, int tag) {
    if (*gate) return;
    int ok = x != NULL;
    if (x) {
#pragma omp parallel for schedule(static) reduction(&& : ok)
        for (size_t i = 0; i < n; i++) ok = ok && isfinite(x[i]);
    }
    if (!ok) *gate = tag + 1;
}

int cpu_gate_read(const int *gate) { return *gate; }

static inline void store(void *w, lomo_dtype dt, size_t i, float v, uint64_t seed) {
    if (dt == LOMO_F32) ((float *)w)[i] = v;
    else if (dt == LOMO_BF16) ((uint16_t *)w)[i] = seed ? lomo_sr_bf16(v, seed, i) : lomo_f32_to_bf16(v);
    else ((uint16_t *)w)[i] = seed ? lomo_sr_f16(v, seed, i) : lomo_f32_to_f16(v);
}

static inline float load(const void *w, lomo_dtype dt, size_t i) {
    if (dt == LOMO_F32) return ((const float *)w)[i];
    if (dt == LOMO_BF16) return lomo_bf16_to_f32(((const uint16_t *)w)[i]);
    return lomo_f16_to_f32(((const uint16_t *)w)[i]);
}

/* out[first .. first+n) from src [n]; stochastic rounding draws by the element's index in out */
static void round_at(void *out, lomo_dtype dt, size_t first, const float *src, size_t n, uint64_t sr_seed) {
    if (!sr_seed || dt == LOMO_F32) {
        cpu_from_f32((char *)out + first * lomo_dtype_size(dt), dt, src, n);
        return;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) store(out, dt, first + i, src[i], sr_seed);
}

void cpu_round_from_f32(void *out, lomo_dtype dt, const float *src, size_t n, uint64_t sr_seed) {
    round_at(out, dt, 0, src, n, sr_seed);
}

static int cmp_row(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static inline float prepare(float g, float gscale, float clip_value, float coef) {
    g *= gscale;
    if (clip_value > 0.0f) g = g > clip_value ? clip_value : g < -clip_value ? -clip_value : g;
    return g * coef;
}

void cpu_sgd_update(void *w, lomo_dtype dt, const float *g, size_t n, float lr, float wd, float gscale,
                    float clip_value, float coef, uint64_t sr_seed, const int *gate) {
    if (gate && *gate) return;
    float decay = 1.0f - lr * wd;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        store(w, dt, i, load(w, dt, i) * decay - lr * prepare(g[i], gscale, clip_value, coef), sr_seed);
}

void cpu_sgd_update_rows(void *w, lomo_dtype dt, const float *g, const int32_t *rows, int nrows, int V, int C,
                         float lr, float wd, float gscale, float clip_value, float coef, uint64_t sr_seed) {
    float decay = 1.0f - lr * wd;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < V; r++) {
        const int32_t *hit = bsearch(&r, rows, (size_t)nrows, sizeof *rows, cmp_row);
        size_t base = (size_t)r * C;
        if (hit) {
            const float *gr = g + (size_t)(hit - rows) * C;
            for (int c = 0; c < C; c++)
                store(w, dt, base + c, load(w, dt, base + c) * decay - lr * prepare(gr[c], gscale, clip_value, coef),
                      sr_seed);
        } else if (wd != 0.0f) {
            /* a zero gradient: exactly what sgd_update computes there */
            for (int c = 0; c < C; c++)
                store(w, dt, base + c, load(w, dt, base + c) * decay - lr * prepare(0.0f, gscale, clip_value, coef),
                      sr_seed);
        }
    }
}

void cpu_rows_add(float *dst, const float *src, const int32_t *rows, int nrows, int C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < nrows; i++)
        for (int c = 0; c < C; c++) dst[(size_t)rows[i] * C + c] += src[(size_t)i * C + c];
}

void cpu_grad_prepare(float *g, size_t n, float gscale, float clip_value, float coef) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) g[i] = prepare(g[i], gscale, clip_value, coef);
}

void cpu_adamw_update(void *w, lomo_dtype dt, const float *g, float *m, float *v, size_t n, float lr, float wd,
                      float b1, float b2, float eps, float bc1, float bc2, uint64_t sr_seed) {
    float decay = 1.0f - lr * wd, step = lr / bc1, sbc2 = sqrtf(bc2);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        float denom = sqrtf(v[i]) / sbc2 + eps;   /* torch.optim.AdamW's formulation */
        store(w, dt, i, load(w, dt, i) * decay - step * m[i] / denom, sr_seed);
    }
}

/* <X X^T, dY dY^T> from the lower triangles of two symmetric [BT, BT] Grams. */
double cpu_linear_grad_sumsq_gram(float *gram, int inp_gram_valid, const float *dout, const float *inp,
                                  int BT, int IC, int OC) {
    float *gx = gram, *gy = gram + (size_t)BT * BT;
    if (!inp_gram_valid)
        cblas_ssyrk(CblasRowMajor, CblasLower, CblasNoTrans, BT, IC, 1.0f, inp, IC, 0.0f, gx, BT);
    cblas_ssyrk(CblasRowMajor, CblasLower, CblasNoTrans, BT, OC, 1.0f, dout, OC, 0.0f, gy, BT);
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int i = 0; i < BT; i++) {
        const float *a = gx + (size_t)i * BT, *b = gy + (size_t)i * BT;
        double s = 0.0;
        for (int j = 0; j < i; j++) s += (double)a[j] * b[j];
        total += 2.0 * s + (double)a[i] * b[i];
    }
    return total;
}

void cpu_linear_update(void *w, lomo_dtype dt, float *wbuf, const float *dout, const float *inp, float alpha,
                       float beta, int BT, int IC, int OC, uint64_t sr_seed, const int *gate) {
    if (gate && *gate) return;
    if (dt == LOMO_F32) {
        cpu_matmul_backward_weight(w, dout, inp, alpha, beta, BT, IC, OC);
        return;
    }
    /* 16-bit storage: a block of rows at a time widened, updated in f32 and rounded back once (the
     * stochastic rounding indexed by the element's place in w, as if whole) */
    int R = cpu_wbuf_rows(IC, OC);
    for (int o0 = 0; o0 < OC; o0 += R) {
        int n = OC - o0 < R ? OC - o0 : R;
        size_t first = (size_t)o0 * IC, len = (size_t)n * IC;
        cpu_to_f32(wbuf, (const char *)w + first * lomo_dtype_size(dt), dt, len);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, IC, BT, alpha, dout + o0, OC, inp, IC, beta, wbuf,
                    IC);
        round_at(w, dt, first, wbuf, len, sr_seed);
    }
}

void cpu_fill_uniform(void *w, lomo_dtype dt, size_t n, uint64_t seed, float scale) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        uint64_t r = lomo_mix64(seed ^ (i * 0x9e3779b97f4a7c15ull) ^ 0x5851f42d4c957f2dull);
        float u = (float)(r >> 40) * (1.0f / 16777216.0f);   /* [0, 1) with 24 bits */
        store(w, dt, i, (2.0f * u - 1.0f) * scale, 0);
    }
}
