/*
 * optim.h: the LOMO engine's state, shared by optim.c (the step and the loss
 * scaler) and optim_hooks.c (what happens to each gradient).
 */
#ifndef LOMO_OPTIM_H
#define LOMO_OPTIM_H

#include "model.h"

struct lomo_optim {
    lomo_model *m;
    lomo_ctx *ctx;
    const lomo_backend *be;
    lomo_optim_options o;
    int64_t t;                  /* updates applied */
    int scaling;                /* dynamic loss scaling on */
    float scale;
    int clean_steps;

    /* this step */
    float lr, coef, gscale;     /* gscale = 1 / loss scale */
    int checked;                /* 1: a measuring pass vetted every gradient already */
    const float *finite_inp;    /* the linear input last found finite in this block (q/k/v share one) */
    double sumsq;
    int nonfinite_param;        /* first parameter found non-finite, or -1 */
    int inject;                 /* testing: parameter to treat as non-finite, or -1 */
    /* an allocation in a hook failed: backward stopped for that, not for a finding; its message */
    int oom;
    char oom_why[LOMO_ERR_MAX];

    /* one scratch gradient for a linear weight, when a gradient must exist */
    float *gscratch;
    size_t gscratch_bytes;
    /* the two [BT, BT] Gram matrices of the norm pass, and which input the first holds */
    float *gram;
    size_t gram_bytes;
    int gram_BT;
    const float *gram_inp;
    /* a tied weight's norm, k = tied_chunk rows at a time: dout's columns [BT, k] at tied, their
     * gradient rows [k, C] at tied_rows, the column numbers 0..k-1 at tied_iota */
    float *tied, *tied_rows;
    int32_t *tied_iota;
    size_t tied_bytes;
    int tied_k;
    int tied_chunk;             /* TIED_CHUNK; tests make it small to cross chunk edges */
    /* per parameter: LOMO_NORM_FORM_GRAD or LOMO_NORM_GRAM once measured, for norm_BT */
    lomo_norm_method *norm_choice;
    int norm_BT;

    /* adalomo on [V, C] gradients taken in passes (optim_ada_head_passes): pass 0's column sums [C] (f64)
     * and row means [V], the new row factor's mean [1] (device); the step's sum of u^2, lr_t, 1/d */
    double *ada_colsum;
    float *ada_rmean, *ada_mean;
    size_t ada_bytes;
    double ada_usq;
    float ada_lr_t, ada_inv_d;

    /* adalomo: row/col (or full 1-D) second moments; adamw: m and v */
    float *state;
    size_t state_bytes;
    size_t *state_off;          /* floats into state, per parameter */
    lomo_grads *grads;          /* sgd / adamw baselines only */
};

lomo_grad_hook optim_measure_hook(lomo_optim *o);
lomo_grad_hook optim_update_hook(lomo_optim *o);
/* waits for the update pass's queued finiteness checks: 1 (and nonfinite_param set) if one failed */
int optim_gate_raised(lomo_optim *o);
/* The baselines: update every parameter from the full gradients. */
void optim_apply_full(lomo_optim *o);
/* Seed for stochastic rounding of parameter p this step; 0 when off. */
uint64_t optim_sr_seed(const lomo_optim *o, int p);
/* Rows of a tied weight's gradient formed at once when measuring its norm. */
#define TIED_CHUNK 512
/* 1 if the engine takes a tied head's gradient in parts (on_tied): not when it needs the whole gradient */
int optim_splits_tied(const lomo_optim *o);
/* the same rule from the options alone (the memory plan's); the model's tying aside */
int optim_kind_splits_tied(const lomo_optim_options *oo);
/* 1 if AdaLomo takes m's [V, C] gradients (head, embedding) in passes of row chunks (on_head_chunk), not dense */
int optim_ada_head_passes(const lomo_model *m, const lomo_optim_options *oo);
/* bytes of the scratch those passes keep (ada_colsum, ada_rmean, ada_mean) */
size_t optim_ada_parts_bytes(const lomo_model *m);
/* Floats of the linear-gradient scratch: the largest linear gradient formed at once. */
size_t optim_gscratch_floats(const lomo_model *m, lomo_optim_kind kind);
/* Makes the linear-gradient scratch exist; LOMO_OK or LOMO_ERR_OOM. */
lomo_status optim_reserve_gscratch(lomo_optim *o);

#endif
