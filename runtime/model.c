/* model.c: the LLaMA model's memory: parameter layout, init, activations. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

static void add_param(lomo_model *m, const char *name, lomo_param_kind kind, int64_t d0, int64_t d1,
                      size_t *offset) {
    param_desc *p = &m->params[m->nparams++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->kind = kind;
    p->ndim = d1 ? 2 : 1;
    p->shape[0] = d0;
    p->shape[1] = d1;
    p->numel = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    p->offset = *offset;
    /* keep every tensor 64-byte aligned inside the one allocation */
    *offset += (p->numel * lomo_dtype_size(m->dtype) + 63) & ~(size_t)63;
}

static void layout_params(lomo_model *m, size_t *total) {
    const lomo_llama_config *c = &m->cfg;
    int64_t C = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
    int64_t qd = (int64_t)c->num_attention_heads * m->head_dim;
    int64_t kvd = (int64_t)c->num_key_value_heads * m->head_dim;
    char name[96];
    size_t off = 0;
    add_param(m, "model.embed_tokens.weight", LOMO_PARAM_EMBEDDING, V, C, &off);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        static const char *names[P_PER_LAYER] = {
            "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
            "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
            "mlp.down_proj"};
        int64_t shapes[P_PER_LAYER][2] = {{C, 0}, {qd, C}, {kvd, C}, {kvd, C}, {C, qd},
                                          {C, 0}, {F, C}, {F, C}, {C, F}};
        for (int k = 0; k < P_PER_LAYER; k++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, names[k]);
            add_param(m, name, shapes[k][1] ? LOMO_PARAM_LINEAR : LOMO_PARAM_NORM, shapes[k][0],
                      shapes[k][1], &off);
        }
    }
    add_param(m, "model.norm.weight", LOMO_PARAM_NORM, C, 0, &off);
    if (!c->tie_word_embeddings) add_param(m, "lm_head.weight", LOMO_PARAM_LINEAR, V, C, &off);
    *total = off;
}

