/*
 * gguf.c: GGUF parsing and validation (layout in gguf.h).
 *
 * Parsing walks the header once with a bounds-checked cursor; nothing is
 * allocated from a count until the count has been checked against the bytes
 * left (every element takes at least one byte, so a count can never ask for
 * more memory than a small multiple of the file size).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "gguf.h"
#include "gguf_dequant.h"

#define GGUF_MAX_NESTING 8          /* arrays of arrays of ... */
#define GGUF_MAX_ALIGNMENT (1u << 30)

static const char *const VTYPE_NAMES[GGUF_VTYPE_COUNT] = {
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
    "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};
static const uint8_t VTYPE_SIZE[GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *gguf_vtype_name(gguf_vtype t) { return (unsigned)t < GGUF_VTYPE_COUNT ? VTYPE_NAMES[t] : "unknown"; }

static int vtype_is_int(gguf_vtype t) {
    return t <= GGUF_INT32 || t == GGUF_UINT64 || t == GGUF_INT64;
}

/* ---- little-endian loads (any alignment) ---- */

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

uint64_t gguf_read_u64(const gguf_file *f, size_t off) { return le(f->data + off, 8); }

int gguf_scalar_as_i64(const gguf_file *f, size_t off, gguf_vtype t, int64_t *out) {
    const uint8_t *p = f->data + off;
    switch (t) {
    case GGUF_UINT8: case GGUF_BOOL: *out = p[0]; return 0;
    case GGUF_INT8: *out = (int8_t)p[0]; return 0;
    case GGUF_UINT16: *out = (int64_t)le(p, 2); return 0;
    case GGUF_INT16: *out = (int16_t)(uint16_t)le(p, 2); return 0;
    case GGUF_UINT32: *out = (int64_t)le(p, 4); return 0;
    case GGUF_INT32: *out = (int32_t)(uint32_t)le(p, 4); return 0;
    case GGUF_INT64: *out = (int64_t)le(p, 8); return 0;
    case GGUF_UINT64: {
        uint64_t u = le(p, 8);
        if (u > (uint64_t)INT64_MAX) return -1;
        *out = (int64_t)u;
        return 0;
    }
    default: return -1;
    }
}

double gguf_scalar_as_f64(const gguf_file *f, size_t off, gguf_vtype t) {
    const uint8_t *p = f->data + off;
    if (t == GGUF_FLOAT32) {
        uint32_t u = (uint32_t)le(p, 4);
        float v;
        memcpy(&v, &u, 4);
        return v;
    }
    uint64_t u = le(p, 8);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

size_t gguf_value_size(const gguf_file *f, size_t off, gguf_vtype t) {
    if (t == GGUF_STRING) return 8 + (size_t)gguf_read_u64(f, off);
    if (t != GGUF_ARRAY) return VTYPE_SIZE[t];
    gguf_vtype et = (gguf_vtype)le(f->data + off, 4);
    uint64_t n = gguf_read_u64(f, off + 4);
    if (et != GGUF_STRING && et != GGUF_ARRAY) return 12 + (size_t)n * VTYPE_SIZE[et];
    size_t pos = off + 12;
    for (uint64_t i = 0; i < n; i++) pos += gguf_value_size(f, pos, et);
    return pos - off;
}

/* ---- the parsing cursor ---- */

typedef struct cursor {
    gguf_file *f;
    size_t pos;
} cursor;

static size_t left(const cursor *c) { return c->f->size - c->pos; }

/* what: the thing being read, for the error ("tensor count", "key general.name: value") */
static lomo_status need(cursor *c, size_t n, const char *what) {
    if (n > left(c))
        return lomo_fail(c->f->ctx, LOMO_ERR_FORMAT, "%s: truncated: %s needs %zu bytes at offset %zu, file has %zu",
                         c->f->name, what, n, c->pos, c->f->size);
    return LOMO_OK;
}

static lomo_status rd(cursor *c, int n, uint64_t *v, const char *what) {
    lomo_status st = need(c, (size_t)n, what);
    if (st) return st;
    *v = le(c->f->data + c->pos, n);
    c->pos += (size_t)n;
    return LOMO_OK;
}

/* A string: its bytes stay in the file; *s points at them. */
static lomo_status rd_str(cursor *c, const uint8_t **s, size_t *len, const char *what) {
    uint64_t n;
    lomo_status st = rd(c, 8, &n, what);
    if (st) return st;
    if (n > left(c))
        return lomo_fail(c->f->ctx, LOMO_ERR_FORMAT,
                         "%s: %s: string length %llu at offset %zu runs past the end of the file (%zu bytes)",
                         c->f->name, what, (unsigned long long)n, c->pos - 8, c->f->size);
    *s = c->f->data + c->pos;
    *len = (size_t)n;
    c->pos += (size_t)n;
    return LOMO_OK;
}

/* A NUL-terminated copy of a name (key or tensor), refusing embedded NULs. */
static lomo_status dup_name(cursor *c, char **out, const char *what) {
    const uint8_t *s = NULL;
    size_t n = 0;
    lomo_status st = rd_str(c, &s, &n, what);
    if (st) return st;
    if (memchr(s, 0, n))
        return lomo_fail(c->f->ctx, LOMO_ERR_FORMAT, "%s: %s contains a NUL byte", c->f->name, what);
    *out = malloc(n + 1);
    if (!*out) return lomo_fail(c->f->ctx, LOMO_ERR_OOM, "%s: out of memory reading %s", c->f->name, what);
    memcpy(*out, s, n);
    (*out)[n] = 0;
    return LOMO_OK;
}

/* Checks a value of type t at the cursor and steps over it; what ("key general.name") names it in errors. */
static lomo_status skip_value(cursor *c, gguf_vtype t, const char *what, int depth) {
    gguf_file *f = c->f;
    if ((unsigned)t >= GGUF_VTYPE_COUNT)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: %s: unknown value type %u", f->name, what, (unsigned)t);
    if (t == GGUF_STRING) {
        const uint8_t *s = NULL;
        size_t n = 0;
        return rd_str(c, &s, &n, what);
    }
    if (t != GGUF_ARRAY) {
        lomo_status st = need(c, VTYPE_SIZE[t], what);
        if (st) return st;
        if (t == GGUF_BOOL && f->data[c->pos] > 1)
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: %s: bool value %u at offset %zu is neither 0 nor 1",
                             f->name, what, f->data[c->pos], c->pos);
        c->pos += VTYPE_SIZE[t];
        return LOMO_OK;
    }
    if (depth >= GGUF_MAX_NESTING)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: %s: arrays nested deeper than %d", f->name, what,
                         GGUF_MAX_NESTING);
    uint64_t et, n;
    lomo_status st = rd(c, 4, &et, what);
    if (!st) st = rd(c, 8, &n, what);
    if (st) return st;
    if (et >= GGUF_VTYPE_COUNT)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: %s: unknown array element type %llu", f->name, what,
                         (unsigned long long)et);
    /* the smallest element: a fixed-size value, 8 bytes of string length, 12 of nested header */
    size_t min_elem = et == GGUF_STRING ? 8 : et == GGUF_ARRAY ? 12 : VTYPE_SIZE[et];
    if (n > left(c) / min_elem)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT,
                         "%s: %s: array of %llu %s elements does not fit in the %zu bytes left in the file",
                         f->name, what, (unsigned long long)n, gguf_vtype_name((gguf_vtype)et), left(c));
    if (et != GGUF_STRING && et != GGUF_ARRAY && et != GGUF_BOOL) {
        c->pos += (size_t)n * min_elem;
        return LOMO_OK;
    }
    for (uint64_t i = 0; i < n; i++) {
        st = skip_value(c, (gguf_vtype)et, what, depth + 1);
        if (st) return st;
    }
    return LOMO_OK;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Returns a name that appears twice among n names, or NULL. Sorting keeps this O(n log n). */
