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

    /* one scratch gradient for a linear weight, when a gradient must exist */
    float *gscratch;
    size_t gscratch_bytes;
    /* the two [BT, BT] Gram matrices of the norm pass, and which input the first holds */
    float *gram;
    size_t gram_bytes;
    int gram_BT;
    const float *gram_inp;
    /* per parameter: LOMO_NORM_FORM_GRAD or LOMO_NORM_GRAM once measured, for norm_BT */
    lomo_norm_method *norm_choice;
    int norm_BT;

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
/* Makes the linear-gradient scratch exist; LOMO_OK or LOMO_ERR_OOM. */
lomo_status optim_reserve_gscratch(lomo_optim *o);

#endif
