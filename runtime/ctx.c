/* ctx.c: the context: backend, error text, exact memory accounting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "internal.h"

extern void openblas_set_num_threads(int);

/* ctx->be for a device name (NULL or "": LOMO_DEVICE, else cuda when usable, else cpu); on failure
 * the status, with the reason in ctx->err. */
static lomo_status choose_backend(lomo_ctx *ctx, const char *device) {
    const char *from = "";
    if (!device || !*device) {
        device = getenv("LOMO_DEVICE");
        from = " (from LOMO_DEVICE)";
    }
    int any = !device || !*device;
    if (!any && strcmp(device, "cpu") != 0 && strcmp(device, "cuda") != 0)
        return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "unknown device \"%s\"%s (expected \"cpu\" or \"cuda\")",
                         device, from);
    ctx->be = lomo_backend_cpu();
    if (!any && strcmp(device, "cpu") == 0) return LOMO_OK;
#ifdef LOMO_HAVE_CUDA
    char why[768] = "";
    int unloadable = 0;
    const lomo_backend *cuda = lomo_backend_cuda(why, sizeof why, &unloadable);
    if (cuda) ctx->be = cuda;
    /* the default passes over a machine without a GPU quietly, but not a GPU that this lomo cannot use */
    if (!cuda && any && unloadable)
        fprintf(stderr, "lomo: this machine has an NVIDIA driver, but the CUDA backend did not open: %s; "
                "running on the CPU (LOMO_DEVICE=cpu chooses it without this note)\n", why);
    if (cuda || any) return LOMO_OK;
    return lomo_fail(ctx, LOMO_ERR_DEVICE, "device \"cuda\"%s is not usable: %s", from, why);
#else
    if (any) return LOMO_OK;
    return lomo_fail(ctx, LOMO_ERR_DEVICE, "device \"cuda\"%s: this build of lomo has no CUDA backend (nvcc was "
                     "not found when it was configured)", from);
#endif
}

lomo_status lomo_ctx_create(lomo_ctx **out, const lomo_ctx_options *opts) {
    if (!out) return LOMO_ERR_INVALID_ARG;
    *out = NULL;
    lomo_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return LOMO_ERR_OOM;
    ctx->num_threads = opts ? opts->num_threads : 0;
    ctx->memory_limit = opts ? opts->memory_limit : 0;
    lomo_status st = LOMO_OK;
    if (ctx->num_threads < 0)
        st = lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "num_threads is %d; it must be 0 (the defaults) or more",
                       ctx->num_threads);
    else
        st = choose_backend(ctx, opts ? opts->device : NULL);
    if (st) {
        /* the reason is in ctx->err, which dies with ctx: hand it to the caller */
        if (opts && opts->why && opts->why_len) snprintf(opts->why, opts->why_len, "%s", ctx->err);
        else fprintf(stderr, "lomo: %s\n", ctx->err);
        free(ctx);
        return st;
    }
    *out = ctx;
    return LOMO_OK;
}

const char *lomo_ctx_device(const lomo_ctx *ctx) { return ctx ? ctx->be->name : "none"; }

lomo_status lomo_device_check(lomo_ctx *ctx) {
    const char *e = ctx->be->error();
    return e ? lomo_fail(ctx, LOMO_ERR_DEVICE, "%s device error: %s", ctx->be->name, e) : LOMO_OK;
}

/* The backend's scratch is shared by the process's contexts; it regrows for the next one that needs it. */
void lomo_ctx_destroy(lomo_ctx *ctx) {
    if (ctx) ctx->be->release_scratch();
    free(ctx);
}

const char *lomo_last_error(const lomo_ctx *ctx) { return ctx ? ctx->err : "no context"; }

lomo_status lomo_fail(lomo_ctx *ctx, lomo_status s, const char *fmt, ...) {
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
        va_end(ap);
    }
    return s;
}

void lomo_ctx_apply_threads(const lomo_ctx *ctx) {
    if (ctx->num_threads <= 0) return;
#ifdef _OPENMP
    omp_set_num_threads(ctx->num_threads);
#endif
    openblas_set_num_threads(ctx->num_threads);
}