static const char *find_duplicate(char **names, size_t n, int *oom) {
    *oom = 0;
    if (n < 2) return NULL;
    char **sorted = malloc(n * sizeof *sorted);
    if (!sorted) {
        *oom = 1;
        return NULL;
    }
    memcpy(sorted, names, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_str_ptr);
    const char *dup = NULL;
    for (size_t i = 1; i < n && !dup; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) dup = sorted[i];
    free(sorted);
    return dup;
}

static lomo_status parse_header(cursor *c) {
    gguf_file *f = c->f;
    if (f->size < 4 || memcmp(f->data, "GGUF", 4) != 0)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: not a GGUF file (no \"GGUF\" magic at the start)", f->name);
    c->pos = 4;
    uint64_t v;
    lomo_status st = rd(c, 4, &v, "version");
    if (st) return st;
    f->version = (uint32_t)v;
    uint32_t swapped = __builtin_bswap32(f->version);
    if (f->version == 1)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT,
                         "%s: GGUF version 1 is not supported (lomo reads versions 2 and 3; "
                         "re-convert the model with a current llama.cpp)", f->name);
    if (f->version != 2 && f->version != 3) {
        if (swapped == 2 || swapped == 3)
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: big-endian GGUF files are not supported", f->name);
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: unsupported GGUF version %u (lomo reads versions 2 and 3)",
                         f->name, f->version);
    }
    st = rd(c, 8, &f->n_tensors, "tensor count");
    if (!st) st = rd(c, 8, &f->n_kv, "key/value count");
    return st;
}

