/*
 * test_decode.c: incremental decoding with a key/value cache gives the logits
 * of a full forward at every position (a prompt, then one token a call, then
 * a chunk; across the cache's growth; every checkpointing mode; bf16), its
 * memory is accounted, and every way of misusing it is refused by name:
 * positions that do not continue the cache, changed weights, positions past
 * the model's, bad ids, a backward after decoding.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"
#include "runtime/internal.h"   /* a context's backend, to take the prompt-through-forward way on the CPU */
#include "runtime/lomo.h"

enum { L = 2, C = 48, F = 96, NH = 6, NKV = 2, HD = C / NH, V = 97, MAXP = 320, B = 2 };
static const lomo_llama_config CFG = {.hidden_size = C, .intermediate_size = F, .num_hidden_layers = L,
                                      .num_attention_heads = NH, .num_key_value_heads = NKV, .vocab_size = V,
                                      .max_position_embeddings = MAXP, .rms_norm_eps = 1e-5, .rope_theta = 1e4};

static int32_t token_at(int b, int t) { return (int32_t)((b * 131 + t * 37 + t * t) % V); }

/* |got - want| <= 1e-5 * max |want| over V logits (the same sums in another order) */
static int close_logits(const float *got, const float *want) {
    double mx = 0, worst = 0;
    for (int v = 0; v < V; v++) mx = fmax(mx, fabs(want[v]));
    for (int v = 0; v < V; v++) worst = fmax(worst, fabs(got[v] - want[v]));
    if (worst > 1e-5 * mx) fprintf(stderr, "  worst logit difference %.3g (max |logit| %.3g)\n", worst, mx);
    return worst <= 1e-5 * mx;
}

/*
 * Decodes rows of T tokens as a prompt of `prompt` tokens, then one token a call up to T - 3, then the
 * last 3 as one chunk, checking each call's logits against a full forward's at that position.
 */
static void check_matches_forward(lomo_ctx *ctx, lomo_model *m, int T, int prompt, const char *what) {
    int32_t *tok = malloc((size_t)B * T * sizeof *tok), *piece = malloc((size_t)B * T * sizeof *piece);
    float *full = malloc((size_t)B * T * V * sizeof *full), *next = malloc((size_t)B * V * sizeof *next);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) tok[b * T + t] = token_at(b, t);
    CHECK(lomo_model_forward(m, tok, NULL, B, T, NULL, full) == LOMO_OK, "%s: forward: %s", what, lomo_last_error(ctx));
    int pos = 0, bad = 0;
    while (pos < T) {
        int n = pos == 0 ? prompt : pos < T - 3 ? 1 : T - pos;
        for (int b = 0; b < B; b++) memcpy(piece + b * n, tok + b * T + pos, (size_t)n * sizeof *piece);
        if (lomo_model_decode(m, piece, B, n, pos, next) != LOMO_OK) {
            CHECK(0, "%s: decode at %d: %s", what, pos, lomo_last_error(ctx));
            break;
        }
        pos += n;
        for (int b = 0; b < B; b++)
            if (!close_logits(next + (size_t)b * V, full + ((size_t)b * T + pos - 1) * V) && bad++ < 3)
                fprintf(stderr, "  %s: row %d, position %d\n", what, b, pos - 1);
    }
    CHECK(bad == 0, "%s: %d decoded positions differ from the forward's logits", what, bad);
    free(tok);
    free(piece);
    free(full);
    free(next);
}

static lomo_model *make(lomo_ctx *ctx, lomo_dtype dt, int ckpt) {
    lomo_model *m = NULL;
    lomo_model_options mo = {.dtype = dt, .checkpointing = ckpt, .seed = 11};
    CHECK(lomo_model_create(&m, ctx, &CFG, &mo) == LOMO_OK, "model: %s", lomo_last_error(ctx));
    return m;
}

