/*
 * test_optim.c: the LOMO engine against PyTorch float64 trajectories (5 steps,
 * a new batch each step): LOMO == SGD, weight decay, clip by norm (both norm
 * methods), clip by value, AdaLomo against a transcription of the algorithm,
 * AdamW; LOMO against our own SGD baseline; checkpointing; the loss scaler;
 * 16-bit storage; and the gradient memory LOMO keeps.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fixture.h"
#include "runtime/lomo.h"
#include "runtime/optim.h"   /* tied_chunk */

/*
 * Five f32 steps against float64: per-step losses within rtol 1e-5, weights
 * within rtol 1e-5 plus 1e-6 of the tensor's largest magnitude (the update is
 * a small difference of f32 numbers whose rounding stays near the weights'
 * scale, not the update's).
 */
#define RTOL 1e-5
#define ATOL_REL 1e-6

typedef struct run {
    fixture fx;
    lomo_llama_config cfg;
    int B, T, steps;
} run;

static int load_run(run *r, const char *file) {
    if (fx_load(&r->fx, fx_path(file))) return -1;
    fixture *fx = &r->fx;
    fx_llama_config(fx, &r->cfg);
    r->B = (int)fx_scalar(fx, "batch");
    r->T = (int)fx_scalar(fx, "seq");
    r->steps = (int)fx_scalar(fx, "steps");
    return 0;
}

/* Vocabulary rows of the LM head's logits formed at a time; 0: the model's default */
static int logits_chunk;

static lomo_model *model_from(lomo_ctx *ctx, run *r, lomo_dtype dt, int ckpt) {
    lomo_model *m;
    lomo_model_options mo = {.dtype = dt, .checkpointing = ckpt, .logits_chunk = logits_chunk};
    if (lomo_model_create(&m, ctx, &r->cfg, &mo)) return NULL;
    for (int p = 0; p < lomo_model_num_params(m); p++) {
        lomo_param_info info;
        lomo_model_param(m, p, &info);
        float *w = fx_f32(&r->fx, info.name, info.numel);
        if (w) lomo_model_set_param_f32(m, p, w, info.numel);
        free(w);
    }
    return m;
}

/* Options of scenario S from its records. */
static lomo_optim_options scenario_options(run *r, const char *s, lomo_optim_kind kind, float *lr) {
    lomo_optim_options o;
    lomo_optim_options_default(&o, kind);
    char k[96];
    snprintf(k, sizeof k, "%s.lr", s);
    *lr = (float)fx_scalar(&r->fx, k);
    snprintf(k, sizeof k, "%s.weight_decay", s);
    o.weight_decay = (float)fx_scalar(&r->fx, k);
    snprintf(k, sizeof k, "%s.clip_grad_norm", s);
    o.clip_grad_norm = (float)fx_scalar(&r->fx, k);
    snprintf(k, sizeof k, "%s.clip_grad_value", s);
    o.clip_grad_value = (float)fx_scalar(&r->fx, k);
    return o;
}

/* Runs all steps; records losses and grad norms. */
static int train(run *r, lomo_model *m, lomo_optim *opt, float lr, float *losses, float *norms) {
    size_t bt = (size_t)r->B * r->T;
    const int32_t *tok = fx_i32(&r->fx, "tokens", bt * r->steps), *tgt = fx_i32(&r->fx, "targets", bt * r->steps);
    (void)m;
    for (int s = 0; s < r->steps; s++) {
        lomo_step_result res;
        if (lomo_optim_step(opt, tok + s * bt, tgt + s * bt, r->B, r->T, lr, &res)) return -1;
        losses[s] = res.loss;
        if (norms) norms[s] = res.grad_norm;
        if (res.skipped) return -1;
    }
    return 0;
}

/*
 * AdamW's update lr * m / sqrt(v) is scale-free in the gradient, so an element
 * whose gradient is nearly zero moves by O(lr) whatever its f32 rounding: its
 * f32 and f64 trajectories may differ by a small fraction of lr per step. For
 * adamw the bound adds 1e-3 * lr * steps (seen: ~1e-3 of lr * steps on 1 of
 * ~2500 elements).
 */
static int compare_weights(run *r, lomo_model *m, const char *scenario, double extra_atol) {
    int bad = 0;
    for (int p = 0; p < lomo_model_num_params(m); p++) {
        lomo_param_info info;
        lomo_model_param(m, p, &info);
        char k[200];
        snprintf(k, sizeof k, "%s.final.%s", scenario, info.name);
        const double *want = fx_f64(&r->fx, k, info.numel);
        float *got = malloc(info.numel * sizeof(float));
        lomo_model_get_param_f32(m, p, got, info.numel);
        bad += fx_compare(k, got, want, info.numel, ATOL_REL * fx_max_abs(want, info.numel) + extra_atol, RTOL) != 0;
        free(got);
    }
    return bad;
}

static void compare_series(run *r, const char *name, const float *got) {
    const double *want = fx_f64(&r->fx, name, (size_t)r->steps);
    CHECK(want && fx_compare(name, got, want, (size_t)r->steps, 1e-6, RTOL) == 0, "%s differs", name);
}

/* Rows of a tied head's gradient formed at once in the norm pass; 0: the engine's own (TIED_CHUNK) */
static int tied_chunk;

