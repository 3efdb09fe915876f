/*
 * optim.c: the training step of the LOMO engine and the dynamic loss scaler.
 *
 * lomo / adalomo step: forward; if a measuring pass is needed (norm clipping,
 * loss scaling, or the non-finite guard), backward once only to take the
 * global gradient norm and vet every gradient, skipping the step on overflow
 * before any weight changes; then backward again, updating each parameter
 * as its gradient appears. sgd / adamw: forward, backward into full
 * gradients, then update, as PyTorch does.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "optim.h"

void lomo_optim_options_default(lomo_optim_options *o, lomo_optim_kind kind) {
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->loss_scaling = -1;
    o->loss_scale_init = 65536.0f;
    o->loss_scale_window = 1000;
    o->adam_beta1 = 0.9f;
    o->adam_beta2 = 0.999f;
    o->adam_eps = 1e-8f;
    o->adalomo_decay = -0.8f;
    o->adalomo_eps1 = 1e-30f;
    o->adalomo_eps2 = 1e-3f;
    o->adalomo_clip = 1.0f;
}

const char *lomo_optim_kind_name(lomo_optim_kind k) {
    switch (k) {
    case LOMO_OPTIM_LOMO: return "lomo";
    case LOMO_OPTIM_ADALOMO: return "adalomo";
    case LOMO_OPTIM_SGD: return "sgd";
    case LOMO_OPTIM_ADAMW: return "adamw";
    }
    return "unknown";
}

static lomo_status check_options(lomo_ctx *ctx, const lomo_optim_options *o) {
#define BAD(cond, ...) if (cond) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "optimizer options: " __VA_ARGS__)
    BAD((unsigned)o->kind > LOMO_OPTIM_ADAMW, "kind: unknown value %d", (int)o->kind);
    BAD(!(o->weight_decay >= 0 && isfinite(o->weight_decay)), "weight_decay: must be >= 0, got %g", o->weight_decay);
    BAD(!(o->clip_grad_norm >= 0 && isfinite(o->clip_grad_norm)), "clip_grad_norm: must be >= 0, got %g",
        o->clip_grad_norm);
    BAD(!(o->clip_grad_value >= 0 && isfinite(o->clip_grad_value)), "clip_grad_value: must be >= 0, got %g",
        o->clip_grad_value);
    BAD(o->loss_scaling < -1 || o->loss_scaling > 1, "loss_scaling: must be -1, 0 or 1, got %d", o->loss_scaling);
    BAD(!(o->loss_scale_init >= 1 && isfinite(o->loss_scale_init)), "loss_scale_init: must be >= 1, got %g",
        o->loss_scale_init);
    BAD(o->loss_scale_window < 1, "loss_scale_window: must be >= 1, got %d", o->loss_scale_window);
    BAD((unsigned)o->norm_method > LOMO_NORM_GRAM, "norm_method: unknown value %d", (int)o->norm_method);
    BAD(!(o->adam_beta1 >= 0 && o->adam_beta1 < 1), "adam_beta1: must be in [0, 1), got %g", o->adam_beta1);
    BAD(!(o->adam_beta2 >= 0 && o->adam_beta2 < 1), "adam_beta2: must be in [0, 1), got %g", o->adam_beta2);
    BAD(!(o->adam_eps > 0), "adam_eps: must be > 0, got %g", o->adam_eps);
    BAD(!(o->adalomo_decay < 0), "adalomo_decay: must be < 0, got %g", o->adalomo_decay);
    BAD(!(o->adalomo_eps1 > 0 && o->adalomo_eps2 >= 0), "adalomo_eps1/eps2: must be positive");
    BAD(!(o->adalomo_clip > 0), "adalomo_clip: must be > 0, got %g", o->adalomo_clip);
#undef BAD
    return LOMO_OK;
}

/* adalomo: [rows] + [cols] per matrix, [n] per vector; adamw: m and v, [n] each. */
static size_t state_floats(const lomo_optim *o, const param_desc *d) {
    if (o->o.kind == LOMO_OPTIM_ADAMW) return 2 * d->numel;
    if (o->o.kind != LOMO_OPTIM_ADALOMO) return 0;
    return d->ndim == 2 ? (size_t)(d->shape[0] + d->shape[1]) : d->numel;
}