static void check_refusals(lomo_ctx *ctx, lomo_model *m) {
    int32_t tok[B * 4];
    float next[B * V];
    for (int i = 0; i < B * 4; i++) tok[i] = token_at(i % B, i);
    CHECK(lomo_model_decode(m, tok, B, 4, 0, next) == LOMO_OK, "prompt: %s", lomo_last_error(ctx));
    CHECK(lomo_model_decode(m, tok, B, 1, 3, next) == LOMO_ERR_STATE && strstr(lomo_last_error(ctx), "position 3"),
          "a position the cache is past: %s", lomo_last_error(ctx));
    CHECK(lomo_model_decode(m, tok, B, 1, 5, next) == LOMO_ERR_STATE, "a gap after the cache");
    CHECK(lomo_model_decode(m, tok, 1, 1, 4, next) == LOMO_ERR_STATE && strstr(lomo_last_error(ctx), "rows"),
          "another row count: %s", lomo_last_error(ctx));
    CHECK(lomo_model_decode(m, tok, B, 1, 4, next) == LOMO_OK, "continuing: %s", lomo_last_error(ctx));
    /* a refused call leaves the cache as it was: it continues where it stood */
    CHECK(lomo_model_decode(m, tok, B, 1, 5, next) == LOMO_OK, "continuing after refusals: %s", lomo_last_error(ctx));

    lomo_grad_hook none = {0};
    CHECK(lomo_model_backward(m, 1.0f, &none) != LOMO_OK, "a backward after decoding must be refused");
    int32_t bad[B] = {0, V};
    CHECK(lomo_model_decode(m, bad, B, 1, 6, next) == LOMO_ERR_INVALID_ARG && strstr(lomo_last_error(ctx), "vocabulary"),
          "a token outside the vocabulary: %s", lomo_last_error(ctx));
    CHECK(lomo_model_decode(m, tok, B, 1, 6, next) == LOMO_OK, "continuing after a bad id: %s", lomo_last_error(ctx));
    CHECK(lomo_model_decode(m, tok, B, 2, MAXP - 1, next) == LOMO_ERR_INVALID_ARG &&
              strstr(lomo_last_error(ctx), "max_position_embeddings"),
          "positions past the model's: %s", lomo_last_error(ctx));
    CHECK(lomo_model_decode(m, tok, 0, 1, 0, next) == LOMO_ERR_INVALID_ARG, "no rows");
    CHECK(lomo_model_decode(m, tok, B, 0, 0, next) == LOMO_ERR_INVALID_ARG, "no tokens");
    CHECK(lomo_model_decode(m, tok, B, 1, -1, next) == LOMO_ERR_INVALID_ARG, "a negative position");
    CHECK(lomo_model_decode(m, NULL, B, 1, 0, next) == LOMO_ERR_INVALID_ARG, "NULL tokens");
    CHECK(lomo_model_decode(m, tok, B, 1, 0, NULL) == LOMO_ERR_INVALID_ARG, "NULL logits");

    /* changed weights: a parameter write, then a training step, each end the cache's sequence */
    lomo_param_info info;
    lomo_model_param(m, 1, &info);
    float *w = malloc(info.numel * sizeof *w);
    lomo_model_get_param_f32(m, 1, w, info.numel);
    lomo_model_set_param_f32(m, 1, w, info.numel);
    free(w);
    CHECK(lomo_model_decode(m, tok, B, 1, 7, next) == LOMO_ERR_STATE && strstr(lomo_last_error(ctx), "weights"),
          "after a parameter write: %s", lomo_last_error(ctx));
    CHECK(lomo_model_decode(m, tok, B, 2, 0, next) == LOMO_OK, "a new sequence: %s", lomo_last_error(ctx));
    lomo_optim *o;
    lomo_optim_options oo;
    lomo_optim_options_default(&oo, LOMO_OPTIM_LOMO);
    lomo_optim_create(&o, m, &oo);
    lomo_step_result r;
    CHECK(lomo_optim_step(o, tok, tok, B, 4, 0.01f, &r) == LOMO_OK, "step: %s", lomo_last_error(ctx));
    lomo_optim_destroy(o);
    CHECK(lomo_model_decode(m, tok, B, 1, 2, next) == LOMO_ERR_STATE && strstr(lomo_last_error(ctx), "weights"),
          "after a training step: %s", lomo_last_error(ctx));
}