/* One scenario with one optimizer kind (and options tweak) against the fixture. */
static void scenario(run *r, const char *file, const char *s, lomo_optim_kind kind, lomo_norm_method nm, int ckpt) {
    lomo_ctx *ctx;
    lomo_ctx_create(&ctx, NULL);
    lomo_model *m = model_from(ctx, r, LOMO_F32, ckpt);
    float lr;
    lomo_optim_options o = scenario_options(r, s, kind, &lr);
    o.norm_method = nm;
    lomo_optim *opt;
    CHECK(lomo_optim_create(&opt, m, &o) == LOMO_OK, "optim_create: %s", lomo_last_error(ctx));
    if (tied_chunk) opt->tied_chunk = tied_chunk;
    float losses[16], norms[16];
    int ok = train(r, m, opt, lr, losses, norms) == 0;
    CHECK(ok, "%s %s (%s): training failed: %s", file, s, lomo_optim_kind_name(kind), lomo_last_error(ctx));
    char k[96];
    snprintf(k, sizeof k, "%s.loss", s);
    compare_series(r, k, losses);
    if (o.clip_grad_norm > 0 || o.clip_grad_value > 0) {
        snprintf(k, sizeof k, "%s.grad_norm", s);
        if (o.clip_grad_norm > 0) compare_series(r, k, norms);
    }
    double extra = kind == LOMO_OPTIM_ADAMW ? 1e-3 * lr * r->steps : 0.0;
    CHECK(compare_weights(r, m, s, extra) == 0, "%s %s (%s, norm method %d, ckpt %d): weights differ from PyTorch", file, s,
          lomo_optim_kind_name(kind), (int)nm, ckpt);
    CHECK(lomo_optim_steps(opt) == r->steps, "step count");
    lomo_optim_destroy(opt);
    lomo_model_destroy(m);
    lomo_ctx_destroy(ctx);
}

/* Runs `kind` for all steps and returns a copy of all weights (f32) for cross-checks. */
static float *trained_weights(run *r, lomo_optim_options *o, float lr, lomo_dtype dt, int ckpt, float *losses,
                              size_t *n_out) {
    lomo_ctx *ctx;
    lomo_ctx_create(&ctx, NULL);
    lomo_model *m = model_from(ctx, r, dt, ckpt);
    lomo_optim *opt;
    lomo_optim_create(&opt, m, o);
    float tmp[16];
    CHECK(train(r, m, opt, lr, losses ? losses : tmp, NULL) == 0, "training: %s", lomo_last_error(ctx));
    float *w = fx_model_weights(m, n_out);
    lomo_optim_destroy(opt);
    lomo_model_destroy(m);
    lomo_ctx_destroy(ctx);
    return w;
}

static double max_rel_diff(const float *a, const float *b, size_t n) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]) / scale);
    return worst;
}

static void cross_checks(run *r, const char *file) {
    float lr;
    /* LOMO equals our SGD baseline (full gradients, then update), plain and with clipping */
    {
        lomo_optim_options pl = scenario_options(r, "sgd_wd", LOMO_OPTIM_LOMO, &lr), ps = pl;
        ps.kind = LOMO_OPTIM_SGD;
        size_t nn;
        float *x = trained_weights(r, &pl, lr, LOMO_F32, 0, NULL, &nn);
        float *y = trained_weights(r, &ps, lr, LOMO_F32, 0, NULL, &nn);
        double dd = max_rel_diff(x, y, nn);
        printf("%s: lomo vs sgd baseline (weight decay): max difference %.3g of the largest weight\n", file, dd);
        CHECK(dd <= 1e-6, "%s: lomo vs sgd baseline differ by %.3g", file, dd);
        free(x);
        free(y);
    }
    lomo_optim_options lomo = scenario_options(r, "clip_norm", LOMO_OPTIM_LOMO, &lr);
    /* a fixed norm method: AUTO decides by timing, which may differ between runs */
    lomo.norm_method = LOMO_NORM_GRAM;
    lomo_optim_options sgd = lomo;
    sgd.kind = LOMO_OPTIM_SGD;
    size_t n;
    float *a = trained_weights(r, &lomo, lr, LOMO_F32, 0, NULL, &n);
    float *b = trained_weights(r, &sgd, lr, LOMO_F32, 0, NULL, &n);
    double d = max_rel_diff(a, b, n);
    CHECK(d <= 1e-6, "%s: lomo+clip vs sgd baseline+clip differ by %.3g (relative to max weight)", file, d);
    /* checkpointing changes nothing, bit for bit, also keeping attention (the replayed norm pass reuses it) */
    float *c = trained_weights(r, &lomo, lr, LOMO_F32, LOMO_CHECKPOINT_BLOCKS, NULL, &n);
    CHECK(memcmp(a, c, n * sizeof(float)) == 0, "%s: checkpointing changes the LOMO trajectory", file);
    float *k = trained_weights(r, &lomo, lr, LOMO_F32, LOMO_CHECKPOINT_KEEP_ATTENTION, NULL, &n);
    CHECK(memcmp(a, k, n * sizeof(float)) == 0, "%s: keeping attention changes the LOMO trajectory", file);
    free(a); free(b); free(c); free(k);

    /* 16-bit storage tracks f32 over the short run */
    lomo_optim_options plain = scenario_options(r, "sgd", LOMO_OPTIM_LOMO, &lr);
    float l32[16], l16[16];
    float *w32 = trained_weights(r, &plain, lr, LOMO_F32, 0, l32, &n);
    for (int dt = LOMO_BF16; dt <= LOMO_F16; dt++) {
        for (int sr = 0; sr <= 1; sr++) {
            plain.stochastic_rounding = sr;
            plain.seed = 7;
            float *w16 = trained_weights(r, &plain, lr, (lomo_dtype)dt, 0, l16, &n);
            double tol = dt == LOMO_BF16 ? 2e-2 : 2e-3, worst = 0;
            for (int s = 0; s < r->steps; s++) worst = fmax(worst, fabs(l16[s] - l32[s]) / fabs(l32[s]));
            double wd = max_rel_diff(w16, w32, n);
            printf("%s: %s%s vs f32 over %d steps: loss rel diff %.2e, weights rel diff %.2e\n", file,
                   lomo_dtype_name((lomo_dtype)dt), sr ? " (stochastic rounding)" : "", r->steps, worst, wd);
            CHECK(worst <= tol && wd <= 4 * tol, "%s: %s tracks f32 too loosely (loss %.3g, weights %.3g)", file,
                  lomo_dtype_name((lomo_dtype)dt), worst, wd);
            free(w16);
        }
    }
    free(w32);
}

