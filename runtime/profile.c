/* profile.c: the per-op time profile of a context (lomo_profile_enable). */
#include <string.h>
#include <time.h>
#include "internal.h"

double lomo_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void lomo_profile_enable(lomo_ctx *ctx, int on) {
    if (ctx) ctx->profiling = on != 0;
}

void lomo_profile_get(const lomo_ctx *ctx, lomo_op_stats *out) {
    if (ctx && out) *out = ctx->prof;
}

void lomo_profile_reset(lomo_ctx *ctx) {
    if (ctx) memset(&ctx->prof, 0, sizeof ctx->prof);
}

/* Queued device work would otherwise be charged to whichever op waits for it next. */
double lomo_profile_begin(lomo_ctx *ctx) {
    if (!ctx->profiling) return 0.0;
    ctx->be->sync();
    return lomo_now();
}

void lomo_profile_end(lomo_ctx *ctx, lomo_op op, double flops, double t0) {
    if (!ctx->profiling) return;
    ctx->be->sync();
    ctx->prof.calls[op]++;
    ctx->prof.seconds[op] += lomo_now() - t0;
    ctx->prof.flops[op] += flops;
}

const char *lomo_op_name(lomo_op op) {
    static const char *names[LOMO_OP_COUNT] = {
        "embedding", "rmsnorm",      "matmul",     "weight_grad", "linear_update",
        "rope",      "attention_fwd", "attention_bwd", "swiglu",  "residual",
        "crossentropy", "optimizer", "grad_check", "norm_gram",   "copy"};
    return (unsigned)op < LOMO_OP_COUNT ? names[op] : "unknown";
}