static lomo_status parse_kvs(cursor *c) {
    gguf_file *f = c->f;
    /* a key/value takes at least 13 bytes: key length, type, one byte of value */
    if (f->n_kv > left(c) / 13)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key/value count %llu cannot fit in the %zu bytes left",
                         f->name, (unsigned long long)f->n_kv, left(c));
    f->kv = calloc(f->n_kv ? (size_t)f->n_kv : 1, sizeof *f->kv);
    if (!f->kv) return lomo_fail(f->ctx, LOMO_ERR_OOM, "%s: out of memory for %llu keys", f->name,
                                 (unsigned long long)f->n_kv);
    char what[256];
    for (uint64_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        snprintf(what, sizeof what, "the name of key #%llu", (unsigned long long)i);
        lomo_status st = dup_name(c, &kv->key, what);
        if (st) return st;
        snprintf(what, sizeof what, "key %.200s", kv->key);
        uint64_t t;
        st = rd(c, 4, &t, what);
        if (st) return st;
        if (t >= GGUF_VTYPE_COUNT)
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s: unknown value type %llu", f->name, kv->key,
                             (unsigned long long)t);
        kv->type = (gguf_vtype)t;
        size_t start = c->pos;
        st = skip_value(c, kv->type, what, 0);
        if (st) return st;
        kv->value = start;
        if (kv->type == GGUF_ARRAY) {
            kv->elem_type = (gguf_vtype)le(f->data + start, 4);
            kv->count = gguf_read_u64(f, start + 4);
            kv->value = start + 12;
        }
    }
    int oom;
    char **keys = malloc((f->n_kv ? (size_t)f->n_kv : 1) * sizeof *keys);
    if (!keys) return lomo_fail(f->ctx, LOMO_ERR_OOM, "%s: out of memory", f->name);
    for (uint64_t i = 0; i < f->n_kv; i++) keys[i] = f->kv[i].key;
    const char *dup = find_duplicate(keys, (size_t)f->n_kv, &oom);
    lomo_status st = LOMO_OK;
    if (oom) st = lomo_fail(f->ctx, LOMO_ERR_OOM, "%s: out of memory", f->name);
    else if (dup) st = lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s appears twice", f->name, dup);
    free(keys);
    return st;
}

static lomo_status read_alignment(gguf_file *f) {
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find(f, "general.alignment");
    if (!kv) return LOMO_OK;
    int64_t a;
    if (!vtype_is_int(kv->type) || gguf_scalar_as_i64(f, kv->value, kv->type, &a))
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key general.alignment: expected an unsigned integer, found %s",
                         f->name, gguf_vtype_name(kv->type));
    if (a <= 0 || (a & (a - 1)) != 0 || a > (int64_t)GGUF_MAX_ALIGNMENT)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT,
                         "%s: key general.alignment: %lld is not a power of two between 1 and 2^30", f->name,
                         (long long)a);
    f->alignment = (size_t)a;
    return LOMO_OK;
}

