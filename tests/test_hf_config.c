/*
 * test_hf_config.c: config.json in and out. The fixture (as transformers
 * writes it) reads into the right fields; defaults apply where HF has them;
 * every missing field, wrong JSON type and unsupported feature is refused
 * naming config.json and the field; what we write reads back and has the
 * keys transformers' LlamaConfig needs.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fixture.h"
#include "runtime/lomo.h"

static lomo_ctx *ctx;
static char tmpdir[] = "/tmp/lomo_hfcfg_XXXXXX";
static char path[512];
static json_t *base;  /* the fixture's config.json */

static void write_json(const json_t *j) {
    CHECK(json_dump_file(j, path, JSON_INDENT(1)) == 0, "write %s", path);
}

/* The fixture with key set to val (NULL: removed); loading must fail naming the needles. */
static void expect_bad(const char *key, json_t *val, lomo_status want, const char *n1, const char *n2) {
    json_t *j = json_deep_copy(base);
    if (val) json_object_set_new(j, key, val);
    else json_object_del(j, key);
    write_json(j);
    json_decref(j);
    lomo_llama_config c;
    memset(&c, 0x5a, sizeof c);
    lomo_status st = lomo_config_load_hf(ctx, path, &c);
    const char *err = lomo_last_error(ctx);
    CHECK(st == want, "%s: status %s, want %s (%s)", key, lomo_status_name(st), lomo_status_name(want), err);
    CHECK(strstr(err, "config.json") != NULL, "%s: error names the file: %s", key, err);
    CHECK(strstr(err, n1) != NULL, "%s: error lacks \"%s\": %s", key, n1, err);
    if (n2) CHECK(strstr(err, n2) != NULL, "%s: error lacks \"%s\": %s", key, n2, err);
    CHECK(c.hidden_size == 0x5a5a5a5a, "%s: output untouched on failure", key);
}

static lomo_status load_with(const char *key, json_t *val, lomo_llama_config *c) {
    json_t *j = json_deep_copy(base);
    if (val) json_object_set_new(j, key, val);
    else json_object_del(j, key);
    write_json(j);
    json_decref(j);
    lomo_status st = lomo_config_load_hf(ctx, path, c);
    CHECK(st == LOMO_OK, "%s: %s", key, lomo_last_error(ctx));
    return st;
}

static void test_fixture(void) {
    lomo_llama_config c;
    lomo_status st = lomo_config_load_hf(ctx, fx_path("st/tiny/config.json"), &c);
    CHECK(st == LOMO_OK, "fixture: %s", lomo_last_error(ctx));
    CHECK(c.hidden_size == 16 && c.intermediate_size == 24 && c.num_hidden_layers == 2 &&
              c.num_attention_heads == 4 && c.num_key_value_heads == 2 && c.vocab_size == 37 &&
              c.max_position_embeddings == 32 && c.tie_word_embeddings == 0 && c.rms_norm_eps == 1e-5 &&
              c.rope_theta == 10000.0,
          "fixture fields");
    st = lomo_config_load_hf(ctx, fx_path("st/tiny_tied/config.json"), &c);
    CHECK(st == LOMO_OK && c.tie_word_embeddings == 1, "tied fixture");
}

