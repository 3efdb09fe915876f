/*
 * internal.h: what the runtime's files share and users never see.
 */
#ifndef LOMO_INTERNAL_H
#define LOMO_INTERNAL_H

#include <stdarg.h>
#include "lomo.h"
#include "backend.h"

#define LOMO_ERR_MAX 1024

struct lomo_ctx {
    const lomo_backend *be;
    int num_threads;
    char err[LOMO_ERR_MAX];
    lomo_mem_stats mem;
    size_t memory_limit;    /* 0: none (lomo_ctx_options) */
    int profiling;
    lomo_op_stats prof;
};

/* Records the error text and returns the status, so callers can `return lomo_fail(...)`. */
lomo_status lomo_fail(lomo_ctx *ctx, lomo_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* lomo_config_validate against backend be's limits (NULL: none), which need not be ctx's. */
lomo_status config_validate_for(lomo_ctx *ctx, const lomo_backend *be, const lomo_llama_config *c);

/* Device allocations, accounted by category. Size is needed again to free. */
void *lomo_dev_alloc(lomo_ctx *ctx, lomo_mem_category cat, size_t bytes, const char *what);
void lomo_dev_free(lomo_ctx *ctx, lomo_mem_category cat, void *p, size_t bytes);

/* LOMO_ERR_DEVICE naming the failed device call, if the backend recorded one; else LOMO_OK. */
lomo_status lomo_device_check(lomo_ctx *ctx);

/* Applies the context's thread count to OpenMP and OpenBLAS for this thread. */
void lomo_ctx_apply_threads(const lomo_ctx *ctx);

/*
 * Runs `call`, a backend call, timed into ctx's profile as `op` with `flops`
 * when profiling is on. The device is drained before and after so the time
 * is the op's own.
 */
#define LOMO_TIMED(ctx, op, flops, call)                              \
    do {                                                              \
        lomo_ctx *timed_ctx_ = (ctx);                                 \
        double timed_t0_ = lomo_profile_begin(timed_ctx_);            \
        call;                                                         \
        lomo_profile_end(timed_ctx_, (op), (flops), timed_t0_);       \
    } while (0)
double lomo_profile_begin(lomo_ctx *ctx);
/* a monotonic clock, in seconds */
double lomo_now(void);
void lomo_profile_end(lomo_ctx *ctx, lomo_op op, double flops, double t0);

#endif