static int weights_snapshot(lomo_model *m, unsigned char **buf, size_t *len) {
    size_t total = 0;
    for (int p = 0; p < lomo_model_num_params(m); p++) {
        lomo_param_info info;
        lomo_model_param(m, p, &info);
        total += info.numel * lomo_dtype_size(info.dtype);
    }
    *buf = malloc(total);
    size_t off = 0;
    for (int p = 0; p < lomo_model_num_params(m); p++) {
        lomo_param_info info;
        lomo_model_param(m, p, &info);
        memcpy(*buf + off, info.data, info.numel * lomo_dtype_size(info.dtype));
        off += info.numel * lomo_dtype_size(info.dtype);
    }
    *len = total;
    return 0;
}

static void loss_scaler(run *r) {
    lomo_ctx *ctx;
    lomo_ctx_create(&ctx, NULL);
    lomo_model *m = model_from(ctx, r, LOMO_F16, 0);
    lomo_optim_options o;
    lomo_optim_options_default(&o, LOMO_OPTIM_LOMO);
    o.loss_scale_window = 3;
    lomo_optim *opt;
    lomo_optim_create(&opt, m, &o);
    const int32_t *tok = fx_i32(&r->fx, "tokens", 0), *tgt = fx_i32(&r->fx, "targets", 0);
    CHECK(lomo_optim_loss_scale(opt) == 65536.0f, "f16 starts at 2^16");
    lomo_step_result res;
    /* an overflow deep in backward (the embedding comes last): skipped, scale halved, weights untouched */
    for (int victim = 0; victim < 2; victim++) {
        unsigned char *before, *after;
        size_t n1, n2;
        weights_snapshot(m, &before, &n1);
        float s0 = lomo_optim_loss_scale(opt);
        lomo_optim_inject_nonfinite(opt, victim == 0 ? 0 : lomo_model_num_params(m) - 1);
        CHECK(lomo_optim_step(opt, tok, tgt, r->B, r->T, 0.05f, &res) == LOMO_OK, "step");
        weights_snapshot(m, &after, &n2);
        CHECK(res.skipped && res.nonfinite && res.loss_scale == s0, "overflow not reported");
        CHECK(lomo_optim_loss_scale(opt) == s0 / 2, "scale %g after overflow, want %g", lomo_optim_loss_scale(opt),
              s0 / 2);
        CHECK(n1 == n2 && memcmp(before, after, n1) == 0, "an overflowed step changed weights");
        free(before);
        free(after);
    }
    CHECK(lomo_optim_steps(opt) == 0, "skipped steps must not count");
    /* growth after loss_scale_window clean steps */
    for (int s = 0; s < 3; s++) lomo_optim_step(opt, tok, tgt, r->B, r->T, 0.05f, &res);
    CHECK(!res.skipped && lomo_optim_loss_scale(opt) == 32768.0f, "scale %g after 3 clean steps, want 32768",
          lomo_optim_loss_scale(opt));
    lomo_optim_destroy(opt);

    /* the floor is 1 */
    o.loss_scale_init = 2.0f;
    lomo_optim_create(&opt, m, &o);
    for (int s = 0; s < 3; s++) {
        lomo_optim_inject_nonfinite(opt, 3);
        lomo_optim_step(opt, tok, tgt, r->B, r->T, 0.05f, &res);
    }
    CHECK(lomo_optim_loss_scale(opt) == 1.0f, "scale floor: %g", lomo_optim_loss_scale(opt));
    lomo_optim_destroy(opt);

    /* a non-finite loss skips the step in every mode */
    lomo_model_destroy(m);
    m = model_from(ctx, r, LOMO_F32, 0);
    lomo_optim_options_default(&o, LOMO_OPTIM_LOMO);
    lomo_optim_create(&opt, m, &o);
    lomo_param_info info;
    lomo_model_param(m, lomo_model_num_params(m) - 2, &info);   /* the final norm */
    float *w = malloc(info.numel * sizeof(float));
    for (size_t i = 0; i < info.numel; i++) w[i] = NAN;
    lomo_model_set_param_f32(m, lomo_model_num_params(m) - 2, w, info.numel);
    unsigned char *before, *after;
    size_t n1, n2;
    weights_snapshot(m, &before, &n1);
    CHECK(lomo_optim_step(opt, tok, tgt, r->B, r->T, 0.05f, &res) == LOMO_OK && res.skipped && res.nonfinite,
          "NaN loss must skip");
    weights_snapshot(m, &after, &n2);
    CHECK(memcmp(before, after, n1) == 0, "NaN loss step changed weights");
    free(before); free(after); free(w);
    /* without a measuring pass a non-finite gradient is reported by name; with the guard it skips cleanly */
    lomo_model_destroy(m);
    m = model_from(ctx, r, LOMO_F32, 0);
    lomo_optim_destroy(opt);
    lomo_optim_create(&opt, m, &o);
    lomo_optim_inject_nonfinite(opt, 0);
    CHECK(lomo_optim_step(opt, tok, tgt, r->B, r->T, 0.05f, &res) == LOMO_ERR_NONFINITE &&
          strstr(lomo_last_error(ctx), "model.embed_tokens.weight"), "unguarded: %s", lomo_last_error(ctx));
    lomo_optim_destroy(opt);
    o.guard_nonfinite = 1;
    lomo_optim_create(&opt, m, &o);
    weights_snapshot(m, &before, &n1);
    lomo_optim_inject_nonfinite(opt, 0);
    CHECK(lomo_optim_step(opt, tok, tgt, r->B, r->T, 0.05f, &res) == LOMO_OK && res.skipped, "guarded skip");
    weights_snapshot(m, &after, &n2);
    CHECK(memcmp(before, after, n1) == 0, "guarded overflow changed weights");
    free(before); free(after);
    lomo_optim_destroy(opt);
    lomo_model_destroy(m);
    lomo_ctx_destroy(ctx);
}

