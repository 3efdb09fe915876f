/*
 * optim_hooks.c: what the engine does with each gradient the moment backward
 * hands it over: measure it (pass one), or apply it (lomo, adalomo), or, for
 * the baselines, apply full gradients after backward.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "optim.h"

/* Stops backward at the first non-finite gradient (a finding the step reports). */
static int found_nonfinite(lomo_optim *o, int p) {
    if (o->nonfinite_param < 0) o->nonfinite_param = p;
    return 1;
}

static int injected(const lomo_optim *o, int p) { return p == o->inject; }

/* A scratch the hook needed did not fit: stops backward as a failure with the allocation's message
 * (backward_pass reports it), never as a non-finite gradient, which would only skip the step. */
static int out_of_memory(lomo_optim *o) {
    o->oom = 1;
    snprintf(o->oom_why, sizeof o->oom_why, "%s", lomo_last_error(o->ctx));
    return 1;
}

/*
 * The update pass's finiteness checks go through the model's gate
 * (backend.h check_finite): queued, never waited for, and every update made
 * after a raised gate leaves its weight as it was. The step reads the gate
 * once, after backward; only updates the backend cannot gate wait on it here.
 * An injected fault raises the gate outright.
 */
static void check_finite(lomo_optim *o, int p, const float *x, size_t n) {
    LOMO_TIMED(o->ctx, LOMO_OP_GRAD_CHECK, 0, o->be->check_finite(o->m->gate, injected(o, p) ? NULL : x, n, p));
}

/* 1 (the finding recorded) if a gradient checked so far was not finite; waits for the device */
int optim_gate_raised(lomo_optim *o) {
    int g;
    LOMO_TIMED(o->ctx, LOMO_OP_GRAD_CHECK, 0, g = o->be->gate_read(o->m->gate));
    return g ? found_nonfinite(o, g - 1) : 0;
}

/* the gate an update obeys: none when a measuring pass vetted every gradient already */
static const int *update_gate(const lomo_optim *o) { return o->checked ? NULL : o->m->gate; }

static double grad_sumsq(lomo_optim *o, const float *g, size_t n) {
    double s;
    LOMO_TIMED(o->ctx, LOMO_OP_GRAD_CHECK, 0, s = o->be->sumsq(g, n));
    return s;
}

/* w [n] (weights in storage) -= lr * (prepared g [n]), rounding seed sr_seed; skipped while gate (NULL:
 * none) is raised */
static void sgd_update_at(lomo_optim *o, void *w, const float *g, size_t n, uint64_t sr_seed, const int *gate) {
    LOMO_TIMED(o->ctx, LOMO_OP_OPTIMIZER, 0,
               o->be->sgd_update(w, o->m->dtype, g, n, o->lr, o->o.weight_decay, o->gscale, o->o.clip_grad_value,
                                 o->coef, sr_seed, gate));
}

/* all of p from its materialized gradient g [numel] */
static void sgd_update(lomo_optim *o, int p, const float *g, const int *gate) {
    sgd_update_at(o, param_ptr(o->m, p), g, o->m->params[p].numel, optim_sr_seed(o, p), gate);
}

/* dW = dout^T inp into the scratch; [OC, IC] */
static float *form_linear_grad(lomo_optim *o, int IC, int OC, const float *dout, const float *inp, int BT) {
    LOMO_TIMED(o->ctx, LOMO_OP_WEIGHT_GRAD, 2.0 * BT * IC * OC,
               o->be->matmul_backward_weight(o->gscratch, dout, inp, 1.0f, 0.0f, BT, IC, OC));
    return o->gscratch;
}

static double gram_sumsq(lomo_optim *o, int IC, int OC, const float *dout, const float *inp, int BT) {
    size_t need = 2 * (size_t)BT * BT * sizeof(float);
    if (need > o->gram_bytes) {
        lomo_dev_free(o->ctx, LOMO_MEM_SCRATCH, o->gram, o->gram_bytes);
        o->gram_bytes = 0;
        o->gram = lomo_dev_alloc(o->ctx, LOMO_MEM_SCRATCH, need, "Gram matrices of the norm pass");
        if (!o->gram) return out_of_memory(o), NAN;
        o->gram_bytes = need;
        o->gram_inp = NULL;
    }
    /* q/k/v share ln1, gate/up share ln2 and a chunked head's chunks lnf: their input Gram is formed once */
    int valid = o->gram_inp == inp && o->gram_BT == BT;
    double s, flops = 2.0 * BT * BT * (OC + (valid ? 0 : IC)) + 2.0 * BT * BT;
    LOMO_TIMED(o->ctx, LOMO_OP_NORM_GRAM, flops,
               s = o->be->linear_grad_sumsq_gram(o->gram, valid, dout, inp, BT, IC, OC));
    o->gram_inp = inp;
    o->gram_BT = BT;
    return s;
}

