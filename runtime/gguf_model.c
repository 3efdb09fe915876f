/*
 * gguf_model.c: llama-architecture GGUF files as lomo models.
 *
 * Metadata -> lomo_llama_config; tensors -> HF parameters, dequantized row
 * block by row block into the model's storage dtype, so loading never holds
 * an f32 copy of more than a small chunk.
 *
 * GGUF lists dims fastest first: the HF matrix [out, in] is dims [in, out],
 * with the same bytes (row-major [out][in]). llama.cpp's converter permuted
 * the rows of q_proj and k_proj for its interleaved RoPE:
 *   gguf = hf.reshape(n_head, 2, hd/2, in).swapaxes(1, 2).reshape(out, in)
 * so GGUF row h*hd + 2i + s holds HF row h*hd + s*hd/2 + i (s in {0, 1},
 * i < hd/2). The loader puts each row back, giving HF's rotate-half layout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gguf.h"
#include "gguf_dequant.h"
#include "model.h"

static const char *const LAYER_TENSORS[P_PER_LAYER] = {
    [P_LN1] = "attn_norm", [P_WQ] = "attn_q",   [P_WK] = "attn_k",   [P_WV] = "attn_v",  [P_WO] = "attn_output",
    [P_LN2] = "ffn_norm",  [P_WG] = "ffn_gate", [P_WU] = "ffn_up",   [P_WD] = "ffn_down"};

void gguf_llama_tensor_name(const lomo_llama_config *cfg, int p, char *buf, size_t cap, int *rope_heads) {
    int L = cfg->num_hidden_layers;
    *rope_heads = 0;
    if (p == 0) {
        snprintf(buf, cap, "token_embd.weight");
    } else if (p <= L * P_PER_LAYER) {
        int l = (p - 1) / P_PER_LAYER, k = (p - 1) % P_PER_LAYER;
        snprintf(buf, cap, "blk.%d.%s.weight", l, LAYER_TENSORS[k]);
        if (k == P_WQ) *rope_heads = cfg->num_attention_heads;
        if (k == P_WK) *rope_heads = cfg->num_key_value_heads;
    } else if (p == L * P_PER_LAYER + 1) {
        snprintf(buf, cap, "output_norm.weight");
    } else {
        snprintf(buf, cap, "output.weight");
    }
}

/* A metadata integer that must fit an int (the config validator checks the rest). */
static lomo_status meta_int(const gguf_file *f, const char *key, int *out) {
    int32_t v;
    lomo_status st = gguf_get_i32(f, key, &v);
    if (!st) *out = v;
    return st;
}

/* An optional integer key that, when present, must equal want. */
static lomo_status check_optional(const gguf_file *f, const char *key, int want, const char *why) {
    if (!gguf_find(f, key)) return LOMO_OK;
    int v;
    lomo_status st = meta_int(f, key, &v);
    if (st) return st;
    if (v != want)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s: %d, but lomo needs %d (%s)", f->name, key, v, want, why);
    return LOMO_OK;
}