static int param_named(lomo_model *m, const char *name) {
    for (int p = 0; p < lomo_model_num_params(m); p++) {
        lomo_param_info info;
        lomo_model_param(m, p, &info);
        if (!strcmp(info.name, name)) return p;
    }
    return -1;
}

/* Updated before layer 0's o-projection in backward order: every later block, the final norm and head,
 * and layer 0's MLP and its norm. */
static int before_o_proj(const char *name) {
    if (strncmp(name, "model.layers.", 13)) return strcmp(name, "model.embed_tokens.weight") != 0;
    if (atoi(name + 13) > 0) return 1;
    return strstr(name, ".mlp.") || strstr(name, "post_attention_layernorm");
}

/*
 * A tied embedding whose update stopped between its two parts (LOMO's split
 * path): the head's part (and decay) came first, the rows' last. Rows no token
 * of the batch touched have only the head's part: the clean step's values;
 * the batch's rows lack their embedding part: none is the clean step's row.
 * 0 if so.
 */
static int tied_head_part_only(run *r, const lomo_param_info *a, const lomo_param_info *c) {
    int C = (int)a->shape[1], V = (int)a->shape[0], bad = 0;
    const int32_t *tok = fx_i32(&r->fx, "tokens", 0);
    size_t es = lomo_dtype_size(a->dtype);
    char *touched = calloc((size_t)V, 1);
    for (int i = 0; i < r->B * r->T; i++) touched[tok[i]] = 1;
    for (int v = 0; v < V; v++) {
        int same = memcmp((const char *)a->data + (size_t)v * C * es, (const char *)c->data + (size_t)v * C * es,
                          (size_t)C * es) == 0;
        bad += touched[v] ? same : !same;
    }
    free(touched);
    return bad;
}

/*
 * Without a measuring pass the update pass checks gradients as it goes (on a
 * GPU through a gate the device does not wait on): a non-finite gradient at
 * layer 0's o-projection leaves it and everything after it in backward order
 * untouched bit for bit, while everything before it got the clean step's
 * update, for each update path (fused LOMO GEMM, clip-by-value's formed
 * gradient, AdaLomo) and storage dtype. A tied embedding is both: its head's
 * part comes first on LOMO's split path (tied_head_part_only).
 */
static void stop_midway(run *r) {
    lomo_optim_kind kinds[3] = {LOMO_OPTIM_LOMO, LOMO_OPTIM_LOMO, LOMO_OPTIM_ADALOMO};
    lomo_dtype dts[2] = {LOMO_F32, LOMO_BF16};
    const int32_t *tok = fx_i32(&r->fx, "tokens", 0), *tgt = fx_i32(&r->fx, "targets", 0);
    for (int k = 0; k < 3; k++)
        for (int d = 0; d < 2; d++) {
            lomo_ctx *ctx;
            lomo_ctx_create(&ctx, NULL);
            lomo_model *m = model_from(ctx, r, dts[d], 0), *clean = model_from(ctx, r, dts[d], 0);
            lomo_optim_options o;
            lomo_optim_options_default(&o, kinds[k]);
            if (k == 1) o.clip_grad_value = 0.01f;
            o.weight_decay = 0.1f;   /* a skipped weight must not decay either */
            lomo_optim *opt, *ref;
            lomo_optim_create(&opt, m, &o);
            lomo_optim_create(&ref, clean, &o);
            unsigned char *before;
            size_t n;
            weights_snapshot(m, &before, &n);
            int victim = param_named(m, "model.layers.0.self_attn.o_proj.weight");
            lomo_step_result res;
            lomo_optim_inject_nonfinite(opt, victim);
            lomo_status st = lomo_optim_step(opt, tok, tgt, r->B, r->T, 0.05f, &res);
            CHECK(st == LOMO_ERR_NONFINITE && res.nonfinite && strstr(lomo_last_error(ctx), "layers.0.self_attn.o_proj"),
                  "%s clip_value %g (%s): status %d, %s", lomo_optim_kind_name(kinds[k]), o.clip_grad_value,
                  lomo_dtype_name(dts[d]), st, lomo_last_error(ctx));
            CHECK(lomo_optim_step(ref, tok, tgt, r->B, r->T, 0.05f, &res) == LOMO_OK, "clean step");
            size_t off = 0;
            int wrong = 0, updated = 0;
            for (int p = 0; p < lomo_model_num_params(m); p++) {
                lomo_param_info a, c;
                lomo_model_param(m, p, &a);
                lomo_model_param(clean, p, &c);
                size_t bytes = a.numel * lomo_dtype_size(a.dtype);
                const void *want = before_o_proj(a.name) ? c.data : (const void *)(before + off);
                if (p == 0 && r->cfg.tie_word_embeddings && k == 0) {
                    if (tied_head_part_only(r, &a, &c)) {
                        wrong++;
                        printf("  %s: %s is not the head's part alone\n", lomo_optim_kind_name(kinds[k]), a.name);
                    }
                } else if (memcmp(a.data, want, bytes)) {
                    wrong++;
                    printf("  %s: %s is not %s\n", lomo_optim_kind_name(kinds[k]), a.name,
                           before_o_proj(a.name) ? "the clean step's" : "untouched");
                }
                updated += before_o_proj(a.name) && memcmp(before + off, a.data, bytes) != 0;
                off += bytes;
            }
            CHECK(!wrong && updated > 0, "%s clip_value %g (%s): %d parameters wrong, %d updated",
                  lomo_optim_kind_name(kinds[k]), o.clip_grad_value, lomo_dtype_name(dts[d]), wrong, updated);
            free(before);
            lomo_optim_destroy(opt);
            lomo_optim_destroy(ref);
            lomo_model_destroy(m);
            lomo_model_destroy(clean);
            lomo_ctx_destroy(ctx);
        }
}