/* The tied weight's scratch (optim.h), for this step's B*T rows; kept, and made anew only to grow. */
static int reserve_tied(lomo_optim *o) {
    lomo_model *m = o->m;
    size_t BT = (size_t)m->B * m->T, C = (size_t)m->cfg.hidden_size, V = (size_t)m->cfg.vocab_size;
    size_t k = V < (size_t)o->tied_chunk ? V : (size_t)o->tied_chunk;
    size_t need = (BT + C) * k * sizeof(float) + k * sizeof(int32_t);
    if (o->tied && o->tied_bytes >= need && (size_t)o->tied_k == k) return 0;
    lomo_dev_free(o->ctx, LOMO_MEM_SCRATCH, o->tied, o->tied_bytes);
    o->tied_bytes = need;
    o->tied = lomo_dev_alloc(o->ctx, LOMO_MEM_SCRATCH, need, "tied head gradient rows");
    int32_t *iota = malloc(k * sizeof *iota);
    if (o->tied && !iota) lomo_fail(o->ctx, LOMO_ERR_OOM, "out of host memory: %zu column numbers", k);
    if (!o->tied || !iota) {
        free(iota);
        lomo_dev_free(o->ctx, LOMO_MEM_SCRATCH, o->tied, o->tied_bytes);
        o->tied = NULL;
        o->tied_bytes = 0;
        return 1;
    }
    o->tied_rows = o->tied + BT * k;
    o->tied_iota = (int32_t *)(o->tied_rows + C * k);
    for (size_t i = 0; i < k; i++) iota[i] = (int32_t)i;
    LOMO_TIMED(o->ctx, LOMO_OP_COPY, 0, o->be->to_device(o->tied_iota, iota, k * sizeof *iota));
    free(iota);
    o->tied_k = (int)k;
    return 0;
}

/*
 * ||dout^T inp||^2 of the tied head's rows [OC, C], dout [N, OC] (the whole
 * head, or a chunk), its rows formed k at a time through dout's columns
 * gathered into the scratch: never the whole gradient.
 */
static double tied_formed_sumsq(lomo_optim *o, const float *dout, const float *inp, int N, int OC) {
    int C = o->m->cfg.hidden_size, k = o->tied_k;
    double s = 0.0;
    for (int v0 = 0; v0 < OC; v0 += k) {
        int n = OC - v0 < k ? OC - v0 : k;
        LOMO_TIMED(o->ctx, LOMO_OP_COPY, 0, o->be->gather_cols(o->tied, dout + v0, o->tied_iota, N, OC, n));
        LOMO_TIMED(o->ctx, LOMO_OP_NORM_GRAM, 2.0 * N * n * C,
                   o->be->matmul_backward_weight(o->tied_rows, o->tied, inp, 1.0f, 0.0f, N, C, n));
        s += grad_sumsq(o, o->tied_rows, (size_t)n * C);
    }
    return s;
}

/* ||dW||^2 of p's rows [OC, IC] formed: in the linear scratch, or for the tied head a piece at a time */
static double formed_sumsq(lomo_optim *o, int p, int OC, const float *dout, const float *inp, int BT) {
    const param_desc *d = &o->m->params[p];
    if (d->kind != LOMO_PARAM_LINEAR) {   /* the tied head */
        if (reserve_tied(o)) return out_of_memory(o), NAN;
        return tied_formed_sumsq(o, dout, inp, BT, OC);
    }
    if (optim_reserve_gscratch(o)) return out_of_memory(o), NAN;
    return grad_sumsq(o, form_linear_grad(o, (int)d->shape[1], OC, dout, inp, BT), (size_t)OC * d->shape[1]);
}

/*
 * Which way to take ||dW||^2 of p's rows [OC, IC] (all of p, or a chunk of
 * the head's): decided by timing both the first time a shape is met at this
 * token count (DESIGN.md: chosen by measurement); a chunked head keeps what
 * its first chunk chose.
 */
