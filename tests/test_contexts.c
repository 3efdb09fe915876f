/*
 * test_contexts.c: two contexts in one process are independent: models
 * trained in both, interleaved step by step (and from two threads at once),
 * end bitwise where each ends alone; errors and memory accounting stay in
 * their own context.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"
#include "runtime/lomo.h"

static const lomo_llama_config CFG = {.hidden_size = 32, .intermediate_size = 64, .num_hidden_layers = 2,
                                      .num_attention_heads = 4, .num_key_value_heads = 2, .vocab_size = 50,
                                      .max_position_embeddings = 16, .rms_norm_eps = 1e-5, .rope_theta = 1e4};

typedef struct job {
    lomo_ctx *ctx;
    lomo_model *m;
    lomo_optim *opt;
    lomo_dtype dt;
    uint64_t seed;
    float losses[6];
} job;

static void job_start(job *j, lomo_dtype dt, uint64_t seed, int clip) {
    j->dt = dt;
    j->seed = seed;
    lomo_ctx_options co = {.num_threads = 1};
    lomo_ctx_create(&j->ctx, &co);
    lomo_model_options mo = {.dtype = dt, .seed = seed};
    lomo_model_create(&j->m, j->ctx, &CFG, &mo);
    lomo_optim_options oo;
    lomo_optim_options_default(&oo, LOMO_OPTIM_LOMO);
    oo.clip_grad_norm = clip ? 0.5f : 0.0f;
    lomo_optim_create(&j->opt, j->m, &oo);
}

static void job_step(job *j, int s) {
    int32_t tok[2 * 8], tgt[2 * 8];
    for (int i = 0; i < 16; i++) {
        tok[i] = (int32_t)((j->seed * 31 + (uint64_t)i * 7 + (uint64_t)s * 13) % 50);
        tgt[i] = (int32_t)((j->seed * 17 + (uint64_t)i * 11 + (uint64_t)s * 5) % 50);
    }
    lomo_step_result r;
    lomo_optim_step(j->opt, tok, tgt, 2, 8, 0.05f, &r);
    j->losses[s] = r.loss;
}

static void job_end(job *j) {
    lomo_optim_destroy(j->opt);
    lomo_model_destroy(j->m);
    lomo_ctx_destroy(j->ctx);
}

static void *run_alone(void *arg) {
    job *j = arg;
    for (int s = 0; s < 6; s++) job_step(j, s);
    return NULL;
}

int main(void) {
    job a0, b0, a, b, a2, b2;
    /* alone */
    job_start(&a0, LOMO_F32, 1, 0);
    run_alone(&a0);
    job_start(&b0, LOMO_F16, 2, 1);
    run_alone(&b0);
    /* interleaved */
    job_start(&a, LOMO_F32, 1, 0);
    job_start(&b, LOMO_F16, 2, 1);
    for (int s = 0; s < 6; s++) {
        job_step(&a, s);
        job_step(&b, s);
    }
    CHECK(memcmp(a.losses, a0.losses, sizeof a.losses) == 0, "context A's run changed by B's");
    CHECK(memcmp(b.losses, b0.losses, sizeof b.losses) == 0, "context B's run changed by A's");
    /* at the same time, from two threads */
    job_start(&a2, LOMO_F32, 1, 0);
    job_start(&b2, LOMO_F16, 2, 1);
    pthread_t ta, tb;
    pthread_create(&ta, NULL, run_alone, &a2);
    pthread_create(&tb, NULL, run_alone, &b2);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(memcmp(a2.losses, a0.losses, sizeof a.losses) == 0, "thread A differs from A alone");
    CHECK(memcmp(b2.losses, b0.losses, sizeof b.losses) == 0, "thread B differs from B alone");

    /* an error in one context leaves the other's text alone */
    int32_t bad[1] = {999};
    float loss;
    CHECK(lomo_model_forward(a.m, bad, NULL, 1, 1, &loss, NULL) == LOMO_ERR_INVALID_ARG, "bad token");
    CHECK(strstr(lomo_last_error(a.ctx), "999") && !strstr(lomo_last_error(b.ctx), "999"), "error text leaked");
    /* memory is accounted per context */
    lomo_mem_stats sa, sb;
    lomo_mem_get_stats(a.ctx, &sa);
    lomo_mem_get_stats(b.ctx, &sb);
    CHECK(sa.current[LOMO_MEM_WEIGHTS] == 2 * sb.current[LOMO_MEM_WEIGHTS] ||
              sa.current[LOMO_MEM_WEIGHTS] > sb.current[LOMO_MEM_WEIGHTS],
          "f32 context should hold more weight bytes than the f16 one");
    job_end(&a);
    lomo_mem_get_stats(b.ctx, &sb);
    CHECK(sb.current[LOMO_MEM_WEIGHTS] > 0, "destroying A freed B's memory");
    job_end(&b);
    job_end(&a0);
    job_end(&b0);
    job_end(&a2);
    job_end(&b2);
    return test_summary("test_contexts");
}
