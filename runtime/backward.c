/*
 * backward.c: the LLaMA backward pass. Blocks are visited from last to first
 * and each parameter's gradient goes to the hook the moment it is final. For
 * a linear layer dX is always formed with the old weight before the hook runs,
 * so the hook is free to update that weight in place.
 */
#include <stdlib.h>
#include <string.h>
#include "model.h"

typedef struct bwd {
    lomo_model *m;
    const lomo_grad_hook *hook;
    int failed;
} bwd;

static int linear_grad(bwd *b, int p, const float *dout, const float *inp) {
    if (b->failed) return 1;
    if (b->hook->on_linear(b->hook->user, p, dout, inp, b->m->B * b->m->T)) b->failed = p + 1;
    return b->failed;
}

static int dense_grad(bwd *b, int p, float *grad) {
    if (b->failed) return 1;
    if (b->hook->on_dense(b->hook->user, p, grad)) b->failed = p + 1;
    return b->failed;
}

/* dres [BT, C] comes in as d(block output) and leaves as d(block input). */
static int block_backward(bwd *b, int l, const layer_acts *a, const float *x) {
    lomo_model *m = b->m;
    const lomo_backend *be = m->be;
    const lomo_llama_config *c = &m->cfg;
    int B = m->B, T = m->T, BT = B * T, C = c->hidden_size, F = c->intermediate_size;
    int NH = c->num_attention_heads, NKV = c->num_key_value_heads, hd = m->head_dim;
    lomo_dtype dt = m->dtype;
    const block_grads *g = &m->g;
    float *dgate = g->dh;    /* swiglu_backward reads dh[i] before writing dgate[i] */

    /* MLP: out = xmid + down(silu(gate(ln2)) * up(ln2)) */
    be->matmul_backward_input(g->dh, g->dres, param_ptr(m, param_index(l, P_WD)), dt, m->wbuf, 0.0f, BT, F, C);
    if (linear_grad(b, param_index(l, P_WD), g->dres, a->hmlp)) return 1;
    be->swiglu_backward(dgate, g->dup, g->dh, a->gate, a->up, (size_t)BT * F);
    be->matmul_backward_input(g->dln, dgate, param_ptr(m, param_index(l, P_WG)), dt, m->wbuf, 0.0f, BT, C, F);
    if (linear_grad(b, param_index(l, P_WG), dgate, a->ln2)) return 1;
    be->matmul_backward_input(g->dln, g->dup, param_ptr(m, param_index(l, P_WU)), dt, m->wbuf, 1.0f, BT, C, F);
    if (linear_grad(b, param_index(l, P_WU), g->dup, a->ln2)) return 1;
    be->memset0(m->normgrad, (size_t)C * sizeof(float));
    be->rmsnorm_backward(g->dres, m->normgrad, g->dln, a->xmid, model_norm_weight(m, param_index(l, P_LN2)),
                         a->rstd2, BT, C);
    if (dense_grad(b, param_index(l, P_LN2), m->normgrad)) return 1;

    /* attention: xmid = x + o(attn(rope(q(ln1)), rope(k(ln1)), v(ln1))) */
    be->matmul_backward_input(g->datty, g->dres, param_ptr(m, param_index(l, P_WO)), dt, m->wbuf, 0.0f, BT,
                              NH * hd, C);
    if (linear_grad(b, param_index(l, P_WO), g->dres, a->atty)) return 1;
    be->attention_backward(g->dq, g->dk, g->dv, g->datt, g->datty, a->att, a->q, a->k, a->v, B, T, NH, NKV, hd);
    be->rope(g->dq, m->rope_cos, m->rope_sin, B, T, NH, hd, 0, 1);
    be->rope(g->dk, m->rope_cos, m->rope_sin, B, T, NKV, hd, 0, 1);
    be->matmul_backward_input(g->dln, g->dq, param_ptr(m, param_index(l, P_WQ)), dt, m->wbuf, 0.0f, BT, C, NH * hd);
    if (linear_grad(b, param_index(l, P_WQ), g->dq, a->ln1)) return 1;
    be->matmul_backward_input(g->dln, g->dk, param_ptr(m, param_index(l, P_WK)), dt, m->wbuf, 1.0f, BT, C, NKV * hd);
    if (linear_grad(b, param_index(l, P_WK), g->dk, a->ln1)) return 1;
    be->matmul_backward_input(g->dln, g->dv, param_ptr(m, param_index(l, P_WV)), dt, m->wbuf, 1.0f, BT, C, NKV * hd);
    if (linear_grad(b, param_index(l, P_WV), g->dv, a->ln1)) return 1;
    be->memset0(m->normgrad, (size_t)C * sizeof(float));
    be->rmsnorm_backward(g->dres, m->normgrad, g->dln, x, model_norm_weight(m, param_index(l, P_LN1)), a->rstd1,
                         BT, C);
    return dense_grad(b, param_index(l, P_LN1), m->normgrad);
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The distinct tokens of the batch, sorted, into erows; each position's row in emap. */
static int embedding_rows(lomo_model *m, int BT) {
    int32_t *rows = malloc((size_t)BT * sizeof *rows), *map = malloc((size_t)BT * sizeof *map);
    if (!rows || !map) {
        free(rows);
        free(map);
        return -1;
    }
    memcpy(rows, m->tokens_host, (size_t)BT * sizeof *rows);
    qsort(rows, (size_t)BT, sizeof *rows, cmp_i32);
    int n = 0;
    for (int i = 0; i < BT; i++)
        if (i == 0 || rows[i] != rows[n - 1]) rows[n++] = rows[i];
    for (int i = 0; i < BT; i++) {
        int32_t *hit = bsearch(&m->tokens_host[i], rows, (size_t)n, sizeof *rows, cmp_i32);
        map[i] = (int32_t)(hit - rows);
    }
    m->be->to_device(m->erows, rows, (size_t)n * sizeof *rows);
    m->be->to_device(m->emap, map, (size_t)BT * sizeof *map);
    free(rows);
    free(map);
    return n;
}

lomo_status lomo_model_backward(lomo_model *m, float loss_scale, const lomo_grad_hook *hook) {
    if (!m) return LOMO_ERR_INVALID_ARG;
    if (!hook || !hook->on_linear || !hook->on_dense)
        return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG, "backward: hook with both callbacks required");
    if (!m->have_forward || !m->have_targets)
        return lomo_fail(m->ctx, LOMO_ERR_STATE, "backward: needs a forward with targets first");
    int sparse = hook->on_rows && !m->cfg.tie_word_embeddings;
    if (model_reserve_gradbuf(m, !sparse)) return LOMO_ERR_OOM;
    lomo_ctx_apply_threads(m->ctx);

    const lomo_backend *be = m->be;
    const lomo_llama_config *c = &m->cfg;
    int BT = m->B * m->T, C = c->hidden_size, V = c->vocab_size, L = c->num_hidden_layers;
    bwd b = {m, hook, 0};
    model_layout_for(m, m->B, m->T);

    /* a previous backward turned the logits into dlogits: form them again */
    if (!m->logits_valid) model_compute_logits(m);
    float dloss = m->n_valid ? loss_scale / (float)m->n_valid : 0.0f;
    float *dlogits = m->logits;
    be->crossentropy_backward(dlogits, m->logits, m->lse, m->targets, dloss, BT, V);
    m->logits_valid = 0;

    /* LM head: dlnf = dlogits @ W; the tied head's dW waits in gradbuf for the embedding's part */
    be->matmul_backward_input(m->g.dln, dlogits, param_ptr(m, param_head(m)), m->dtype, m->wbuf, 0.0f, BT, C, V);
    if (c->tie_word_embeddings)
        be->matmul_backward_weight(m->gradbuf, dlogits, m->lnf, 1.0f, 0.0f, BT, C, V);
    else if (linear_grad(&b, param_head(m), dlogits, m->lnf))
        goto hook_failed;

    be->memset0(m->g.dres, (size_t)BT * C * sizeof(float));
    be->memset0(m->normgrad, (size_t)C * sizeof(float));
    be->rmsnorm_backward(m->g.dres, m->normgrad, m->g.dln, m->x[L], model_norm_weight(m, param_norm(m)),
                         m->rstdf, BT, C);
    if (dense_grad(&b, param_norm(m), m->normgrad)) goto hook_failed;

    for (int l = L - 1; l >= 0; l--) {
        const layer_acts *a = &m->la[m->checkpointing ? 0 : l];
        if (m->checkpointing && m->acts_layer != l) {
            model_block_forward(m, l, a, m->x[l], NULL);
            m->acts_layer = l;
        }
        if (block_backward(&b, l, a, m->x[l])) goto hook_failed;
    }

    if (sparse) {
        int nrows = embedding_rows(m, BT);
        if (nrows < 0) return lomo_fail(m->ctx, LOMO_ERR_OOM, "out of memory: embedding rows");
        be->memset0(m->gradbuf, (size_t)nrows * C * sizeof(float));
        be->embedding_backward(m->gradbuf, m->g.dres, m->emap, BT, C);
        if (!b.failed && hook->on_rows(hook->user, 0, m->erows, nrows, m->gradbuf)) b.failed = 1;
        if (b.failed) goto hook_failed;
        return LOMO_OK;
    }
    if (!c->tie_word_embeddings) be->memset0(m->gradbuf, (size_t)V * C * sizeof(float));
    be->embedding_backward(m->gradbuf, m->g.dres, m->tokens, BT, C);
    if (dense_grad(&b, 0, m->gradbuf)) goto hook_failed;
    return LOMO_OK;

hook_failed:
    return lomo_fail(m->ctx, LOMO_ERR_CALLBACK, "backward: gradient hook failed on %s",
                     m->params[b.failed - 1].name);
}