static lomo_status parse_tensor_info(cursor *c, gguf_tensor *t, uint64_t i) {
    gguf_file *f = c->f;
    char what[64];
    snprintf(what, sizeof what, "the name of tensor #%llu", (unsigned long long)i);
    lomo_status st = dup_name(c, &t->name, what);
    if (st) return st;
    if (!t->name[0]) return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: %s is empty", f->name, what);
    char tw[256];
    snprintf(tw, sizeof tw, "tensor %.200s", t->name);
    uint64_t nd, type, off;
    st = rd(c, 4, &nd, tw);
    if (st) return st;
    if (nd > GGUF_MAX_DIMS)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor %s: %llu dimensions, at most %d are allowed", f->name,
                         t->name, (unsigned long long)nd, GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (int d = 0; d < t->n_dims; d++) {
        uint64_t v;
        st = rd(c, 8, &v, tw);
        if (st) return st;
        if (v > (uint64_t)INT64_MAX)
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor %s: dimension %d is %llu, too large", f->name,
                             t->name, d, (unsigned long long)v);
        t->ne[d] = (int64_t)v;
    }
    st = rd(c, 4, &type, tw);
    if (!st) st = rd(c, 8, &off, tw);
    if (st) return st;
    const ggml_type_desc *td = type <= UINT32_MAX ? ggml_type_get((uint32_t)type) : NULL;
    if (!td)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor %s: unknown ggml type %llu", f->name, t->name,
                         (unsigned long long)type);
    t->type = (uint32_t)type;
    t->offset = off;
    if (t->ne[0] % td->block_size != 0)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT,
                         "%s: tensor %s: a row of %lld values is not a whole number of %s blocks (%u values each)",
                         f->name, t->name, (long long)t->ne[0], td->name, td->block_size);
    /* element count and byte size, refusing anything that overflows */
    uint64_t nelem = 1, nbytes = (uint64_t)(t->ne[0] / td->block_size);
    int overflow = __builtin_mul_overflow(nbytes, (uint64_t)td->type_size, &nbytes);
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        overflow |= __builtin_mul_overflow(nelem, (uint64_t)t->ne[d], &nelem);
        if (d > 0) overflow |= __builtin_mul_overflow(nbytes, (uint64_t)t->ne[d], &nbytes);
    }
    if (overflow || nelem > (uint64_t)INT64_MAX || nbytes > SIZE_MAX)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor %s: size overflows", f->name, t->name);
    t->nelem = (size_t)nelem;
    t->nbytes = (size_t)nbytes;
    return LOMO_OK;
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Every tensor aligned, inside the data section, and no two sharing a byte. */
static lomo_status check_tensor_data(gguf_file *f) {
    size_t data_size = f->data_start <= f->size ? f->size - f->data_start : 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment != 0)
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor %s: offset %llu is not a multiple of the alignment %zu",
                             f->name, t->name, (unsigned long long)t->offset, f->alignment);
        if (t->nbytes == 0) continue;
        if (f->data_start > f->size || t->offset > data_size || t->nbytes > data_size - t->offset)
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT,
                             "%s: tensor %s: data [%llu, %llu) runs past the end of the file "
                             "(the data section at offset %zu holds %zu bytes)",
                             f->name, t->name, (unsigned long long)t->offset,
                             (unsigned long long)(t->offset + t->nbytes), f->data_start, data_size);
    }
    if (f->n_tensors < 2) return LOMO_OK;
    const gguf_tensor **order = malloc((size_t)f->n_tensors * sizeof *order);
    if (!order) return lomo_fail(f->ctx, LOMO_ERR_OOM, "%s: out of memory", f->name);
    size_t n = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].nbytes) order[n++] = &f->tensors[i];
    qsort(order, n, sizeof *order, cmp_tensor_offset);
    lomo_status st = LOMO_OK;
    for (size_t i = 1; i < n && !st; i++)
        if (order[i - 1]->offset + order[i - 1]->nbytes > order[i]->offset)
            st = lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensors %s and %s overlap: data [%llu, %llu) and [%llu, %llu)",
                           f->name, order[i - 1]->name, order[i]->name, (unsigned long long)order[i - 1]->offset,
                           (unsigned long long)(order[i - 1]->offset + order[i - 1]->nbytes),
                           (unsigned long long)order[i]->offset,
                           (unsigned long long)(order[i]->offset + order[i]->nbytes));
    free(order);
    return st;
}

