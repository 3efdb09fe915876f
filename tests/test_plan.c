/*
 * test_plan.c: the memory plan equals what a real step accounts, category by
 * category, for inference and every optimizer, f32 and bf16, for each
 * checkpointing mode, tied and untied, the LM head whole and in vocabulary
 * chunks; an unknown mode is refused; a CUDA plan made without a GPU.
 */
#include <stdio.h>
#include <string.h>
#include "fixture.h"
#include "runtime/lomo.h"

/* the LM head's vocabulary rows at a time (lomo_model_options.logits_chunk) of the models checked */
static int logits_chunk;

static void check(lomo_ctx *ctx, const lomo_llama_config *c, lomo_dtype dt, int ckpt, const lomo_optim_options *oo,
                  const char *what) {
    int B = 2, T = 12;
    lomo_model_options mo = {.dtype = dt, .checkpointing = ckpt, .seed = 5, .logits_chunk = logits_chunk};
    lomo_plan plan;
    CHECK(lomo_plan_memory(ctx, c, &mo, oo, B, T, &plan) == LOMO_OK, "plan: %s", lomo_last_error(ctx));
    lomo_model *m;
    lomo_model_create(&m, ctx, c, &mo);
    lomo_optim *opt = NULL;
    if (oo) lomo_optim_create(&opt, m, oo);
    int32_t tok[24], tgt[24];
    for (int i = 0; i < B * T; i++) {
        tok[i] = (i * 7 + 3) % c->vocab_size;
        tgt[i] = i % 5 ? (i * 11) % c->vocab_size : -100;
    }
    float loss;
    lomo_step_result r;
    for (int s = 0; s < 2; s++) {
        if (opt) lomo_optim_step(opt, tok, tgt, B, T, 0.01f, &r);
        else lomo_model_forward(m, tok, tgt, B, T, &loss, NULL);
    }
    lomo_mem_stats st;
    lomo_mem_get_stats(ctx, &st);
    size_t want[LOMO_MEM_COUNT] = {plan.weights, plan.activations, plan.gradients, plan.optimizer, plan.scratch};
    for (int k = 0; k < LOMO_MEM_COUNT; k++)
        CHECK(st.peak[k] == want[k], "%s (%s, ckpt %d, tied %d, logits chunk %d): %s planned %zu, accounted %zu",
              what, lomo_dtype_name(dt), ckpt, c->tie_word_embeddings, logits_chunk,
              lomo_mem_category_name((lomo_mem_category)k), want[k], st.peak[k]);
    CHECK(plan.total >= st.peak_total, "%s: plan total %zu below the accounted peak %zu", what, plan.total,
          st.peak_total);
    lomo_optim_destroy(opt);
    lomo_model_destroy(m);
    lomo_mem_reset_peak(ctx);
}

/*
 * A CUDA plan from this CPU context (lomo_plan_memory_for): the same weights,
 * gradients and optimizer state; no f32 widening buffer for 16-bit weights
 * (the scratch is smaller by exactly the largest matrix in f32); attention
 * statistics of B*NH*T floats, so the activations equal the CPU's at T = 1
 * (B*NH*T*T there too) and are smaller beyond; CUDA's head size limit.
 */
static void plan_for_cuda(lomo_ctx *ctx, lomo_llama_config c) {
    lomo_plan self, cpu, gpu;
    lomo_optim_options o;
    lomo_optim_options_default(&o, LOMO_OPTIM_LOMO);
    o.clip_grad_norm = 1.0f;
    size_t largest = (size_t)c.vocab_size * c.hidden_size;   /* the embedding (and head) here */
    for (int dt = LOMO_F32; dt <= LOMO_BF16; dt++) {
        lomo_model_options mo = {.dtype = (lomo_dtype)dt, .checkpointing = LOMO_CHECKPOINT_KEEP_ATTENTION};
        for (int T = 1; T <= 12; T += 11) {
            CHECK(lomo_plan_memory(ctx, &c, &mo, &o, 2, T, &self) == LOMO_OK &&
                      lomo_plan_memory_for(ctx, "cpu", &c, &mo, &o, 2, T, &cpu) == LOMO_OK &&
                      lomo_plan_memory_for(ctx, "cuda", &c, &mo, &o, 2, T, &gpu) == LOMO_OK,
                  "plans: %s", lomo_last_error(ctx));
            CHECK(memcmp(&self, &cpu, sizeof self) == 0, "the context's own device named");
            CHECK(gpu.weights == cpu.weights && gpu.gradients == cpu.gradients && gpu.optimizer == cpu.optimizer,
                  "cuda plan: weights, gradients and optimizer as the cpu's");
            size_t wbuf = dt == LOMO_F32 ? 0 : largest * sizeof(float);
            CHECK(cpu.scratch - gpu.scratch == wbuf, "%s: cuda scratch %zu, cpu %zu: differ by %zu, want %zu",
                  lomo_dtype_name((lomo_dtype)dt), gpu.scratch, cpu.scratch, cpu.scratch - gpu.scratch, wbuf);
            CHECK(T == 1 ? gpu.activations == cpu.activations : gpu.activations < cpu.activations,
                  "seq %d: cuda activations %zu, cpu %zu", T, gpu.activations, cpu.activations);
        }
    }
    lomo_llama_config wide = c;
    wide.hidden_size = 1024;
    wide.num_attention_heads = 2;   /* head size 512 */
    wide.num_key_value_heads = 1;
    CHECK(lomo_plan_memory_for(ctx, "cpu", &wide, NULL, NULL, 1, 8, &cpu) == LOMO_OK, "cpu: head size 512");
    CHECK(lomo_plan_memory_for(ctx, "cuda", &wide, NULL, NULL, 1, 8, &gpu) == LOMO_ERR_CONFIG &&
              strstr(lomo_last_error(ctx), "exceeds the cuda backend's 256"),
          "cuda: head size 512: %s", lomo_last_error(ctx));
    CHECK(lomo_plan_memory_for(ctx, "tpu", &c, NULL, NULL, 1, 8, &cpu) == LOMO_ERR_INVALID_ARG &&
              strstr(lomo_last_error(ctx), "\"tpu\""),
          "unknown device: %s", lomo_last_error(ctx));
}