/* splitmix64: a small, well-mixed generator so init depends only on (seed, tensor). */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return ((splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

/* Norms start at 1; matrices ~ N(0, 0.02^2), as HF's LLaMA init does. Written in
 * chunks so init never holds an f32 copy of a large tensor. */
static void init_params(lomo_model *m, uint64_t seed) {
    enum { CHUNK = 4096 };
    float buf[CHUNK];
    for (int p = 0; p < m->nparams; p++) {
        const param_desc *d = &m->params[p];
        uint64_t s = seed * 0x100000001b3ull + (uint64_t)p * 0x9e3779b97f4a7c15ull;
        char *dst = param_ptr(m, p);
        for (size_t i0 = 0; i0 < d->numel; i0 += CHUNK) {
            size_t n = d->numel - i0 < CHUNK ? d->numel - i0 : CHUNK;
            for (size_t i = 0; i < n; i += 2) {
                /* Box-Muller gives two normals per draw */
                double u1 = uniform01(&s), u2 = uniform01(&s);
                double r = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
                buf[i] = d->kind == LOMO_PARAM_NORM ? 1.0f : (float)(0.02 * r * cos(th));
                if (i + 1 < n) buf[i + 1] = d->kind == LOMO_PARAM_NORM ? 1.0f : (float)(0.02 * r * sin(th));
            }
            m->be->upload_f32(dst + i0 * lomo_dtype_size(m->dtype), m->dtype, buf, n);
        }
    }
}

/* HF's rotary frequencies (modeling_rope_utils: default, linear, llama3), in double. */
void rope_inv_freq(double *inv_freq, const lomo_llama_config *c, int hd) {
    const lomo_rope_scaling *rs = &c->rope_scaling;
    for (int j = 0; j < hd / 2; j++) {
        double f = pow(c->rope_theta, -2.0 * j / hd);
        if (rs->rope_type == LOMO_ROPE_LINEAR) {
            f /= rs->factor;
        } else if (rs->rope_type == LOMO_ROPE_LLAMA3) {
            /* wavelengths beyond the old context divide by factor, those under
             * old / high_freq_factor stay, the band between blends linearly in old / wavelength */
            double old = rs->original_max_position_embeddings, wavelen = 2 * 3.14159265358979323846 / f;
            if (wavelen > old / rs->low_freq_factor) {
                f /= rs->factor;
            } else if (wavelen >= old / rs->high_freq_factor) {
                double s = (old / wavelen - rs->low_freq_factor) / (rs->high_freq_factor - rs->low_freq_factor);
                f = (1 - s) * f / rs->factor + s * f;
            }
        }
        inv_freq[j] = f;
    }
}

/* cos and sin [npos, hd/2] of position t times each frequency */
static void rope_tables(float *cosv, float *sinv, const double *inv_freq, int npos, int hd) {
    int half = hd / 2;
    for (int t = 0; t < npos; t++) {
        for (int j = 0; j < half; j++) {
            cosv[(size_t)t * half + j] = (float)cos(t * inv_freq[j]);
            sinv[(size_t)t * half + j] = (float)sin(t * inv_freq[j]);
        }
    }
}

lomo_status lomo_model_create(lomo_model **out, lomo_ctx *ctx, const lomo_llama_config *cfg,
                              const lomo_model_options *opts) {
    return model_create(out, ctx, cfg, opts, 1);
}

static lomo_status check_checkpointing(lomo_ctx *ctx, int mode, const char *where) {
    if ((unsigned)mode <= LOMO_CHECKPOINT_KEEP_ATTENTION) return LOMO_OK;
    return lomo_fail(ctx, LOMO_ERR_INVALID_ARG,
                     "%s: checkpointing: unknown value %d (0 off, 1 blocks, 2 blocks keeping attention)", where, mode);
}

static lomo_status check_logits_chunk(lomo_ctx *ctx, int rows, const char *where) {
    if (rows >= 0) return LOMO_OK;
    return lomo_fail(ctx, LOMO_ERR_INVALID_ARG,
                     "%s: logits_chunk: %d is negative (0: automatic, else vocabulary rows a chunk)", where, rows);
}

/* Chunks are whole multiples of 16 rows, so each chunk's weight rows start aligned for the GEMMs. */
int model_logits_chunk(const lomo_model *m) {
    int V = m->cfg.vocab_size, k = m->logits_chunk_opt;
    if (k == 0) k = m->checkpointing ? LOMO_LOGITS_CHUNK : V;
    if (k >= V) return V;
    k = (k + 15) / 16 * 16;
    return k < V ? k : V;
}

size_t model_logits_floats(const lomo_model *m, size_t BT) {
    size_t V = (size_t)m->cfg.vocab_size, n = BT * (size_t)model_logits_chunk(m);
    return n > V ? n : V;
}

lomo_status model_create(lomo_model **out, lomo_ctx *ctx, const lomo_llama_config *cfg,
                         const lomo_model_options *opts, int init) {
    if (!out || !ctx) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "lomo_model_create: NULL argument");
    *out = NULL;
    lomo_status st = lomo_config_validate(ctx, cfg);
    if (st) return st;
    lomo_model_options o = opts ? *opts : (lomo_model_options){0};
    if ((unsigned)o.dtype > LOMO_F16)
        return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "model options: dtype: unknown value %d", (int)o.dtype);
    if ((st = check_checkpointing(ctx, o.checkpointing, "model options"))) return st;
    if ((st = check_logits_chunk(ctx, o.logits_chunk, "model options"))) return st;

    lomo_model *m = calloc(1, sizeof *m);
    if (!m) return lomo_fail(ctx, LOMO_ERR_OOM, "out of memory: model struct");
    m->ctx = ctx;
    m->be = ctx->be;
    m->cfg = *cfg;
    m->dtype = o.dtype;
    m->checkpointing = o.checkpointing;
    m->logits_chunk_opt = o.logits_chunk;
    m->head_dim = cfg->hidden_size / cfg->num_attention_heads;
    m->acts_layer = -1;
    int max_params = 3 + cfg->num_hidden_layers * P_PER_LAYER;
    m->params = calloc((size_t)max_params, sizeof *m->params);
    if (!m->params) {
        free(m);
        return lomo_fail(ctx, LOMO_ERR_OOM, "out of memory: parameter table");
    }
    layout_params(m, &m->weights_bytes);
    m->weights = lomo_dev_alloc(ctx, LOMO_MEM_WEIGHTS, m->weights_bytes, "model weights");
    if (!m->weights) goto oom;

    /* the widening buffers and the gate; the RoPE tables come with the first forward's positions */
    int C = cfg->hidden_size;
    size_t wbuf_n = model_wbuf_floats(m);
    m->const_bytes = model_const_bytes(m);
    float *cb = lomo_dev_alloc(ctx, LOMO_MEM_SCRATCH, m->const_bytes, "f32 weight buffer and update gate");
    if (!cb) goto oom;
    m->normw = cb;
    m->wbuf = wbuf_n ? m->normw + C : NULL;
    m->gate = (int *)(m->normw + C + wbuf_n);
    if (!(m->inv_freq = malloc((size_t)m->head_dim / 2 * sizeof(double)))) goto oom;
    rope_inv_freq(m->inv_freq, cfg, m->head_dim);

    if (init) init_params(m, o.seed);
    *out = m;
    return LOMO_OK;
oom:
    st = LOMO_ERR_OOM;
    /* keep the allocator's message (it names what did not fit); a host-side failure has none */
    if (!strstr(ctx->err, "out of ")) lomo_fail(ctx, st, "out of memory creating the model");
    lomo_model_destroy(m);
    return st;
}