/* bytes for a message: MiB, or KiB or bytes where MiB would read 0.0 */
static const char *size_text(char *buf, size_t len, size_t bytes) {
    if (bytes >= 1048576) snprintf(buf, len, "%.1f MiB", bytes / 1048576.0);
    else if (bytes >= 1024) snprintf(buf, len, "%.1f KiB", bytes / 1024.0);
    else snprintf(buf, len, "%zu bytes", bytes);
    return buf;
}

void *lomo_dev_alloc(lomo_ctx *ctx, lomo_mem_category cat, size_t bytes, const char *what) {
    size_t held = ctx->mem.current_total, cap = ctx->memory_limit;
    int over = cap && (held > cap || bytes > cap - held);
    void *p = over ? NULL : ctx->be->alloc(bytes);
    if (!p) {
        const lomo_mem_stats *m = &ctx->mem;
        char limit[96] = "", need[32], capb[32];
        if (over) snprintf(limit, sizeof limit, " (the context's memory_limit of %s)", size_text(capb, sizeof capb, cap));
        lomo_fail(ctx, LOMO_ERR_OOM,
                  "out of %s memory%s: %s needs %s (%s); already held: weights %.1f, activations %.1f, "
                  "gradients %.1f, optimizer %.1f, scratch %.1f MiB (`lomo plan` shows the whole plan)",
                  ctx->be->name, limit, what, size_text(need, sizeof need, bytes), lomo_mem_category_name(cat),
                  m->current[LOMO_MEM_WEIGHTS] / 1048576.0, m->current[LOMO_MEM_ACTIVATIONS] / 1048576.0,
                  m->current[LOMO_MEM_GRADIENTS] / 1048576.0, m->current[LOMO_MEM_OPTIMIZER] / 1048576.0,
                  m->current[LOMO_MEM_SCRATCH] / 1048576.0);
        return NULL;
    }
    lomo_mem_stats *m = &ctx->mem;
    m->current[cat] += bytes;
    m->current_total += bytes;
    if (m->current[cat] > m->peak[cat]) m->peak[cat] = m->current[cat];
    if (m->current_total > m->peak_total) m->peak_total = m->current_total;
    return p;
}

void lomo_dev_free(lomo_ctx *ctx, lomo_mem_category cat, void *p, size_t bytes) {
    if (!p) return;
    ctx->be->free(p);
    ctx->mem.current[cat] -= bytes;
    ctx->mem.current_total -= bytes;
}

void lomo_mem_get_stats(const lomo_ctx *ctx, lomo_mem_stats *out) { *out = ctx->mem; }

void lomo_mem_reset_peak(lomo_ctx *ctx) {
    for (int i = 0; i < LOMO_MEM_COUNT; i++) ctx->mem.peak[i] = ctx->mem.current[i];
    ctx->mem.peak_total = ctx->mem.current_total;
}

const char *lomo_mem_category_name(lomo_mem_category c) {
    static const char *names[LOMO_MEM_COUNT] = {"weights", "activations", "gradients",
                                                "optimizer", "scratch"};
    return (unsigned)c < LOMO_MEM_COUNT ? names[c] : "unknown";
}

const char *lomo_status_name(lomo_status s) {
    switch (s) {
    case LOMO_OK: return "ok";
    case LOMO_ERR_INVALID_ARG: return "invalid argument";
    case LOMO_ERR_CONFIG: return "invalid config";
    case LOMO_ERR_OOM: return "out of memory";
    case LOMO_ERR_IO: return "i/o error";
    case LOMO_ERR_FORMAT: return "malformed file";
    case LOMO_ERR_STATE: return "wrong call order";
    case LOMO_ERR_NONFINITE: return "non-finite value";
    case LOMO_ERR_CALLBACK: return "gradient hook failed";
    case LOMO_ERR_DEVICE: return "device error";
    }
    return "unknown status";
}

const char *lomo_dtype_name(lomo_dtype d) {
    switch (d) {
    case LOMO_F32: return "f32";
    case LOMO_BF16: return "bf16";
    case LOMO_F16: return "f16";
    }
    return "unknown";
}

size_t lomo_dtype_size(lomo_dtype d) { return d == LOMO_F32 ? 4 : 2; }