lomo_status gguf_llama_config(const gguf_file *f, lomo_llama_config *out) {
    char *arch = NULL;
    lomo_status st = gguf_get_str(f, "general.architecture", &arch);
    if (st) return st;
    if (strcmp(arch, "llama") != 0) {
        st = lomo_fail(f->ctx, LOMO_ERR_FORMAT,
                       "%s: key general.architecture: \"%.64s\" is not supported (lomo loads llama-architecture models)",
                       f->name, arch);
        free(arch);
        return st;
    }
    free(arch);

    lomo_llama_config c = {0};
    float eps, theta = 10000.0f;
    if ((st = meta_int(f, "llama.embedding_length", &c.hidden_size)) ||
        (st = meta_int(f, "llama.feed_forward_length", &c.intermediate_size)) ||
        (st = meta_int(f, "llama.block_count", &c.num_hidden_layers)) ||
        (st = meta_int(f, "llama.attention.head_count", &c.num_attention_heads)) ||
        (st = meta_int(f, "llama.context_length", &c.max_position_embeddings)) ||
        (st = gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &eps)))
        return st;
    c.num_key_value_heads = c.num_attention_heads;
    if (gguf_find(f, "llama.attention.head_count_kv") &&
        (st = meta_int(f, "llama.attention.head_count_kv", &c.num_key_value_heads)))
        return st;
    if (gguf_find(f, "llama.rope.freq_base") && (st = gguf_get_f32(f, "llama.rope.freq_base", &theta))) return st;
    c.rms_norm_eps = eps;
    c.rope_theta = theta;

    /* what the runtime cannot represent: fail loudly instead of computing something else */
    if (gguf_find(f, "llama.expert_count")) {
        int experts;
        if ((st = meta_int(f, "llama.expert_count", &experts))) return st;
        if (experts > 0)
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key llama.expert_count: %d experts; mixture-of-experts "
                             "models are not supported", f->name, experts);
    }
    if (gguf_find(f, "llama.rope.scaling.type")) {
        char *scaling = NULL;
        if ((st = gguf_get_str(f, "llama.rope.scaling.type", &scaling))) return st;
        if (strcmp(scaling, "linear") == 0) {
            float factor = 0;
            c.rope_scaling.rope_type = LOMO_ROPE_LINEAR;
            st = gguf_get_f32(f, "llama.rope.scaling.factor", &factor);
            c.rope_scaling.factor = factor;
        } else if (strcmp(scaling, "none") != 0) {
            st = lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key llama.rope.scaling.type: \"%.64s\" RoPE scaling is "
                           "not supported (none or linear)", f->name, scaling);
        }
        free(scaling);
        if (st) return st;
    }
    if (c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads == 0) {
        int hd = c.hidden_size / c.num_attention_heads;
        const gguf_tensor *freqs = gguf_find_tensor(f, "rope_freqs.weight");
        if (freqs && c.rope_scaling.rope_type != LOMO_ROPE_DEFAULT)
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor rope_freqs.weight and key llama.rope.scaling.type: "
                             "two RoPE scalings", f->name);
        if (freqs && (st = gguf_rope_freqs_scaling(f, freqs, hd, c.rope_theta, &c.rope_scaling))) return st;
        if ((st = check_optional(f, "llama.rope.dimension_count", hd, "RoPE over the whole head")) ||
            (st = check_optional(f, "llama.attention.key_length", hd, "head size = embedding_length / head_count")) ||
            (st = check_optional(f, "llama.attention.value_length", hd, "head size = embedding_length / head_count")))
            return st;
    }

    /* vocabulary: the embedding's rows define the model; else the token list; else llama.vocab_size */
    const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    const gguf_kv *tokens = gguf_find(f, "tokenizer.ggml.tokens");
    if (emb) {
        if (emb->ne[1] <= 0 || emb->ne[1] > INT32_MAX)
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor token_embd.weight: %lld rows is not a vocabulary size",
                             f->name, (long long)emb->ne[1]);
        c.vocab_size = (int)emb->ne[1];
    } else if (tokens && tokens->type == GGUF_ARRAY) {
        if (tokens->count > INT32_MAX)
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key tokenizer.ggml.tokens: %llu tokens is too many",
                             f->name, (unsigned long long)tokens->count);
        c.vocab_size = (int)tokens->count;
    } else if (gguf_find(f, "llama.vocab_size")) {
        if ((st = meta_int(f, "llama.vocab_size", &c.vocab_size))) return st;
    } else {
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: no vocabulary size: neither tensor token_embd.weight, key "
                         "tokenizer.ggml.tokens nor key llama.vocab_size is present", f->name);
    }
    c.tie_word_embeddings = gguf_find_tensor(f, "output.weight") ? 0 : 1;

    lomo_status vst = lomo_config_validate(f->ctx, &c);
    if (vst) {
        /* keep the validator's field name, add the file */
        char msg[LOMO_ERR_MAX];
        snprintf(msg, sizeof msg, "%s", lomo_last_error(f->ctx));
        return lomo_fail(f->ctx, vst, "%s: %s", f->name, msg);
    }
    *out = c;
    return LOMO_OK;
}

lomo_status lomo_config_load_gguf(lomo_ctx *ctx, const char *gguf_path, lomo_llama_config *out) {
    if (!ctx || !gguf_path || !out) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "lomo_config_load_gguf: NULL argument");
    gguf_file *f;
    lomo_status st = gguf_open(&f, ctx, gguf_path);
    if (st) return st;
    st = gguf_llama_config(f, out);
    gguf_close(f);
    return st;
}

/* The HF shape [d0, d1] (d1 = 0 for vectors) is GGUF dims [d1, d0] ([d0] for vectors). */
static int shape_matches(const gguf_tensor *t, const param_desc *d) {
    int64_t want0 = d->ndim == 2 ? d->shape[1] : d->shape[0], want1 = d->ndim == 2 ? d->shape[0] : 1;
    return t->ne[0] == want0 && t->ne[1] == want1 && t->ne[2] == 1 && t->ne[3] == 1;
}

/* Checks that every parameter has its tensor, with the right shape and a type we decode,
 * and that the file holds no tensor the model would ignore. */