static void free_activations(lomo_model *m) {
    lomo_dev_free(m->ctx, LOMO_MEM_ACTIVATIONS, m->act_mem, m->act_bytes);
    lomo_dev_free(m->ctx, LOMO_MEM_ACTIVATIONS, m->rec, m->rec_bytes);
    m->rec = NULL;
    m->rec_bytes = 0;
    m->rec_BT = 0;
    m->rec_valid = 0;
    free(m->tokens_host);
    free(m->head_pos_host);
    free(m->erows_host);
    m->tokens_host = m->head_pos_host = m->erows_host = NULL;
    free(m->x);
    free(m->la);
    free(m->kept);
    m->act_mem = NULL;
    m->x = NULL;
    m->la = NULL;
    m->kept = NULL;
    m->act_bytes = 0;
    m->B_cap = m->T_cap = 0;
    m->have_forward = 0;
    m->acts_layer = -1;
}

void lomo_model_destroy(lomo_model *m) {
    if (!m) return;
    free_activations(m);
    model_kv_free(m);
    lomo_dev_free(m->ctx, LOMO_MEM_GRADIENTS, m->normgrad, m->gradbuf_bytes);
    free(m->tokens_host);
    lomo_dev_free(m->ctx, LOMO_MEM_SCRATCH, m->normw, m->const_bytes);
    lomo_dev_free(m->ctx, LOMO_MEM_SCRATCH, m->rope_cos, model_rope_bytes(m, m->rope_cap));
    free(m->inv_freq);
    lomo_dev_free(m->ctx, LOMO_MEM_WEIGHTS, m->weights, m->weights_bytes);
    free(m->params);
    free(m);
}

/* Carves buffers out of one allocation: a first pass with base NULL only counts. */
typedef struct carver { char *base; size_t off; } carver;
static float *carve(carver *cv, size_t nfloats) {
    float *p = cv->base ? (float *)(cv->base + cv->off) : NULL;
    cv->off += (nfloats * sizeof(float) + 63) & ~(size_t)63;
    return p;
}

static void carve_activations(lomo_model *m, carver *cv, int B, int T) {
    const lomo_llama_config *c = &m->cfg;
    size_t BT = (size_t)B * T, C = c->hidden_size, F = c->intermediate_size;
    size_t qd = (size_t)c->num_attention_heads * m->head_dim;
    size_t kvd = (size_t)c->num_key_value_heads * m->head_dim;
    size_t attn = m->be->attention_saved_floats(B, T, c->num_attention_heads);
    size_t attn_scratch = m->be->attention_scratch_floats(B, T, c->num_attention_heads);
    int L = c->num_hidden_layers, nsets = m->checkpointing ? 1 : L;
    for (int l = 0; l <= L; l++) {
        float *p = carve(cv, BT * C);
        if (m->x) m->x[l] = p;
    }
    for (int l = 0; l < nsets; l++) {
        layer_acts a = {0};
        a.ln1 = carve(cv, BT * C);
        a.rstd1 = carve(cv, BT);
        a.q = carve(cv, BT * qd);
        a.k = carve(cv, BT * kvd);
        a.v = carve(cv, BT * kvd);
        a.att = carve(cv, attn);
        a.atty = carve(cv, BT * qd);
        a.xmid = carve(cv, BT * C);
        a.ln2 = carve(cv, BT * C);
        a.rstd2 = carve(cv, BT);
        a.gate = carve(cv, BT * F);
        a.up = carve(cv, BT * F);
        a.hmlp = carve(cv, BT * F);
        if (m->la) m->la[l] = a;
    }
    /* the last block's attention stays in la[0]: no other block's recompute writes it there */
    if (m->checkpointing == LOMO_CHECKPOINT_KEEP_ATTENTION)
        for (int l = 0; l < L - 1; l++) {
            kept_attention k = {.att = carve(cv, attn), .atty = carve(cv, BT * qd)};
            if (m->kept) m->kept[l] = k;
        }
    m->lnf = carve(cv, BT * C);
    m->rstdf = carve(cv, BT);
    m->logits = carve(cv, model_logits_floats(m, BT));
    m->losses = carve(cv, BT);
    m->lse = carve(cv, BT);
    m->tokens = (int32_t *)carve(cv, BT);
    m->targets = (int32_t *)carve(cv, BT);
    m->head_pos = (int32_t *)carve(cv, BT);
    m->head_from = (int32_t *)carve(cv, BT);
    block_grads *g = &m->g;
    g->dres = carve(cv, BT * C);
    g->dln = carve(cv, BT * C);
    g->dq = carve(cv, BT * qd);
    g->dk = carve(cv, BT * kvd);
    g->dv = carve(cv, BT * kvd);
    g->datt = carve(cv, attn_scratch);
    g->datty = carve(cv, BT * qd);
    g->dh = carve(cv, BT * F);
    g->dup = carve(cv, BT * F);
}

