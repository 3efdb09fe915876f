/*
 * plan.c: the memory plan, computed from the shapes alone with the same
 * layout rules the model and the engine allocate by, so a user knows before
 * loading whether a model fits (`lomo plan`).
 */
#include <stdlib.h>
#include <string.h>
#include "optim.h"
#include "../kernels/cuda/cuda_shape.h"

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* The CUDA backend's planning rules, for a context that is not on one (this machine may have no GPU,
 * or this build no CUDA): only what model_shape and the plan read. */
static const lomo_backend cuda_rules = {
    .name = "cuda",
    .wbuf_floats = 0,
    .max_head_dim = CUDA_MAX_HEAD_DIM,
    .attention_saved_floats = cuda_attention_saved_floats,
    .attention_scratch_floats = cuda_attention_scratch_floats,
};

static lomo_status plan_on(lomo_ctx *ctx, const lomo_backend *be, const lomo_llama_config *cfg,
                           const lomo_model_options *mo, const lomo_optim_options *oo, int B, int T, lomo_plan *out);

lomo_status lomo_plan_memory(lomo_ctx *ctx, const lomo_llama_config *cfg, const lomo_model_options *mo,
                             const lomo_optim_options *oo, int B, int T, lomo_plan *out) {
    if (!ctx) return LOMO_ERR_INVALID_ARG;
    return plan_on(ctx, ctx->be, cfg, mo, oo, B, T, out);
}

lomo_status lomo_plan_memory_for(lomo_ctx *ctx, const char *device, const lomo_llama_config *cfg,
                                 const lomo_model_options *mo, const lomo_optim_options *oo, int B, int T,
                                 lomo_plan *out) {
    if (!ctx) return LOMO_ERR_INVALID_ARG;
    if (!device || strcmp(device, ctx->be->name) == 0) return plan_on(ctx, ctx->be, cfg, mo, oo, B, T, out);
    if (strcmp(device, "cpu") == 0) return plan_on(ctx, lomo_backend_cpu(), cfg, mo, oo, B, T, out);
    if (strcmp(device, "cuda") == 0) return plan_on(ctx, &cuda_rules, cfg, mo, oo, B, T, out);
    return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "plan: device must be \"cpu\" or \"cuda\", got \"%s\"", device);
}

static lomo_status plan_on(lomo_ctx *ctx, const lomo_backend *be, const lomo_llama_config *cfg,
                           const lomo_model_options *mo, const lomo_optim_options *oo, int B, int T, lomo_plan *out) {
    if (!cfg || !out) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "plan: NULL argument");
    if (B <= 0 || T <= 0) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "plan: batch %d x seq %d must be positive", B, T);
    if (T > cfg->max_position_embeddings)
        return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "plan: seq %d exceeds max_position_embeddings %d", T,
                         cfg->max_position_embeddings);
    lomo_model_options o = mo ? *mo : (lomo_model_options){0};
    lomo_model m;
    lomo_status st = model_shape(&m, ctx, be, cfg, &o);
    if (st) return st;
    *out = (lomo_plan){0};
    size_t C = (size_t)cfg->hidden_size, V = (size_t)cfg->vocab_size, BT = (size_t)B * T, L = (size_t)cfg->num_hidden_layers;
    out->weights = m.weights_bytes;
    out->scratch = model_const_bytes(&m) + model_rope_bytes(&m, T);
    out->activations = model_activation_bytes(&m, B, T);
    if (oo) {
        int full = oo->kind == LOMO_OPTIM_SGD || oo->kind == LOMO_OPTIM_ADAMW;
        int scaling = oo->loss_scaling == -1 ? o.dtype == LOMO_F16 : oo->loss_scaling;
        int measuring = !full && (oo->clip_grad_norm > 0 || scaling || oo->guard_nonfinite);
        /* the model's gradient buffer: the embedding's rows (a tied head's part stays factored:
         * optim_splits_tied), or dense for adalomo, and for a tied head clipped by value; the
         * baselines keep full gradients of their own */
        int split_tied = full || optim_kind_splits_tied(oo);
        /* AdaLomo with the head in chunks: the embedding's rows and one chunk's gradient, in passes */
        int passes = optim_ada_head_passes(&m, oo);
        int dense = !passes && (oo->kind == LOMO_OPTIM_ADALOMO || (cfg->tie_word_embeddings && !split_tied));
        size_t Cp = round_up(C, 16);
        out->gradients = dense ? (Cp + V * C) * sizeof(float) : (Cp + BT * C) * sizeof(float) + 3 * BT * sizeof(int32_t);
        if (passes) {
            out->gradients += (size_t)model_logits_chunk(&m) * C * sizeof(float);
            out->scratch += optim_ada_parts_bytes(&m);
        }
        /* a tied head's gradient at the embedding's rows, for the norm (model.c model_reserve_gradbuf) */
        if (!dense && measuring && cfg->tie_word_embeddings && split_tied) out->gradients += BT * C * sizeof(float);
        if (oo->kind == LOMO_OPTIM_ADALOMO || oo->clip_grad_value > 0 ||
            (measuring && oo->norm_method == LOMO_NORM_FORM_GRAD))
            out->gradients += optim_gscratch_floats(&m, oo->kind) * sizeof(float);
        for (int p = 0; p < m.nparams; p++) {
            const param_desc *d = &m.params[p];
            if (full) out->gradients += round_up(d->numel, 16) * sizeof(float);
            if (oo->kind == LOMO_OPTIM_ADAMW) out->optimizer += round_up(2 * d->numel, 16) * sizeof(float);
            if (oo->kind == LOMO_OPTIM_ADALOMO)
                out->optimizer += round_up(d->ndim == 2 ? (size_t)(d->shape[0] + d->shape[1]) : d->numel, 16) *
                                  sizeof(float);
        }
        if (measuring) {
            /* the recorded pass, and the Gram matrices of the norm */
            out->activations += (2 * L + 1) * (BT * C + C) * sizeof(float);
            if (oo->norm_method != LOMO_NORM_FORM_GRAD) out->scratch += 2 * BT * BT * sizeof(float);
            /* a tied head's norm formed (FORM_GRAD, or AUTO's timing), TIED_CHUNK gradient rows at a time
             * (optim_hooks.c reserve_tied) */
            size_t k = V < TIED_CHUNK ? V : TIED_CHUNK;
            if (cfg->tie_word_embeddings && split_tied && oo->norm_method != LOMO_NORM_GRAM)
                out->scratch += (BT + C) * k * sizeof(float) + k * sizeof(int32_t);
        }
    }
    out->total = out->weights + out->activations + out->gradients + out->optimizer + out->scratch;
    out->kv_cache_per_position = 2 * L * (size_t)B * (size_t)cfg->num_key_value_heads * (C / cfg->num_attention_heads) *
                                 sizeof(float);
    out->logits_chunk = model_logits_chunk(&m);
    free(m.params);
    return LOMO_OK;
}