/*
 * AdaLomo with the head in vocabulary chunks takes the [V, C] gradients (head
 * and embedding, or the tied weight) in passes, no [V, C] buffer: with a
 * measuring pass (norm clipping, f16 loss scaling) it trains as the head whole
 * does; a non-finite gradient of the embedding (the last in backward), found
 * in the first pass, leaves its weight and moments as they were while every
 * other parameter took the clean step's update.
 */
static void head_passes(run *r) {
    float lr;
    for (int mode = 0; mode < 2; mode++) {
        lomo_optim_options o = scenario_options(r, "adalomo", LOMO_OPTIM_ADALOMO, &lr);
        lomo_dtype dt = mode ? LOMO_F16 : LOMO_F32;
        if (!mode) o.clip_grad_norm = 0.5f;
        float lw[16], lc[16];
        size_t n1, n2;
        logits_chunk = 0;
        float *whole = trained_weights(r, &o, lr, dt, 1, lw, &n1);
        logits_chunk = 16;
        float *chunked = trained_weights(r, &o, lr, dt, 1, lc, &n2);
        double dl = 0;
        for (int s = 0; s < r->steps; s++) dl = fmax(dl, fabs(lw[s] - lc[s]) / fabs(lw[s]));
        double dw = n1 == n2 ? max_rel_diff(chunked, whole, n1) : 1.0;
        printf("adalomo in passes vs the head whole, %s: loss rel diff %.2e, weights rel diff %.2e\n",
               mode ? "f16 loss scaling" : "clip-norm 0.5", dl, dw);
        CHECK(dl < 1e-5 && dw < (mode ? 1e-3 : 1e-5), "adalomo in passes (%s): loss %g, weights %g",
              mode ? "f16" : "clip-norm", dl, dw);
        free(whole);
        free(chunked);
    }
    /* the stop: param 0 faulted; everything else is the clean step's (the embedding comes last) */
    logits_chunk = 16;
    lomo_ctx *ctx;
    lomo_ctx_create(&ctx, NULL);
    lomo_model *m = model_from(ctx, r, LOMO_F32, 1), *clean = model_from(ctx, r, LOMO_F32, 1);
    lomo_optim_options o = scenario_options(r, "adalomo", LOMO_OPTIM_ADALOMO, &lr);
    o.weight_decay = 0.1f;
    lomo_optim *opt, *ref;
    lomo_optim_create(&opt, m, &o);
    lomo_optim_create(&ref, clean, &o);
    const int32_t *tok = fx_i32(&r->fx, "tokens", 0), *tgt = fx_i32(&r->fx, "targets", 0);
    lomo_step_result res;
    CHECK(lomo_optim_step(opt, tok, tgt, r->B, r->T, lr, &res) == LOMO_OK &&
              lomo_optim_step(ref, tok, tgt, r->B, r->T, lr, &res) == LOMO_OK, "a first clean step");
    lomo_param_info e;
    lomo_model_param(m, 0, &e);
    size_t moments = (size_t)(e.shape[0] + e.shape[1]) * sizeof(float), bytes = e.numel * sizeof(float);
    unsigned char *w0 = malloc(bytes), *s0 = malloc(moments);
    memcpy(w0, e.data, bytes);
    memcpy(s0, opt->state + opt->state_off[0], moments);
    lomo_optim_inject_nonfinite(opt, 0);
    lomo_status st = lomo_optim_step(opt, tok, tgt, r->B, r->T, lr, &res);
    CHECK(st == LOMO_ERR_NONFINITE && strstr(lomo_last_error(ctx), e.name), "the embedding faulted: %s",
          lomo_last_error(ctx));
    CHECK(lomo_optim_step(ref, tok, tgt, r->B, r->T, lr, &res) == LOMO_OK, "the clean step");
    int wrong = 0;
    for (int p = 1; p < lomo_model_num_params(m); p++) {
        lomo_param_info a, c;
        lomo_model_param(m, p, &a);
        lomo_model_param(clean, p, &c);
        wrong += memcmp(a.data, c.data, a.numel * sizeof(float)) != 0;
    }
    CHECK(!wrong && memcmp(w0, e.data, bytes) == 0 && memcmp(s0, opt->state + opt->state_off[0], moments) == 0,
          "after the fault: %d other parameters not the clean step's; the embedding %s, its moments %s", wrong,
          memcmp(w0, e.data, bytes) ? "changed" : "kept", memcmp(s0, opt->state + opt->state_off[0], moments)
                                                                ? "changed" : "kept");
    free(w0);
    free(s0);
    lomo_optim_destroy(opt);
    lomo_optim_destroy(ref);
    lomo_model_destroy(m);
    lomo_model_destroy(clean);
    lomo_ctx_destroy(ctx);
    logits_chunk = 0;
}

/* LOMO keeps one dense gradient buffer (embedding-sized) and nothing else; AdaLomo one linear-gradient
 * scratch besides, the largest linear's, or with the head in chunks the largest but the head's (its
 * gradient, and the embedding's, go through the embedding's rows and one chunk's gradient, in passes). */
