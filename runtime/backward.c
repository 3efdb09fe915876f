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
    int record;                 /* copy boundary gradients into m->rec */
} bwd;

/* The record's pieces: residual gradient at block input l (0..L), after block l's
 * attention, and norm gradient k (2l: input norm of block l, 2l+1: post-attention
 * norm, 2L: the final norm). */
static float *rec_in(lomo_model *m, int l) { return m->rec + (size_t)l * m->B * m->T * m->cfg.hidden_size; }
static float *rec_mid(lomo_model *m, int l) { return rec_in(m, m->cfg.num_hidden_layers + 1 + l); }
static float *rec_norm(lomo_model *m, int k) {
    return rec_in(m, 2 * m->cfg.num_hidden_layers + 1) + (size_t)k * m->cfg.hidden_size;
}

static void record(bwd *b, float *dst, const float *src, size_t n) {
    if (b->record) LOMO_TIMED(b->m->ctx, LOMO_OP_COPY, 0, b->m->be->memcpy_d2d(dst, src, n * sizeof(float)));
}

/* the gradient of linear p from dout [rows, OC] and inp [rows, IC] */
static int linear_grad_rows(bwd *b, int p, const float *dout, const float *inp, int rows) {
    if (b->failed) return 1;
    if (b->hook->on_linear(b->hook->user, p, dout, inp, rows)) b->failed = p + 1;
    return b->failed;
}

static int linear_grad(bwd *b, int p, const float *dout, const float *inp) {
    return linear_grad_rows(b, p, dout, inp, b->m->B * b->m->T);
}

/* rows row0..row0+nrows-1 of linear p's gradient, from dout [N, nrows] and inp [N, IC] */
static int linear_block_grad(bwd *b, int p, int row0, int nrows, const float *dout, const float *inp, int N) {
    if (b->failed) return 1;
    if (b->hook->on_linear_rows(b->hook->user, p, row0, nrows, dout, inp, N)) b->failed = p + 1;
    return b->failed;
}

/* past the embedding's sorted rows (erows_host) from k on that lie below row `end`: the first that does not */
static int erows_below(const lomo_model *m, int k, int nrows, int end) {
    while (k < nrows && m->erows_host[k] < end) k++;
    return k;
}

/*
 * A tied head's gradient at the embedding's rows (erows) that fall in the
 * chunk of vocabulary rows v0..v0+n-1, whose dlogits [N, n] are in m->logits:
 * hrows row i = dlogits[:, ecols[i]]^T lnf, for i from i0 on. The columns go
 * through the idle dh scratch [BT, F], F at a time. Returns the first row
 * past the chunk.
 */
static int head_grad_at_rows(lomo_model *m, int v0, int n, int i0, int nrows) {
    int N = m->head_rows, C = m->cfg.hidden_size, F = m->cfg.intermediate_size;
    int i1 = erows_below(m, i0, nrows, v0 + n);
    for (int a = i0; a < i1; a += F) {
        int w = i1 - a < F ? i1 - a : F;
        LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, m->be->gather_cols(m->g.dh, m->logits, m->ecols + a, N, n, w));
        LOMO_TIMED(m->ctx, LOMO_OP_WEIGHT_GRAD, 2.0 * N * w * C,
                   m->be->matmul_backward_weight(m->hrows + (size_t)a * C, m->g.dh, m->lnf, 1.0f, 0.0f, N, C, w));
    }
    return i1;
}

static int dense_grad(bwd *b, int p, float *grad) {
    if (b->failed) return 1;
    if (b->hook->on_dense(b->hook->user, p, grad)) b->failed = p + 1;
    return b->failed;
}