size_t model_activation_bytes(lomo_model *m, int B, int T) {
    lomo_model tmp = *m;   /* carving with no base only counts, but it writes the pointers */
    tmp.x = NULL;
    tmp.la = NULL;
    tmp.kept = NULL;
    carver cv = {0};
    carve_activations(&tmp, &cv, B, T);
    return cv.off;
}

size_t model_rope_bytes(const lomo_model *m, int npos) {
    return 2 * (size_t)npos * (size_t)(m->head_dim / 2) * sizeof(float);
}

lomo_status model_rope_reserve(lomo_model *m, int npos) {
    if (npos <= m->rope_cap) return LOMO_OK;
    /* the old tables go first: the new ones are computed whole, and the two never coexist */
    lomo_dev_free(m->ctx, LOMO_MEM_SCRATCH, m->rope_cos, model_rope_bytes(m, m->rope_cap));
    m->rope_cos = m->rope_sin = NULL;
    m->rope_cap = 0;
    size_t bytes = model_rope_bytes(m, npos), n = bytes / (2 * sizeof(float));
    float *dev = lomo_dev_alloc(m->ctx, LOMO_MEM_SCRATCH, bytes, "rope tables");
    float *host = dev ? malloc(bytes) : NULL;
    if (!host) {
        lomo_dev_free(m->ctx, LOMO_MEM_SCRATCH, dev, bytes);
        if (dev) lomo_fail(m->ctx, LOMO_ERR_OOM, "out of memory: the RoPE tables of %d positions on the host", npos);
        return LOMO_ERR_OOM;   /* the allocator's message names what did not fit */
    }
    rope_tables(host, host + n, m->inv_freq, npos, m->head_dim);
    m->be->to_device(dev, host, bytes);
    free(host);
    m->rope_cos = dev;
    m->rope_sin = dev + n;
    m->rope_cap = npos;
    return LOMO_OK;
}

/* backend.h wbuf_floats: a block of rows of any matrix, never more than the largest one */
size_t model_wbuf_floats(const lomo_model *m) {
    if (m->dtype == LOMO_F32 || !m->be->wbuf_floats) return 0;
    size_t largest = 0, block = m->be->wbuf_floats;
    for (int p = 0; p < m->nparams; p++) {
        const param_desc *d = &m->params[p];
        if (d->kind == LOMO_PARAM_NORM) continue;
        if (d->numel > largest) largest = d->numel;
        if ((size_t)d->shape[1] > block) block = (size_t)d->shape[1];
    }
    return block < largest ? block : largest;
}

size_t model_const_bytes(const lomo_model *m) {
    return (model_wbuf_floats(m) + (size_t)m->cfg.hidden_size + MODEL_GATE_FLOATS) * sizeof(float);
}

lomo_status model_shape(lomo_model *m, lomo_ctx *ctx, const lomo_backend *be, const lomo_llama_config *cfg,
                        const lomo_model_options *opts) {
    memset(m, 0, sizeof *m);
    lomo_status st = config_validate_for(ctx, be, cfg);
    if (st) return st;
    lomo_model_options o = opts ? *opts : (lomo_model_options){0};
    m->ctx = ctx;
    m->be = be;
    m->cfg = *cfg;
    m->dtype = o.dtype;
    if ((st = check_checkpointing(ctx, o.checkpointing, "plan"))) return st;
    if ((st = check_logits_chunk(ctx, o.logits_chunk, "plan"))) return st;
    m->checkpointing = o.checkpointing;
    m->logits_chunk_opt = o.logits_chunk;
    m->head_dim = cfg->hidden_size / cfg->num_attention_heads;
    m->params = calloc((size_t)(3 + cfg->num_hidden_layers * P_PER_LAYER), sizeof *m->params);
    if (!m->params) return lomo_fail(ctx, LOMO_ERR_OOM, "out of memory: parameter table");
    layout_params(m, &m->weights_bytes);
    return LOMO_OK;
}