static double linear_sumsq(lomo_optim *o, int p, int OC, const float *dout, const float *inp, int BT) {
    lomo_model *m = o->m;
    int IC = (int)m->params[p].shape[1];
    lomo_norm_method how = o->o.norm_method ? o->o.norm_method : o->norm_choice[p];
    if (how == LOMO_NORM_AUTO) {
        for (int q = 0; q < m->nparams && !how; q++)
            if (o->norm_choice[q] && m->params[q].shape[0] == OC && m->params[q].shape[1] == IC)
                how = o->norm_choice[q];
    }
    if (how == LOMO_NORM_AUTO) {
        o->gram_inp = NULL;   /* time the full Gram cost, input Gram included */
        double t0 = lomo_now();
        double sg = gram_sumsq(o, IC, OC, dout, inp, BT);
        double t1 = lomo_now();
        double sf = formed_sumsq(o, p, OC, dout, inp, BT);
        double t2 = lomo_now();
        how = (t1 - t0) < (t2 - t1) ? LOMO_NORM_GRAM : LOMO_NORM_FORM_GRAD;
        o->norm_choice[p] = how;
        return how == LOMO_NORM_GRAM ? sg : sf;
    }
    o->norm_choice[p] = how;
    return how == LOMO_NORM_GRAM ? gram_sumsq(o, IC, OC, dout, inp, BT) : formed_sumsq(o, p, OC, dout, inp, BT);
}

/* ---- pass one: the norm, and a vetting of every gradient ---- */

static int measure_sumsq(lomo_optim *o, int p, double s) {
    if (o->oom) return 1;
    if (!isfinite(s) || injected(o, p)) return found_nonfinite(o, p);
    o->sumsq += s * (double)o->gscale * o->gscale;
    return 0;
}

static int measure_linear(void *user, int p, const float *dout, const float *inp, int BT) {
    lomo_optim *o = user;
    return measure_sumsq(o, p, linear_sumsq(o, p, (int)o->m->params[p].shape[0], dout, inp, BT));
}

static int measure_linear_rows(void *user, int p, int row0, int nrows, const float *dout, const float *inp, int N) {
    (void)row0;
    return measure_sumsq(user, p, linear_sumsq(user, p, nrows, dout, inp, N));
}

static int measure_dense(void *user, int p, float *grad) {
    lomo_optim *o = user;
    o->gram_inp = NULL;   /* a new block's inputs follow: the cached Gram is stale */
    return measure_sumsq(o, p, grad_sumsq(o, grad, o->m->params[p].numel));
}

static int measure_rows(void *user, int p, const int32_t *rows, int nrows, float *grad) {
    lomo_optim *o = user;
    (void)rows;
    return measure_sumsq(o, p, grad_sumsq(o, grad, (size_t)nrows * o->m->params[p].shape[1]));
}

/* a [V, C] gradient (head, embedding), a chunk of rows at a time, in one pass (optim_ada_head_passes) */
static int measure_head_chunk(void *user, int p, int pass, int row0, int nrows, float *grad) {
    lomo_optim *o = user;
    (void)pass;
    (void)row0;
    return measure_sumsq(o, p, grad_sumsq(o, grad, (size_t)nrows * o->m->cfg.hidden_size));
}

/*
 * The tied weight's rows E: what they add to the head's part H, which
 * measure_linear took: the sum over those rows r of ||H_r + E_r||^2 -
 * ||H_r||^2. head [nrows, C] = H at the rows; grad [nrows, C] = E, overwritten.
 */
static int measure_tied(void *user, int p, const int32_t *rows, int nrows, float *grad, const float *head) {
    lomo_optim *o = user;
    (void)rows;
    size_t n = (size_t)nrows * o->m->cfg.hidden_size;
    double hh = grad_sumsq(o, head, n);
    LOMO_TIMED(o->ctx, LOMO_OP_GRAD_CHECK, 0, o->be->add_inplace(grad, head, n));
    return measure_sumsq(o, p, grad_sumsq(o, grad, n) - hh);
}

/* The measuring pass takes the gradients in the same parts as the update pass that follows (AdaLomo:
 * the embedding dense, or with a chunked head, both in passes), so the model's
 * gradient buffer keeps its layout. */
lomo_grad_hook optim_measure_hook(lomo_optim *o) {
    int parts = o->o.kind != LOMO_OPTIM_ADALOMO, passes = optim_ada_head_passes(o->m, &o->o);
    return (lomo_grad_hook){.user = o, .on_linear = measure_linear, .on_dense = measure_dense,
                            .on_rows = parts ? measure_rows : NULL,
                            .on_linear_rows = parts ? measure_linear_rows : NULL,
                            .on_tied = optim_splits_tied(o) ? measure_tied : NULL, .tied_head = 1,
                            .on_head_chunk = passes ? measure_head_chunk : NULL, .head_passes = passes};
}