static void gradient_memory(run *r) {
    for (int mode = 0; mode < 6; mode++) {
        /* two chunks, the first larger than any other linear weight, so a scratch sized for it shows */
        logits_chunk = mode < 3 ? 0 : (r->cfg.vocab_size - 1) / 16 * 16;
        lomo_ctx *ctx;
        lomo_ctx_create(&ctx, NULL);
        lomo_model *m = model_from(ctx, r, LOMO_F32, 1);
        lomo_optim_options o;
        lomo_optim_options_default(&o, mode % 3 == 2 ? LOMO_OPTIM_ADALOMO : LOMO_OPTIM_LOMO);
        if (mode % 3 == 1) { o.clip_grad_norm = 1.0f; o.norm_method = LOMO_NORM_GRAM; }
        lomo_optim *opt;
        lomo_optim_create(&opt, m, &o);
        const int32_t *tok = fx_i32(&r->fx, "tokens", 0), *tgt = fx_i32(&r->fx, "targets", 0);
        lomo_step_result res;
        for (int s = 0; s < 2; s++) lomo_optim_step(opt, tok, tgt, r->B, r->T, 0.01f, &res);
        lomo_mem_stats st;
        lomo_mem_get_stats(ctx, &st);
        size_t C = r->cfg.hidden_size, V = r->cfg.vocab_size, largest_linear = 0;
        for (int p = 0; p < lomo_model_num_params(m); p++) {
            lomo_param_info info;
            lomo_model_param(m, p, &info);
            int head = strcmp(info.name, "lm_head.weight") == 0;
            if (info.kind == LOMO_PARAM_LINEAR && info.numel > largest_linear && !(head && logits_chunk))
                largest_linear = info.numel;
        }
        /* the embedding's gradient is its touched rows (at most B*T) for lomo, a tied head's part
         * kept as its two factors, save its rows at the embedding's for the norm; adalomo needs it dense */
        size_t BT = (size_t)r->B * r->T, Cp = (C + 15) / 16 * 16;
        int kind = mode % 3, head_rows = kind == 1 && r->cfg.tie_word_embeddings;
        int passes = kind == 2 && logits_chunk, sparse = kind < 2 || passes;
        size_t chunk_rows = passes ? (size_t)logits_chunk : 0;
        size_t dense = sparse ? (Cp + ((head_rows ? 2 : 1) * BT + chunk_rows) * C) * sizeof(float) +
                                    3 * BT * sizeof(int32_t)
                              : (Cp + V * C) * sizeof(float);
        size_t expect = dense + (kind == 2 ? largest_linear * sizeof(float) : 0);
        printf("gradient memory, %s%s: peak %zu bytes (embedding+norm buffer %zu), optimizer state %zu, "
               "weights %zu\n", kind == 0 ? "lomo" : kind == 1 ? "lomo+clip" : "adalomo",
               logits_chunk ? " (head in chunks)" : "", st.peak[LOMO_MEM_GRADIENTS], dense,
               st.peak[LOMO_MEM_OPTIMIZER], st.peak[LOMO_MEM_WEIGHTS]);
        CHECK(st.peak[LOMO_MEM_GRADIENTS] == expect, "mode %d: gradient peak %zu, expected %zu", mode,
              st.peak[LOMO_MEM_GRADIENTS], expect);
        if (kind < 2) CHECK(st.peak[LOMO_MEM_OPTIMIZER] == 0, "lomo keeps no optimizer state");
        lomo_optim_destroy(opt);
        lomo_model_destroy(m);
        lomo_ctx_destroy(ctx);
    }
    logits_chunk = 0;
}

/*
 * Out of memory inside a step: with the context's memory_limit one byte below
 * what a clipped LOMO step was measured to hold at its peak, the last scratch
 * (the norm pass's) does not fit. The step fails with LOMO_ERR_OOM naming it
 * and the limit, rather than passing as a skipped overflow, and changes no
 * weight; at the measured peak it runs.
 */
static void out_of_memory(run *r) {
    lomo_optim_options o;
    lomo_optim_options_default(&o, LOMO_OPTIM_LOMO);
    o.clip_grad_norm = 1.0f;
    o.norm_method = LOMO_NORM_GRAM;
    const int32_t *tok = fx_i32(&r->fx, "tokens", 0), *tgt = fx_i32(&r->fx, "targets", 0);
    size_t peak = 0;
    for (int k = 0; k < 3; k++) {
        lomo_ctx *ctx;
        lomo_ctx_options co = {.memory_limit = k == 0 ? 0 : k == 1 ? peak - 1 : peak};
        lomo_ctx_create(&ctx, &co);
        lomo_model *m = model_from(ctx, r, LOMO_F32, 1);
        lomo_optim *opt;
        lomo_optim_create(&opt, m, &o);
        unsigned char *before, *after;
        size_t n1, n2;
        weights_snapshot(m, &before, &n1);
        lomo_step_result res = {0};
        lomo_status st = lomo_optim_step(opt, tok, tgt, r->B, r->T, 0.01f, &res);
        weights_snapshot(m, &after, &n2);
        if (k == 1) {
            const char *e = lomo_last_error(ctx);
            printf("memory_limit %zu (peak - 1): %s\n", co.memory_limit, e);
            CHECK(st == LOMO_ERR_OOM && strstr(e, "memory_limit") &&
                      (strstr(e, "Gram matrices") || strstr(e, "tied head gradient rows")),
                  "one byte short of the peak: status %d, %s", st, e);
            CHECK(n1 == n2 && memcmp(before, after, n1) == 0, "a step out of memory changed weights");
            CHECK(lomo_optim_step(opt, tok, tgt, r->B, r->T, 0.01f, &res) == LOMO_ERR_OOM, "and again");
        } else {
            CHECK(st == LOMO_OK && !res.skipped, "memory_limit %zu: %s", co.memory_limit, lomo_last_error(ctx));
        }
        lomo_mem_stats ms;
        lomo_mem_get_stats(ctx, &ms);
        if (k == 0) peak = ms.peak_total;
        free(before);
        free(after);
        lomo_optim_destroy(opt);
        lomo_model_destroy(m);
        lomo_ctx_destroy(ctx);
    }
}