static void test_defaults(void) {
    lomo_llama_config c;
    if (!load_with("num_key_value_heads", NULL, &c)) CHECK(c.num_key_value_heads == 4, "kv heads default = heads");
    if (!load_with("num_key_value_heads", json_null(), &c)) CHECK(c.num_key_value_heads == 4, "null kv heads");
    if (!load_with("rope_theta", NULL, &c)) CHECK(c.rope_theta == 10000.0, "rope_theta default");
    if (!load_with("rope_theta", json_integer(500000), &c)) CHECK(c.rope_theta == 500000.0, "integer rope_theta");
    if (!load_with("tie_word_embeddings", NULL, &c)) CHECK(c.tie_word_embeddings == 0, "untied by default");
    if (!load_with("architectures", NULL, &c)) CHECK(c.hidden_size == 16, "architectures optional");
    if (!load_with("architectures", json_pack("[s]", "MistralForCausalLM"), &c)) CHECK(1, "mistral arch");
    if (!load_with("model_type", json_string("mistral"), &c)) CHECK(1, "mistral model_type");
    if (!load_with("rope_scaling", json_pack("{s:s}", "rope_type", "default"), &c))
        CHECK(c.rope_scaling.rope_type == LOMO_ROPE_DEFAULT, "default rope");
    if (!load_with("rope_scaling", json_null(), &c)) CHECK(c.rope_scaling.rope_type == LOMO_ROPE_DEFAULT, "null");
    /* Llama 3.2's block, as its config.json has it */
    if (!load_with("rope_scaling",
                   json_pack("{s:f,s:f,s:f,s:i,s:s}", "factor", 32.0, "high_freq_factor", 4.0, "low_freq_factor", 1.0,
                             "original_max_position_embeddings", 8192, "rope_type", "llama3"),
                   &c))
        CHECK(c.rope_scaling.rope_type == LOMO_ROPE_LLAMA3 && c.rope_scaling.factor == 32.0 &&
                  c.rope_scaling.low_freq_factor == 1.0 && c.rope_scaling.high_freq_factor == 4.0 &&
                  c.rope_scaling.original_max_position_embeddings == 8192,
              "llama3 scaling read");
    /* older configs name the kind "type"; integers are numbers too */
    if (!load_with("rope_scaling", json_pack("{s:s,s:i}", "type", "linear", "factor", 2), &c))
        CHECK(c.rope_scaling.rope_type == LOMO_ROPE_LINEAR && c.rope_scaling.factor == 2.0, "linear scaling read");
    if (!load_with("head_dim", json_integer(4), &c)) CHECK(1, "head_dim = hidden / heads");
    if (!load_with("hidden_act", NULL, &c)) CHECK(1, "hidden_act defaults to silu");
    if (!load_with("sliding_window", json_integer(16), &c))
        CHECK(c.max_position_embeddings == 16, "sliding window 16 caps the sequence length");
    if (!load_with("sliding_window", json_integer(4096), &c))
        CHECK(c.max_position_embeddings == 32, "a window beyond max_position_embeddings changes nothing");
    if (!load_with("sliding_window", json_null(), &c)) CHECK(c.max_position_embeddings == 32, "null window");
}