/* dq, dk, dv of block activations a from datty: attention, then RoPE undone on dq and dk */
static void attention_backward(lomo_model *m, const layer_acts *a) {
    const lomo_backend *be = m->be;
    const lomo_llama_config *c = &m->cfg;
    const block_grads *g = &m->g;
    int B = m->B, T = m->T, NH = c->num_attention_heads, NKV = c->num_key_value_heads, hd = m->head_dim;
    LOMO_TIMED(m->ctx, LOMO_OP_ATTENTION_BWD, 2 * model_attention_flops(m),
               be->attention_backward(g->dq, g->dk, g->dv, g->datt, g->datty, a->atty, a->att, a->q, a->k, a->v, B,
                                      T, NH, NKV, hd, m->dtype));
    LOMO_TIMED(m->ctx, LOMO_OP_ROPE, 0, be->rope(g->dq, m->rope_cos, m->rope_sin, B, T, NH, hd, 0, 1));
    LOMO_TIMED(m->ctx, LOMO_OP_ROPE, 0, be->rope(g->dk, m->rope_cos, m->rope_sin, B, T, NKV, hd, 0, 1));
}

/* dres [BT, C] = d(norm input) from dln, the norm's weight gradient into normgrad (zeroed first) */
static void rmsnorm_backward(lomo_model *m, float *dres, const float *dln, const float *inp, int p,
                             const float *rstd) {
    int BT = m->B * m->T, C = m->cfg.hidden_size;
    const float *w = model_norm_weight(m, p);
    LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, m->be->memset0(m->normgrad, (size_t)C * sizeof(float)));
    LOMO_TIMED(m->ctx, LOMO_OP_RMSNORM, 0, m->be->rmsnorm_backward(dres, m->normgrad, dln, inp, w, rstd, BT, C));
}

static void copy_norm_grad(lomo_model *m, const float *src) {
    LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, m->be->memcpy_d2d(m->normgrad, src, (size_t)m->cfg.hidden_size * sizeof(float)));
}

/* dres [BT, C] comes in as d(block output) and leaves as d(block input). */
static int block_backward(bwd *b, int l, const layer_acts *a, const float *x) {
    lomo_model *m = b->m;
    const lomo_backend *be = m->be;
    const lomo_llama_config *c = &m->cfg;
    int B = m->B, T = m->T, BT = B * T, C = c->hidden_size, F = c->intermediate_size;
    int NH = c->num_attention_heads, NKV = c->num_key_value_heads, hd = m->head_dim;
    const block_grads *g = &m->g;
    float *dgate = g->dh;    /* swiglu_backward reads dh[i] before writing dgate[i] */

    /* MLP: out = xmid + down(silu(gate(ln2)) * up(ln2)) */
    model_linear_dinp(m, g->dh, g->dres, param_index(l, P_WD), 0.0f, F, C);
    if (linear_grad(b, param_index(l, P_WD), g->dres, a->hmlp)) return 1;
    LOMO_TIMED(m->ctx, LOMO_OP_SWIGLU, 0, be->swiglu_backward(dgate, g->dup, g->dh, a->gate, a->up, (size_t)BT * F));
    model_linear_dinp(m, g->dln, dgate, param_index(l, P_WG), 0.0f, C, F);
    if (linear_grad(b, param_index(l, P_WG), dgate, a->ln2)) return 1;
    model_linear_dinp(m, g->dln, g->dup, param_index(l, P_WU), 1.0f, C, F);
    if (linear_grad(b, param_index(l, P_WU), g->dup, a->ln2)) return 1;
    rmsnorm_backward(m, g->dres, g->dln, a->xmid, param_index(l, P_LN2), a->rstd2);
    record(b, rec_mid(m, l), g->dres, (size_t)BT * C);
    record(b, rec_norm(m, 2 * l + 1), m->normgrad, (size_t)C);
    if (dense_grad(b, param_index(l, P_LN2), m->normgrad)) return 1;

    /* attention: xmid = x + o(attn(rope(q(ln1)), rope(k(ln1)), v(ln1))) */
    model_linear_dinp(m, g->datty, g->dres, param_index(l, P_WO), 0.0f, NH * hd, C);
    if (linear_grad(b, param_index(l, P_WO), g->dres, a->atty)) return 1;
    attention_backward(m, a);
    model_linear_dinp(m, g->dln, g->dq, param_index(l, P_WQ), 0.0f, C, NH * hd);
    if (linear_grad(b, param_index(l, P_WQ), g->dq, a->ln1)) return 1;
    model_linear_dinp(m, g->dln, g->dk, param_index(l, P_WK), 1.0f, C, NKV * hd);
    if (linear_grad(b, param_index(l, P_WK), g->dk, a->ln1)) return 1;
    model_linear_dinp(m, g->dln, g->dv, param_index(l, P_WV), 1.0f, C, NKV * hd);
    if (linear_grad(b, param_index(l, P_WV), g->dv, a->ln1)) return 1;
    rmsnorm_backward(m, g->dres, g->dln, x, param_index(l, P_LN1), a->rstd1);
    record(b, rec_in(m, l), g->dres, (size_t)BT * C);
    record(b, rec_norm(m, 2 * l), m->normgrad, (size_t)C);
    return dense_grad(b, param_index(l, P_LN1), m->normgrad);
}

