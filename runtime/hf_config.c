/*
 * hf_config.c: HF config.json of a LLaMA-architecture model, read and written.
 *
 * Reading accepts what computes exactly the math this runtime implements and
 * refuses, naming the field, anything that would change it (biases, another
 * activation, RoPE scaling other than linear and llama3, a head_dim other than
 * hidden_size / heads).
 * Keys that do not touch the math (bos_token_id, torch_dtype, ...) are ignored.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "atomic_file.h"
#include "safetensors.h"


/* A field that is absent or JSON null counts as not given. */
static const json_t *field(const json_t *root, const char *key) {
    const json_t *v = json_object_get(root, key);
    return v && !json_is_null(v) ? v : NULL;
}

static lomo_status get_int(lomo_ctx *ctx, const char *path, const json_t *root, const char *key, int required,
                           int def, int *out) {
    const json_t *v = field(root, key);
    if (!v) {
        if (required) return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: %s: missing", path, key);
        *out = def;
        return LOMO_OK;
    }
    if (!json_is_integer(v))
        return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: %s: expected an integer, found %s", path, key, st_json_kind(v));
    json_int_t x = json_integer_value(v);
    if (x < INT_MIN || x > INT_MAX)
        return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: %s: %lld is out of range", path, key, (long long)x);
    *out = (int)x;
    return LOMO_OK;
}

static lomo_status get_num(lomo_ctx *ctx, const char *path, const json_t *root, const char *key, int required,
                           double def, double *out) {
    const json_t *v = field(root, key);
    if (!v) {
        if (required) return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: %s: missing", path, key);
        *out = def;
        return LOMO_OK;
    }
    if (!json_is_number(v))
        return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: %s: expected a number, found %s", path, key, st_json_kind(v));
    *out = json_number_value(v);
    return LOMO_OK;
}

static lomo_status get_bool(lomo_ctx *ctx, const char *path, const json_t *root, const char *key, int def,
                            int *out) {
    const json_t *v = field(root, key);
    if (!v) {
        *out = def;
        return LOMO_OK;
    }
    if (!json_is_boolean(v))
        return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: %s: expected true or false, found %s", path, key, st_json_kind(v));
    *out = json_is_true(v);
    return LOMO_OK;
}

/* The string value of key, NULL when absent; an error when present but not a string. */
static lomo_status get_str(lomo_ctx *ctx, const char *path, const json_t *root, const char *key, const char **out) {
    const json_t *v = field(root, key);
    *out = NULL;
    if (!v) return LOMO_OK;
    if (!json_is_string(v))
        return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: %s: expected a string, found %s", path, key, st_json_kind(v));
    *out = json_string_value(v);
    return LOMO_OK;
}

/* Fields whose non-default values change the math; each is refused by name. */
static lomo_status check_unsupported(lomo_ctx *ctx, const char *path, const json_t *root, int hidden, int heads) {
    lomo_status st;
    int flag = 0;
    static const char *biases[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        if ((st = get_bool(ctx, path, root, biases[i], 0, &flag))) return st;
        if (flag) return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: %s: true is not supported (no bias terms)", path, biases[i]);
    }
    const char *act;
    if ((st = get_str(ctx, path, root, "hidden_act", &act))) return st;
    if (act && strcmp(act, "silu") != 0 && strcmp(act, "swish") != 0)
        return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: hidden_act: \"%.40s\" is not supported (only silu)", path, act);

    int head_dim = 0;
    if ((st = get_int(ctx, path, root, "head_dim", 0, hidden / heads, &head_dim))) return st;
    if (head_dim != hidden / heads || hidden % heads)
        return lomo_fail(ctx, LOMO_ERR_CONFIG,
                         "%s: head_dim: %d is not supported (it must equal hidden_size / num_attention_heads = %d)",
                         path, head_dim, hidden / heads);

    double drop = 0;
    if ((st = get_num(ctx, path, root, "attention_dropout", 0, 0.0, &drop))) return st;
    if (drop != 0.0)
        return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: attention_dropout: %g is not supported (no dropout)", path, drop);
    if (field(root, "quantization_config"))
        return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: quantization_config: quantized checkpoints are not supported",
                         path);
    return LOMO_OK;
}

