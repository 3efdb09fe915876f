/* config.c: validation of a LLaMA config; every error names the HF field. */
#include <math.h>
#include <string.h>
#include "internal.h"

#define REQUIRE(cond, field, ...) \
    do { if (!(cond)) return lomo_fail(ctx, LOMO_ERR_CONFIG, "config: " field ": " __VA_ARGS__); } while (0)

lomo_status lomo_config_validate(lomo_ctx *ctx, const lomo_llama_config *c) {
    return config_validate_for(ctx, ctx ? ctx->be : NULL, c);
}

/* be: the backend the model is for (its head size limit), NULL for none */
lomo_status config_validate_for(lomo_ctx *ctx, const lomo_backend *be, const lomo_llama_config *c) {
    if (!c) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "config: NULL");
    REQUIRE(c->hidden_size > 0, "hidden_size", "must be positive, got %d", c->hidden_size);
    REQUIRE(c->intermediate_size > 0, "intermediate_size", "must be positive, got %d",
            c->intermediate_size);
    REQUIRE(c->num_hidden_layers > 0, "num_hidden_layers", "must be positive, got %d",
            c->num_hidden_layers);
    REQUIRE(c->num_attention_heads > 0, "num_attention_heads", "must be positive, got %d",
            c->num_attention_heads);
    REQUIRE(c->num_key_value_heads > 0, "num_key_value_heads", "must be positive, got %d",
            c->num_key_value_heads);
    REQUIRE(c->vocab_size > 0, "vocab_size", "must be positive, got %d", c->vocab_size);
    REQUIRE(c->max_position_embeddings > 0, "max_position_embeddings", "must be positive, got %d",
            c->max_position_embeddings);
    REQUIRE(c->hidden_size % c->num_attention_heads == 0, "num_attention_heads",
            "%d does not divide hidden_size %d", c->num_attention_heads, c->hidden_size);
    REQUIRE(c->num_attention_heads % c->num_key_value_heads == 0, "num_key_value_heads",
            "%d does not divide num_attention_heads %d", c->num_key_value_heads,
            c->num_attention_heads);
    REQUIRE((c->hidden_size / c->num_attention_heads) % 2 == 0, "num_attention_heads",
            "head size %d (hidden_size / num_attention_heads) must be even for RoPE",
            c->hidden_size / c->num_attention_heads);
    /* a limit of the device's kernels, found here rather than as a device fault mid-forward */
    int max_hd = be ? be->max_head_dim : 0;
    REQUIRE(max_hd == 0 || c->hidden_size / c->num_attention_heads <= max_hd, "num_attention_heads",
            "head size %d (hidden_size / num_attention_heads) exceeds the %s backend's %d",
            c->hidden_size / c->num_attention_heads, be ? be->name : "", max_hd);
    REQUIRE(c->tie_word_embeddings == 0 || c->tie_word_embeddings == 1, "tie_word_embeddings",
            "must be 0 or 1, got %d", c->tie_word_embeddings);
    REQUIRE(isfinite(c->rms_norm_eps) && c->rms_norm_eps > 0, "rms_norm_eps",
            "must be a positive finite number, got %g", c->rms_norm_eps);
    REQUIRE(isfinite(c->rope_theta) && c->rope_theta > 0, "rope_theta",
            "must be a positive finite number, got %g", c->rope_theta);
    const lomo_rope_scaling *rs = &c->rope_scaling;
    REQUIRE((unsigned)rs->rope_type <= LOMO_ROPE_LLAMA3, "rope_scaling.rope_type", "unknown value %d", rs->rope_type);
    if (rs->rope_type != LOMO_ROPE_DEFAULT)
        REQUIRE(isfinite(rs->factor) && rs->factor > 0, "rope_scaling.factor",
                "must be a positive finite number, got %g", rs->factor);
    if (rs->rope_type == LOMO_ROPE_LLAMA3) {
        REQUIRE(isfinite(rs->low_freq_factor) && rs->low_freq_factor > 0, "rope_scaling.low_freq_factor",
                "must be a positive finite number, got %g", rs->low_freq_factor);
        /* the blend divides by their difference */
        REQUIRE(isfinite(rs->high_freq_factor) && rs->high_freq_factor > rs->low_freq_factor,
                "rope_scaling.high_freq_factor", "must be finite and above low_freq_factor %g, got %g",
                rs->low_freq_factor, rs->high_freq_factor);
        REQUIRE(rs->original_max_position_embeddings > 0, "rope_scaling.original_max_position_embeddings",
                "must be positive, got %d", rs->original_max_position_embeddings);
    }
    /* sizes are formed in size_t; refuse configs whose tensors would overflow it */
    double biggest = fmax((double)c->vocab_size, (double)c->intermediate_size) * c->hidden_size;
    REQUIRE(biggest * c->num_hidden_layers < 1e15, "hidden_size",
            "a model of ~%.3g weights is beyond what this runtime addresses", biggest * c->num_hidden_layers);
    return LOMO_OK;
}

const char *lomo_rope_type_name(lomo_rope_type t) {
    switch (t) {
    case LOMO_ROPE_DEFAULT: return "default";
    case LOMO_ROPE_LINEAR: return "linear";
    case LOMO_ROPE_LLAMA3: return "llama3";
    }
    return "unknown";
}

int lomo_rope_type_from_name(const char *name) {
    for (int t = LOMO_ROPE_DEFAULT; t <= LOMO_ROPE_LLAMA3; t++)
        if (strcmp(name, lomo_rope_type_name((lomo_rope_type)t)) == 0) return t;
    return -1;
}