/*
 * Replays block l from a record: the residual gradients at its output and
 * after its attention are known, so only the down and o projections' dX are
 * formed (to reach SwiGLU and attention); the norm gradients come recorded.
 */
static int block_replay(bwd *b, int l, const layer_acts *a) {
    lomo_model *m = b->m;
    const lomo_backend *be = m->be;
    const lomo_llama_config *c = &m->cfg;
    int B = m->B, T = m->T, BT = B * T, C = c->hidden_size, F = c->intermediate_size;
    int NH = c->num_attention_heads, hd = m->head_dim;
    const block_grads *g = &m->g;
    float *dgate = g->dh;
    const float *dout = rec_in(m, l + 1), *dmid = rec_mid(m, l);

    model_linear_dinp(m, g->dh, dout, param_index(l, P_WD), 0.0f, F, C);
    if (linear_grad(b, param_index(l, P_WD), dout, a->hmlp)) return 1;
    LOMO_TIMED(m->ctx, LOMO_OP_SWIGLU, 0, be->swiglu_backward(dgate, g->dup, g->dh, a->gate, a->up, (size_t)BT * F));
    if (linear_grad(b, param_index(l, P_WG), dgate, a->ln2)) return 1;
    if (linear_grad(b, param_index(l, P_WU), g->dup, a->ln2)) return 1;
    copy_norm_grad(m, rec_norm(m, 2 * l + 1));
    if (dense_grad(b, param_index(l, P_LN2), m->normgrad)) return 1;

    model_linear_dinp(m, g->datty, dmid, param_index(l, P_WO), 0.0f, NH * hd, C);
    if (linear_grad(b, param_index(l, P_WO), dmid, a->atty)) return 1;
    attention_backward(m, a);
    if (linear_grad(b, param_index(l, P_WQ), g->dq, a->ln1)) return 1;
    if (linear_grad(b, param_index(l, P_WK), g->dk, a->ln1)) return 1;
    if (linear_grad(b, param_index(l, P_WV), g->dv, a->ln1)) return 1;
    copy_norm_grad(m, rec_norm(m, 2 * l));
    return dense_grad(b, param_index(l, P_LN1), m->normgrad);
}

static lomo_status reserve_record(lomo_model *m) {
    int BT = m->B * m->T, L = m->cfg.num_hidden_layers;
    if (m->rec && m->rec_BT >= BT) return LOMO_OK;
    lomo_dev_free(m->ctx, LOMO_MEM_ACTIVATIONS, m->rec, m->rec_bytes);
    size_t C = (size_t)m->cfg.hidden_size;
    m->rec_bytes = ((size_t)(2 * L + 1) * BT * C + (size_t)(2 * L + 1) * C) * sizeof(float);
    m->rec = lomo_dev_alloc(m->ctx, LOMO_MEM_ACTIVATIONS, m->rec_bytes, "recorded backward");
    m->rec_BT = m->rec ? BT : 0;
    if (!m->rec) m->rec_bytes = 0;
    return m->rec ? LOMO_OK : LOMO_ERR_OOM;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The distinct tokens of the batch, sorted, into erows (and erows_host); each position's row in emap;
 * each row's column in its chunk of `chunk` logits in ecols. */
static int embedding_rows(lomo_model *m, int BT, int chunk) {
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
    memcpy(m->erows_host, rows, (size_t)n * sizeof *rows);
    LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, m->be->to_device(m->erows, rows, (size_t)n * sizeof *rows));
    LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, m->be->to_device(m->emap, map, (size_t)BT * sizeof *map));
    for (int i = 0; i < n; i++) rows[i] %= chunk;
    LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, m->be->to_device(m->ecols, rows, (size_t)n * sizeof *rows));
    free(rows);
    free(map);
    return n;
}