lomo_status lomo_optim_create(lomo_optim **out, lomo_model *m, const lomo_optim_options *opts) {
    if (!out || !m) return LOMO_ERR_INVALID_ARG;
    *out = NULL;
    lomo_optim_options def;
    lomo_optim_options_default(&def, LOMO_OPTIM_LOMO);
    const lomo_optim_options *oo = opts ? opts : &def;
    lomo_status st = check_options(m->ctx, oo);
    if (st) return st;
    lomo_optim *o = calloc(1, sizeof *o);
    if (!o) return lomo_fail(m->ctx, LOMO_ERR_OOM, "out of memory: optimizer");
    o->m = m;
    o->ctx = m->ctx;
    o->be = m->be;
    o->o = *oo;
    o->scaling = oo->loss_scaling == -1 ? m->dtype == LOMO_F16 : oo->loss_scaling;
    o->scale = o->scaling ? oo->loss_scale_init : 1.0f;
    o->inject = -1;
    o->tied_chunk = TIED_CHUNK;
    o->norm_choice = calloc((size_t)m->nparams, sizeof *o->norm_choice);
    o->state_off = calloc((size_t)m->nparams, sizeof *o->state_off);
    if (!o->norm_choice || !o->state_off) goto oom;
    size_t n = 0;
    for (int p = 0; p < m->nparams; p++) {
        o->state_off[p] = n;
        n += (state_floats(o, &m->params[p]) + 15) & ~(size_t)15;
    }
    if (n) {
        o->state_bytes = n * sizeof(float);
        o->state = lomo_dev_alloc(o->ctx, LOMO_MEM_OPTIMIZER, o->state_bytes, "optimizer state");
        if (!o->state) goto oom;
        o->be->memset0(o->state, o->state_bytes);
    }
    if (oo->kind == LOMO_OPTIM_SGD || oo->kind == LOMO_OPTIM_ADAMW) {
        if (lomo_grads_create(&o->grads, m)) goto oom;
    }
    *out = o;
    return LOMO_OK;
oom:
    lomo_optim_destroy(o);
    return lomo_fail(m->ctx, LOMO_ERR_OOM, "out of memory creating the %s optimizer", lomo_optim_kind_name(oo->kind));
}

void lomo_optim_destroy(lomo_optim *o) {
    if (!o) return;
    lomo_grads_destroy(o->grads);
    lomo_dev_free(o->ctx, LOMO_MEM_OPTIMIZER, o->state, o->state_bytes);
    lomo_dev_free(o->ctx, LOMO_MEM_GRADIENTS, o->gscratch, o->gscratch_bytes);
    lomo_dev_free(o->ctx, LOMO_MEM_SCRATCH, o->gram, o->gram_bytes);
    lomo_dev_free(o->ctx, LOMO_MEM_SCRATCH, o->tied, o->tied_bytes);
    lomo_dev_free(o->ctx, LOMO_MEM_SCRATCH, o->ada_colsum, o->ada_bytes);
    free(o->norm_choice);
    free(o->state_off);
    free(o);
}

float lomo_optim_loss_scale(const lomo_optim *o) { return o->scale; }
int64_t lomo_optim_steps(const lomo_optim *o) { return o->t; }
void lomo_optim_inject_nonfinite(lomo_optim *o, int param) { o->inject = param; }

/* AdaLomo's moments and clipping by value need every element of the summed gradient */
int optim_kind_splits_tied(const lomo_optim_options *oo) {
    return oo->kind == LOMO_OPTIM_LOMO && oo->clip_grad_value <= 0;
}

int optim_splits_tied(const lomo_optim *o) { return o->m->cfg.tie_word_embeddings && optim_kind_splits_tied(&o->o); }

/* Its factored moments need the whole gradient: with the head in chunks, the [V, C] ones (head and
 * embedding, or the tied weight) come in passes rather than dense. */
int optim_ada_head_passes(const lomo_model *m, const lomo_optim_options *oo) {
    return oo->kind == LOMO_OPTIM_ADALOMO && model_logits_chunk(m) < m->cfg.vocab_size;
}

