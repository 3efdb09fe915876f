/*
 * test_memory.c: the memory accounting is exact: weights equal the sum of the
 * parameter sizes, activations follow the plan with and without checkpointing,
 * the RoPE tables follow the positions used (not max_position_embeddings), and
 * everything returns to zero when freed.
 */
#include <stdio.h>
#include <string.h>
#include "fixture.h"
#include "runtime/lomo.h"

static int nop_linear(void *u, int p, const float *d, const float *x, int BT) {
    (void)u; (void)p; (void)d; (void)x; (void)BT;
    return 0;
}
static int nop_dense(void *u, int p, float *g) { (void)u; (void)p; (void)g; return 0; }

int main(void) {
    lomo_ctx *ctx;
    lomo_ctx_create(&ctx, NULL);
    lomo_llama_config c = {.hidden_size = 64, .intermediate_size = 160, .num_hidden_layers = 4,
                           .num_attention_heads = 4, .num_key_value_heads = 2, .vocab_size = 100,
                           .max_position_embeddings = 32, .rms_norm_eps = 1e-5, .rope_theta = 1e4};
    size_t act[3] = {0};
    for (int dt = LOMO_F32; dt <= LOMO_F16; dt++) {
        for (int ckpt = LOMO_CHECKPOINT_OFF; ckpt <= LOMO_CHECKPOINT_KEEP_ATTENTION; ckpt++) {
            lomo_model *m;
            lomo_model_options o = {.dtype = (lomo_dtype)dt, .checkpointing = ckpt, .seed = 3};
            CHECK(lomo_model_create(&m, ctx, &c, &o) == LOMO_OK, "create");
            lomo_mem_stats s;
            lomo_mem_get_stats(ctx, &s);
            size_t es = lomo_dtype_size((lomo_dtype)dt), expect = 0;
            for (int p = 0; p < lomo_model_num_params(m); p++) {
                lomo_param_info info;
                lomo_model_param(m, p, &info);
                expect += (info.numel * es + 63) / 64 * 64;
                CHECK(((uintptr_t)info.data & 63) == 0, "%s not 64-byte aligned", info.name);
            }
            CHECK(s.current[LOMO_MEM_WEIGHTS] == expect, "weights %zu, expected %zu", s.current[LOMO_MEM_WEIGHTS],
                  expect);
            CHECK(lomo_model_num_weights(m) == (size_t)(100 * 64 + 4 * (64 * 2 + 64 * 64 * 2 + 32 * 64 * 2 + 3 * 64 * 160) + 64 + 100 * 64),
                  "weight count %zu", lomo_model_num_weights(m));
            int32_t tok[2 * 16], tgt[2 * 16];
            for (int i = 0; i < 32; i++) { tok[i] = (i * 13) % 100; tgt[i] = (i * 7) % 100; }
            float loss;
            CHECK(lomo_model_forward(m, tok, tgt, 2, 16, &loss, NULL) == LOMO_OK, "forward");
            lomo_mem_get_stats(ctx, &s);
            CHECK(s.peak[LOMO_MEM_GRADIENTS] == 0, "inference must not allocate gradient memory");
            /* backward adds the one dense gradient buffer: embedding plus one norm, nothing else */
            lomo_grad_hook nop = {.on_linear = nop_linear, .on_dense = nop_dense};
            CHECK(lomo_model_backward(m, 1.0f, &nop) == LOMO_OK, "backward");
            lomo_mem_get_stats(ctx, &s);
            CHECK(s.peak[LOMO_MEM_GRADIENTS] == (100 * 64 + 64) * sizeof(float), "gradient buffer %zu",
                  s.peak[LOMO_MEM_GRADIENTS]);
            if (dt == LOMO_F32) act[ckpt] = s.current[LOMO_MEM_ACTIVATIONS];
            else CHECK(act[ckpt] == s.current[LOMO_MEM_ACTIVATIONS], "activations depend on weight dtype");
            CHECK(s.peak_total >= s.current_total && s.peak[LOMO_MEM_WEIGHTS] == s.current[LOMO_MEM_WEIGHTS],
                  "peaks");
            lomo_model_destroy(m);
            lomo_mem_get_stats(ctx, &s);
            CHECK(s.current_total == 0, "%zu bytes still accounted after destroy", s.current_total);
            for (int k = 0; k < LOMO_MEM_COUNT; k++)
                CHECK(s.current[k] == 0, "%s not back to zero", lomo_mem_category_name((lomo_mem_category)k));
            lomo_mem_reset_peak(ctx);
        }
    }
    /* checkpointing keeps one block's activations instead of four, plus the block inputs */
    CHECK(act[1] < act[0], "checkpointing must use less activation memory (%zu vs %zu)", act[1], act[0]);
    /* keeping attention adds blocks 0..2's attention output [BT, NH*hd] and probabilities [B, NH, T, T] */
    size_t kept = 3 * (((size_t)2 * 16 * 64 * 4 + 63) / 64 * 64 + ((size_t)2 * 4 * 16 * 16 * 4 + 63) / 64 * 64);
    CHECK(act[2] == act[1] + kept, "keeping attention: %zu bytes, expected %zu + %zu", act[2], act[1], kept);
    printf("activations: %zu bytes without checkpointing, %zu with, %zu keeping attention\n", act[0], act[1], act[2]);

    /* The RoPE tables: none at creation, the positions of the longest forward (cos and sin [T, hd/2]),
     * and those the key/value cache holds (64 at the least); a forward at 8 positions after one at 24
     * gives the logits of a fresh model's forward at 8, bit for bit. */
    {
        lomo_llama_config big = c;
        big.max_position_embeddings = 4096;
        lomo_model *r, *fresh;
        lomo_model_create(&r, ctx, &big, NULL);
        lomo_mem_stats s0, s;
        lomo_mem_get_stats(ctx, &s0);
        int32_t tok[24];
        for (int i = 0; i < 24; i++) tok[i] = (i * 29 + 1) % 100;
        static float l24[24 * 100], l8[8 * 100], f8[8 * 100];
        CHECK(lomo_model_forward(r, tok, NULL, 1, 24, NULL, l24) == LOMO_OK, "forward at 24");
        lomo_mem_get_stats(ctx, &s);
        size_t hd = 64 / 4, per_pos = 2 * (hd / 2) * sizeof(float);
        CHECK(s.current[LOMO_MEM_SCRATCH] - s0.current[LOMO_MEM_SCRATCH] == 24 * per_pos,
              "tables after a forward at 24 of 4096 positions: %zu bytes, want %zu",
              s.current[LOMO_MEM_SCRATCH] - s0.current[LOMO_MEM_SCRATCH], 24 * per_pos);
        CHECK(lomo_model_forward(r, tok, NULL, 1, 8, NULL, l8) == LOMO_OK, "forward at 8");
        lomo_mem_get_stats(ctx, &s);
        CHECK(s.current[LOMO_MEM_SCRATCH] - s0.current[LOMO_MEM_SCRATCH] == 24 * per_pos, "a shorter forward keeps them");
        lomo_model_create(&fresh, ctx, &big, NULL);
        CHECK(lomo_model_forward(fresh, tok, NULL, 1, 8, NULL, f8) == LOMO_OK, "fresh forward at 8");
        CHECK(memcmp(l8, f8, sizeof l8) == 0, "the same logits from tables of 24 positions and of 8");
        lomo_model_destroy(fresh);
        lomo_mem_reset_peak(ctx);
        float next[100];
        CHECK(lomo_model_decode(r, tok, 1, 1, 0, next) == LOMO_OK, "decode: %s", lomo_last_error(ctx));
        lomo_mem_get_stats(ctx, &s);
        size_t grown = s.current[LOMO_MEM_SCRATCH] - s0.current[LOMO_MEM_SCRATCH];
        CHECK(grown >= 64 * per_pos && grown % per_pos == 0 && grown < 4096 * per_pos,
              "tables for the cache: %zu positions", grown / per_pos);
        CHECK(s.peak[LOMO_MEM_SCRATCH] - s0.current[LOMO_MEM_SCRATCH] == grown,
              "growing frees the old tables first: peak %zu", s.peak[LOMO_MEM_SCRATCH] - s0.current[LOMO_MEM_SCRATCH]);
        lomo_model_destroy(r);
        lomo_mem_get_stats(ctx, &s);
        CHECK(s.current_total == 0, "%zu bytes left after the RoPE checks", s.current_total);
        lomo_mem_reset_peak(ctx);

        /* tables that do not fit (memory_limit: the model and nothing more): the forward says so by name,
         * holds nothing new, and a decode fails the same way */
        lomo_ctx *tight;
        lomo_ctx_options lim = {.device = "cpu", .memory_limit = s0.current_total + 64};
        CHECK(lomo_ctx_create(&tight, &lim) == LOMO_OK, "a limited context");
        lomo_model *small;
        CHECK(lomo_model_create(&small, tight, &big, NULL) == LOMO_OK, "a model within the limit: %s",
              lomo_last_error(tight));
        lomo_mem_stats t0, t1;
        lomo_mem_get_stats(tight, &t0);
        CHECK(lomo_model_forward(small, tok, NULL, 1, 24, NULL, l24) == LOMO_ERR_OOM &&
                  strstr(lomo_last_error(tight), "rope tables"),
              "tables past the limit: %s", lomo_last_error(tight));
        CHECK(lomo_model_decode(small, tok, 1, 1, 0, next) == LOMO_ERR_OOM && strstr(lomo_last_error(tight), "rope tables"),
              "decode's tables past the limit: %s", lomo_last_error(tight));
        lomo_mem_get_stats(tight, &t1);
        CHECK(t1.current_total == t0.current_total, "the failed tables hold %zu bytes",
              t1.current_total - t0.current_total);
        lomo_model_destroy(small);
        lomo_ctx_destroy(tight);
    }

    /* two contexts account independently */
    lomo_ctx *ctx2;
    lomo_ctx_create(&ctx2, NULL);
    lomo_model *m;
    lomo_model_create(&m, ctx2, &c, NULL);
    lomo_mem_stats s1, s2;
    lomo_mem_get_stats(ctx, &s1);
    lomo_mem_get_stats(ctx2, &s2);
    CHECK(s1.current_total == 0 && s2.current_total > 0, "contexts share accounting");
    lomo_model_destroy(m);
    lomo_ctx_destroy(ctx2);
    lomo_ctx_destroy(ctx);
    return test_summary("test_memory");
}
