/*
 * decode.c: incremental decoding with a key/value cache. Generating a token
 * then costs one position's forward instead of the whole prefix's: the
 * blocks append each new position's keys and values (after RoPE) to the
 * cache and attend over it (backend attention_cached).
 */
#include <string.h>
#include "model.h"

enum { KV_MIN_CAP = 256 };   /* positions first allocated; doubled as needed */

static size_t kv_floats_per_pos(const lomo_model *m) {
    return (size_t)m->cfg.num_key_value_heads * (size_t)m->head_dim;
}

/* layer l's keys (which = 0) or values (1) [B, cap, NKV*hd] in a cache of B rows and cap positions */
static float *kv_part(const lomo_model *m, float *mem, int B, int cap, int l, int which) {
    return mem + (size_t)(2 * l + which) * (size_t)B * cap * kv_floats_per_pos(m);
}

void model_kv_free(lomo_model *m) {
    lomo_dev_free(m->ctx, LOMO_MEM_ACTIVATIONS, m->kv.mem, m->kv.bytes);
    memset(&m->kv, 0, sizeof m->kv);
}

void lomo_model_decode_reset(lomo_model *m) {
    if (m) model_kv_free(m);
}

/* Room for positions [0, need) of B rows; the first `keep` positions of each row carry over. */
static lomo_status kv_reserve(lomo_model *m, int B, int need, int keep) {
    kv_cache *kv = &m->kv;
    if (kv->mem && kv->B == B && kv->cap >= need) return LOMO_OK;
    int cap = KV_MIN_CAP, maxp = m->cfg.max_position_embeddings, L = m->cfg.num_hidden_layers;
    while (cap < need) cap *= 2;
    if (cap > maxp) cap = maxp;
    lomo_status st = model_rope_reserve(m, cap);   /* the positions the cache will hold */
    if (st) return st;
    size_t row = kv_floats_per_pos(m), bytes = 2 * (size_t)L * B * cap * row * sizeof(float);
    float *mem = lomo_dev_alloc(m->ctx, LOMO_MEM_ACTIVATIONS, bytes, "key/value cache");
    if (!mem) return LOMO_ERR_OOM;
    for (int l = 0; l < L && keep; l++)
        for (int which = 0; which < 2; which++)
            for (int b = 0; b < B; b++)
                m->be->memcpy_d2d(kv_part(m, mem, B, cap, l, which) + (size_t)b * cap * row,
                                  kv_part(m, kv->mem, B, kv->cap, l, which) + (size_t)b * kv->cap * row,
                                  (size_t)keep * row * sizeof(float));
    uint64_t version = kv->version;
    model_kv_free(m);
    *kv = (kv_cache){.mem = mem, .bytes = bytes, .B = B, .cap = cap, .len = keep, .version = version};
    return LOMO_OK;
}

void model_kv_attention(lomo_model *m, int l, const layer_acts *a) {
    const lomo_backend *be = m->be;
    const lomo_llama_config *c = &m->cfg;
    kv_cache *kv = &m->kv;
    int B = m->B, n = m->T, pos = m->kv_pos, NH = c->num_attention_heads, NKV = c->num_key_value_heads;
    size_t row = kv_floats_per_pos(m);
    float *kc = kv_part(m, kv->mem, kv->B, kv->cap, l, 0), *vc = kv_part(m, kv->mem, kv->B, kv->cap, l, 1);
    for (int b = 0; b < B; b++) {
        size_t dst = ((size_t)b * kv->cap + pos) * row, src = (size_t)b * n * row;
        LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->memcpy_d2d(kc + dst, a->k + src, (size_t)n * row * sizeof(float)));
        LOMO_TIMED(m->ctx, LOMO_OP_COPY, 0, be->memcpy_d2d(vc + dst, a->v + src, (size_t)n * row * sizeof(float)));
    }
    /* per query i, 2 products of 2 * hd flops with each of its pos + i + 1 keys */
    double flops = 4.0 * B * NH * m->head_dim * ((double)n * pos + (double)n * (n + 1) / 2);
    if (pos == 0 && n > 1 && be->prefill_with_forward)   /* a prompt: the same as a forward's attention */
        LOMO_TIMED(m->ctx, LOMO_OP_ATTENTION_FWD, flops,
                   be->attention_forward(a->atty, a->att, a->q, a->k, a->v, B, n, NH, NKV, m->head_dim, m->dtype));
    else
        LOMO_TIMED(m->ctx, LOMO_OP_ATTENTION_FWD, flops,
                   be->attention_cached(a->atty, a->q, kc, vc, B, n, pos, kv->cap, NH, NKV, m->head_dim));
}

lomo_status lomo_model_decode(lomo_model *m, const int32_t *tokens, int B, int n, int pos, float *logits_out) {
    if (!m) return LOMO_ERR_INVALID_ARG;
    lomo_ctx *ctx = m->ctx;
    if (!tokens || !logits_out) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "decode: tokens or logits_out is NULL");
    if (B <= 0 || n <= 0 || pos < 0)
        return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "decode: %d rows of %d tokens at position %d (rows and tokens "
                         "must be positive, the position >= 0)", B, n, pos);
    int maxp = m->cfg.max_position_embeddings;
    if (n > maxp - pos)
        return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "decode: positions %d..%d exceed max_position_embeddings %d",
                         pos, pos + n - 1, maxp);
    kv_cache *kv = &m->kv;
    if (pos > 0 && !(kv->mem && kv->B == B && kv->len == pos))
        return lomo_fail(ctx, LOMO_ERR_STATE,
                         "decode: position %d of %d rows does not continue the cache, which holds %d positions of "
                         "%d rows (start new sequences at position 0)", pos, B, kv->mem ? kv->len : 0,
                         kv->mem ? kv->B : 0);
    if (pos > 0 && kv->version != m->weights_version)
        return lomo_fail(ctx, LOMO_ERR_STATE, "decode: the weights changed since the cache was filled (a training "
                         "step or a parameter write); start again at position 0");
    lomo_status st = kv_reserve(m, B, pos + n, pos);
    if (st) return st;
    kv->len = pos;   /* a failure below leaves the cache continuing from pos */
    m->decoding = 1;
    m->kv_pos = pos;
    st = model_forward_trunk(m, tokens, NULL, B, n);
    m->decoding = 0;
    if (st) return st;
    /* the blocks' activations are those of a decoding step: nothing may run backward from them */
    m->have_forward = 0;
    m->acts_layer = -1;
    model_head_on_last(m, NULL, logits_out);
    if ((st = lomo_device_check(ctx))) return st;
    kv->len = pos + n;
    if (pos == 0) kv->version = m->weights_version;
    return LOMO_OK;
}
