/*
 * cpu_ops.h: the CPU implementations behind the backend table
 * (runtime/backend.h documents every op's shapes and semantics).
 */
#ifndef LOMO_CPU_OPS_H
#define LOMO_CPU_OPS_H

#include "../../runtime/backend.h"

/*
 * Loops that touch fewer elements than this stay on the calling thread
 * (`#pragma omp parallel for if (CPU_PARALLEL(n))`): waking the OpenMP team
 * costs tens of microseconds with passive waiting, more than the whole loop
 * when decoding one token (rows of 576). The loops it guards give the same
 * bits on any number of threads.
 */
#define CPU_PARALLEL_MIN 32768
#define CPU_PARALLEL(n) ((size_t)(n) >= CPU_PARALLEL_MIN)

void cpu_to_f32(float *out, const void *src, lomo_dtype dt, size_t n);
void cpu_from_f32(void *out, lomo_dtype dt, const float *src, size_t n);

void cpu_embedding_forward(float *out, const int32_t *tokens, const void *wte, lomo_dtype dt,
                           int BT, int C);
void cpu_embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int BT, int C);
void cpu_gather_cols(float *out, const float *in, const int32_t *cols, int N, int V, int n);

void cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w,
                         int BT, int C, float eps);
void cpu_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp,
                          const float *w, const float *rstd, int BT, int C);

/* 16-bit weights are widened for OpenBLAS this many floats (16 MiB) at most at a time */
#define CPU_WBUF_FLOATS ((size_t)1 << 22)
/* the rows of a [OC, IC] matrix widened at once: as many as fit, at least one */
static inline int cpu_wbuf_rows(int IC, int OC) {
    size_t r = CPU_WBUF_FLOATS / (size_t)IC;
    return r < 1 ? 1 : r > (size_t)OC ? OC : (int)r;
}

void cpu_matmul_forward(float *out, const float *inp, const void *w, lomo_dtype dt,
                        float *wbuf, int BT, int IC, int OC);
void cpu_matmul_backward_input(float *dinp, const float *dout, const void *w, lomo_dtype dt,
                               float *wbuf, float beta, int BT, int IC, int OC);
void cpu_matmul_backward_weight(float *dw, const float *dout, const float *inp,
                                float alpha, float beta, int BT, int IC, int OC);

void cpu_rope(float *x, const float *cos, const float *sin, int B, int T, int H, int hd,
              int pos_offset, int inverse);

void cpu_attention_forward(float *out, float *att, const float *q, const float *k,
                           const float *v, int B, int T, int NH, int NKV, int hd, lomo_dtype dt);
void cpu_attention_backward(float *dq, float *dk, float *dv, float *datt, const float *dout,
                            const float *out_unused, const float *att, const float *q, const float *k, const float *v,
                            int B, int T, int NH, int NKV, int hd, lomo_dtype dt);

/* row-wise causal softmax of s [rows, cols] in place (scores times scale): row t sees columns 0..first+t */
void cpu_causal_softmax(float *s, int rows, int cols, int first, float scale);
void cpu_attention_cached(float *out, const float *q, const float *kc, const float *vc, int B, int n, int pos,
                          int cap, int NH, int NKV, int hd);
size_t cpu_attention_saved_floats(int B, int T, int NH);

void cpu_swiglu_forward(float *out, const float *gate, const float *up, size_t n);
void cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                         const float *up, size_t n);
void cpu_add_inplace(float *a, const float *b, size_t n);

void cpu_crossentropy_forward(float *losses, float *lse, const float *logits, const int32_t *targets, int N,
                              int n, int v0, int V);
void cpu_crossentropy_backward(float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                               float dloss, int N, int n, int v0);

double cpu_sumsq(const float *x, size_t n);
void cpu_check_finite(int *gate, const float *x, size_t n, int tag);
int cpu_gate_read(const int *gate);
void cpu_round_from_f32(void *out, lomo_dtype dt, const float *src, size_t n, uint64_t sr_seed);
void cpu_sgd_update(void *w, lomo_dtype dt, const float *g, size_t n, float lr, float wd, float gscale,
                    float clip_value, float coef, uint64_t sr_seed, const int *gate);
void cpu_sgd_update_rows(void *w, lomo_dtype dt, const float *g, const int32_t *rows, int nrows, int V, int C,
                         float lr, float wd, float gscale, float clip_value, float coef, uint64_t sr_seed);
void cpu_rows_add(float *dst, const float *src, const int32_t *rows, int nrows, int C);
void cpu_grad_prepare(float *g, size_t n, float gscale, float clip_value, float coef);
void cpu_adalomo_rows(float *rmean, double *colsum, const float *g, int n, int cols, float eps1);
void cpu_adalomo_factors(float *row, float *col, float *mean_row, const float *rmean, const double *colsum, int rows,
                         int cols, float beta);
void cpu_adalomo_scale(float *g, const float *row, const float *col, const float *mean_row, int n, int cols);
double cpu_weights_sumsq(const void *w, lomo_dtype dt, size_t n);
void cpu_adalomo_update(void *w, lomo_dtype dt, float *g, float *row, float *col, int rows, int cols,
                        float beta, float lr, float wd, float eps1, float eps2, float clip_threshold,
                        uint64_t sr_seed);
void cpu_adamw_update(void *w, lomo_dtype dt, const float *g, float *m, float *v, size_t n, float lr,
                      float wd, float b1, float b2, float eps, float bc1, float bc2, uint64_t sr_seed);
void cpu_linear_update(void *w, lomo_dtype dt, float *wbuf, const float *dout, const float *inp, float alpha,
                       float beta, int BT, int IC, int OC, uint64_t sr_seed, const int *gate);
void cpu_fill_uniform(void *w, lomo_dtype dt, size_t n, uint64_t seed, float scale);
double cpu_linear_grad_sumsq_gram(float *gram, int inp_gram_valid, const float *dout, const float *inp,
                                  int BT, int IC, int OC);

#endif