/* ---- pass two: apply ---- */

static void adalomo_apply(lomo_optim *o, int p, float *g) {
    const param_desc *d = &o->m->params[p];
    float *row = o->state + o->state_off[p];
    int two_d = d->ndim == 2;
    float beta = 1.0f - powf((float)(o->t + 1), o->o.adalomo_decay);
    LOMO_TIMED(o->ctx, LOMO_OP_OPTIMIZER, 0, o->be->grad_prepare(g, d->numel, o->gscale, o->o.clip_grad_value, o->coef));
    LOMO_TIMED(o->ctx, LOMO_OP_OPTIMIZER, 0,
               o->be->adalomo_update(param_ptr(o->m, p), o->m->dtype, g, row, two_d ? row + d->shape[0] : NULL,
                                     (int)d->shape[0], two_d ? (int)d->shape[1] : 0, beta, o->lr,
                                     o->o.weight_decay, o->o.adalomo_eps1, o->o.adalomo_eps2, o->o.adalomo_clip,
                                     optim_sr_seed(o, p)));
}

/*
 * A materialized gradient g of p: the element update behind the gate, or
 * AdaLomo's, which has none, once the gate is read. 1 stops backward: a
 * non-finite gradient was found (and recorded).
 */
static int apply_grad(lomo_optim *o, int p, float *g) {
    if (o->o.kind != LOMO_OPTIM_ADALOMO) sgd_update(o, p, g, update_gate(o));
    else if (o->checked || !optim_gate_raised(o)) adalomo_apply(o, p, g);
    return !o->checked && o->nonfinite_param >= 0;
}

/* A chunk's own rounding draws: the seed of p's rows from row0 on (row 0: p's seed). */
static uint64_t rows_sr_seed(uint64_t seed, int row0) {
    return seed && row0 ? (seed ^ ((uint64_t)row0 * 0x9e3779b97f4a7c15ull)) | 1u : seed;
}

/* rows row0..row0+OC-1 of linear p from dout [BT, OC] and inp [BT, IC]: all of p, or a chunk of the head */
static int update_linear_block(lomo_optim *o, int p, int row0, int OC, const float *dout, const float *inp, int BT) {
    lomo_model *m = o->m;
    const param_desc *d = &m->params[p];
    int IC = (int)d->shape[1];
    /* an input shared by q/k/v, gate/up or a head's chunks is checked once */
    if (!o->checked) {
        check_finite(o, p, dout, (size_t)BT * OC);
        if (inp != o->finite_inp) check_finite(o, p, inp, (size_t)BT * IC);
        o->finite_inp = inp;
    }
    void *w = (char *)param_ptr(m, p) + (size_t)row0 * IC * lomo_dtype_size(m->dtype);
    uint64_t seed = rows_sr_seed(optim_sr_seed(o, p), row0);
    const int *gate = update_gate(o);
    if (o->o.kind == LOMO_OPTIM_ADALOMO || o->o.clip_grad_value > 0) {
        if (optim_reserve_gscratch(o)) return out_of_memory(o);
        float *g = form_linear_grad(o, IC, OC, dout, inp, BT);
        if (o->o.kind == LOMO_OPTIM_ADALOMO) return apply_grad(o, p, g);   /* AdaLomo: whole tensors only */
        sgd_update_at(o, w, g, (size_t)OC * IC, seed, gate);
        return 0;
    }
    /* The head comes first, with only its own checks queued: reading the gate now costs one wait,
     * and an ungated update reads its [N, V] dout in place, where a gated one would copy it. A
     * chunked head reads it once a chunk; no later chunk can find what an earlier one missed: the
     * step only runs backward on a finite loss, and then every dlogits = dloss * exp(z - lse) is
     * finite, z <= lse. */
    if (gate && p == param_head(m)) {
        if (optim_gate_raised(o)) return 1;
        gate = NULL;
    }
    /* the fused update: W <- (1 - lr*wd) W - (lr*coef/scale) dout^T inp, no gradient ever formed */
    float alpha = -o->lr * o->coef * o->gscale, beta = 1.0f - o->lr * o->o.weight_decay;
    LOMO_TIMED(o->ctx, LOMO_OP_LINEAR_UPDATE, 2.0 * BT * IC * OC,
               o->be->linear_update(w, m->dtype, m->wbuf, dout, inp, alpha, beta, BT, IC, OC, seed, gate));
    return 0;
}