size_t optim_ada_parts_bytes(const lomo_model *m) {
    return (size_t)m->cfg.hidden_size * sizeof(double) + ((size_t)m->cfg.vocab_size + 1) * sizeof(float);
}

/* The largest linear gradient formed at once: a chunked head's is a chunk's rows, or none for AdaLomo,
 * which takes it through the model's dense buffer (no on_linear_rows). */
size_t optim_gscratch_floats(const lomo_model *m, lomo_optim_kind kind) {
    int chunked = model_logits_chunk(m) < m->cfg.vocab_size;
    size_t n = 0;
    for (int p = 0; p < m->nparams; p++) {
        const param_desc *d = &m->params[p];
        size_t k = d->numel;
        if (p == param_head(m) && chunked)
            k = kind == LOMO_OPTIM_ADALOMO ? 0 : (size_t)model_logits_chunk(m) * d->shape[1];
        if (d->kind == LOMO_PARAM_LINEAR && k > n) n = k;
    }
    return n;
}

lomo_status optim_reserve_gscratch(lomo_optim *o) {
    if (o->gscratch) return LOMO_OK;
    o->gscratch_bytes = optim_gscratch_floats(o->m, o->o.kind) * sizeof(float);
    o->gscratch = lomo_dev_alloc(o->ctx, LOMO_MEM_GRADIENTS, o->gscratch_bytes, "linear gradient scratch");
    return o->gscratch ? LOMO_OK : LOMO_ERR_OOM;
}

static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t optim_sr_seed(const lomo_optim *o, int p) {
    if (!o->o.stochastic_rounding || o->m->dtype == LOMO_F32) return 0;
    return mix64(o->o.seed ^ mix64((uint64_t)o->t * 1000003u + (uint64_t)p)) | 1u;
}

/* A step with an overflow: nothing changed; the scale halves (never below 1). */
static void overflow(lomo_optim *o, lomo_step_result *r) {
    r->skipped = 1;
    r->nonfinite = 1;
    if (o->scaling) {
        o->scale = o->scale > 2.0f ? o->scale * 0.5f : 1.0f;
        o->clean_steps = 0;
    }
}

static void applied(lomo_optim *o) {
    o->t++;
    if (!o->scaling) return;
    if (++o->clean_steps >= o->o.loss_scale_window) {
        /* the reference never grows the scale back; we double after a clean window */
        if (isfinite(o->scale * 2.0f)) o->scale *= 2.0f;
        o->clean_steps = 0;
    }
}

/* The linear-gradient scratch was only needed to time the norm methods if every
 * linear shape chose the Gram way and nothing else forms gradients: free it,
 * so LOMO keeps a single dense gradient buffer. */
static void release_unneeded_scratch(lomo_optim *o) {
    if (!o->gscratch || o->o.kind == LOMO_OPTIM_ADALOMO || o->o.clip_grad_value > 0) return;
    for (int p = 0; p < o->m->nparams; p++)
        if (o->m->params[p].kind == LOMO_PARAM_LINEAR && o->norm_choice[p] != LOMO_NORM_GRAM) return;
    lomo_dev_free(o->ctx, LOMO_MEM_GRADIENTS, o->gscratch, o->gscratch_bytes);
    o->gscratch = NULL;
    o->gscratch_bytes = 0;
}

static lomo_status backward_pass(lomo_optim *o, bwd_mode mode, lomo_grad_hook h) {
    o->sumsq = 0.0;
    o->gram_inp = NULL;
    o->nonfinite_param = -1;
    o->oom = 0;
    lomo_status st = model_backward(o->m, o->scale, &h, mode);
    if (st == LOMO_ERR_CALLBACK && o->oom) return lomo_fail(o->ctx, LOMO_ERR_OOM, "step: %s", o->oom_why);
    /* the hook stopped backward on a non-finite gradient: that is a finding, not a failure */
    if (st == LOMO_ERR_CALLBACK && o->nonfinite_param >= 0) return LOMO_OK;
    return st;
}