static void test_errors(void) {
    static const char *required[] = {"hidden_size", "intermediate_size", "num_hidden_layers",
                                     "num_attention_heads", "vocab_size", "max_position_embeddings",
                                     "rms_norm_eps", "model_type"};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++)
        expect_bad(required[i], NULL, LOMO_ERR_CONFIG, required[i], "missing");
    expect_bad("hidden_size", json_null(), LOMO_ERR_CONFIG, "hidden_size", "missing");
    expect_bad("hidden_size", json_string("16"), LOMO_ERR_CONFIG, "hidden_size", "integer");
    expect_bad("hidden_size", json_real(16.0), LOMO_ERR_CONFIG, "hidden_size", "integer");
    expect_bad("vocab_size", json_integer(1ll << 40), LOMO_ERR_CONFIG, "vocab_size", "range");
    expect_bad("rms_norm_eps", json_string("1e-5"), LOMO_ERR_CONFIG, "rms_norm_eps", "number");
    expect_bad("tie_word_embeddings", json_integer(1), LOMO_ERR_CONFIG, "tie_word_embeddings", "true or false");
    expect_bad("model_type", json_string("gpt2"), LOMO_ERR_CONFIG, "model_type", "gpt2");
    expect_bad("model_type", json_integer(3), LOMO_ERR_CONFIG, "model_type", "string");
    expect_bad("architectures", json_pack("[s]", "LlamaForSequenceClassification"), LOMO_ERR_CONFIG,
               "architectures[0]", "LlamaForSequenceClassification");
    expect_bad("architectures", json_string("LlamaForCausalLM"), LOMO_ERR_CONFIG, "architectures", "array");
    expect_bad("rope_scaling", json_pack("{s:s,s:f}", "rope_type", "dynamic", "factor", 2.0), LOMO_ERR_CONFIG,
               "rope_scaling: rope_type", "\"dynamic\" is not supported");
    expect_bad("rope_scaling", json_pack("{s:s,s:f}", "type", "yarn", "factor", 4.0), LOMO_ERR_CONFIG,
               "rope_scaling: rope_type", "yarn");
    expect_bad("rope_scaling", json_pack("{s:f}", "factor", 2.0), LOMO_ERR_CONFIG, "rope_scaling: rope_type",
               "missing");
    expect_bad("rope_scaling", json_pack("{s:i}", "rope_type", 3), LOMO_ERR_CONFIG, "rope_scaling: rope_type",
               "string");
    expect_bad("rope_scaling", json_pack("{s:s}", "rope_type", "linear"), LOMO_ERR_CONFIG, "rope_scaling: factor",
               "missing");
    expect_bad("rope_scaling", json_pack("{s:s,s:s}", "rope_type", "linear", "factor", "2"), LOMO_ERR_CONFIG,
               "rope_scaling: factor", "number");
    expect_bad("rope_scaling", json_pack("{s:s,s:f}", "rope_type", "linear", "factor", 0.0), LOMO_ERR_CONFIG,
               "rope_scaling.factor", "positive");
    expect_bad("rope_scaling",
               json_pack("{s:s,s:f,s:f,s:i}", "rope_type", "llama3", "factor", 8.0, "high_freq_factor", 4.0,
                         "original_max_position_embeddings", 8192),
               LOMO_ERR_CONFIG, "rope_scaling: low_freq_factor", "missing");
    expect_bad("rope_scaling",
               json_pack("{s:s,s:f,s:f,s:f}", "rope_type", "llama3", "factor", 8.0, "high_freq_factor", 4.0,
                         "low_freq_factor", 1.0),
               LOMO_ERR_CONFIG, "rope_scaling: original_max_position_embeddings", "missing");
    expect_bad("rope_scaling",
               json_pack("{s:s,s:f,s:f,s:f,s:i}", "rope_type", "llama3", "factor", 8.0, "high_freq_factor", 1.0,
                         "low_freq_factor", 1.0, "original_max_position_embeddings", 8192),
               LOMO_ERR_CONFIG, "rope_scaling.high_freq_factor", "above low_freq_factor");
    expect_bad("rope_scaling", json_string("yes"), LOMO_ERR_CONFIG, "rope_scaling", "object");
    expect_bad("attention_bias", json_true(), LOMO_ERR_CONFIG, "attention_bias", NULL);
    expect_bad("mlp_bias", json_true(), LOMO_ERR_CONFIG, "mlp_bias", NULL);
    expect_bad("head_dim", json_integer(8), LOMO_ERR_CONFIG, "head_dim", "8");
    expect_bad("hidden_act", json_string("gelu"), LOMO_ERR_CONFIG, "hidden_act", "gelu");
    expect_bad("attention_dropout", json_real(0.1), LOMO_ERR_CONFIG, "attention_dropout", NULL);
    expect_bad("quantization_config", json_pack("{s:s}", "quant_method", "gptq"), LOMO_ERR_CONFIG,
               "quantization_config", NULL);
    /* lomo_config_validate's checks, prefixed with the file */
    expect_bad("num_key_value_heads", json_integer(3), LOMO_ERR_CONFIG, "num_key_value_heads", "divide");
    expect_bad("num_attention_heads", json_integer(0), LOMO_ERR_CONFIG, "num_attention_heads", "positive");
    expect_bad("rms_norm_eps", json_integer(0), LOMO_ERR_CONFIG, "rms_norm_eps", "positive");

    FILE *f = fopen(path, "w");
    fputs("{\"hidden_size\": 16,", f);
    fclose(f);
    lomo_llama_config c;
    lomo_status st = lomo_config_load_hf(ctx, path, &c);
    CHECK(st == LOMO_ERR_CONFIG && strstr(lomo_last_error(ctx), "config.json") &&
              strstr(lomo_last_error(ctx), "invalid JSON"),
          "truncated JSON: %s", lomo_last_error(ctx));
    f = fopen(path, "w");
    fputs("[1]", f);
    fclose(f);
    st = lomo_config_load_hf(ctx, path, &c);
    CHECK(st == LOMO_ERR_CONFIG && strstr(lomo_last_error(ctx), "object"), "array: %s", lomo_last_error(ctx));
    st = lomo_config_load_hf(ctx, "/nonexistent/config.json", &c);
    CHECK(st == LOMO_ERR_IO && strstr(lomo_last_error(ctx), "/nonexistent/config.json"), "missing file: %s",
          lomo_last_error(ctx));
}

