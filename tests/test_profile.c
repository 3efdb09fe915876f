/*
 * test_profile.c: the per-op profile counts every backend op of a forward
 * and of a LOMO step (calls and flops derived here from the graph, by hand,
 * for both checkpointing modes; with prompt masking the LM head runs on the
 * rows with a target only),
 * stays empty while off, resets, and never changes a result.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"
#include "runtime/lomo.h"

enum { L = 2, C = 32, F = 64, NH = 4, NKV = 2, HD = 8, V = 50, B = 2, T = 8, BT = B * T };
static const lomo_llama_config CFG = {.hidden_size = C, .intermediate_size = F, .num_hidden_layers = L,
                                      .num_attention_heads = NH, .num_key_value_heads = NKV, .vocab_size = V,
                                      .max_position_embeddings = 16, .rms_norm_eps = 1e-5, .rope_theta = 1e4};

static void batch(int32_t *tok, int32_t *tgt, int s) {
    for (int i = 0; i < BT; i++) {
        tok[i] = (int32_t)((i * 7 + s * 13 + 3) % V);
        tgt[i] = (int32_t)((i * 11 + s * 5 + 1) % V);
    }
}

/* 2 * BT * in * out summed over every linear layer of one full forward */
static double forward_linear_flops(void) {
    double per_layer = (double)C * (NH * HD) + 2.0 * C * (NKV * HD) + (double)(NH * HD) * C + 3.0 * C * F;
    return 2.0 * BT * (L * per_layer + (double)C * V);
}

/* one block's without the down projection, which checkpointing's recompute skips */
static double recompute_linear_flops(void) {
    return 2.0 * BT * ((double)C * (NH * HD) + 2.0 * C * (NKV * HD) + (double)(NH * HD) * C + 2.0 * C * F);
}

static double attention_flops(void) { return 2.0 * B * NH * (double)T * T * HD; }

static int near(double got, double want) { return fabs(got - want) <= 1e-9 * fabs(want); }

static void check_forward(lomo_ctx *ctx, lomo_model *m) {
    int32_t tok[BT], tgt[BT];
    batch(tok, tgt, 0);
    lomo_op_stats s;
    float loss;
    lomo_profile_reset(ctx);
    lomo_profile_enable(ctx, 1);
    CHECK(lomo_model_forward(m, tok, tgt, B, T, &loss, NULL) == LOMO_OK, "forward: %s", lomo_last_error(ctx));
    lomo_profile_get(ctx, &s);
    CHECK(s.calls[LOMO_OP_MATMUL] == 7 * L + 1, "forward matmuls: %llu, want %d",
          (unsigned long long)s.calls[LOMO_OP_MATMUL], 7 * L + 1);
    CHECK(near(s.flops[LOMO_OP_MATMUL], forward_linear_flops()), "forward matmul flops %.0f, want %.0f",
          s.flops[LOMO_OP_MATMUL], forward_linear_flops());
    CHECK(s.calls[LOMO_OP_ATTENTION_FWD] == L, "attention forwards: %llu", (unsigned long long)s.calls[LOMO_OP_ATTENTION_FWD]);
    CHECK(near(s.flops[LOMO_OP_ATTENTION_FWD], L * attention_flops()), "attention flops %.0f, want %.0f",
          s.flops[LOMO_OP_ATTENTION_FWD], L * attention_flops());
    CHECK(s.calls[LOMO_OP_RMSNORM] == 2 * L + 1, "rmsnorms: %llu", (unsigned long long)s.calls[LOMO_OP_RMSNORM]);
    CHECK(s.calls[LOMO_OP_ROPE] == 2 * L, "ropes: %llu", (unsigned long long)s.calls[LOMO_OP_ROPE]);
    CHECK(s.calls[LOMO_OP_SWIGLU] == L, "swiglus: %llu", (unsigned long long)s.calls[LOMO_OP_SWIGLU]);
    CHECK(s.calls[LOMO_OP_RESIDUAL] == 2 * L, "residual adds: %llu", (unsigned long long)s.calls[LOMO_OP_RESIDUAL]);
    CHECK(s.calls[LOMO_OP_EMBEDDING] == 1 && s.calls[LOMO_OP_CROSSENTROPY] == 1, "embedding %llu, crossentropy %llu",
          (unsigned long long)s.calls[LOMO_OP_EMBEDDING], (unsigned long long)s.calls[LOMO_OP_CROSSENTROPY]);
    CHECK(s.calls[LOMO_OP_LINEAR_UPDATE] == 0 && s.calls[LOMO_OP_ATTENTION_BWD] == 0, "a forward ran backward ops");
    double total = 0;
    for (int op = 0; op < LOMO_OP_COUNT; op++) {
        CHECK(s.seconds[op] >= 0 && (s.calls[op] || s.seconds[op] == 0), "%s: %g s over %llu calls",
              lomo_op_name((lomo_op)op), s.seconds[op], (unsigned long long)s.calls[op]);
        total += s.seconds[op];
    }
    CHECK(total > 0, "a profiled forward took no time");
}

