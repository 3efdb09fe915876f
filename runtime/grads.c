/* grads.c: the default gradient hook, which accumulates full f32 gradients. */
#include <stdlib.h>
#include "model.h"

struct lomo_grads {
    lomo_model *m;
    float *mem;
    size_t bytes;
    size_t *offset;    /* floats into mem, per parameter */
};

lomo_status lomo_grads_create(lomo_grads **out, lomo_model *m) {
    if (!out || !m) return LOMO_ERR_INVALID_ARG;
    lomo_grads *g = calloc(1, sizeof *g);
    if (!g) return lomo_fail(m->ctx, LOMO_ERR_OOM, "out of memory: gradient table");
    g->m = m;
    g->offset = calloc((size_t)m->nparams, sizeof *g->offset);
    size_t n = 0;
    for (int p = 0; g->offset && p < m->nparams; p++) {
        g->offset[p] = n;
        n += (m->params[p].numel + 15) & ~(size_t)15;
    }
    g->bytes = n * sizeof(float);
    g->mem = g->offset ? lomo_dev_alloc(m->ctx, LOMO_MEM_GRADIENTS, g->bytes, "full gradients") : NULL;
    if (!g->mem) {
        free(g->offset);
        free(g);
        return lomo_fail(m->ctx, LOMO_ERR_OOM, "out of memory: full gradients need %zu bytes", n * sizeof(float));
    }
    lomo_grads_zero(g);
    *out = g;
    return LOMO_OK;
}

void lomo_grads_destroy(lomo_grads *g) {
    if (!g) return;
    lomo_dev_free(g->m->ctx, LOMO_MEM_GRADIENTS, g->mem, g->bytes);
    free(g->offset);
    free(g);
}

void lomo_grads_zero(lomo_grads *g) { LOMO_TIMED(g->m->ctx, LOMO_OP_COPY, 0, g->m->be->memset0(g->mem, g->bytes)); }

const float *lomo_grads_get(const lomo_grads *g, int p) {
    if (!g || p < 0 || p >= g->m->nparams) return NULL;
    return g->mem + g->offset[p];
}

static int on_linear(void *user, int p, const float *dout, const float *inp, int BT) {
    lomo_grads *g = user;
    const param_desc *d = &g->m->params[p];
    int IC = (int)d->shape[1], OC = (int)d->shape[0];
    LOMO_TIMED(g->m->ctx, LOMO_OP_WEIGHT_GRAD, 2.0 * BT * IC * OC,
               g->m->be->matmul_backward_weight(g->mem + g->offset[p], dout, inp, 1.0f, 1.0f, BT, IC, OC));
    return 0;
}

static int on_dense(void *user, int p, float *grad) {
    lomo_grads *g = user;
    LOMO_TIMED(g->m->ctx, LOMO_OP_RESIDUAL, 0, g->m->be->add_inplace(g->mem + g->offset[p], grad, g->m->params[p].numel));
    return 0;
}

static int on_rows(void *user, int p, const int32_t *rows, int nrows, float *grad) {
    lomo_grads *g = user;
    LOMO_TIMED(g->m->ctx, LOMO_OP_RESIDUAL, 0,
               g->m->be->rows_add(g->mem + g->offset[p], grad, rows, nrows, (int)g->m->params[p].shape[1]));
    return 0;
}

/* rows row0.. of a linear weight's gradient: a chunk of the head's */
static int on_linear_rows(void *user, int p, int row0, int nrows, const float *dout, const float *inp, int N) {
    lomo_grads *g = user;
    int IC = (int)g->m->params[p].shape[1];
    LOMO_TIMED(g->m->ctx, LOMO_OP_WEIGHT_GRAD, 2.0 * N * IC * nrows,
               g->m->be->matmul_backward_weight(g->mem + g->offset[p] + (size_t)row0 * IC, dout, inp, 1.0f, 1.0f, N,
                                                IC, nrows));
    return 0;
}

/* a tied weight's second part: its rows, added to the head's part on_linear accumulated */
static int on_tied(void *user, int p, const int32_t *rows, int nrows, float *grad, const float *head) {
    (void)head;
    return on_rows(user, p, rows, nrows, grad);
}

lomo_grad_hook lomo_grads_hook(lomo_grads *g) {
    return (lomo_grad_hook){.user = g, .on_linear = on_linear, .on_dense = on_dense, .on_rows = on_rows,
                            .on_linear_rows = on_linear_rows, .on_tied = on_tied};
}
