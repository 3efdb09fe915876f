/*
 * model_check.h: the whole-model tests' shared steps: a fixture's model
 * (config, weights, batch), forward and backward through the accumulating
 * hook, and gradients compared with PyTorch's float64 ones or bit for bit.
 */
#ifndef LOMO_MODEL_CHECK_H
#define LOMO_MODEL_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"
#include "runtime/lomo.h"
#include "runtime/model.h"   /* model_backward: record and replay */

/*
 * f32 against float64 through a whole model: rtol 1e-5 as DESIGN.md asks,
 * plus an absolute floor of 2e-6 of each tensor's largest magnitude. The
 * floor is needed because a gradient element is a sum of thousands of f32
 * products whose rounding errors (~6e-8 each, relative to the summands, which
 * are as large as the tensor's largest entries) do not shrink when the sum
 * cancels to nearly zero. The perturbation check below shows the bound
 * still catches a 1e-4 relative error in one element.
 */
#define MODEL_RTOL 1e-5
#define MODEL_ATOL_REL 2e-6

typedef struct setup {
    fixture fx;
    lomo_llama_config cfg;
    int B, T;
    const int32_t *tokens, *targets;
} setup;

/* The fixture file's config and batch, announced; -1 (a failed check) when it cannot be loaded. */
static inline int load_setup(setup *s, const char *file) {
    printf("== %s\n", file);
    int ok = fx_load(&s->fx, fx_path(file)) == 0;
    if (ok) {
        fixture *fx = &s->fx;
        fx_llama_config(fx, &s->cfg);
        s->B = (int)fx_scalar(fx, "batch");
        s->T = (int)fx_scalar(fx, "seq");
        s->tokens = fx_i32(fx, "tokens", (size_t)s->B * s->T);
        s->targets = fx_i32(fx, "targets", (size_t)s->B * s->T);
        ok = s->tokens && s->targets;
    }
    CHECK(ok, "cannot load %s", file);
    return ok ? 0 : -1;
}

/* A model of options o with the fixture's weights. */
static inline lomo_model *make_model_with(lomo_ctx *ctx, setup *s, const lomo_model_options *o) {
    lomo_model *m = NULL;
    lomo_status st = lomo_model_create(&m, ctx, &s->cfg, o);
    CHECK(st == LOMO_OK, "model_create: %s", lomo_last_error(ctx));
    if (st) return NULL;
    int n = lomo_model_num_params(m), loaded = 0;
    for (int p = 0; p < n; p++) {
        lomo_param_info info;
        lomo_model_param(m, p, &info);
        float *w = fx_f32(&s->fx, info.name, info.numel);
        CHECK(w != NULL, "fixture lacks %s", info.name);
        if (!w) continue;
        CHECK(lomo_model_set_param_f32(m, p, w, info.numel) == LOMO_OK, "set %s", info.name);
        free(w);
        loaded++;
    }
    /* every fixture parameter (not grad., not config) must be a model parameter */
    int fixture_params = 0;
    for (int i = 0; i < s->fx.count; i++) {
        const char *nm = s->fx.t[i].name;
        if (strncmp(nm, "model.", 6) == 0 || strncmp(nm, "lm_head.", 8) == 0) fixture_params++;
    }
    CHECK(fixture_params == loaded, "fixture has %d parameters, model loaded %d", fixture_params, loaded);
    return m;
}

static inline lomo_model *make_model(lomo_ctx *ctx, setup *s, lomo_dtype dt, int ckpt) {
    lomo_model_options o = {.dtype = dt, .checkpointing = ckpt, .seed = 1};
    return make_model_with(ctx, s, &o);
}

/* Runs forward + backward with the accumulating hook; returns grads (caller destroys). */
static inline lomo_grads *fwd_bwd(lomo_model *m, setup *s, float *loss, float *logits) {
    lomo_grads *g = NULL;
    lomo_ctx *ctx = NULL;
    (void)ctx;
    if (lomo_grads_create(&g, m)) return NULL;
    lomo_status st = lomo_model_forward(m, s->tokens, s->targets, s->B, s->T, loss, logits);
    CHECK(st == LOMO_OK, "forward failed: %d", st);
    lomo_grad_hook h = lomo_grads_hook(g);
    st = lomo_model_backward(m, 1.0f, &h);
    CHECK(st == LOMO_OK, "backward failed: %d", st);
    return g;
}

static inline size_t compare_grad(const lomo_model *m, setup *s, int p, const float *got) {
    lomo_param_info info;
    lomo_model_param(m, p, &info);
    char name[160];
    snprintf(name, sizeof name, "grad.%s", info.name);
    const double *want = fx_f64(&s->fx, name, info.numel);
    if (!want) return 1;
    return fx_compare(name, got, want, info.numel, MODEL_ATOL_REL * fx_max_abs(want, info.numel), MODEL_RTOL);
}

/* A loss against PyTorch's; what names the case in a failure. */
static inline void check_loss(setup *s, float loss, const char *what) {
    double want = fx_scalar(&s->fx, "loss");
    CHECK(fabs(loss - want) <= 1e-6 + MODEL_RTOL * fabs(want), "%s: loss %.9g want %.9g", what, loss, want);
}

/* Every position's logits [B*T, V] and the loss against PyTorch's; the fixture's logits, for more checks. */
static inline const double *check_logits_loss(setup *s, const float *logits, float loss, const char *what) {
    size_t nlog = (size_t)s->B * s->T * s->cfg.vocab_size;
    const double *want = fx_f64(&s->fx, "logits", nlog);
    CHECK(fx_compare("logits", logits, want, nlog, MODEL_ATOL_REL * fx_max_abs(want, nlog), MODEL_RTOL) == 0,
          "%s: logits differ", what);
    check_loss(s, loss, what);
    return want;
}

/* Every parameter's gradient in g against PyTorch's; what names the case in a failure. */
static inline void check_grads(lomo_model *m, setup *s, const lomo_grads *g, const char *what) {
    for (int p = 0; p < lomo_model_num_params(m); p++) {
        lomo_param_info info;
        lomo_model_param(m, p, &info);
        CHECK(compare_grad(m, s, p, lomo_grads_get(g, p)) == 0, "%s: gradient of %s differs", what, info.name);
    }
}

static inline int bitwise_equal_grads(const lomo_model *m, const lomo_grads *a, const lomo_grads *b, float scale_b) {
    for (int p = 0; p < lomo_model_num_params(m); p++) {
        lomo_param_info info;
        lomo_model_param(m, p, &info);
        const float *x = lomo_grads_get(a, p), *y = lomo_grads_get(b, p);
        for (size_t i = 0; i < info.numel; i++)
            if (x[i] * scale_b != y[i]) {
                fprintf(stderr, "  %s[%zu]: %.9g vs %.9g\n", info.name, i, x[i] * scale_b, y[i]);
                return 0;
            }
    }
    return 1;
}

#endif
