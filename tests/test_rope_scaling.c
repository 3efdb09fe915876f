/*
 * test_rope_scaling.c: config.json's rope_scaling (linear; llama3, as Llama 3.1
 * and later ship) against transformers itself (fixtures/gen_rope_scaling.py).
 *
 * For each kind: the folder transformers saved loads with its scaling; the
 * rotary frequencies equal those transformers computes (float32 there, so to
 * 1e-6); the logits of a forward, and of decoding one token a call through
 * the key/value cache, match transformers' float64 forward. The fixture also
 * holds the logits of the same weights without scaling, and the test checks
 * that those lie far outside the tolerance: a model that ignored the scaling
 * could not pass.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "fixture.h"
#include "runtime/lomo.h"
#include "runtime/lomo_io.h"
#include "runtime/model.h"

static lomo_ctx *ctx;

/* f32 forward against float64 with float32 RoPE tables: per-op rounding, a few 1e-6 relative */
#define ATOL 2e-5
#define RTOL 1e-4

static void check_kind(const char *kind, int want_type) {
    char folder[256], bin[256];
    snprintf(folder, sizeof folder, "rope/%s", kind);
    snprintf(bin, sizeof bin, "rope/%s.bin", kind);
    fixture fx;
    if (fx_load(&fx, fx_path(bin)) != 0) {
        CHECK(0, "%s: load %s", kind, bin);
        return;
    }
    lomo_model *m = NULL;
    lomo_model_options o = {.dtype = LOMO_F32};
    lomo_status st = lomo_model_load_hf(&m, ctx, fx_path(folder), &o);
    CHECK(st == LOMO_OK, "%s: load the folder: %s", kind, lomo_last_error(ctx));
    if (st) {
        fx_free(&fx);
        return;
    }
    const lomo_llama_config *c = lomo_model_config(m);
    CHECK(c->rope_scaling.rope_type == want_type, "%s: rope_scaling read as %s", kind,
          lomo_rope_type_name((lomo_rope_type)c->rope_scaling.rope_type));

    int hd = c->hidden_size / c->num_attention_heads;
    double inv_freq[256];
    rope_inv_freq(inv_freq, c, hd);
    const double *want_f = fx_f64(&fx, "inv_freq", (size_t)hd / 2);
    for (int j = 0; want_f && j < hd / 2; j++)
        CHECK(fabs(inv_freq[j] - want_f[j]) <= 1e-6 * want_f[j], "%s: inv_freq[%d] %.9g, transformers %.9g", kind, j,
              inv_freq[j], want_f[j]);

    const fx_tensor *tt = fx_get(&fx, "tokens");
    int B = tt ? (int)tt->dims[0] : 0, T = tt ? (int)tt->dims[1] : 0, V = c->vocab_size;
    size_t n = (size_t)B * T * V;
    const int32_t *tokens = fx_i32(&fx, "tokens", (size_t)B * T);
    const double *want = fx_f64(&fx, "logits", n), *unscaled = fx_f64(&fx, "logits_unscaled", n);
    float *logits = malloc(n * sizeof(float)), *step = malloc((size_t)B * V * sizeof(float));
    int32_t *col = malloc((size_t)B * sizeof(int32_t));
    if (!tokens || !want || !unscaled || !logits || !step || !col) {
        CHECK(0, "%s: fixture records or memory", kind);
    } else {
        /* the test's power: the scaling moves some logit by far more than the tolerance */
        size_t moved = 0;
        for (size_t i = 0; i < n; i++) moved += fabs(unscaled[i] - want[i]) > 100 * (ATOL + RTOL * fabs(want[i]));
        CHECK(moved > n / 10, "%s: only %zu of %zu logits move with the scaling", kind, moved, n);

        CHECK(lomo_model_forward(m, tokens, NULL, B, T, NULL, logits) == LOMO_OK, "%s: forward: %s", kind,
              lomo_last_error(ctx));
        CHECK(fx_compare("forward logits", logits, want, n, ATOL, RTOL) == 0, "%s: forward logits", kind);

        /* one position a call through the cache: the tables at each offset */
        size_t bad = 0;
        for (int t = 0; t < T; t++) {
            for (int b = 0; b < B; b++) col[b] = tokens[(size_t)b * T + t];
            if (lomo_model_decode(m, col, B, 1, t, step) != LOMO_OK) {
                CHECK(0, "%s: decode at %d: %s", kind, t, lomo_last_error(ctx));
                break;
            }
            for (int b = 0; b < B; b++)
                for (int v = 0; v < V; v++) {
                    double w = want[((size_t)b * T + t) * V + v];
                    bad += !(fabs(step[(size_t)b * V + v] - w) <= ATOL + RTOL * fabs(w));
                }
        }
        CHECK(bad == 0, "%s: %zu decoded logits outside tolerance", kind, bad);
    }
    free(logits);
    free(step);
    free(col);
    lomo_model_destroy(m);
    fx_free(&fx);
}

int main(void) {
    if (lomo_ctx_create(&ctx, NULL) != LOMO_OK) return 1;
    check_kind("linear", LOMO_ROPE_LINEAR);
    check_kind("llama3", LOMO_ROPE_LLAMA3);
    lomo_ctx_destroy(ctx);
    return test_summary("test_rope_scaling");
}