/* rope_scaling: absent, null or rope_type "default" is none; "linear" and "llama3" (HF's names,
 * also under the older key "type") are read; any other kind is refused by name. */
static lomo_status parse_rope_scaling(lomo_ctx *ctx, const char *path, const json_t *root, lomo_rope_scaling *out) {
    memset(out, 0, sizeof *out);
    const json_t *rs = field(root, "rope_scaling");
    if (!rs) return LOMO_OK;
    char where[512];
    snprintf(where, sizeof where, "%s: rope_scaling", path);
    if (!json_is_object(rs))
        return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: expected an object or null, found %s", where, st_json_kind(rs));
    const char *type = NULL;
    lomo_status st = get_str(ctx, where, rs, json_object_get(rs, "rope_type") ? "rope_type" : "type", &type);
    if (st) return st;
    if (!type) return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: rope_type: missing", where);
    out->rope_type = lomo_rope_type_from_name(type);
    if (out->rope_type < 0)   /* the caller keeps nothing of a failed parse */
        return lomo_fail(ctx, LOMO_ERR_CONFIG,
                         "%s: rope_type: \"%.40s\" is not supported (default, linear or llama3)", where, type);
    if (out->rope_type == LOMO_ROPE_DEFAULT) return LOMO_OK;
    if ((st = get_num(ctx, where, rs, "factor", 1, 0, &out->factor))) return st;
    if (out->rope_type == LOMO_ROPE_LLAMA3 &&
        ((st = get_num(ctx, where, rs, "low_freq_factor", 1, 0, &out->low_freq_factor)) ||
         (st = get_num(ctx, where, rs, "high_freq_factor", 1, 0, &out->high_freq_factor)) ||
         (st = get_int(ctx, where, rs, "original_max_position_embeddings", 1, 0,
                       &out->original_max_position_embeddings))))
        return st;
    return LOMO_OK;
}

static lomo_status check_architecture(lomo_ctx *ctx, const char *path, const json_t *root) {
    const char *mt;
    lomo_status st = get_str(ctx, path, root, "model_type", &mt);
    if (st) return st;
    if (!mt) return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: model_type: missing", path);
    if (strcmp(mt, "llama") != 0 && strcmp(mt, "mistral") != 0)
        return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: model_type: \"%.40s\" is not supported (llama or mistral)", path,
                         mt);
    const json_t *arch = field(root, "architectures");
    if (!arch) return LOMO_OK;
    if (!json_is_array(arch))
        return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: architectures: expected an array, found %s", path, st_json_kind(arch));
    for (size_t i = 0; i < json_array_size(arch); i++) {
        const json_t *a = json_array_get(arch, i);
        if (!json_is_string(a))
            return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: architectures[%zu]: expected a string, found %s", path, i,
                             st_json_kind(a));
        const char *s = json_string_value(a);
        if (strcmp(s, "LlamaForCausalLM") != 0 && strcmp(s, "MistralForCausalLM") != 0)
            return lomo_fail(ctx, LOMO_ERR_CONFIG,
                             "%s: architectures[%zu]: \"%.60s\" is not supported (LlamaForCausalLM or "
                             "MistralForCausalLM)", path, i, s);
    }
    return LOMO_OK;
}

