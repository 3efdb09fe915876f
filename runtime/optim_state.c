/*
 * optim_state.c: an optimizer's state in a file, for exact resume.
 *
 * Layout (little endian): "LOMOOPT1", u32 version (1), u32 kind, u32 number
 * of parameters, u32 reserved (0), u64 total weights of the model, i64
 * updates applied, f32 loss scale, i32 clean steps, u64 state bytes, then the
 * state (adalomo's factored moments, adamw's m and v) as f32.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "atomic_file.h"
#include "optim.h"

#define MAGIC "LOMOOPT1"

typedef struct state_header {
    char magic[8];
    uint32_t version, kind, nparams, reserved;
    uint64_t total_weights;
    int64_t t;
    float scale;
    int32_t clean_steps;
    uint64_t state_bytes;
} state_header;

static state_header header_of(const lomo_optim *o) {
    state_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, MAGIC, 8);
    h.version = 1;
    h.kind = (uint32_t)o->o.kind;
    h.nparams = (uint32_t)o->m->nparams;
    h.total_weights = lomo_model_num_weights(o->m);
    h.t = o->t;
    h.scale = o->scale;
    h.clean_steps = o->clean_steps;
    h.state_bytes = o->state_bytes;
    return h;
}

lomo_status lomo_optim_save(lomo_optim *o, const char *path) {
    if (!o || !path) return LOMO_ERR_INVALID_ARG;
    state_header h = header_of(o);
    void *host = NULL;
    if (o->state_bytes) {
        host = malloc(o->state_bytes);
        if (!host) return lomo_fail(o->ctx, LOMO_ERR_OOM, "%s: out of memory for the optimizer state", path);
        o->be->to_host(host, o->state, o->state_bytes);
    }
    atomic_file f;
    lomo_status st = atomic_file_begin(o->ctx, &f, path);
    if (!st) st = atomic_file_write(o->ctx, &f, &h, sizeof h);
    if (!st && o->state_bytes) st = atomic_file_write(o->ctx, &f, host, o->state_bytes);
    if (!st) st = atomic_file_finish(o->ctx, &f);
    if (!st) st = atomic_file_publish(o->ctx, &f);
    atomic_file_discard(&f);
    if (!st) {
        char *dir = atomic_dirname(path);
        st = dir ? atomic_dir_sync(o->ctx, dir) : lomo_fail(o->ctx, LOMO_ERR_OOM, "%s: out of memory", path);
        free(dir);
    }
    free(host);
    return st;
}

lomo_status lomo_optim_load(lomo_optim *o, const char *path) {
    if (!o || !path) return LOMO_ERR_INVALID_ARG;
    FILE *fp = fopen(path, "rb");
    if (!fp) return lomo_fail(o->ctx, LOMO_ERR_IO, "%s: cannot open optimizer state", path);
    state_header h, want = header_of(o);
    lomo_status st = LOMO_OK;
    void *host = NULL;
    if (fread(&h, sizeof h, 1, fp) != 1) {
        st = lomo_fail(o->ctx, LOMO_ERR_FORMAT, "%s: truncated header", path);
    } else if (memcmp(h.magic, MAGIC, 8) || h.version != 1) {
        st = lomo_fail(o->ctx, LOMO_ERR_FORMAT, "%s: not a lomo optimizer state (magic/version)", path);
    } else if (h.kind != want.kind) {
        st = lomo_fail(o->ctx, LOMO_ERR_FORMAT, "%s: kind: state of a %s optimizer, this one is %s", path,
                       h.kind <= LOMO_OPTIM_ADAMW ? lomo_optim_kind_name((lomo_optim_kind)h.kind) : "unknown",
                       lomo_optim_kind_name(o->o.kind));
    } else if (h.nparams != want.nparams || h.total_weights != want.total_weights || h.state_bytes != want.state_bytes) {
        st = lomo_fail(o->ctx, LOMO_ERR_FORMAT, "%s: model: state of a model with %u parameters / %llu weights, "
                       "this one has %u / %llu", path, h.nparams, (unsigned long long)h.total_weights, want.nparams,
                       (unsigned long long)want.total_weights);
    } else if (!(h.scale >= 1.0f) || h.t < 0 || h.clean_steps < 0) {
        st = lomo_fail(o->ctx, LOMO_ERR_FORMAT, "%s: loss scale / step count out of range", path);
    } else if (h.state_bytes) {
        host = malloc(h.state_bytes);
        if (!host) st = lomo_fail(o->ctx, LOMO_ERR_OOM, "%s: out of memory for the optimizer state", path);
        else if (fread(host, 1, h.state_bytes, fp) != h.state_bytes)
            st = lomo_fail(o->ctx, LOMO_ERR_FORMAT, "%s: truncated state (%llu bytes expected)", path,
                           (unsigned long long)h.state_bytes);
    }
    if (!st && fgetc(fp) != EOF) st = lomo_fail(o->ctx, LOMO_ERR_FORMAT, "%s: trailing bytes after the state", path);
    fclose(fp);
    if (!st) {
        /* only now, with everything checked, does the optimizer change */
        if (h.state_bytes) o->be->to_device(o->state, host, h.state_bytes);
        o->t = h.t;
        o->scale = o->scaling ? h.scale : 1.0f;
        o->clean_steps = h.clean_steps;
    }
    free(host);
    return st;
}