lomo_status lomo_model_reserve(lomo_model *m, int B, int T) {
    if (!m) return LOMO_ERR_INVALID_ARG;
    if (B <= 0 || T <= 0)
        return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG, "batch %d x seq %d: both must be positive", B, T);
    if (T > m->cfg.max_position_embeddings)
        return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG, "seq %d exceeds max_position_embeddings %d", T,
                         m->cfg.max_position_embeddings);
    if (B <= m->B_cap && T <= m->T_cap) return LOMO_OK;
    int nB = B > m->B_cap ? B : m->B_cap, nT = T > m->T_cap ? T : m->T_cap;
    lomo_status st = model_rope_reserve(m, nT);
    if (st) return st;
    free_activations(m);
    carver cv = {0};
    carve_activations(m, &cv, nB, nT);
    int L = m->cfg.num_hidden_layers;
    m->x = calloc((size_t)L + 1, sizeof *m->x);
    m->la = calloc(m->checkpointing ? 1 : (size_t)L, sizeof *m->la);
    int keep = m->checkpointing == LOMO_CHECKPOINT_KEEP_ATTENTION;
    if (keep) m->kept = calloc((size_t)L, sizeof *m->kept);
    m->act_mem = lomo_dev_alloc(m->ctx, LOMO_MEM_ACTIVATIONS, cv.off, "activations");
    m->tokens_host = malloc((size_t)nB * nT * sizeof(int32_t));
    m->head_pos_host = malloc((size_t)nB * nT * sizeof(int32_t));
    m->erows_host = malloc((size_t)nB * nT * sizeof(int32_t));
    if (!m->x || !m->la || (keep && !m->kept) || !m->act_mem || !m->tokens_host || !m->head_pos_host ||
        !m->erows_host) {
        size_t need = cv.off;
        m->act_bytes = m->act_mem ? need : 0;
        free_activations(m);
        return lomo_fail(m->ctx, LOMO_ERR_OOM, "out of memory: activations for batch %d x seq %d need %zu bytes",
                         nB, nT, need);
    }
    m->act_bytes = cv.off;
    m->B_cap = nB;
    m->T_cap = nT;
    return LOMO_OK;
}

/* Activations are laid out for the (B, T) of each call; carving again is just arithmetic. */
void model_layout_for(lomo_model *m, int B, int T) {
    carver cv = {m->act_mem, 0};
    carve_activations(m, &cv, B, T);
}

lomo_status lomo_model_set_checkpointing(lomo_model *m, int mode) {
    if (!m) return LOMO_ERR_INVALID_ARG;
    lomo_status st = check_checkpointing(m->ctx, mode, "set_checkpointing");
    if (st) return st;
    if (mode == m->checkpointing) return LOMO_OK;
    free_activations(m);
    m->checkpointing = mode;
    return LOMO_OK;
}

/*
 * The gradient buffer, made on the first backward so inference never pays for
 * it, and remade only when its layout or row capacity must change; the tied
 * head's rows (hrows), once asked for, stay, so passes that alternate do not
 * remake it. Sparse: normgrad, the rows [BT, C], hrows [BT, C] if kept, then
 * erows, emap and ecols [BT] each.
 */