static void bad_options(run *r) {
    lomo_ctx *ctx;
    lomo_ctx_create(&ctx, NULL);
    lomo_model *m = model_from(ctx, r, LOMO_F32, 0);
    lomo_optim_options o;
    lomo_optim *opt = NULL;
    lomo_optim_options_default(&o, LOMO_OPTIM_LOMO);
    o.clip_grad_norm = -1;
    CHECK(lomo_optim_create(&opt, m, &o) == LOMO_ERR_INVALID_ARG && strstr(lomo_last_error(ctx), "clip_grad_norm"),
          "negative clip: %s", lomo_last_error(ctx));
    lomo_optim_options_default(&o, LOMO_OPTIM_LOMO);
    o.weight_decay = NAN;
    CHECK(lomo_optim_create(&opt, m, &o) == LOMO_ERR_INVALID_ARG && strstr(lomo_last_error(ctx), "weight_decay"),
          "NaN decay");
    lomo_optim_options_default(&o, (lomo_optim_kind)9);
    CHECK(lomo_optim_create(&opt, m, &o) == LOMO_ERR_INVALID_ARG && strstr(lomo_last_error(ctx), "kind"), "kind");
    lomo_optim_options_default(&o, LOMO_OPTIM_LOMO);
    lomo_optim_create(&opt, m, &o);
    const int32_t *tok = fx_i32(&r->fx, "tokens", 0), *tgt = fx_i32(&r->fx, "targets", 0);
    lomo_step_result res;
    CHECK(lomo_optim_step(opt, tok, tgt, r->B, r->T, -1.0f, &res) == LOMO_ERR_INVALID_ARG, "negative lr");
    CHECK(lomo_optim_step(opt, tok, NULL, r->B, r->T, 0.1f, &res) == LOMO_ERR_INVALID_ARG, "no targets");
    lomo_optim_destroy(opt);
    lomo_model_destroy(m);
    lomo_ctx_destroy(ctx);
}

/*
 * Exact resume: steps 1-2, save the weights and the optimizer state, steps
 * 3-5; then a fresh model and optimizer loaded from those files run steps
 * 3-5 again: bitwise the same losses and weights. For every kind with state,
 * and f16 (loss scale).
 */
static void resume(run *r) {
    const lomo_optim_kind kinds[] = {LOMO_OPTIM_LOMO, LOMO_OPTIM_ADALOMO, LOMO_OPTIM_ADAMW, LOMO_OPTIM_LOMO};
    for (int k = 0; k < 4; k++) {
        lomo_dtype dt = k == 3 ? LOMO_F16 : LOMO_F32;
        lomo_ctx *ctx;
        lomo_ctx_create(&ctx, NULL);
        lomo_optim_options o;
        lomo_optim_options_default(&o, kinds[k]);
        o.loss_scale_window = 2;   /* the scale changes during the run */
        size_t bt = (size_t)r->B * r->T;
        const int32_t *tok = fx_i32(&r->fx, "tokens", 0), *tgt = fx_i32(&r->fx, "targets", 0);
        lomo_model *m = model_from(ctx, r, dt, 0);
        lomo_optim *opt;
        lomo_optim_create(&opt, m, &o);
        lomo_step_result res;
        float la[5], lb[5];
        for (int s = 0; s < 2; s++) lomo_optim_step(opt, tok + s * bt, tgt + s * bt, r->B, r->T, 0.01f, &res);
        char dir[] = "/tmp/lomo_resume_XXXXXX", path[64];
        if (!mkdtemp(dir)) continue;
        snprintf(path, sizeof path, "%s/optim.state", dir);
        CHECK(lomo_optim_save(opt, path) == LOMO_OK, "optim_save: %s", lomo_last_error(ctx));
        size_t n, off;
        float *w = fx_model_weights(m, &n);
        for (int s = 2; s < 5; s++) {
            lomo_optim_step(opt, tok + s * bt, tgt + s * bt, r->B, r->T, 0.01f, &res);
            la[s] = res.loss;
        }
        float scale_a = lomo_optim_loss_scale(opt);

        lomo_model *m2 = model_from(ctx, r, dt, 1);
        off = 0;
        for (int p = 0; p < lomo_model_num_params(m2); p++) {
            lomo_param_info info;
            lomo_model_param(m2, p, &info);
            lomo_model_set_param_f32(m2, p, w + off, info.numel);
            off += info.numel;
        }
        lomo_optim *opt2;
        lomo_optim_create(&opt2, m2, &o);
        CHECK(lomo_optim_load(opt2, path) == LOMO_OK, "optim_load: %s", lomo_last_error(ctx));
        CHECK(lomo_optim_steps(opt2) == 2, "restored step count %lld", (long long)lomo_optim_steps(opt2));
        for (int s = 2; s < 5; s++) {
            lomo_optim_step(opt2, tok + s * bt, tgt + s * bt, r->B, r->T, 0.01f, &res);
            lb[s] = res.loss;
        }
        CHECK(memcmp(la + 2, lb + 2, 3 * sizeof(float)) == 0 && scale_a == lomo_optim_loss_scale(opt2),
              "%s (%s): resumed run differs", lomo_optim_kind_name(kinds[k]), lomo_dtype_name(dt));
        int same = 1;
        for (int p = 0; p < lomo_model_num_params(m); p++) {
            lomo_param_info a, b;
            lomo_model_param(m, p, &a);
            lomo_model_param(m2, p, &b);
            same &= memcmp(a.data, b.data, a.numel * lomo_dtype_size(dt)) == 0;
        }
        CHECK(same, "%s (%s): resumed weights differ", lomo_optim_kind_name(kinds[k]), lomo_dtype_name(dt));

        /* a state of another kind, or a damaged file, is refused and changes nothing */
        lomo_optim_options other;
        lomo_optim_options_default(&other, kinds[k] == LOMO_OPTIM_ADAMW ? LOMO_OPTIM_LOMO : LOMO_OPTIM_ADAMW);
        lomo_optim *opt3;
        lomo_optim_create(&opt3, m2, &other);
        CHECK(lomo_optim_load(opt3, path) == LOMO_ERR_FORMAT && strstr(lomo_last_error(ctx), "kind"),
              "wrong kind: %s", lomo_last_error(ctx));
        lomo_optim_destroy(opt3);
        FILE *f = fopen(path, "r+b");
        if (f) {
            fseek(f, 0, SEEK_END);
            long len = ftell(f);
            fclose(f);
            CHECK(truncate(path, len - 1) == 0, "truncate");
            int64_t before = lomo_optim_steps(opt2);
            lomo_status ls = lomo_optim_load(opt2, path);
            CHECK(ls == LOMO_ERR_FORMAT && strstr(lomo_last_error(ctx), path) && lomo_optim_steps(opt2) == before,
                  "truncated state: %s", lomo_last_error(ctx));
        }
        CHECK(lomo_optim_load(opt2, "/nonexistent/state") == LOMO_ERR_IO, "missing file");
        remove(path);
        rmdir(dir);
        free(w);
        lomo_optim_destroy(opt);
        lomo_optim_destroy(opt2);
        lomo_model_destroy(m);
        lomo_model_destroy(m2);
        lomo_ctx_destroy(ctx);
    }
}