lomo_status lomo_model_backward(lomo_model *m, float loss_scale, const lomo_grad_hook *hook) {
    return model_backward(m, loss_scale, hook, BWD_PLAIN);
}

/*
 * A [V, C] gradient in passes (lomo_grad_hook.on_head_chunk), a chunk of rows
 * at a time in m->hchunk, every pass forming each chunk again: with `head`,
 * the LM head's part from the logits of lnf and the loss's log-sum-exp; then
 * the embedding's rows that fall in the chunk (gradbuf [nrows, C] at erows),
 * if nrows. A tied weight is both; an untied head the first, an untied
 * embedding the second. No [V, C] buffer; 2 N V C flops a pass for a head.
 * Passes from `first` on (an untied head's pass 0 comes with its dX).
 */
static int head_chunk(bwd *b, int p, int pass, int v0, int n) {
    lomo_model *m = b->m;
    if (b->hook->on_head_chunk(b->hook->user, p, pass, v0, n, m->hchunk)) b->failed = p + 1;
    return b->failed;
}

/* dst [n, C] := the head's gradient at a chunk of n vocabulary rows, from their dlogits in m->logits */
static void head_weight_grad(lomo_model *m, float *dst, int n) {
    int N = m->head_rows, C = m->cfg.hidden_size;
    LOMO_TIMED(m->ctx, LOMO_OP_WEIGHT_GRAD, 2.0 * N * C * n,
               m->be->matmul_backward_weight(dst, m->logits, m->lnf, 1.0f, 0.0f, N, C, n));
}

static int chunk_passes(bwd *b, int p, int head, float dloss, int nrows, int first) {
    lomo_model *m = b->m;
    const lomo_backend *be = m->be;
    const lomo_grad_hook *hook = b->hook;
    int N = m->head_rows, C = m->cfg.hidden_size, V = m->cfg.vocab_size, chunk = model_logits_chunk(m);
    for (int pass = first; pass < hook->head_passes; pass++) {
        for (int v0 = 0, k0 = 0; v0 < V; v0 += chunk) {
            int n = V - v0 < chunk ? V - v0 : chunk;
            if (head) {
                model_head_logits(m, v0, n);
                LOMO_TIMED(m->ctx, LOMO_OP_CROSSENTROPY, 0,
                           be->crossentropy_backward(m->logits, m->logits, m->lse, m->targets, dloss, N, n, v0));
                head_weight_grad(m, m->hchunk, n);
            } else {
                LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->memset0(m->hchunk, (size_t)n * C * sizeof(float)));
            }
            /* the embedding's rows in this chunk: ecols holds each row's column within its chunk */
            int k1 = erows_below(m, k0, nrows, v0 + n);
            if (k1 > k0)
                LOMO_TIMED(m->ctx, LOMO_OP_EMBEDDING, 0,
                           be->rows_add(m->hchunk, m->gradbuf + (size_t)k0 * C, m->ecols + k0, k1 - k0, C));
            k0 = k1;
            if (head_chunk(b, p, pass, v0, n)) return b->failed;
        }
    }
    m->logits_valid = 0;
    return 0;
}

