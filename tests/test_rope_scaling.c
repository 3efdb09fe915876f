/*
 * test_rope_scaling.c: config.json's rope_scaling (linear; llama3, as Llama 3.1
 * and later ship) against transformers itself (fixtures/gen_rope_scaling.py).
 *
 * For each kind: the folder transformers saved loads with its scaling (llama3
 * also from the GGUF llama.cpp's converter would write, whose rope_freqs.weight
 * tensor gives back the parameters); the
 * rotary frequencies equal those transformers computes (float32 there, so to
 * 1e-6); the logits of a forward, and of decoding one token a call through
 * the key/value cache, match transformers' float64 forward, and so do the loss
 * and the gradients of the q and k projections, which RoPE's backward forms. The fixture also
 * holds the logits of the same weights without scaling, and the test checks
 * that those lie far outside the tolerance: a model that ignored the scaling
 * could not pass.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"
#include "runtime/gguf.h"
#include "runtime/lomo.h"
#include "runtime/lomo_io.h"
#include "runtime/model.h"

static lomo_ctx *ctx;

/* f32 forward against float64 with float32 RoPE tables: per-op rounding, a few 1e-6 relative */
#define ATOL 2e-5
#define RTOL 1e-4

/* The test's power: how many of other's n values lie 100 tolerances (atol + rtol |want|) from want's. */
static size_t far_from(const double *other, const double *want, size_t n, double atol, double rtol) {
    size_t moved = 0;
    for (size_t i = 0; i < n; i++) moved += fabs(other[i] - want[i]) > 100 * (atol + rtol * fabs(want[i]));
    return moved;
}

/* The loss and the q and k projections' gradients (RoPE's backward forms them) against transformers'
 * float64 autograd; each must lie far from the gradient without the scaling. */
static void check_backward(lomo_model *m, const fixture *fx, const char *kind, const int32_t *tokens, int B, int T) {
    const int32_t *targets = fx_i32(fx, "targets", (size_t)B * T);
    float loss = 0;
    lomo_grads *g = NULL;
    if (!targets || lomo_grads_create(&g, m) != LOMO_OK) {
        CHECK(0, "%s: targets or gradients: %s", kind, lomo_last_error(ctx));
        return;
    }
    lomo_grad_hook h = lomo_grads_hook(g);
    CHECK(lomo_model_forward(m, tokens, targets, B, T, &loss, NULL) == LOMO_OK &&
              lomo_model_backward(m, 1.0f, &h) == LOMO_OK,
          "%s: forward and backward: %s", kind, lomo_last_error(ctx));
    double want_loss = fx_scalar(fx, "loss");
    CHECK(fabs(loss - want_loss) <= 1e-5 * fabs(want_loss), "%s: loss %.9g, transformers %.9g", kind, loss, want_loss);
    int checked = 0;
    for (int p = 0; p < lomo_model_num_params(m); p++) {
        lomo_param_info info;
        lomo_model_param(m, p, &info);
        char name[160], plain[170];
        snprintf(name, sizeof name, "grad.%s", info.name);
        snprintf(plain, sizeof plain, "grad_unscaled.%s", info.name);
        if (!strstr(info.name, ".q_proj.") && !strstr(info.name, ".k_proj.")) continue;
        const double *want = fx_f64(fx, name, info.numel), *other = fx_f64(fx, plain, info.numel);
        const float *got = lomo_grads_get(g, p);
        double big = want ? fx_max_abs(want, info.numel) : 0;
        /* f32 sums of a few hundred terms against float64: a floor of 1e-5 of the largest element */
        CHECK(want && fx_compare(name, got, want, info.numel, 1e-5 * big, 1e-4) == 0, "%s: %s", kind, name);
        size_t moved = want && other ? far_from(other, want, info.numel, 1e-5 * big, 1e-4) : 0;
        CHECK(moved > info.numel / 10, "%s: %s: only %zu elements move with the scaling", kind, name, moved);
        checked++;
    }
    CHECK(checked == 2 * lomo_model_config(m)->num_hidden_layers, "%s: %d gradients checked", kind, checked);
    lomo_grads_destroy(g);
}