/* A LOMO step with checkpointing: forward, then backward recomputing each block and updating in place;
 * keep_attention: the recompute skips attention. */
static void check_step(lomo_ctx *ctx, lomo_optim *o, int keep_attention) {
    int32_t tok[BT], tgt[BT];
    batch(tok, tgt, 1);
    lomo_step_result r;
    lomo_op_stats s;
    lomo_profile_reset(ctx);
    CHECK(lomo_optim_step(o, tok, tgt, B, T, 0.05f, &r) == LOMO_OK, "step: %s", lomo_last_error(ctx));
    lomo_profile_get(ctx, &s);
    /* forward 7L+1; backward: the head's dX, per block 7 dX products, and 6 recomputed ones in every
     * block but the last (whose activations the forward left in place) */
    int want_mm = 7 * L + 1 + 1 + 7 * L + 6 * (L - 1);
    CHECK(s.calls[LOMO_OP_MATMUL] == (uint64_t)want_mm, "step matmuls: %llu, want %d",
          (unsigned long long)s.calls[LOMO_OP_MATMUL], want_mm);
    double want_flops = 2 * forward_linear_flops() + (L - 1) * recompute_linear_flops();
    CHECK(near(s.flops[LOMO_OP_MATMUL], want_flops), "step matmul flops %.0f, want %.0f", s.flops[LOMO_OP_MATMUL],
          want_flops);
    CHECK(s.calls[LOMO_OP_LINEAR_UPDATE] == 7 * L + 1, "fused updates: %llu, want %d",
          (unsigned long long)s.calls[LOMO_OP_LINEAR_UPDATE], 7 * L + 1);
    CHECK(near(s.flops[LOMO_OP_LINEAR_UPDATE], forward_linear_flops()), "update flops %.0f, want %.0f",
          s.flops[LOMO_OP_LINEAR_UPDATE], forward_linear_flops());
    CHECK(s.calls[LOMO_OP_WEIGHT_GRAD] == 0, "plain LOMO formed %llu weight gradients",
          (unsigned long long)s.calls[LOMO_OP_WEIGHT_GRAD]);
    CHECK(s.calls[LOMO_OP_ATTENTION_BWD] == L && near(s.flops[LOMO_OP_ATTENTION_BWD], 2.0 * L * attention_flops()),
          "attention backwards: %llu, %.0f flops", (unsigned long long)s.calls[LOMO_OP_ATTENTION_BWD],
          s.flops[LOMO_OP_ATTENTION_BWD]);
    int want_att = keep_attention ? L : 2 * L - 1;
    CHECK(s.calls[LOMO_OP_ATTENTION_FWD] == (uint64_t)want_att, "attention forwards with recompute: %llu, want %d",
          (unsigned long long)s.calls[LOMO_OP_ATTENTION_FWD], want_att);
    /* norms (2 per block and the final one) and the embedding's rows are updated elementwise */
    CHECK(s.calls[LOMO_OP_OPTIMIZER] == 2 * L + 2, "elementwise updates: %llu, want %d",
          (unsigned long long)s.calls[LOMO_OP_OPTIMIZER], 2 * L + 2);
    CHECK(s.calls[LOMO_OP_GRAD_CHECK] > 0, "no gradient was checked");
}

/* Prompt masking: with targets at 3 of the BT positions, the LM head runs on those 3 rows in
 * forward, in its dX and in its update; a forward that asks for every logit runs it on all. */
static void check_masked(lomo_ctx *ctx, lomo_model *m, lomo_optim *o) {
    enum { KEPT = 3 };
    int32_t tok[BT], tgt[BT];
    batch(tok, tgt, 3);
    for (int i = 0; i < BT; i++)
        if (i != 2 && i != 9 && i != BT - 1) tgt[i] = -100;
    double head_saved = 2.0 * (BT - KEPT) * C * V, fwd = forward_linear_flops() - head_saved;
    lomo_step_result r;
    lomo_op_stats s;
    lomo_profile_reset(ctx);
    CHECK(lomo_optim_step(o, tok, tgt, B, T, 0.05f, &r) == LOMO_OK, "masked step: %s", lomo_last_error(ctx));
    lomo_profile_get(ctx, &s);
    double want = 2 * fwd + (L - 1) * recompute_linear_flops();
    CHECK(near(s.flops[LOMO_OP_MATMUL], want), "masked step matmul flops %.0f, want %.0f", s.flops[LOMO_OP_MATMUL],
          want);
    CHECK(near(s.flops[LOMO_OP_LINEAR_UPDATE], fwd), "masked step update flops %.0f, want %.0f",
          s.flops[LOMO_OP_LINEAR_UPDATE], fwd);

    float loss, *logits = malloc((size_t)BT * V * sizeof *logits);
    lomo_profile_reset(ctx);
    CHECK(lomo_model_forward(m, tok, tgt, B, T, &loss, logits) == LOMO_OK, "forward with logits");
    lomo_profile_get(ctx, &s);
    CHECK(near(s.flops[LOMO_OP_MATMUL], forward_linear_flops()), "every logit asked for: matmul flops %.0f, want %.0f",
          s.flops[LOMO_OP_MATMUL], forward_linear_flops());
    free(logits);
}