lomo_status model_reserve_gradbuf(lomo_model *m, int dense, int hrows, int hchunk) {
    int BT = m->B * m->T;
    if (m->gradbuf && m->gradbuf_dense == dense && hchunk <= m->hchunk_rows &&
        (dense || (BT <= m->gradbuf_rows && (m->hrows || !hrows))))
        return LOMO_OK;
    hrows = !dense && (hrows || (m->hrows && !m->gradbuf_dense));
    if (hchunk < m->hchunk_rows) hchunk = m->hchunk_rows;
    lomo_dev_free(m->ctx, LOMO_MEM_GRADIENTS, m->normgrad, m->gradbuf_bytes);
    m->normgrad = m->gradbuf = m->hrows = m->hchunk = NULL;
    m->erows = m->emap = m->ecols = NULL;
    size_t C = (size_t)m->cfg.hidden_size, rows = dense ? (size_t)m->cfg.vocab_size : (size_t)BT;
    size_t fl = (C + 15) & ~(size_t)15, grads = ((hrows ? 2 : 1) * rows + (size_t)hchunk) * C;
    m->gradbuf_bytes = (fl + grads) * sizeof(float) + (dense ? 0 : 3 * rows * sizeof(int32_t));
    m->normgrad = lomo_dev_alloc(m->ctx, LOMO_MEM_GRADIENTS, m->gradbuf_bytes,
                                 dense ? "dense embedding gradient" : "embedding gradient rows");
    if (!m->normgrad) {
        m->hchunk_rows = 0;
        return LOMO_ERR_OOM;
    }
    m->gradbuf = m->normgrad + fl;
    m->hrows = hrows ? m->gradbuf + rows * C : NULL;
    m->hchunk = hchunk ? m->gradbuf + (hrows ? 2 : 1) * rows * C : NULL;
    if (!dense) {
        m->erows = (int32_t *)(m->gradbuf + grads);
        m->emap = m->erows + rows;
        m->ecols = m->emap + rows;
    }
    m->gradbuf_dense = dense;
    m->gradbuf_rows = (int)rows;
    m->hchunk_rows = hchunk;
    return LOMO_OK;
}

const float *model_norm_weight(lomo_model *m, int p) {
    if (m->dtype == LOMO_F32) return param_ptr(m, p);
    m->be->to_f32(m->normw, param_ptr(m, p), m->dtype, m->params[p].numel);
    return m->normw;
}

const lomo_llama_config *lomo_model_config(const lomo_model *m) { return &m->cfg; }
int lomo_model_num_params(const lomo_model *m) { return m->nparams; }

size_t lomo_model_num_weights(const lomo_model *m) {
    size_t n = 0;
    for (int p = 0; p < m->nparams; p++) n += m->params[p].numel;
    return n;
}

lomo_status lomo_model_param(const lomo_model *m, int index, lomo_param_info *out) {
    if (!m || !out) return LOMO_ERR_INVALID_ARG;
    if (index < 0 || index >= m->nparams)
        return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG, "parameter index %d out of range [0, %d)", index,
                         m->nparams);
    const param_desc *d = &m->params[index];
    out->name = d->name;
    out->kind = d->kind;
    out->ndim = d->ndim;
    out->shape[0] = d->shape[0];
    out->shape[1] = d->shape[1];
    out->numel = d->numel;
    out->dtype = m->dtype;
    out->device = m->be->name;
    out->data = param_ptr(m, index);
    return LOMO_OK;
}

int lomo_model_find_param(const lomo_model *m, const char *name) {
    if (!m || !name) return -1;
    for (int p = 0; p < m->nparams; p++)
        if (strcmp(m->params[p].name, name) == 0) return p;
    return -1;
}

static lomo_status check_param_io(const lomo_model *m, int index, const void *buf, size_t n) {
    if (!buf) return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG, "parameter buffer is NULL");
    if (index < 0 || index >= m->nparams)
        return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG, "parameter index %d out of range [0, %d)", index,
                         m->nparams);
    if (n != m->params[index].numel)
        return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG, "%s: expected %zu values, got %zu",
                         m->params[index].name, m->params[index].numel, n);
    return LOMO_OK;
}

lomo_status lomo_model_set_param_f32(lomo_model *m, int index, const float *src, size_t n) {
    if (!m) return LOMO_ERR_INVALID_ARG;
    lomo_status st = check_param_io(m, index, src, n);
    if (st) return st;
    m->be->upload_f32(param_ptr(m, index), m->dtype, src, n);
    m->have_forward = 0;
    m->rec_valid = 0;   /* saved activations (and the decoding cache) no longer match the weights */
    m->weights_version++;
    return LOMO_OK;
}

void model_param_write_f32(lomo_model *m, int p, size_t first, const float *src, size_t n) {
    m->be->upload_f32((char *)param_ptr(m, p) + first * lomo_dtype_size(m->dtype), m->dtype, src, n);
    m->have_forward = 0;
    m->rec_valid = 0;
    m->weights_version++;
}

lomo_status lomo_model_get_param_f32(const lomo_model *m, int index, float *dst, size_t n) {
    if (!m) return LOMO_ERR_INVALID_ARG;
    lomo_status st = check_param_io(m, index, dst, n);
    if (st) return st;
    m->be->download_f32(dst, param_ptr(m, index), m->dtype, n);
    return LOMO_OK;
}
