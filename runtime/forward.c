/* forward.c: the LLaMA forward pass and the loss. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

/*
 * One transformer block. x [BT, C] is the block input, out [BT, C] its output;
 * out may be NULL when only the saved activations are wanted (recompute in
 * backward), which skips the down projection, and attention too when the
 * model keeps every block's attention output (LOMO_CHECKPOINT_KEEP_ATTENTION).
 */
void model_block_forward(lomo_model *m, int l, const layer_acts *a, const float *x, float *out) {
    const lomo_backend *be = m->be;
    lomo_ctx *ctx = m->ctx;
    const lomo_llama_config *c = &m->cfg;
    int B = m->B, T = m->T, BT = B * T, C = c->hidden_size, F = c->intermediate_size;
    int NH = c->num_attention_heads, NKV = c->num_key_value_heads, hd = m->head_dim;
    float eps = (float)c->rms_norm_eps;
    const float *ln1w = model_norm_weight(m, param_index(l, P_LN1));

    LOMO_TIMED(ctx, LOMO_OP_RMSNORM, 0, be->rmsnorm_forward(a->ln1, a->rstd1, x, ln1w, BT, C, eps));
    model_linear(m, a->q, a->ln1, param_index(l, P_WQ), C, NH * hd);
    model_linear(m, a->k, a->ln1, param_index(l, P_WK), C, NKV * hd);
    model_linear(m, a->v, a->ln1, param_index(l, P_WV), C, NKV * hd);
    int pos0 = m->decoding ? m->kv_pos : 0;
    LOMO_TIMED(ctx, LOMO_OP_ROPE, 0, be->rope(a->q, m->rope_cos, m->rope_sin, B, T, NH, hd, pos0, 0));
    LOMO_TIMED(ctx, LOMO_OP_ROPE, 0, be->rope(a->k, m->rope_cos, m->rope_sin, B, T, NKV, hd, pos0, 0));
    if (m->decoding)
        model_kv_attention(m, l, a);
    else if (out || m->checkpointing != LOMO_CHECKPOINT_KEEP_ATTENTION)
        LOMO_TIMED(ctx, LOMO_OP_ATTENTION_FWD, model_attention_flops(m),
                   be->attention_forward(a->atty, a->att, a->q, a->k, a->v, B, T, NH, NKV, hd, m->dtype));
    model_linear(m, a->xmid, a->atty, param_index(l, P_WO), NH * hd, C);
    LOMO_TIMED(ctx, LOMO_OP_RESIDUAL, 0, be->add_inplace(a->xmid, x, (size_t)BT * C));

    const float *ln2w = model_norm_weight(m, param_index(l, P_LN2));
    LOMO_TIMED(ctx, LOMO_OP_RMSNORM, 0, be->rmsnorm_forward(a->ln2, a->rstd2, a->xmid, ln2w, BT, C, eps));
    model_linear(m, a->gate, a->ln2, param_index(l, P_WG), C, F);
    model_linear(m, a->up, a->ln2, param_index(l, P_WU), C, F);
    LOMO_TIMED(ctx, LOMO_OP_SWIGLU, 0, be->swiglu_forward(a->hmlp, a->gate, a->up, (size_t)BT * F));
    if (!out) return;
    model_linear(m, out, a->hmlp, param_index(l, P_WD), F, C);
    LOMO_TIMED(ctx, LOMO_OP_RESIDUAL, 0, be->add_inplace(out, a->xmid, (size_t)BT * C));
}

static lomo_status check_inputs(lomo_model *m, const int32_t *tokens, const int32_t *targets, int n) {
    int V = m->cfg.vocab_size;
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= V)
            return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG, "tokens[%d] = %d is outside the vocabulary [0, %d)",
                             i, tokens[i], V);
        if (targets && targets[i] != -100 && (targets[i] < 0 || targets[i] >= V))
            return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG,
                             "targets[%d] = %d is outside the vocabulary [0, %d) and not -100", i,
                             targets[i], V);
    }
    return LOMO_OK;
}

void model_head_logits(lomo_model *m, int v0, int n) {
    model_linear_block(m, m->logits, m->lnf, param_head(m), v0, m->head_rows, m->cfg.hidden_size, n);
    m->logits_valid = n == m->cfg.vocab_size;
}

void model_head_to_host(lomo_model *m, float *out, const float *inp, int rows) {
    size_t V = (size_t)m->cfg.vocab_size, per = model_logits_floats(m, (size_t)m->B * m->T) / V;
    for (int r0 = 0; r0 < rows; r0 += (int)per) {
        int n = rows - r0 < (int)per ? rows - r0 : (int)per;
        model_linear_block(m, m->logits, inp + (size_t)r0 * m->cfg.hidden_size, param_head(m), 0, n,
                           m->cfg.hidden_size, (int)V);
        LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, m->be->to_host(out + (size_t)r0 * V, m->logits, (size_t)n * V * sizeof(float)));
    }
    m->logits_valid = 0;
}