/* kind's reference against the model in file: the folder transformers saved, or a GGUF */
static void check_kind(const char *kind, int want_type, const char *file) {
    char bin[256];
    snprintf(bin, sizeof bin, "rope/%s.bin", kind);
    fixture fx;
    if (fx_load(&fx, fx_path(bin)) != 0) {
        CHECK(0, "%s: load %s", kind, bin);
        return;
    }
    lomo_model *m = NULL;
    lomo_model_options o = {.dtype = LOMO_F32};
    size_t len = strlen(file);
    lomo_status st = len > 5 && strcmp(file + len - 5, ".gguf") == 0 ? lomo_model_load_gguf(&m, ctx, fx_path(file), &o)
                                                                    : lomo_model_load_hf(&m, ctx, fx_path(file), &o);
    CHECK(st == LOMO_OK, "%s: load %s: %s", kind, file, lomo_last_error(ctx));
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
        size_t moved = far_from(unscaled, want, n, ATOL, RTOL);
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
        check_backward(m, &fx, kind, tokens, B, T);
    }
    free(logits);
    free(step);
    free(col);
    lomo_model_destroy(m);
    fx_free(&fx);
}

/* llama.cpp's divisors give back the parameters they came from (low_freq_factor 1) */
static void check_gguf_parameters(void) {
    lomo_llama_config c;
    CHECK(lomo_config_load_gguf(ctx, fx_path("rope/llama3.gguf"), &c) == LOMO_OK, "%s", lomo_last_error(ctx));
    const lomo_rope_scaling *r = &c.rope_scaling;
    CHECK(r->rope_type == LOMO_ROPE_LLAMA3 && r->factor == 8.0 && r->low_freq_factor == 1.0 &&
              r->high_freq_factor == 8.0 && r->original_max_position_embeddings == 64,
          "recovered: factor %g low %g high %g old %d", r->factor, r->low_freq_factor, r->high_freq_factor,
          r->original_max_position_embeddings);
}

/* the GGUF with its divisors edited (in memory): what the llama3 parameters cannot give is refused */
static void check_gguf_refusals(void) {
    size_t len = 0;
    uint8_t *buf = fx_read_file(fx_path("rope/llama3.gguf"), &len);
    gguf_file *f = NULL;
    if (!buf || gguf_open_memory(&f, ctx, buf, len, "edited.gguf") != LOMO_OK) {
        CHECK(0, "open llama3.gguf: %s", lomo_last_error(ctx));
        free(buf);
        return;
    }
    const gguf_tensor *t = gguf_find_tensor(f, "rope_freqs.weight");
    size_t at = t ? f->data_start + t->offset : 0;
    gguf_close(f);
    CHECK(t != NULL, "rope_freqs.weight");
    float d[8], orig[8];
    memcpy(orig, buf + at, sizeof orig);   /* 1, 2.48, 7.86, 8, 8, 8, 8, 8: one kept, two blended */
    static const struct { int j; float v; const char *needle; } edits[] = {
        {2, 0, "divisors that Llama 3's scaling does not give"},   /* v = 0: orig[2] * 1.01 */
        {1, 1, "fewer than two blended frequencies"},
        {3, 0.5f, "[3] = 0.5; frequency divisors are finite and at least 1"},
    };
    for (size_t e = 0; t && e < sizeof edits / sizeof *edits; e++) {
        memcpy(d, orig, sizeof d);
        d[edits[e].j] = edits[e].v ? edits[e].v : orig[edits[e].j] * 1.01f;
        memcpy(buf + at, d, sizeof d);
        lomo_llama_config c;
        CHECK(gguf_open_memory(&f, ctx, buf, len, "edited.gguf") == LOMO_OK &&
                  gguf_llama_config(f, &c) == LOMO_ERR_FORMAT && strstr(lomo_last_error(ctx), edits[e].needle) &&
                  strstr(lomo_last_error(ctx), "edited.gguf: tensor rope_freqs.weight"),
              "edit %zu: %s", e, lomo_last_error(ctx));
        gguf_close(f);
    }
    /* all ones: no scaling */
    for (int j = 0; j < 8; j++) d[j] = 1;
    memcpy(buf + at, d, sizeof d);
    lomo_llama_config c;
    CHECK(gguf_open_memory(&f, ctx, buf, len, "edited.gguf") == LOMO_OK && gguf_llama_config(f, &c) == LOMO_OK &&
              c.rope_scaling.rope_type == LOMO_ROPE_DEFAULT,
          "divisors all 1: no scaling: %s", lomo_last_error(ctx));
    gguf_close(f);
    free(buf);
}

int main(void) {
    if (lomo_ctx_create(&ctx, NULL) != LOMO_OK) return 1;
    check_kind("linear", LOMO_ROPE_LINEAR, "rope/linear");
    check_kind("llama3", LOMO_ROPE_LLAMA3, "rope/llama3");
    check_kind("llama3", LOMO_ROPE_LLAMA3, "rope/llama3.gguf");
    check_gguf_parameters();
    check_gguf_refusals();
    lomo_ctx_destroy(ctx);
    return test_summary("test_rope_scaling");
}
