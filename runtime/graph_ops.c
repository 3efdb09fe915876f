/* graph_ops.c: the graph's linear layers and attention, as calls timed into the profile. */
#include "model.h"

void model_linear_rows(lomo_model *m, float *out, const float *inp, int p, int rows, int IC, int OC) {
    LOMO_TIMED(m->ctx, LOMO_OP_MATMUL, 2.0 * rows * IC * OC,
               m->be->matmul_forward(out, inp, param_ptr(m, p), m->dtype, m->wbuf, rows, IC, OC));
}

/* W_p's row row0 (its output feature) */
static const void *weight_row(const lomo_model *m, int p, int row0) {
    return (const char *)param_ptr(m, p) + (size_t)row0 * m->params[p].shape[1] * lomo_dtype_size(m->dtype);
}

void model_linear_block(lomo_model *m, float *out, const float *inp, int p, int row0, int rows, int IC, int OC) {
    LOMO_TIMED(m->ctx, LOMO_OP_MATMUL, 2.0 * rows * IC * OC,
               m->be->matmul_forward(out, inp, weight_row(m, p, row0), m->dtype, m->wbuf, rows, IC, OC));
}

void model_linear_block_dinp(lomo_model *m, float *dinp, const float *dout, int p, int row0, float beta, int rows,
                             int IC, int OC) {
    LOMO_TIMED(m->ctx, LOMO_OP_MATMUL, 2.0 * rows * IC * OC,
               m->be->matmul_backward_input(dinp, dout, weight_row(m, p, row0), m->dtype, m->wbuf, beta, rows, IC, OC));
}

void model_linear(lomo_model *m, float *out, const float *inp, int p, int IC, int OC) {
    model_linear_rows(m, out, inp, p, m->B * m->T, IC, OC);
}

void model_linear_dinp_rows(lomo_model *m, float *dinp, const float *dout, int p, float beta, int rows, int IC,
                            int OC) {
    LOMO_TIMED(m->ctx, LOMO_OP_MATMUL, 2.0 * rows * IC * OC,
               m->be->matmul_backward_input(dinp, dout, param_ptr(m, p), m->dtype, m->wbuf, beta, rows, IC, OC));
}

void model_linear_dinp(lomo_model *m, float *dinp, const float *dout, int p, float beta, int IC, int OC) {
    model_linear_dinp_rows(m, dinp, dout, p, beta, m->B * m->T, IC, OC);
}

/* Q K^T and P V over the causal half: 2 products of 2*T*T*hd/2 flops per head and sequence. */
double model_attention_flops(const lomo_model *m) {
    return 2.0 * m->B * m->cfg.num_attention_heads * (double)m->T * m->T * m->head_dim;
}