static int update_linear(void *user, int p, const float *dout, const float *inp, int BT) {
    lomo_optim *o = user;
    return update_linear_block(o, p, 0, (int)o->m->params[p].shape[0], dout, inp, BT);
}

static int update_linear_rows(void *user, int p, int row0, int nrows, const float *dout, const float *inp, int N) {
    return update_linear_block(user, p, row0, nrows, dout, inp, N);
}

static int update_dense(void *user, int p, float *grad) {
    lomo_optim *o = user;
    o->finite_inp = NULL;   /* a new block's inputs follow (the buffers are reused across blocks) */
    const param_desc *d = &o->m->params[p];
    if (!o->checked) check_finite(o, p, grad, d->numel);
    return apply_grad(o, p, grad);
}

/* the rows' update with decay wd and rounding seed sr_seed, once every gradient so far is known finite */
static int rows_update(lomo_optim *o, int p, const int32_t *rows, int nrows, float *grad, float wd,
                       uint64_t sr_seed) {
    const param_desc *d = &o->m->params[p];
    int C = (int)d->shape[1];
    if (!o->checked) {
        check_finite(o, p, grad, (size_t)nrows * C);
        if (optim_gate_raised(o)) return 1;   /* the row update has no gate of its own */
    }
    LOMO_TIMED(o->ctx, LOMO_OP_OPTIMIZER, 0,
               o->be->sgd_update_rows(param_ptr(o->m, p), o->m->dtype, grad, rows, nrows, (int)d->shape[0], C,
                                      o->lr, wd, o->gscale, o->o.clip_grad_value, o->coef, sr_seed));
    return 0;
}

static int update_rows(void *user, int p, const int32_t *rows, int nrows, float *grad) {
    lomo_optim *o = user;
    return rows_update(o, p, rows, nrows, grad, o->o.weight_decay, optim_sr_seed(o, p));
}

/*
 * The tied weight's rows, after update_linear applied decay and the head's
 * part: added without decay (it was applied once, to every row), rounded with
 * draws of their own (the head's rounding used the parameter's seed).
 */
static int update_tied(void *user, int p, const int32_t *rows, int nrows, float *grad, const float *head) {
    lomo_optim *o = user;
    (void)head;
    uint64_t seed = optim_sr_seed(o, p);
    return rows_update(o, p, rows, nrows, grad, 0.0f, seed ? seed ^ 0x5bd1e9955bd1e994ull : 0);
}

/* The scratch of AdaLomo's head passes, made on first use and kept. */
static int reserve_ada_parts(lomo_optim *o) {
    if (o->ada_colsum) return 0;
    size_t need = optim_ada_parts_bytes(o->m);
    o->ada_colsum = lomo_dev_alloc(o->ctx, LOMO_MEM_SCRATCH, need, "AdaLomo's row and column sums of the head");
    if (!o->ada_colsum) return 1;
    o->ada_bytes = need;
    o->ada_rmean = (float *)(o->ada_colsum + o->m->cfg.hidden_size);
    o->ada_mean = o->ada_rmean + o->m->cfg.vocab_size;
    return 0;
}

/*
 * AdaLomo on a [V, C] weight (the head, the embedding or the tied weight), a chunk of rows at a time in three passes
 * (backend.h adalomo_rows, _factors, _scale): 0, each row's mean of g^2 and
 * the column sums, then, every chunk in and found finite, the factors; 1, the
 * sum of u^2 that clips the update; 2, the update. adalomo_update's arithmetic
 * on the whole tensor, but for the order of that sum and each chunk's own
 * rounding draws.
 */
