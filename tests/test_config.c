/* test_config.c: every invalid-config error path returns LOMO_ERR_CONFIG naming its field. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"
#include "runtime/lomo.h"

static lomo_llama_config good(void) {
    return (lomo_llama_config){.hidden_size = 48, .intermediate_size = 136, .num_hidden_layers = 2,
                               .num_attention_heads = 6, .num_key_value_heads = 2, .vocab_size = 211,
                               .max_position_embeddings = 64, .tie_word_embeddings = 0,
                               .rms_norm_eps = 1e-6, .rope_theta = 1e4};
}

#define BAD(field_expr, field_name)                                                                  \
    do {                                                                                             \
        lomo_llama_config c = good();                                                                \
        field_expr;                                                                                  \
        lomo_status st = lomo_config_validate(ctx, &c);                                              \
        CHECK(st == LOMO_ERR_CONFIG && strstr(lomo_last_error(ctx), field_name),                     \
              #field_expr ": status %d, message '%s' should name " field_name, st, lomo_last_error(ctx)); \
        lomo_model *m = NULL;                                                                        \
        CHECK(lomo_model_create(&m, ctx, &c, NULL) == LOMO_ERR_CONFIG && m == NULL,                  \
              #field_expr ": model_create must refuse");                                             \
    } while (0)

int main(void) {
    lomo_ctx *ctx;
    CHECK(lomo_ctx_create(&ctx, NULL) == LOMO_OK, "ctx");
    lomo_llama_config ok = good();
    CHECK(lomo_config_validate(ctx, &ok) == LOMO_OK, "good config rejected: %s", lomo_last_error(ctx));

    BAD(c.hidden_size = 0, "hidden_size");
    BAD(c.hidden_size = -48, "hidden_size");
    BAD(c.intermediate_size = 0, "intermediate_size");
    BAD(c.num_hidden_layers = 0, "num_hidden_layers");
    BAD(c.num_attention_heads = 0, "num_attention_heads");
    BAD(c.num_key_value_heads = 0, "num_key_value_heads");
    BAD(c.vocab_size = 0, "vocab_size");
    BAD(c.max_position_embeddings = 0, "max_position_embeddings");
    BAD(c.num_attention_heads = 5, "num_attention_heads");         /* 5 does not divide 48 */
    BAD(c.num_key_value_heads = 4, "num_key_value_heads");         /* 4 does not divide 6 */
    BAD(c.num_key_value_heads = 7, "num_key_value_heads");         /* more kv heads than heads */
    BAD((c.hidden_size = 45, c.num_attention_heads = 3, c.num_key_value_heads = 3), "num_attention_heads"); /* odd head size */
    BAD(c.tie_word_embeddings = 2, "tie_word_embeddings");
    BAD(c.rms_norm_eps = 0, "rms_norm_eps");
    BAD(c.rms_norm_eps = NAN, "rms_norm_eps");
    BAD(c.rope_theta = -1, "rope_theta");
    BAD(c.rope_theta = INFINITY, "rope_theta");
    /* RoPE scaling: each field of its kind */
    const lomo_rope_scaling llama3 = {LOMO_ROPE_LLAMA3, 8.0, 1.0, 4.0, 8192};
    BAD(c.rope_scaling.rope_type = 3, "rope_scaling.rope_type");
    BAD(c.rope_scaling.rope_type = -1, "rope_scaling.rope_type");
    BAD((c.rope_scaling.rope_type = LOMO_ROPE_LINEAR, c.rope_scaling.factor = 0), "rope_scaling.factor");
    BAD((c.rope_scaling.rope_type = LOMO_ROPE_LINEAR, c.rope_scaling.factor = NAN), "rope_scaling.factor");
    BAD((c.rope_scaling = llama3, c.rope_scaling.low_freq_factor = 0), "rope_scaling.low_freq_factor");
    BAD((c.rope_scaling = llama3, c.rope_scaling.high_freq_factor = 1.0), "rope_scaling.high_freq_factor");
    BAD((c.rope_scaling = llama3, c.rope_scaling.high_freq_factor = INFINITY), "rope_scaling.high_freq_factor");
    BAD((c.rope_scaling = llama3, c.rope_scaling.original_max_position_embeddings = 0),
        "rope_scaling.original_max_position_embeddings");
    ok.rope_scaling = llama3;
    CHECK(lomo_config_validate(ctx, &ok) == LOMO_OK, "llama3 scaling rejected: %s", lomo_last_error(ctx));
    ok.rope_scaling = (lomo_rope_scaling){LOMO_ROPE_LINEAR, 2.0, 0, 0, 0};
    CHECK(lomo_config_validate(ctx, &ok) == LOMO_OK, "linear scaling rejected: %s", lomo_last_error(ctx));
    ok.rope_scaling = (lomo_rope_scaling){0};
    BAD((c.hidden_size = 1 << 20, c.num_attention_heads = 1, c.num_key_value_heads = 1,
         c.vocab_size = 1 << 30, c.num_hidden_layers = 1000), "hidden_size");  /* size overflow */

    CHECK(lomo_config_validate(ctx, NULL) == LOMO_ERR_INVALID_ARG, "NULL config");
    lomo_model *m = NULL;
    lomo_model_options bad_dtype = {.dtype = (lomo_dtype)7};
    CHECK(lomo_model_create(&m, ctx, &ok, &bad_dtype) == LOMO_ERR_INVALID_ARG && strstr(lomo_last_error(ctx), "dtype"),
          "bad dtype: %s", lomo_last_error(ctx));
    /* a failed create writes its reason into the caller's buffer (there is no context to hold it) */
    char why[200] = "";
    lomo_ctx_options bad_threads = {.num_threads = -1, .why = why, .why_len = sizeof why};
    lomo_ctx *c2 = NULL;
    CHECK(lomo_ctx_create(&c2, &bad_threads) == LOMO_ERR_INVALID_ARG && c2 == NULL && strstr(why, "num_threads is -1"),
          "negative threads: %s", why);
    char tiny[8];
    bad_threads.why = tiny;
    bad_threads.why_len = sizeof tiny;
    CHECK(lomo_ctx_create(&c2, &bad_threads) == LOMO_ERR_INVALID_ARG && strlen(tiny) == sizeof tiny - 1,
          "the reason is cut to the buffer: \"%s\"", tiny);

    /* the device option: a name, the environment, and a GPU that may or may not be there */
    lomo_ctx_options dev = {.device = "nonsense", .why = why, .why_len = sizeof why};
    CHECK(lomo_ctx_create(&c2, &dev) == LOMO_ERR_INVALID_ARG && c2 == NULL && strstr(why, "unknown device \"nonsense\""),
          "unknown device: %s", why);
    dev.device = "cpu";
    CHECK(lomo_ctx_create(&c2, &dev) == LOMO_OK && strcmp(lomo_ctx_device(c2), "cpu") == 0, "device cpu");
    lomo_ctx_destroy(c2);
    c2 = NULL;
    dev.device = "cuda";
    lomo_status st = lomo_ctx_create(&c2, &dev);
    CHECK((st == LOMO_OK && strcmp(lomo_ctx_device(c2), "cuda") == 0) ||
              (st == LOMO_ERR_DEVICE && c2 == NULL && strstr(why, "device \"cuda\"")),
          "device cuda: %s (%s)", lomo_status_name(st), why);
    lomo_ctx_destroy(c2);
    c2 = NULL;
    const char *env = getenv("LOMO_DEVICE");
    char saved[16] = "";
    if (env) snprintf(saved, sizeof saved, "%s", env);
    setenv("LOMO_DEVICE", "nonsense", 1);
    lomo_ctx_options from_env = {.why = why, .why_len = sizeof why};
    CHECK(lomo_ctx_create(&c2, &from_env) == LOMO_ERR_INVALID_ARG && c2 == NULL && strstr(why, "nonsense"),
          "LOMO_DEVICE=nonsense: %s", why);
    dev.device = "cpu";   /* the option wins over the environment */
    CHECK(lomo_ctx_create(&c2, &dev) == LOMO_OK && strcmp(lomo_ctx_device(c2), "cpu") == 0, "option over env");
    lomo_ctx_destroy(c2);
    if (env) setenv("LOMO_DEVICE", saved, 1);
    else unsetenv("LOMO_DEVICE");

    /* the CPU's attention takes any head size (CUDA's limit is checked in tests/gpu/test_cuda.c) */
    lomo_llama_config wide = ok;
    wide.num_attention_heads = wide.num_key_value_heads = 1;
    wide.hidden_size = 512;
    CHECK(lomo_config_validate(ctx, &wide) == LOMO_OK, "head size 512 on cpu: %s", lomo_last_error(ctx));
    lomo_ctx_destroy(ctx);
    return test_summary("test_config");
}