static lomo_status full_gradient_step(lomo_optim *o, lomo_step_result *r) {
    lomo_model *m = o->m;
    lomo_grads_zero(o->grads);
    lomo_status st = backward_pass(o, BWD_PLAIN, lomo_grads_hook(o->grads));
    if (st) return st;
    double sumsq = 0.0;
    int finite = 1;
    for (int p = 0; p < m->nparams; p++) {
        const float *g = lomo_grads_get(o->grads, p);
        double s;
        LOMO_TIMED(o->ctx, LOMO_OP_GRAD_CHECK, 0, s = o->be->sumsq(g, m->params[p].numel));
        finite &= isfinite(s) && p != o->inject;
        sumsq += s;
    }
    if (!finite) {
        overflow(o, r);
        return LOMO_OK;
    }
    r->grad_norm = (float)(sqrt(sumsq) * o->gscale);
    o->coef = o->o.clip_grad_norm > 0 ? fminf(1.0f, o->o.clip_grad_norm / (r->grad_norm + 1e-6f)) : 1.0f;
    optim_apply_full(o);
    applied(o);
    return LOMO_OK;
}

lomo_status lomo_optim_step(lomo_optim *o, const int32_t *tokens, const int32_t *targets, int B, int T, float lr,
                            lomo_step_result *result) {
    if (!o) return LOMO_ERR_INVALID_ARG;
    lomo_step_result r = {.grad_norm = NAN, .loss_scale = o->scale};
    if (!targets) return lomo_fail(o->ctx, LOMO_ERR_INVALID_ARG, "step: targets are required");
    if (!(lr >= 0 && isfinite(lr))) return lomo_fail(o->ctx, LOMO_ERR_INVALID_ARG, "step: lr must be >= 0, got %g", lr);
    lomo_status st = lomo_model_forward(o->m, tokens, targets, B, T, &r.loss, NULL);
    if (st) return st;
    o->lr = lr;
    o->gscale = 1.0f / o->scale;
    o->coef = 1.0f;
    o->checked = 0;
    o->finite_inp = NULL;
    if (!isfinite(r.loss)) {
        r.skipped = r.nonfinite = 1;   /* not the scale's fault: keep it */
        goto done;
    }
    if (o->o.kind == LOMO_OPTIM_SGD || o->o.kind == LOMO_OPTIM_ADAMW) {
        st = full_gradient_step(o, &r);
        goto done;
    }
    if (o->o.clip_grad_norm > 0 || o->scaling || o->o.guard_nonfinite) {
        if (o->norm_BT != B * T) {
            memset(o->norm_choice, 0, (size_t)o->m->nparams * sizeof *o->norm_choice);
            o->norm_BT = B * T;
        }
        /* pass one records the residual gradients, so pass two replays it without most dX GEMMs */
        st = backward_pass(o, BWD_RECORD, optim_measure_hook(o));
        if (st) goto done;
        if (o->nonfinite_param >= 0 || !isfinite(o->sumsq)) {
            overflow(o, &r);
            goto done;
        }
        release_unneeded_scratch(o);
        r.grad_norm = (float)sqrt(o->sumsq);
        if (o->o.clip_grad_norm > 0) o->coef = fminf(1.0f, o->o.clip_grad_norm / (r.grad_norm + 1e-6f));
        o->checked = 1;
    }
    /* unvetted gradients are checked on the way, through the model's gate (optim_hooks.c) */
    if (!o->checked) LOMO_TIMED(o->ctx, LOMO_OP_GRAD_CHECK, 0, o->be->memset0(o->m->gate, sizeof(int)));
    st = backward_pass(o, o->checked ? BWD_REPLAY : BWD_PLAIN, optim_update_hook(o));
    if (st) goto done;
    if (!o->checked && o->nonfinite_param < 0) optim_gate_raised(o);
    if (o->nonfinite_param >= 0) {
        r.nonfinite = 1;
        st = lomo_fail(o->ctx, LOMO_ERR_NONFINITE,
                       "step: non-finite gradient for %s with a finite loss; parameters before it in backward "
                       "order were updated (set guard_nonfinite to vet all gradients first)",
                       o->m->params[o->nonfinite_param].name);
        goto done;
    }
    applied(o);
done:
    if (!st) st = lomo_device_check(o->ctx);
    o->inject = -1;
    if (result) *result = r;
    return st;
}