lomo_status model_backward(lomo_model *m, float loss_scale, const lomo_grad_hook *hook, bwd_mode mode) {
    if (!m) return LOMO_ERR_INVALID_ARG;
    if (!hook || !hook->on_linear || !hook->on_dense)
        return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG, "backward: hook with both callbacks required");
    if (!m->have_forward || !m->have_targets)
        return lomo_fail(m->ctx, LOMO_ERR_STATE, "backward: needs a forward with targets first");
    if (mode == BWD_REPLAY && !(m->rec_valid && m->rec_scale == loss_scale))
        return lomo_fail(m->ctx, LOMO_ERR_STATE, "backward: no recorded pass at this loss scale to replay");
    const lomo_backend *be = m->be;
    const lomo_llama_config *c = &m->cfg;
    int BT = m->B * m->T, C = c->hidden_size, V = c->vocab_size, L = c->num_hidden_layers;
    /* The head's gradient: whole (on_linear), a chunk of rows at a time (on_linear_rows), in passes
     * (on_head_chunk), or formed in the dense gradient buffer, for a tied head without on_tied or a
     * chunked one without on_linear_rows. The embedding's: as its touched rows, untied through
     * on_rows, tied through on_tied after the head's part, in passes, or dense. */
    int chunk = model_logits_chunk(m), whole = chunk == V;
    int rows_ok = whole || hook->on_linear_rows, tied = c->tie_word_embeddings;
    /* a head in chunks to a hook that takes [V, C] gradients in passes: an untied head's after its dX,
     * the embedding's (and a tied head's) from the embedding's rows at the end */
    int passes = !whole && hook->on_head_chunk && hook->head_passes > 0;
    int split = !passes && tied && hook->on_tied && rows_ok;
    int sparse = passes || (rows_ok && (tied ? split : hook->on_rows != NULL));
    int head_dense = !passes && ((tied && !split) || !rows_ok), want_hrows = split && hook->tied_head;
    if (model_reserve_gradbuf(m, !sparse, want_hrows, passes ? chunk : 0)) return LOMO_ERR_OOM;
    if (mode == BWD_RECORD && reserve_record(m)) return LOMO_ERR_OOM;
    lomo_ctx_apply_threads(m->ctx);

    bwd b = {m, hook, 0, mode == BWD_RECORD};
    model_layout_for(m, m->B, m->T);
    m->rec_valid = 0;   /* a replay's hook changes the weights; a new record is not complete yet */
    m->weights_version++;   /* any hook may change them */
    int nrows = sparse ? embedding_rows(m, BT, chunk) : 0;
    if (nrows < 0) return lomo_fail(m->ctx, LOMO_ERR_OOM, "out of memory: embedding rows");

    /* the head's rows: every position, or those with a target (forward.c select_head_rows) */
    int N = m->head_rows, gathered = N < BT;
    float dloss = m->n_valid ? loss_scale / (float)m->n_valid : 0.0f;
    /* the head's dX now (its weight's gradient comes in passes after); nothing in a replay */
    for (int v0 = 0, i0 = 0; v0 < V && !(passes && mode == BWD_REPLAY); v0 += chunk) {
        int n = V - v0 < chunk ? V - v0 : chunk;
        /* dlogits in place of the logits: formed again unless forward's (or a record's) are there */
        if (!whole || mode != BWD_REPLAY) {
            if (!m->logits_valid) model_head_logits(m, v0, n);
            LOMO_TIMED(m->ctx, LOMO_OP_CROSSENTROPY, 0,
                       be->crossentropy_backward(m->logits, m->logits, m->lse, m->targets, dloss, N, n, v0));
            m->logits_valid = 0;
        }
        /* dlnf += dlogits @ W (its old rows); gathered rows wait in dres to be spread to their positions */
        if (mode != BWD_REPLAY)
            model_linear_block_dinp(m, gathered ? m->g.dres : m->g.dln, m->logits, param_head(m), v0,
                                    v0 ? 1.0f : 0.0f, N, C, n);
        if (want_hrows) i0 = head_grad_at_rows(m, v0, n, i0, nrows);
        /* an untied head's pass 0 from these dlogits: one formation fewer */
        if (passes && !tied) {
            head_weight_grad(m, m->hchunk, n);
            if (head_chunk(&b, param_head(m), 0, v0, n)) goto hook_failed;
        }
        if (passes) continue;
        if (head_dense) head_weight_grad(m, m->gradbuf + (size_t)v0 * C, n);
        else if (whole ? linear_grad_rows(&b, param_head(m), m->logits, m->lnf, N)
                       : linear_block_grad(&b, param_head(m), v0, n, m->logits, m->lnf, N))
            goto hook_failed;
    }
    /* an untied head formed dense goes now, or in passes; a tied one waits for the embedding's part */
    if (head_dense && !tied && dense_grad(&b, param_head(m), m->gradbuf)) goto hook_failed;
    if (passes && !tied && chunk_passes(&b, param_head(m), 1, dloss, 0, mode == BWD_REPLAY ? 0 : 1)) goto hook_failed;
    /* dX's rows to their positions, zero where there was no target: a gather through head_from,
     * whose rows without a target read the zeroed row N; after the head's update, which may reuse
     * an operand its dX GEMM prepared (a write would drop it) */
    if (mode != BWD_REPLAY && gathered) {
        LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->memset0(m->g.dres + (size_t)N * C, (size_t)C * sizeof(float)));
        LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->embedding_forward(m->g.dln, m->head_from, m->g.dres, LOMO_F32, BT, C));
    }

    if (mode == BWD_REPLAY) {
        copy_norm_grad(m, rec_norm(m, 2 * L));
    } else {
        LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->memset0(m->g.dres, (size_t)BT * C * sizeof(float)));
        rmsnorm_backward(m, m->g.dres, m->g.dln, m->x[L], param_norm(m), m->rstdf);
        record(&b, rec_in(m, L), m->g.dres, (size_t)BT * C);
        record(&b, rec_norm(m, 2 * L), m->normgrad, (size_t)C);
    }
    if (dense_grad(&b, param_norm(m), m->normgrad)) goto hook_failed;

    for (int l = L - 1; l >= 0; l--) {
        layer_acts a = model_layer_acts(m, l);
        if (m->checkpointing && m->acts_layer != l) {
            model_block_forward(m, l, &a, m->x[l], NULL);
            m->acts_layer = l;
        }
        if (mode == BWD_REPLAY ? block_replay(&b, l, &a) : block_backward(&b, l, &a, m->x[l])) goto hook_failed;
    }
    const float *dx0 = mode == BWD_REPLAY ? rec_in(m, 0) : m->g.dres;
    if (mode == BWD_RECORD) {
        m->rec_valid = 1;
        m->rec_scale = loss_scale;
    }

    if (sparse) {
        LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->memset0(m->gradbuf, (size_t)nrows * C * sizeof(float)));
        LOMO_TIMED(m->ctx, LOMO_OP_EMBEDDING, 0, be->embedding_backward(m->gradbuf, dx0, m->emap, BT, C));
        if (!b.failed &&
            (passes ? chunk_passes(&b, 0, tied, dloss, nrows, 0)
                    : split ? hook->on_tied(hook->user, 0, m->erows, nrows, m->gradbuf, want_hrows ? m->hrows : NULL)
                            : hook->on_rows(hook->user, 0, m->erows, nrows, m->gradbuf)))
            b.failed = 1;
        if (b.failed) goto hook_failed;
        return lomo_device_check(m->ctx);
    }
    if (!tied) LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->memset0(m->gradbuf, (size_t)V * C * sizeof(float)));
    LOMO_TIMED(m->ctx, LOMO_OP_EMBEDDING, 0, be->embedding_backward(m->gradbuf, dx0, m->tokens, BT, C));
    if (dense_grad(&b, 0, m->gradbuf)) goto hook_failed;
    return lomo_device_check(m->ctx);

hook_failed:
    return lomo_fail(m->ctx, LOMO_ERR_CALLBACK, "backward: gradient hook failed on %s",
                     m->params[b.failed - 1].name);
}