static lomo_status parse_config(lomo_ctx *ctx, const char *path, const json_t *root, lomo_llama_config *c) {
    if (!json_is_object(root))
        return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: expected a JSON object, found %s", path, st_json_kind(root));
    lomo_status st = check_architecture(ctx, path, root);
    if (st) return st;
    memset(c, 0, sizeof *c);
    if ((st = get_int(ctx, path, root, "hidden_size", 1, 0, &c->hidden_size)) ||
        (st = get_int(ctx, path, root, "intermediate_size", 1, 0, &c->intermediate_size)) ||
        (st = get_int(ctx, path, root, "num_hidden_layers", 1, 0, &c->num_hidden_layers)) ||
        (st = get_int(ctx, path, root, "num_attention_heads", 1, 0, &c->num_attention_heads)) ||
        (st = get_int(ctx, path, root, "num_key_value_heads", 0, c->num_attention_heads,
                      &c->num_key_value_heads)) ||
        (st = get_int(ctx, path, root, "vocab_size", 1, 0, &c->vocab_size)) ||
        (st = get_int(ctx, path, root, "max_position_embeddings", 1, 0, &c->max_position_embeddings)) ||
        (st = get_bool(ctx, path, root, "tie_word_embeddings", 0, &c->tie_word_embeddings)) ||
        (st = get_num(ctx, path, root, "rms_norm_eps", 1, 0, &c->rms_norm_eps)) ||
        (st = get_num(ctx, path, root, "rope_theta", 0, 10000.0, &c->rope_theta)))
        return st;
    if (c->num_attention_heads <= 0)
        return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: num_attention_heads: must be positive, got %d", path,
                         c->num_attention_heads);
    if ((st = check_unsupported(ctx, path, root, c->hidden_size, c->num_attention_heads)) ||
        (st = parse_rope_scaling(ctx, path, root, &c->rope_scaling)))
        return st;

    /* Mistral's sliding window equals full causal attention up to the window's
     * length, so the model is exact if no sequence is longer than that. */
    int window = 0;
    if ((st = get_int(ctx, path, root, "sliding_window", 0, 0, &window))) return st;
    if (window < 0)
        return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: sliding_window: must be positive or null, got %d", path, window);
    if (window > 0 && window < c->max_position_embeddings) c->max_position_embeddings = window;

    st = lomo_config_validate(ctx, c);
    if (st) {
        char why[LOMO_ERR_MAX];
        snprintf(why, sizeof why, "%s", ctx->err);
        return lomo_fail(ctx, st, "%s: %s", path, why);
    }
    return LOMO_OK;
}

lomo_status lomo_config_load_hf(lomo_ctx *ctx, const char *config_json_path, lomo_llama_config *out) {
    if (!ctx || !config_json_path || !out)
        return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "lomo_config_load_hf: NULL argument");
    FILE *fp = fopen(config_json_path, "rb");
    if (!fp) return lomo_fail(ctx, LOMO_ERR_IO, "%s: cannot open: %s", config_json_path, strerror(errno));
    json_error_t je;
    json_t *root = json_loadf(fp, JSON_REJECT_DUPLICATES, &je);
    fclose(fp);
    if (!root)
        return lomo_fail(ctx, LOMO_ERR_CONFIG, "%s: invalid JSON at line %d, column %d: %s", config_json_path,
                         je.line, je.column, je.text);
    lomo_llama_config c;
    lomo_status st = parse_config(ctx, config_json_path, root, &c);
    json_decref(root);
    if (!st) *out = c;
    return st;
}

/* Fewest significant digits (<= 17) that read back as exactly x, and enough
 * that a whole number prints as one (500000.0, not 5e5). */
static int digits_for(double x) {
    char buf[64];
    int p = 1;
    while (p < 17) {
        snprintf(buf, sizeof buf, "%.*g", p, x);
        if (strtod(buf, NULL) == x) break;
        p++;
    }
    if (x == floor(x) && fabs(x) < 1e15) {
        int whole = snprintf(buf, sizeof buf, "%.0f", fabs(x));
        if (whole > p) p = whole;
    }
    return p;
}