static int update_head_chunk(void *user, int p, int pass, int row0, int nrows, float *g) {
    lomo_optim *o = user;
    lomo_model *m = o->m;
    const param_desc *d = &m->params[p];
    int V = (int)d->shape[0], C = (int)d->shape[1], last = row0 + nrows == V;
    size_t n = (size_t)nrows * C, all = (size_t)V * C;
    float *row = o->state + o->state_off[p], *col = row + V;
    if (pass == 0 && row0 == 0 && reserve_ada_parts(o)) return out_of_memory(o);
    if (pass == 0 && !o->checked) check_finite(o, p, g, n);
    LOMO_TIMED(o->ctx, LOMO_OP_OPTIMIZER, 0, o->be->grad_prepare(g, n, o->gscale, o->o.clip_grad_value, o->coef));
    if (pass == 0) {
        if (row0 == 0)
            LOMO_TIMED(o->ctx, LOMO_OP_OPTIMIZER, 0, o->be->memset0(o->ada_colsum, (size_t)C * sizeof(double)));
        LOMO_TIMED(o->ctx, LOMO_OP_OPTIMIZER, 0,
                   o->be->adalomo_rows(o->ada_rmean + row0, o->ada_colsum, g, nrows, C, o->o.adalomo_eps1));
        if (!last) return 0;
        /* every chunk is in: the moments change only for a step no non-finite gradient stops */
        if (!o->checked && optim_gate_raised(o)) return 1;
        float beta = 1.0f - powf((float)(o->t + 1), o->o.adalomo_decay);
        LOMO_TIMED(o->ctx, LOMO_OP_OPTIMIZER, 0,
                   o->be->adalomo_factors(row, col, o->ada_mean, o->ada_rmean, o->ada_colsum, V, C, beta));
        o->ada_usq = 0.0;
        return 0;
    }
    LOMO_TIMED(o->ctx, LOMO_OP_OPTIMIZER, 0, o->be->adalomo_scale(g, row + row0, col, o->ada_mean, nrows, C));
    if (pass == 1) {
        double s;
        LOMO_TIMED(o->ctx, LOMO_OP_OPTIMIZER, 0, s = o->be->sumsq(g, n));
        o->ada_usq += s;
        if (last) {
            double sw;
            LOMO_TIMED(o->ctx, LOMO_OP_OPTIMIZER, 0, sw = o->be->weights_sumsq(param_ptr(m, p), m->dtype, all));
            lomo_adalomo_scalars(&o->ada_lr_t, &o->ada_inv_d, o->ada_usq, sw, all, o->lr, o->o.adalomo_eps2,
                                 o->o.adalomo_clip);
        }
        return 0;
    }
    void *w = (char *)param_ptr(m, p) + (size_t)row0 * C * lomo_dtype_size(m->dtype);
    LOMO_TIMED(o->ctx, LOMO_OP_OPTIMIZER, 0,
               o->be->sgd_update(w, m->dtype, g, n, o->ada_lr_t, o->o.weight_decay, o->ada_inv_d, 0.0f, 1.0f,
                                 rows_sr_seed(optim_sr_seed(o, p), row0), NULL));
    return 0;
}

/* AdaLomo's factored moments need every row of the embedding gradient, and the whole of the head's:
 * it takes them dense, or with the head in chunks in passes. */
lomo_grad_hook optim_update_hook(lomo_optim *o) {
    int parts = o->o.kind != LOMO_OPTIM_ADALOMO, passes = optim_ada_head_passes(o->m, &o->o);
    return (lomo_grad_hook){.user = o, .on_linear = update_linear, .on_dense = update_dense,
                            .on_rows = parts ? update_rows : NULL,
                            .on_linear_rows = parts ? update_linear_rows : NULL,
                            .on_tied = optim_splits_tied(o) ? update_tied : NULL,
                            .on_head_chunk = passes ? update_head_chunk : NULL, .head_passes = passes ? 3 : 0};
}

/* ---- baselines: full gradients, applied after backward ---- */

void optim_apply_full(lomo_optim *o) {
    lomo_model *m = o->m;
    const lomo_optim_options *oo = &o->o;
    float b1 = oo->adam_beta1, b2 = oo->adam_beta2;
    float bc1 = 1.0f - powf(b1, (float)(o->t + 1)), bc2 = 1.0f - powf(b2, (float)(o->t + 1));
    for (int p = 0; p < m->nparams; p++) {
        const param_desc *d = &m->params[p];
        float *g = (float *)lomo_grads_get(o->grads, p);   /* ours to overwrite */
        void *w = param_ptr(m, p);
        if (oo->kind == LOMO_OPTIM_SGD) {
            sgd_update(o, p, g, NULL);
        } else {
            float *mv = o->state + o->state_off[p];
            LOMO_TIMED(o->ctx, LOMO_OP_OPTIMIZER, 0,
                       o->be->grad_prepare(g, d->numel, o->gscale, oo->clip_grad_value, o->coef));
            LOMO_TIMED(o->ctx, LOMO_OP_OPTIMIZER, 0,
                       o->be->adamw_update(w, m->dtype, g, mv, mv + d->numel, d->numel, o->lr, oo->weight_decay,
                                           b1, b2, oo->adam_eps, bc1, bc2, optim_sr_seed(o, p)));
        }
    }
}
