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
};

/* Records the error text and returns the status, so callers can `return lomo_fail(...)`. */
lomo_status lomo_fail(lomo_ctx *ctx, lomo_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Device allocations, accounted by category. Size is needed again to free. */
void *lomo_dev_alloc(lomo_ctx *ctx, lomo_mem_category cat, size_t bytes, const char *what);
void lomo_dev_free(lomo_ctx *ctx, lomo_mem_category cat, void *p, size_t bytes);

/* LOMO_ERR_DEVICE naming the failed device call, if the backend recorded one; else LOMO_OK. */
lomo_status lomo_device_check(lomo_ctx *ctx);

/* Applies the context's thread count to OpenMP and OpenBLAS for this thread. */
void lomo_ctx_apply_threads(const lomo_ctx *ctx);

#endif