/* Two contexts, one profiled: the same losses and weights, bit for bit. */
static void check_results_unchanged(void) {
    lomo_ctx *ctx[2];
    lomo_model *m[2];
    lomo_optim *o[2];
    float loss[2][3];
    for (int k = 0; k < 2; k++) {
        lomo_ctx_options co = {.num_threads = 1};
        lomo_ctx_create(&ctx[k], &co);
        lomo_profile_enable(ctx[k], k == 1);
        lomo_model_options mo = {.dtype = LOMO_BF16, .checkpointing = 1, .seed = 5};
        lomo_model_create(&m[k], ctx[k], &CFG, &mo);
        lomo_optim_options oo;
        lomo_optim_options_default(&oo, LOMO_OPTIM_LOMO);
        oo.clip_grad_norm = 1.0f;
        lomo_optim_create(&o[k], m[k], &oo);
        for (int s = 0; s < 3; s++) {
            int32_t tok[BT], tgt[BT];
            batch(tok, tgt, s);
            lomo_step_result r;
            lomo_optim_step(o[k], tok, tgt, B, T, 0.05f, &r);
            loss[k][s] = r.loss;
        }
    }
    CHECK(memcmp(loss[0], loss[1], sizeof loss[0]) == 0, "profiling changed the losses");
    size_t n0, n1;
    float *w0 = fx_model_weights(m[0], &n0), *w1 = fx_model_weights(m[1], &n1);
    CHECK(w0 && w1 && n0 == n1 && memcmp(w0, w1, n0 * sizeof *w0) == 0, "profiling changed the weights");
    lomo_op_stats s0, s1;
    lomo_profile_get(ctx[0], &s0);
    lomo_profile_get(ctx[1], &s1);
    CHECK(s0.calls[LOMO_OP_MATMUL] == 0, "a context that never enabled profiling counted ops");
    /* clipping by norm: a measuring pass, then a replay that updates */
    CHECK(s1.calls[LOMO_OP_NORM_GRAM] + s1.calls[LOMO_OP_WEIGHT_GRAD] > 0, "the norm pass was not profiled");
    free(w0);
    free(w1);
    for (int k = 0; k < 2; k++) {
        lomo_optim_destroy(o[k]);
        lomo_model_destroy(m[k]);
        lomo_ctx_destroy(ctx[k]);
    }
}

int main(void) {
    lomo_ctx *ctx;
    lomo_ctx_options co = {.num_threads = 1};
    CHECK(lomo_ctx_create(&ctx, &co) == LOMO_OK, "context");
    lomo_model *m;
    lomo_model_options mo = {.dtype = LOMO_F32, .checkpointing = 1, .seed = 3};
    CHECK(lomo_model_create(&m, ctx, &CFG, &mo) == LOMO_OK, "model: %s", lomo_last_error(ctx));
    lomo_optim *o;
    lomo_optim_options oo;
    lomo_optim_options_default(&oo, LOMO_OPTIM_LOMO);
    CHECK(lomo_optim_create(&o, m, &oo) == LOMO_OK, "optimizer: %s", lomo_last_error(ctx));

    /* off by default: nothing is counted */
    int32_t tok[BT], tgt[BT];
    batch(tok, tgt, 2);
    lomo_step_result r;
    lomo_op_stats s;
    lomo_optim_step(o, tok, tgt, B, T, 0.05f, &r);
    lomo_profile_get(ctx, &s);
    lomo_op_stats zero;
    memset(&zero, 0, sizeof zero);
    CHECK(memcmp(&s, &zero, sizeof s) == 0, "ops were counted with profiling off");

    check_forward(ctx, m);
    check_step(ctx, o, 0);
    CHECK(lomo_model_set_checkpointing(m, LOMO_CHECKPOINT_KEEP_ATTENTION) == LOMO_OK, "keep attention");
    check_step(ctx, o, 1);
    check_masked(ctx, m, o);

    lomo_profile_reset(ctx);
    lomo_profile_get(ctx, &s);
    CHECK(memcmp(&s, &zero, sizeof s) == 0, "reset left counts");
    lomo_profile_enable(ctx, 0);
    lomo_optim_step(o, tok, tgt, B, T, 0.05f, &r);
    lomo_profile_get(ctx, &s);
    CHECK(memcmp(&s, &zero, sizeof s) == 0, "ops were counted after profiling was turned off");

    for (int op = 0; op < LOMO_OP_COUNT; op++)
        CHECK(strcmp(lomo_op_name((lomo_op)op), "unknown") != 0, "op %d has no name", op);
    CHECK(strcmp(lomo_op_name(LOMO_OP_COUNT), "unknown") == 0, "an op past the end has a name");

    lomo_optim_destroy(o);
    lomo_model_destroy(m);
    lomo_ctx_destroy(ctx);
    check_results_unchanged();
    return test_summary("test_profile");
}