static lomo_status parse_tensors(cursor *c) {
    gguf_file *f = c->f;
    /* a tensor info takes at least 24 bytes: name length, n_dims, type, offset */
    if (f->n_tensors > left(c) / 24)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor count %llu cannot fit in the %zu bytes left", f->name,
                         (unsigned long long)f->n_tensors, left(c));
    f->tensors = calloc(f->n_tensors ? (size_t)f->n_tensors : 1, sizeof *f->tensors);
    if (!f->tensors) return lomo_fail(f->ctx, LOMO_ERR_OOM, "%s: out of memory for the tensor table", f->name);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        lomo_status st = parse_tensor_info(c, &f->tensors[i], i);
        if (st) return st;
    }
    char **names = malloc((f->n_tensors ? (size_t)f->n_tensors : 1) * sizeof *names);
    if (!names) return lomo_fail(f->ctx, LOMO_ERR_OOM, "%s: out of memory", f->name);
    for (uint64_t i = 0; i < f->n_tensors; i++) names[i] = f->tensors[i].name;
    int oom;
    const char *dup = find_duplicate(names, (size_t)f->n_tensors, &oom);
    lomo_status st = LOMO_OK;
    if (oom) st = lomo_fail(f->ctx, LOMO_ERR_OOM, "%s: out of memory", f->name);
    else if (dup) st = lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor %s appears twice", f->name, dup);
    free(names);
    if (st) return st;
    /* the data section starts at the next multiple of the alignment */
    f->data_start = c->pos + (f->alignment - c->pos % f->alignment) % f->alignment;
    return check_tensor_data(f);
}

static lomo_status parse(gguf_file *f) {
    cursor c = {f, 0};
    lomo_status st = parse_header(&c);
    if (!st) st = parse_kvs(&c);
    if (!st) st = read_alignment(f);
    if (!st) st = parse_tensors(&c);
    return st;
}

static lomo_status finish_open(gguf_file **out, gguf_file *f) {
    lomo_status st = parse(f);
    if (st) {
        gguf_close(f);
        return st;
    }
    *out = f;
    return LOMO_OK;
}

static gguf_file *new_file(lomo_ctx *ctx, const char *name) {
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->ctx = ctx;
    f->name = strdup(name ? name : "(memory)");
    if (!f->name) {
        free(f);
        return NULL;
    }
    return f;
}

lomo_status gguf_open_memory(gguf_file **out, lomo_ctx *ctx, const void *data, size_t size, const char *name) {
    if (!out) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "gguf_open_memory: NULL argument");
    *out = NULL;
    if (!data && size) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "gguf_open_memory: NULL data");
    gguf_file *f = new_file(ctx, name);
    if (!f) return lomo_fail(ctx, LOMO_ERR_OOM, "out of memory opening %s", name ? name : "(memory)");
    f->data = data;
    f->size = size;
    return finish_open(out, f);
}

lomo_status gguf_open(gguf_file **out, lomo_ctx *ctx, const char *path) {
    if (!out || !path) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "gguf_open: NULL argument");
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return lomo_fail(ctx, LOMO_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return lomo_fail(ctx, LOMO_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: not a GGUF file (it is empty)", path);
    }
    size_t size = (size_t)sb.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (map == MAP_FAILED) return lomo_fail(ctx, LOMO_ERR_IO, "%s: cannot map: %s", path, strerror(err));
    gguf_file *f = new_file(ctx, path);
    if (!f) {
        munmap(map, size);
        return lomo_fail(ctx, LOMO_ERR_OOM, "out of memory opening %s", path);
    }
    f->map = map;
    f->data = map;
    f->size = size;
    return finish_open(out, f);
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    if (f->kv)
        for (uint64_t i = 0; i < f->n_kv; i++) free(f->kv[i].key);
    if (f->tensors)
        for (uint64_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kv);
    free(f->tensors);
    if (f->map) munmap(f->map, f->size);
    free(f->name);
    free(f);
}

/* ---- lookups and getters ---- */

const gguf_kv *gguf_find(const gguf_file *f, const char *key) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (f->kv[i].key && strcmp(f->kv[i].key, key) == 0) return &f->kv[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *gguf_dims_str(const gguf_tensor *t, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->n_dims && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? ", " : "", (long long)t->ne[d]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

static lomo_status lookup(const gguf_file *f, const char *key, const gguf_kv **kv) {
    *kv = gguf_find(f, key);
    if (!*kv) return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: missing key %s", f->name, key);
    return LOMO_OK;
}

static lomo_status wrong_type(const gguf_file *f, const gguf_kv *kv, const char *expected) {
    if (kv->type == GGUF_ARRAY)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s: expected %s, found an array of %s", f->name, kv->key,
                         expected, gguf_vtype_name(kv->elem_type));
    return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s: expected %s, found %s", f->name, kv->key, expected,
                     gguf_vtype_name(kv->type));
}