/*
 * The head's rows for targets [BT], and the targets to the device. When
 * `gather` allows and at least a sixteenth of the rows have no target (-100)
 * while some have one, those that do are gathered to the front of lnf
 * (through the idle backward scratch: a gather in place would race), their
 * targets to the front of m->targets, and head_from is set for backward.
 * Otherwise every row, targets as given. Returns the rows, or -1 when out of
 * host memory. The sixteenth: the gather and its undoing copy the kept rows
 * three times, which pays when it saves the head (V products a row, three
 * times) on more than a few rows in a hundred; language modelling with a
 * padded last position, say, stays on the plain path.
 */
static int select_head_rows(lomo_model *m, const int32_t *targets, int BT, int gather) {
    const lomo_backend *be = m->be;
    size_t C = (size_t)m->cfg.hidden_size;
    int n = 0;
    for (int i = 0; gather && i < BT; i++)
        if (targets[i] != -100) m->head_pos_host[n++] = i;
    if (n == 0 || BT - n < BT / 16 || n == BT) {
        LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->to_device(m->targets, targets, (size_t)BT * sizeof(int32_t)));
        return BT;
    }
    int32_t *kept = malloc((size_t)(n + BT) * sizeof *kept), *from = kept + n;
    if (!kept) return -1;
    for (int i = 0, k = 0; i < BT; i++) {
        from[i] = targets[i] != -100 ? k : n;
        if (targets[i] != -100) kept[k++] = targets[i];
    }
    LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->to_device(m->targets, kept, (size_t)n * sizeof(int32_t)));
    LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->to_device(m->head_from, from, (size_t)BT * sizeof(int32_t)));
    free(kept);
    LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->to_device(m->head_pos, m->head_pos_host, (size_t)n * sizeof(int32_t)));
    LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->embedding_forward(m->g.dres, m->head_pos, m->lnf, LOMO_F32, n, (int)C));
    LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->memcpy_d2d(m->lnf, m->g.dres, (size_t)n * C * sizeof(float)));
    return n;
}

/* Embedding, blocks and the final norm over tokens [B, T] (targets checked too): m->lnf holds the
 * final norm's output. */
lomo_status model_forward_trunk(lomo_model *m, const int32_t *tokens, const int32_t *targets, int B, int T) {
    lomo_status st = lomo_model_reserve(m, B, T);
    if (st) return st;
    st = check_inputs(m, tokens, targets, B * T);
    if (st) return st;
    lomo_ctx_apply_threads(m->ctx);

    const lomo_backend *be = m->be;
    const lomo_llama_config *c = &m->cfg;
    int BT = B * T, C = c->hidden_size, L = c->num_hidden_layers;
    m->B = B;
    m->T = T;
    model_layout_for(m, B, T);
    LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->to_device(m->tokens, tokens, (size_t)BT * sizeof(int32_t)));
    memcpy(m->tokens_host, tokens, (size_t)BT * sizeof(int32_t));

    LOMO_TIMED(m->ctx, LOMO_OP_EMBEDDING, 0,
               be->embedding_forward(m->x[0], m->tokens, param_ptr(m, 0), m->dtype, BT, C));
    for (int l = 0; l < L; l++) {
        layer_acts a = model_layer_acts(m, l);
        model_block_forward(m, l, &a, m->x[l], m->x[l + 1]);
    }
    m->acts_layer = m->checkpointing ? L - 1 : -1;
    const float *lnfw = model_norm_weight(m, param_norm(m));
    LOMO_TIMED(m->ctx, LOMO_OP_RMSNORM, 0,
               be->rmsnorm_forward(m->lnf, m->rstdf, m->x[L], lnfw, BT, C, (float)c->rms_norm_eps));
    m->rec_valid = 0;
    m->logits_valid = 0;
    m->head_rows = BT;
    m->have_targets = 0;
    m->have_forward = 1;
    return LOMO_OK;
}