int main(void) {
    lomo_ctx *ctx;
    lomo_ctx_create(&ctx, NULL);
    lomo_llama_config c = {.hidden_size = 48, .intermediate_size = 136, .num_hidden_layers = 2,
                           .num_attention_heads = 6, .num_key_value_heads = 2, .vocab_size = 211,
                           .max_position_embeddings = 32, .rms_norm_eps = 1e-6, .rope_theta = 1e4};
    /* untied and tied, the head whole and in chunks of 48 of the 211 vocabulary rows */
    for (int run = 0; run < 4; run++) {
        c.tie_word_embeddings = run % 2;
        logits_chunk = run / 2 * 48;
        for (int dt = LOMO_F32; dt <= LOMO_BF16; dt++) {
            for (int ckpt = LOMO_CHECKPOINT_OFF; ckpt <= LOMO_CHECKPOINT_KEEP_ATTENTION; ckpt++) {
                check(ctx, &c, (lomo_dtype)dt, ckpt, NULL, "inference");
                lomo_optim_options o;
                const char *names[] = {"lomo", "adalomo", "sgd", "adamw"};
                for (int k = LOMO_OPTIM_LOMO; k <= LOMO_OPTIM_ADAMW; k++) {
                    lomo_optim_options_default(&o, (lomo_optim_kind)k);
                    check(ctx, &c, (lomo_dtype)dt, ckpt, &o, names[k]);
                }
                lomo_optim_options_default(&o, LOMO_OPTIM_LOMO);
                o.clip_grad_norm = 1.0f;
                o.norm_method = LOMO_NORM_GRAM;
                check(ctx, &c, (lomo_dtype)dt, ckpt, &o, "lomo + clip_grad_norm (Gram)");
                o.norm_method = LOMO_NORM_FORM_GRAD;
                check(ctx, &c, (lomo_dtype)dt, ckpt, &o, "lomo + clip_grad_norm (form dW)");
                lomo_optim_options_default(&o, LOMO_OPTIM_LOMO);
                o.clip_grad_value = 0.1f;
                check(ctx, &c, (lomo_dtype)dt, ckpt, &o, "lomo + clip_grad_value");
                /* a measuring pass: a tied head in chunks goes through both in passes */
                lomo_optim_options_default(&o, LOMO_OPTIM_ADALOMO);
                o.clip_grad_norm = 1.0f;
                check(ctx, &c, (lomo_dtype)dt, ckpt, &o, "adalomo + clip_grad_norm");
            }
        }
    }
    lomo_plan p;
    c.tie_word_embeddings = 0;
    CHECK(lomo_plan_memory(ctx, &c, NULL, NULL, 1, 33, &p) == LOMO_ERR_INVALID_ARG, "seq beyond max positions");
    lomo_model_options bad = {.checkpointing = 3};
    CHECK(lomo_plan_memory(ctx, &c, &bad, NULL, 1, 8, &p) == LOMO_ERR_INVALID_ARG &&
              strstr(lomo_last_error(ctx), "checkpointing: unknown value 3"),
          "unknown checkpointing mode: %s", lomo_last_error(ctx));
    lomo_model *m;
    CHECK(lomo_model_create(&m, ctx, &c, &bad) == LOMO_ERR_INVALID_ARG && !m, "model with an unknown checkpointing mode");
    CHECK(lomo_model_create(&m, ctx, &c, NULL) == LOMO_OK, "create");
    CHECK(lomo_model_set_checkpointing(m, -1) == LOMO_ERR_INVALID_ARG, "set_checkpointing(-1)");
    lomo_model_destroy(m);
    plan_for_cuda(ctx, c);
    c.hidden_size = 0;
    CHECK(lomo_plan_memory(ctx, &c, NULL, NULL, 1, 8, &p) == LOMO_ERR_CONFIG, "bad config");
    lomo_ctx_destroy(ctx);
    return test_summary("test_plan");
}