/* null for no scaling, else the object transformers reads (rope_type and its kind's fields) */
static json_t *rope_scaling_json(const lomo_rope_scaling *rs) {
    if (rs->rope_type == LOMO_ROPE_DEFAULT) return json_null();
    json_t *o = json_object();
    if (!o) return NULL;
    int bad = json_object_set_new(o, "rope_type", json_string(lomo_rope_type_name((lomo_rope_type)rs->rope_type)));
    bad |= json_object_set_new(o, "factor", json_real(rs->factor));
    if (rs->rope_type == LOMO_ROPE_LLAMA3) {
        bad |= json_object_set_new(o, "low_freq_factor", json_real(rs->low_freq_factor));
        bad |= json_object_set_new(o, "high_freq_factor", json_real(rs->high_freq_factor));
        bad |= json_object_set_new(o, "original_max_position_embeddings",
                                   json_integer(rs->original_max_position_embeddings));
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *hf_config_json(const lomo_llama_config *c, int dtype) {
    static const char *torch_names[] = {"float32", "bfloat16", "float16"};
    json_t *r = json_object();
    if (!r) return NULL;
    json_t *arch = json_array();
    json_array_append_new(arch, json_string("LlamaForCausalLM"));
    int bad = 0;
    bad |= json_object_set_new(r, "architectures", arch);
    bad |= json_object_set_new(r, "attention_bias", json_false());
    bad |= json_object_set_new(r, "attention_dropout", json_real(0.0));
    bad |= json_object_set_new(r, "head_dim", json_integer(c->hidden_size / c->num_attention_heads));
    bad |= json_object_set_new(r, "hidden_act", json_string("silu"));
    bad |= json_object_set_new(r, "hidden_size", json_integer(c->hidden_size));
    bad |= json_object_set_new(r, "initializer_range", json_real(0.02));
    bad |= json_object_set_new(r, "intermediate_size", json_integer(c->intermediate_size));
    bad |= json_object_set_new(r, "max_position_embeddings", json_integer(c->max_position_embeddings));
    bad |= json_object_set_new(r, "mlp_bias", json_false());
    bad |= json_object_set_new(r, "model_type", json_string("llama"));
    bad |= json_object_set_new(r, "num_attention_heads", json_integer(c->num_attention_heads));
    bad |= json_object_set_new(r, "num_hidden_layers", json_integer(c->num_hidden_layers));
    bad |= json_object_set_new(r, "num_key_value_heads", json_integer(c->num_key_value_heads));
    bad |= json_object_set_new(r, "pretraining_tp", json_integer(1));
    bad |= json_object_set_new(r, "rms_norm_eps", json_real(c->rms_norm_eps));
    bad |= json_object_set_new(r, "rope_scaling", rope_scaling_json(&c->rope_scaling));
    bad |= json_object_set_new(r, "rope_theta", json_real(c->rope_theta));
    bad |= json_object_set_new(r, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    if (dtype >= 0 && dtype <= 2) bad |= json_object_set_new(r, "torch_dtype", json_string(torch_names[dtype]));
    bad |= json_object_set_new(r, "use_cache", json_true());
    bad |= json_object_set_new(r, "vocab_size", json_integer(c->vocab_size));
    /* one precision for every real in the file: enough for each to read back exactly */
    const lomo_rope_scaling *rs = &c->rope_scaling;
    double reals[] = {c->rms_norm_eps, c->rope_theta, rs->factor, rs->low_freq_factor, rs->high_freq_factor};
    int prec = 2;  /* 0.02 */
    for (size_t i = 0; i < sizeof reals / sizeof *reals; i++)
        if (digits_for(reals[i]) > prec) prec = digits_for(reals[i]);
    char *s = bad ? NULL : json_dumps(r, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(prec));
    json_decref(r);
    if (!s) return NULL;
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);  /* trailing newline, as transformers writes */
    if (!t) {
        free(s);
        return NULL;
    }
    t[n] = '\n';
    t[n + 1] = 0;
    return t;
}

lomo_status lomo_config_save_hf(lomo_ctx *ctx, const lomo_llama_config *cfg, const char *config_json_path) {
    if (!ctx || !cfg || !config_json_path)
        return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "lomo_config_save_hf: NULL argument");
    lomo_status st = lomo_config_validate(ctx, cfg);
    if (st) return st;
    char *s = hf_config_json(cfg, -1);
    if (!s) return lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory encoding the config", config_json_path);
    st = atomic_write_file(ctx, config_json_path, s, strlen(s));
    free(s);
    return st;
}