/* A scenario of test_file: its fixture records, the optimizer, the norm method, the checkpointing
 * mode, and the tied head's norm chunk (0: the engine's own). */
typedef struct scenario_row {
    const char *name;
    lomo_optim_kind kind;
    lomo_norm_method nm;
    int ckpt, tied_chunk;
} scenario_row;

/* a tied head's norm also in chunks of 7 rows: several, the last one short, for the vocabulary and
 * for the embedding's rows */
static const scenario_row WHOLE_SCENARIOS[] = {
    {"sgd", LOMO_OPTIM_LOMO, LOMO_NORM_AUTO, 0, 0},
    {"sgd", LOMO_OPTIM_SGD, LOMO_NORM_AUTO, 0, 0},
    {"sgd_wd", LOMO_OPTIM_LOMO, LOMO_NORM_AUTO, 0, 0},
    {"clip_norm", LOMO_OPTIM_LOMO, LOMO_NORM_GRAM, 0, 0},
    {"clip_norm", LOMO_OPTIM_LOMO, LOMO_NORM_FORM_GRAD, 1, 0},
    {"clip_norm", LOMO_OPTIM_LOMO, LOMO_NORM_AUTO, 1, 0},
    {"clip_norm", LOMO_OPTIM_SGD, LOMO_NORM_AUTO, 0, 0},
    {"clip_norm", LOMO_OPTIM_LOMO, LOMO_NORM_GRAM, 0, 7},
    {"clip_norm", LOMO_OPTIM_LOMO, LOMO_NORM_FORM_GRAD, 1, 7},
    {"clip_value", LOMO_OPTIM_LOMO, LOMO_NORM_AUTO, 0, 0},
    {"adalomo", LOMO_OPTIM_ADALOMO, LOMO_NORM_AUTO, 0, 0},
    {"adalomo", LOMO_OPTIM_ADALOMO, LOMO_NORM_AUTO, 1, 0},
    {"adamw", LOMO_OPTIM_ADAMW, LOMO_NORM_AUTO, 0, 0},
};
static const scenario_row CHUNKED_SCENARIOS[] = {
    {"sgd", LOMO_OPTIM_LOMO, LOMO_NORM_AUTO, 0, 0},
    {"sgd", LOMO_OPTIM_SGD, LOMO_NORM_AUTO, 1, 0},
    {"sgd_wd", LOMO_OPTIM_LOMO, LOMO_NORM_AUTO, 1, 0},
    {"clip_norm", LOMO_OPTIM_LOMO, LOMO_NORM_GRAM, 0, 0},
    {"clip_norm", LOMO_OPTIM_LOMO, LOMO_NORM_FORM_GRAD, 1, 0},
    {"clip_norm", LOMO_OPTIM_LOMO, LOMO_NORM_AUTO, 2, 0},
    {"clip_norm", LOMO_OPTIM_LOMO, LOMO_NORM_FORM_GRAD, 1, 7},
    {"clip_value", LOMO_OPTIM_LOMO, LOMO_NORM_AUTO, 1, 0},
    {"adalomo", LOMO_OPTIM_ADALOMO, LOMO_NORM_AUTO, 1, 0},
};

static void test_file(const char *file) {
    printf("== %s\n", file);
    run r;
    if (load_run(&r, file)) {
        CHECK(0, "cannot load %s", file);
        return;
    }
    /* the LM head whole, then in vocabulary chunks of 16 rows: its gradient a chunk at a time (adalomo:
     * formed whole), a tied head's norm through its rows at the embedding's tokens */
    for (int chunked = 0; chunked <= 1; chunked++) {
        logits_chunk = chunked ? 16 : 0;
        CHECK(!chunked || (r.cfg.vocab_size > 2 * logits_chunk && r.cfg.vocab_size % logits_chunk),
              "%s: vocabulary %d", file, r.cfg.vocab_size);
        const scenario_row *rows = chunked ? CHUNKED_SCENARIOS : WHOLE_SCENARIOS;
        size_t n = chunked ? sizeof CHUNKED_SCENARIOS / sizeof *rows : sizeof WHOLE_SCENARIOS / sizeof *rows;
        for (size_t i = 0; i < n; i++) {
            tied_chunk = rows[i].tied_chunk;
            scenario(&r, file, rows[i].name, rows[i].kind, rows[i].nm, rows[i].ckpt);
        }
        tied_chunk = 0;
    }
    logits_chunk = 0;
    cross_checks(&r, file);
    head_passes(&r);
    loss_scaler(&r);
    stop_midway(&r);
    gradient_memory(&r);
    out_of_memory(&r);
    bad_options(&r);
    resume(&r);
    fx_free(&r.fx);
}

int main(void) {
    test_file("train_gqa.bin");
    test_file("train_tied.bin");
    return test_summary("test_optim");
}