static lomo_status check_tensors(const gguf_file *f, const lomo_model *m, const gguf_tensor **map) {
    char name[96], dims[96];
    int rope_heads;
    for (int p = 0; p < m->nparams; p++) {
        const param_desc *d = &m->params[p];
        gguf_llama_tensor_name(&m->cfg, p, name, sizeof name, &rope_heads);
        const gguf_tensor *t = gguf_find_tensor(f, name);
        if (!t)
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor %s (%s) is missing", f->name, name, d->name);
        if (!shape_matches(t, d)) {
            char want[64];
            if (d->ndim == 2)
                snprintf(want, sizeof want, "[%lld, %lld]", (long long)d->shape[1], (long long)d->shape[0]);
            else
                snprintf(want, sizeof want, "[%lld]", (long long)d->shape[0]);
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor %s: expected dims %s (GGUF order, fastest first), "
                             "found %s", f->name, name, want, gguf_dims_str(t, dims, sizeof dims));
        }
        if (!gguf_can_dequantize(t->type))
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor %s: unsupported tensor type %s (lomo decodes F32, "
                             "F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)", f->name, name,
                             ggml_type_name(t->type));
        map[p] = t;
    }
    if (f->n_tensors != (uint64_t)m->nparams) {
        for (uint64_t i = 0; i < f->n_tensors; i++) {
            int used = 0;
            for (int p = 0; p < m->nparams && !used; p++) used = map[p] == &f->tensors[i];
            /* Llama 3.1's RoPE scaling, which the config has read (gguf_rope.c) */
            if (!used && strcmp(f->tensors[i].name, "rope_freqs.weight") == 0) continue;
            if (!used)
                return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor %s is not part of a llama model as lomo "
                                 "runs it", f->name, f->tensors[i].name);
        }
    }
    return LOMO_OK;
}

/* Parameter p from tensor t, a chunk of rows at a time; q/k rows are un-permuted one by one. */
static void load_tensor(const gguf_file *f, lomo_model *m, int p, const gguf_tensor *t, int rope_heads, float *buf,
                        size_t buf_n) {
    const ggml_type_desc *td = ggml_type_get(t->type);
    size_t cols = (size_t)t->ne[0], rows = t->nelem / cols;
    size_t row_bytes = cols / td->block_size * td->type_size;
    const uint8_t *src = gguf_tensor_data(f, t);
    if (rope_heads) {
        size_t hd = rows / (size_t)rope_heads, half = hd / 2;
        for (size_t g = 0; g < rows; g++) {
            size_t h = g / hd, r = g % hd;
            size_t hf_row = h * hd + (r % 2) * half + r / 2;
            gguf_dequantize(buf, src + g * row_bytes, t->type, cols);
            model_param_write_f32(m, p, hf_row * cols, buf, cols);
        }
        return;
    }
    size_t chunk = buf_n / cols;
    for (size_t r0 = 0; r0 < rows; r0 += chunk) {
        size_t n = rows - r0 < chunk ? rows - r0 : chunk;
        gguf_dequantize(buf, src + r0 * row_bytes, t->type, n * cols);
        model_param_write_f32(m, p, r0 * cols, buf, n * cols);
    }
}

lomo_status lomo_model_load_gguf(lomo_model **out, lomo_ctx *ctx, const char *gguf_path,
                                 const lomo_model_options *opts) {
    if (!out || !ctx || !gguf_path) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "lomo_model_load_gguf: NULL argument");
    *out = NULL;
    gguf_file *f;
    lomo_status st = gguf_open(&f, ctx, gguf_path);
    if (st) return st;
    lomo_llama_config cfg;
    lomo_model *m = NULL;
    const gguf_tensor **map = NULL;
    float *buf = NULL;
    if ((st = gguf_llama_config(f, &cfg))) goto done;
    /* every weight comes from the file: skip the random init */
    if ((st = model_create(&m, ctx, &cfg, opts, 0))) goto done;
    map = calloc((size_t)m->nparams, sizeof *map);
    if (!map) {
        st = lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory", gguf_path);
        goto done;
    }
    if ((st = check_tensors(f, m, map))) goto done;
    /* one staging buffer: at least a row, else about 256 KiB of rows */
    size_t widest = 0;
    for (int p = 0; p < m->nparams; p++)
        if ((size_t)map[p]->ne[0] > widest) widest = (size_t)map[p]->ne[0];
    size_t buf_n = widest > 65536 ? widest : 65536;
    buf = malloc(buf_n * sizeof *buf);
    if (!buf) {
        st = lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory for a %zu-value staging buffer", gguf_path, buf_n);
        goto done;
    }
    for (int p = 0; p < m->nparams; p++) {
        char name[96];
        int rope_heads;
        gguf_llama_tensor_name(&cfg, p, name, sizeof name, &rope_heads);
        load_tensor(f, m, p, map[p], rope_heads, buf, buf_n);
    }
done:
    free(buf);
    free(map);
    gguf_close(f);
    if (st) {
        lomo_model_destroy(m);
        return st;
    }
    *out = m;
    return LOMO_OK;
}