/* RoPE scaling written as transformers reads it, and back exactly */
static void test_save_rope_scaling(void) {
    lomo_llama_config c = {.hidden_size = 48, .intermediate_size = 136, .num_hidden_layers = 2,
                           .num_attention_heads = 6, .num_key_value_heads = 2, .vocab_size = 211,
                           .max_position_embeddings = 131072, .rms_norm_eps = 1e-5, .rope_theta = 500000.0,
                           .rope_scaling = {LOMO_ROPE_LLAMA3, 32.0, 1.0, 4.0, 8192}};
    lomo_llama_config r;
    CHECK(lomo_config_save_hf(ctx, &c, path) == LOMO_OK && lomo_config_load_hf(ctx, path, &r) == LOMO_OK &&
              fx_same_config(&r, &c),
          "llama3 scaling reads back identical: %s", lomo_last_error(ctx));
    json_t *j = json_load_file(path, 0, NULL), *rs = j ? json_object_get(j, "rope_scaling") : NULL;
    CHECK(rs && !strcmp(json_string_value(json_object_get(rs, "rope_type")), "llama3") &&
              json_real_value(json_object_get(rs, "factor")) == 32.0 &&
              json_integer_value(json_object_get(rs, "original_max_position_embeddings")) == 8192,
          "rope_scaling object written");
    json_decref(j);
    c.rope_scaling = (lomo_rope_scaling){LOMO_ROPE_LINEAR, 2.5, 0, 0, 0};
    CHECK(lomo_config_save_hf(ctx, &c, path) == LOMO_OK && lomo_config_load_hf(ctx, path, &r) == LOMO_OK &&
              fx_same_config(&r, &c),
          "linear scaling reads back identical: %s", lomo_last_error(ctx));
    j = json_load_file(path, 0, NULL);
    rs = j ? json_object_get(j, "rope_scaling") : NULL;
    CHECK(rs && json_object_size(rs) == 2 && json_real_value(json_object_get(rs, "factor")) == 2.5,
          "linear: rope_type and factor only");
    json_decref(j);
    c.rope_scaling.factor = -1;
    CHECK(lomo_config_save_hf(ctx, &c, path) == LOMO_ERR_CONFIG && strstr(lomo_last_error(ctx), "rope_scaling.factor"),
          "a bad factor is not saved: %s", lomo_last_error(ctx));
}

static void test_save(void) {
    lomo_llama_config c = {.hidden_size = 48, .intermediate_size = 136, .num_hidden_layers = 2,
                           .num_attention_heads = 6, .num_key_value_heads = 2, .vocab_size = 211,
                           .max_position_embeddings = 64, .tie_word_embeddings = 1, .rms_norm_eps = 1e-6,
                           .rope_theta = 500000.0};
    lomo_status st = lomo_config_save_hf(ctx, &c, path);
    CHECK(st == LOMO_OK, "save: %s", lomo_last_error(ctx));
    lomo_llama_config r;
    st = lomo_config_load_hf(ctx, path, &r);
    CHECK(st == LOMO_OK && fx_same_config(&r, &c), "saved config reads back identical: %s", lomo_last_error(ctx));
    json_t *j = json_load_file(path, 0, NULL);
    CHECK(j != NULL, "saved config is JSON");
    if (j) {
        json_t *arch = json_object_get(j, "architectures");
        CHECK(!strcmp(json_string_value(json_object_get(j, "model_type")), "llama"), "model_type llama");
        CHECK(json_array_size(arch) == 1 && !strcmp(json_string_value(json_array_get(arch, 0)), "LlamaForCausalLM"),
              "architectures");
        CHECK(!strcmp(json_string_value(json_object_get(j, "hidden_act")), "silu"), "hidden_act");
        CHECK(json_is_true(json_object_get(j, "tie_word_embeddings")), "tie_word_embeddings true");
        CHECK(json_object_get(j, "torch_dtype") == NULL, "no torch_dtype without weights");
        CHECK(json_real_value(json_object_get(j, "rms_norm_eps")) == 1e-6, "eps exact");
        CHECK(json_is_null(json_object_get(j, "rope_scaling")), "no scaling: rope_scaling null");
        json_decref(j);
    }
    char text[4096] = "";
    FILE *f = fopen(path, "r");
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    CHECK(strstr(text, "\"rms_norm_eps\": 1e-6,") && strstr(text, "\"rope_theta\": 500000.0,") &&
              strstr(text, "\"initializer_range\": 0.02,"),
          "reals written shortest: %s", text);

    c.num_key_value_heads = 4;  /* does not divide 6 heads */
    st = lomo_config_save_hf(ctx, &c, path);
    CHECK(st == LOMO_ERR_CONFIG && strstr(lomo_last_error(ctx), "num_key_value_heads"), "invalid config not saved");
    st = lomo_config_load_hf(ctx, path, &r);
    CHECK(st == LOMO_OK && r.num_key_value_heads == 2, "previous file intact");
}

int main(void) {
    if (lomo_ctx_create(&ctx, NULL) != LOMO_OK || !mkdtemp(tmpdir)) return 1;
    snprintf(path, sizeof path, "%s/config.json", tmpdir);
    base = json_load_file(fx_path("st/tiny/config.json"), 0, NULL);
    CHECK(base != NULL, "fixture config.json");
    if (base) {
        test_fixture();
        test_defaults();
        test_errors();
        test_save();
        test_save_rope_scaling();
    }
    json_decref(base);
    unlink(path);
    rmdir(tmpdir);
    lomo_ctx_destroy(ctx);
    return test_summary("test_hf_config");
}