/* Any integer value within [lo, hi]; expected names the wanted type in errors. */
static lomo_status get_int(const gguf_file *f, const char *key, const char *expected, int64_t lo, int64_t hi,
                           int64_t *out) {
    const gguf_kv *kv;
    lomo_status st = lookup(f, key, &kv);
    if (st) return st;
    if (!vtype_is_int(kv->type)) return wrong_type(f, kv, expected);
    int64_t v = 0;
    if (gguf_scalar_as_i64(f, kv->value, kv->type, &v) || v < lo || v > hi) {
        if (kv->type == GGUF_UINT64)
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s: %llu does not fit in %s", f->name, key,
                             (unsigned long long)gguf_read_u64(f, kv->value), expected);
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s: %lld does not fit in %s", f->name, key,
                         (long long)v, expected);
    }
    *out = v;
    return LOMO_OK;
}

lomo_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out) {
    int64_t v = 0;
    lomo_status st = get_int(f, key, "UINT32", 0, UINT32_MAX, &v);
    if (!st) *out = (uint32_t)v;
    return st;
}

lomo_status gguf_get_i32(const gguf_file *f, const char *key, int32_t *out) {
    int64_t v = 0;
    lomo_status st = get_int(f, key, "INT32", INT32_MIN, INT32_MAX, &v);
    if (!st) *out = (int32_t)v;
    return st;
}

lomo_status gguf_get_i64(const gguf_file *f, const char *key, int64_t *out) {
    return get_int(f, key, "INT64", INT64_MIN, INT64_MAX, out);
}

lomo_status gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out) {
    const gguf_kv *kv;
    lomo_status st = lookup(f, key, &kv);
    if (st) return st;
    if (kv->type == GGUF_UINT64) {
        *out = gguf_read_u64(f, kv->value);
        return LOMO_OK;
    }
    int64_t v = 0;
    st = get_int(f, key, "UINT64", 0, INT64_MAX, &v);
    if (!st) *out = (uint64_t)v;
    return st;
}

lomo_status gguf_get_f64(const gguf_file *f, const char *key, double *out) {
    const gguf_kv *kv;
    lomo_status st = lookup(f, key, &kv);
    if (st) return st;
    if (kv->type != GGUF_FLOAT32 && kv->type != GGUF_FLOAT64) return wrong_type(f, kv, "FLOAT32 or FLOAT64");
    *out = gguf_scalar_as_f64(f, kv->value, kv->type);
    return LOMO_OK;
}

lomo_status gguf_get_f32(const gguf_file *f, const char *key, float *out) {
    double v;
    lomo_status st = gguf_get_f64(f, key, &v);
    if (!st) *out = (float)v;
    return st;
}

lomo_status gguf_get_bool(const gguf_file *f, const char *key, int *out) {
    const gguf_kv *kv;
    lomo_status st = lookup(f, key, &kv);
    if (st) return st;
    if (kv->type != GGUF_BOOL) return wrong_type(f, kv, "BOOL");
    *out = f->data[kv->value] != 0;
    return LOMO_OK;
}

lomo_status gguf_get_str(const gguf_file *f, const char *key, char **out) {
    const gguf_kv *kv;
    lomo_status st = lookup(f, key, &kv);
    if (st) return st;
    if (kv->type != GGUF_STRING) return wrong_type(f, kv, "STRING");
    size_t n = (size_t)gguf_read_u64(f, kv->value);
    const uint8_t *s = f->data + kv->value + 8;
    if (memchr(s, 0, n)) return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s: string contains a NUL byte", f->name, key);
    *out = malloc(n + 1);
    if (!*out) return lomo_fail(f->ctx, LOMO_ERR_OOM, "%s: key %s: out of memory", f->name, key);
    memcpy(*out, s, n);
    (*out)[n] = 0;
    return LOMO_OK;
}