/* The cache is activations memory: 2 * L * B * cap * NKV * hd floats, freed by reset. */
static void check_memory(lomo_ctx *ctx, lomo_model *m) {
    lomo_model_decode_reset(m);
    lomo_mem_stats before, during, after;
    lomo_mem_get_stats(ctx, &before);
    int32_t tok[B];
    float next[B * V];
    for (int b = 0; b < B; b++) tok[b] = token_at(b, 0);
    CHECK(lomo_model_decode(m, tok, B, 1, 0, next) == LOMO_OK, "decode: %s", lomo_last_error(ctx));
    lomo_mem_get_stats(ctx, &during);
    size_t want = 2 * (size_t)L * B * 256 * NKV * HD * sizeof(float);
    size_t got = during.current[LOMO_MEM_ACTIVATIONS] - before.current[LOMO_MEM_ACTIVATIONS];
    CHECK(got == want, "the cache holds %zu bytes, expected %zu", got, want);
    lomo_plan plan;
    CHECK(lomo_plan_memory(ctx, lomo_model_config(m), NULL, NULL, B, 1, &plan) == LOMO_OK &&
              plan.kv_cache_per_position * 256 == got,
          "the plan's %zu bytes a position, 256 positions: %zu", plan.kv_cache_per_position, got);
    lomo_model_decode_reset(m);
    lomo_mem_get_stats(ctx, &after);
    CHECK(after.current[LOMO_MEM_ACTIVATIONS] == before.current[LOMO_MEM_ACTIVATIONS], "reset did not free the cache");
    CHECK(lomo_model_decode(m, tok, B, 1, 1, next) == LOMO_ERR_STATE, "continuing after a reset");
}

int main(void) {
    lomo_ctx *ctx;
    lomo_ctx_options co = {.num_threads = 2};
    CHECK(lomo_ctx_create(&ctx, &co) == LOMO_OK, "context");
    static const char *const modes[] = {"off", "blocks", "keep_attention"};
    for (int ckpt = LOMO_CHECKPOINT_OFF; ckpt <= LOMO_CHECKPOINT_KEEP_ATTENTION; ckpt++) {
        lomo_model *m = make(ctx, LOMO_F32, ckpt);
        char what[64];
        snprintf(what, sizeof what, "f32, checkpointing %s", modes[ckpt]);
        check_matches_forward(ctx, m, 24, 7, what);
        lomo_model_destroy(m);
    }
    lomo_model *m = make(ctx, LOMO_F32, LOMO_CHECKPOINT_OFF);
    /* a prompt of 250, then tokens one at a time past the first 256 positions the cache holds */
    check_matches_forward(ctx, m, 300, 250, "f32, growing the cache");
    check_refusals(ctx, m);
    check_memory(ctx, m);
    lomo_model_destroy(m);
    m = make(ctx, LOMO_BF16, LOMO_CHECKPOINT_BLOCKS);
    check_matches_forward(ctx, m, 24, 5, "bf16");
    lomo_model_destroy(m);
    lomo_ctx_destroy(ctx);

    /* a backend that runs a prompt through attention_forward (CUDA does): the CPU's, so told */
    CHECK(lomo_ctx_create(&ctx, &co) == LOMO_OK, "context");
    lomo_backend prompt_by_forward = *ctx->be;
    prompt_by_forward.prefill_with_forward = 1;
    ctx->be = &prompt_by_forward;
    m = make(ctx, LOMO_F32, LOMO_CHECKPOINT_OFF);
    check_matches_forward(ctx, m, 24, 7, "f32, the prompt through attention_forward");
    lomo_model_destroy(m);
    lomo_ctx_destroy(ctx);
    return test_summary("test_decode");
}