lomo_status lomo_model_forward(lomo_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                               float *loss, float *logits_out) {
    if (!m) return LOMO_ERR_INVALID_ARG;
    if (!tokens) return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG, "forward: tokens is NULL");
    if (targets && !loss) return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG, "forward: targets given but loss is NULL");
    lomo_status st = model_forward_trunk(m, tokens, targets, B, T);
    if (st) return st;
    const lomo_backend *be = m->be;
    const lomo_llama_config *c = &m->cfg;
    int BT = B * T;
    /* the head on the rows with a target only, unless every row's logits are asked for */
    if (targets && (m->head_rows = select_head_rows(m, targets, BT, !logits_out)) < 0)
        return lomo_fail(m->ctx, LOMO_ERR_OOM, "out of memory: the LM head's rows");
    int N = m->head_rows, V = c->vocab_size, chunk = model_logits_chunk(m);
    /* every row's logits: with the whole vocabulary at once they stay for the loss (and backward) */
    if (logits_out) model_head_to_host(m, logits_out, m->lnf, BT);

    m->have_targets = targets != NULL;
    if (!targets) return lomo_device_check(m->ctx);

    /* the loss a chunk of the vocabulary at a time (one chunk: the whole, kept for backward) */
    for (int v0 = 0; v0 < V; v0 += chunk) {
        int n = V - v0 < chunk ? V - v0 : chunk;
        if (!(logits_out && chunk == V)) model_head_logits(m, v0, n);
        LOMO_TIMED(m->ctx, LOMO_OP_CROSSENTROPY, 0,
                   be->crossentropy_forward(m->losses, m->lse, m->logits, m->targets, N, n, v0, V));
    }
    m->logits_valid = chunk == V;
    float *host = malloc((size_t)N * sizeof(float));
    if (!host) return lomo_fail(m->ctx, LOMO_ERR_OOM, "out of memory: loss readback");
    LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->to_host(host, m->losses, (size_t)N * sizeof(float)));
    /* summed in position order, in double: the loss is bitwise reproducible */
    double sum = 0.0;
    int n = 0;
    for (int i = 0; i < N; i++) {
        if (targets[N < BT ? m->head_pos_host[i] : i] == -100) continue;
        sum += host[i];
        n++;
    }
    free(host);
    if ((st = lomo_device_check(m->ctx))) return st;
    m->n_valid = n;
    m->loss = n ? (float)(sum / n) : 0.0f;
    *loss = m->loss;
    return LOMO_OK;
}

lomo_status lomo_model_next_logits(lomo_model *m, const int32_t *tokens, int B, int T, const int32_t *lengths,
                                   float *logits_out) {
    if (!m) return LOMO_ERR_INVALID_ARG;
    if (!tokens || !logits_out) return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG, "next_logits: tokens or logits_out is NULL");
    for (int b = 0; lengths && b < B; b++)
        if (lengths[b] < 1 || lengths[b] > T)
            return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG, "next_logits: lengths[%d] = %d is outside 1..%d", b,
                             lengths[b], T);
    lomo_status st = model_forward_trunk(m, tokens, NULL, B, T);
    if (st) return st;
    model_head_on_last(m, lengths, logits_out);
    return lomo_device_check(m->ctx);
}

void model_head_on_last(lomo_model *m, const int32_t *lengths, float *logits_out) {
    const lomo_backend *be = m->be;
    int B = m->B, T = m->T;
    size_t C = (size_t)m->cfg.hidden_size;
    /* each row's last position, gathered into the idle backward scratch, then the head on B rows */
    float *last = m->g.dln;
    for (int b = 0; b < B; b++) {
        size_t t = (size_t)(lengths ? lengths[b] : T) - 1;
        LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->memcpy_d2d(last + b * C, m->lnf + ((size_t)b * T + t) * C, C * sizeof(float)));
    }
    model_head_to_host(m, logits_out, last, B);
}

lomo_status lomo_model_token_logprobs(lomo_model *m, float *out, size_t n) {
    if (!m || !out) return LOMO_ERR_INVALID_ARG;
    if (!m->have_forward || !m->have_targets)
        return lomo_fail(m->ctx, LOMO_ERR_STATE, "token_logprobs: needs a forward with targets first");
    size_t BT = (size_t)m->B * m->T;
    if (n != BT) return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG, "token_logprobs: %zu values for %zu tokens", n, BT);
    /* forward kept each head row's loss, lse - z[target] (0 for ignored rows) */
    size_t N = (size_t)m->head_rows;
    m->be->to_host(out, m->losses, N * sizeof(float));
    for (size_t i = 0; i < N; i++) out[i] = out[i] == 0.0f ? 0.0f : -out[i];
    if (N == BT) return LOMO_OK;
    /* the head ran on the target rows only: spread them to their positions, back to front */
    memset(out + N, 0, (BT - N) * sizeof *out);
    for (size_t i = N; i-- > 0;) {
        size_t to = (size_t)m->head_pos_host[i];
        float v = out[i];
        out[i] = 0.0f;
        out[to] = v;
    }
    return LOMO_OK;
}