static lomo_status array_of(const gguf_file *f, const char *key, const gguf_kv **kv, const char *expected) {
    lomo_status st = lookup(f, key, kv);
    if (st) return st;
    if ((*kv)->type != GGUF_ARRAY)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s: expected an array of %s, found %s", f->name, key,
                         expected, gguf_vtype_name((*kv)->type));
    return LOMO_OK;
}

lomo_status gguf_get_str_array(const gguf_file *f, const char *key, char ***out, uint64_t *n) {
    const gguf_kv *kv;
    lomo_status st = array_of(f, key, &kv, "STRING");
    if (st) return st;
    if (kv->elem_type != GGUF_STRING)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s: expected an array of STRING, found an array of %s",
                         f->name, key, gguf_vtype_name(kv->elem_type));
    *out = NULL;
    *n = kv->count;
    if (!kv->count) return LOMO_OK;
    /* string bytes plus one NUL each; the count was checked against the file at open */
    size_t bytes = 0, pos = kv->value;
    for (uint64_t i = 0; i < kv->count; i++) {
        size_t len = (size_t)gguf_read_u64(f, pos);
        bytes += len + 1;
        pos += 8 + len;
    }
    size_t ptrs = (size_t)kv->count * sizeof(char *);
    char **arr = malloc(ptrs + bytes);
    if (!arr) return lomo_fail(f->ctx, LOMO_ERR_OOM, "%s: key %s: out of memory for %llu strings", f->name, key,
                               (unsigned long long)kv->count);
    char *dst = (char *)arr + ptrs;
    pos = kv->value;
    for (uint64_t i = 0; i < kv->count; i++) {
        size_t len = (size_t)gguf_read_u64(f, pos);
        const uint8_t *s = f->data + pos + 8;
        if (memchr(s, 0, len)) {
            free(arr);
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s: element %llu contains a NUL byte", f->name, key,
                             (unsigned long long)i);
        }
        memcpy(dst, s, len);
        dst[len] = 0;
        arr[i] = dst;
        dst += len + 1;
        pos += 8 + len;
    }
    *out = arr;
    return LOMO_OK;
}

lomo_status gguf_get_f32_array(const gguf_file *f, const char *key, float **out, uint64_t *n) {
    const gguf_kv *kv;
    lomo_status st = array_of(f, key, &kv, "FLOAT32");
    if (st) return st;
    if (kv->elem_type != GGUF_FLOAT32 && kv->elem_type != GGUF_FLOAT64)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s: expected an array of FLOAT32, found an array of %s",
                         f->name, key, gguf_vtype_name(kv->elem_type));
    *out = NULL;
    *n = kv->count;
    if (!kv->count) return LOMO_OK;
    float *arr = malloc((size_t)kv->count * sizeof *arr);
    if (!arr) return lomo_fail(f->ctx, LOMO_ERR_OOM, "%s: key %s: out of memory", f->name, key);
    size_t es = VTYPE_SIZE[kv->elem_type];
    for (uint64_t i = 0; i < kv->count; i++) arr[i] = (float)gguf_scalar_as_f64(f, kv->value + i * es, kv->elem_type);
    *out = arr;
    return LOMO_OK;
}

lomo_status gguf_get_i32_array(const gguf_file *f, const char *key, int32_t **out, uint64_t *n) {
    const gguf_kv *kv;
    lomo_status st = array_of(f, key, &kv, "INT32");
    if (st) return st;
    if (!vtype_is_int(kv->elem_type))
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s: expected an array of integers, found an array of %s",
                         f->name, key, gguf_vtype_name(kv->elem_type));
    *out = NULL;
    *n = kv->count;
    if (!kv->count) return LOMO_OK;
    int32_t *arr = malloc((size_t)kv->count * sizeof *arr);
    if (!arr) return lomo_fail(f->ctx, LOMO_ERR_OOM, "%s: key %s: out of memory", f->name, key);
    size_t es = VTYPE_SIZE[kv->elem_type];
    for (uint64_t i = 0; i < kv->count; i++) {
        int64_t v;
        if (gguf_scalar_as_i64(f, kv->value + i * es, kv->elem_type, &v) || v < INT32_MIN || v > INT32_MAX) {
            free(arr);
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s: element %llu does not fit in INT32", f->name, key,
                             (unsigned long long)i);
        }
        arr[i] = (int32_t)v;
    }
    *out = arr;
    return LOMO_OK;
}
