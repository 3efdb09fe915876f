/* safetensors.c: the safetensors reader (mmap, every field checked) and header writer. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "safetensors.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (the format is little-endian)"
#endif

static const struct { const char *name; unsigned bits; } DTYPES[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 8},         [ST_U8] = {"U8", 8},           [ST_I8] = {"I8", 8},
    [ST_F8_E5M2] = {"F8_E5M2", 8},   [ST_F8_E4M3] = {"F8_E4M3", 8}, [ST_F8_E8M0] = {"F8_E8M0", 8},
    [ST_F4] = {"F4", 4},             [ST_F6_E2M3] = {"F6_E2M3", 6}, [ST_F6_E3M2] = {"F6_E3M2", 6},
    [ST_I16] = {"I16", 16},          [ST_U16] = {"U16", 16},        [ST_F16] = {"F16", 16},
    [ST_BF16] = {"BF16", 16},        [ST_I32] = {"I32", 32},        [ST_U32] = {"U32", 32},
    [ST_F32] = {"F32", 32},          [ST_C64] = {"C64", 64},        [ST_F64] = {"F64", 64},
    [ST_I64] = {"I64", 64},          [ST_U64] = {"U64", 64},
};

const char *st_dtype_name(st_dtype d) { return (unsigned)d < ST_DTYPE_COUNT ? DTYPES[d].name : "?"; }
unsigned st_dtype_bits(st_dtype d) { return (unsigned)d < ST_DTYPE_COUNT ? DTYPES[d].bits : 0; }

static int dtype_from_name(const char *s) {
    for (int d = 0; d < ST_DTYPE_COUNT; d++)
        if (strcmp(s, DTYPES[d].name) == 0) return d;
    return -1;
}

int st_data_bytes(st_dtype d, const int64_t *shape, int ndim, uint64_t *bytes) {
    uint64_t n = 1, bits;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || __builtin_mul_overflow(n, (uint64_t)shape[i], &n)) return -1;
    if (__builtin_mul_overflow(n, (uint64_t)st_dtype_bits(d), &bits)) return -1;
    if (bits % 8) return -2;
    *bytes = bits / 8;
    return 0;
}

void st_format_shape(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t k = 0;
    if (!cap) return;
    buf[0] = 0;
    k += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

const char *st_json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* One header entry into t (t->name already set). */
static lomo_status parse_entry(lomo_ctx *ctx, const st_file *f, const json_t *v, st_tensor *t) {
    const char *fn = f->name, *tn = t->name;
    if (!json_is_object(v))
        return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: expected an object, found %s", fn, tn,
                         st_json_kind(v));

    const json_t *dt = json_object_get(v, "dtype");
    if (!dt) return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: dtype: missing", fn, tn);
    if (!json_is_string(dt))
        return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: dtype: expected a string, found %s", fn, tn,
                         st_json_kind(dt));
    int d = dtype_from_name(json_string_value(dt));
    if (d < 0)
        return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: dtype: unknown dtype \"%.40s\"", fn, tn,
                         json_string_value(dt));
    t->dtype = (st_dtype)d;

    const json_t *sh = json_object_get(v, "shape");
    if (!sh) return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: shape: missing", fn, tn);
    if (!json_is_array(sh))
        return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: shape: expected an array, found %s", fn, tn,
                         st_json_kind(sh));
    if (json_array_size(sh) > ST_MAX_DIMS)
        return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: shape: %zu dimensions, at most %d are supported",
                         fn, tn, json_array_size(sh), ST_MAX_DIMS);
    t->ndim = (int)json_array_size(sh);
    for (int i = 0; i < t->ndim; i++) {
        const json_t *e = json_array_get(sh, (size_t)i);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: shape[%d]: expected a non-negative integer",
                             fn, tn, i);
        t->shape[i] = json_integer_value(e);
    }

    const json_t *off = json_object_get(v, "data_offsets");
    if (!off) return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: data_offsets: missing", fn, tn);
    if (!json_is_array(off) || json_array_size(off) != 2)
        return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: data_offsets: expected an array [begin, end]",
                         fn, tn);
    for (int i = 0; i < 2; i++) {
        const json_t *e = json_array_get(off, (size_t)i);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return lomo_fail(ctx, LOMO_ERR_FORMAT,
                             "%s: tensor %s: data_offsets[%d]: expected a non-negative integer", fn, tn, i);
    }
    t->begin = (uint64_t)json_integer_value(json_array_get(off, 0));
    t->end = (uint64_t)json_integer_value(json_array_get(off, 1));
    if (t->begin > t->end)
        return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: data_offsets: begin %llu is after end %llu", fn,
                         tn, (unsigned long long)t->begin, (unsigned long long)t->end);

    char shs[128];
    st_format_shape(shs, sizeof shs, t->shape, t->ndim);
    uint64_t bytes = 0;
    int r = st_data_bytes(t->dtype, t->shape, t->ndim, &bytes);
    if (r == -1)
        return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: shape: %s of %s overflows 64 bits of size", fn, tn,
                         shs, st_dtype_name(t->dtype));
    if (r == -2)
        return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: shape: %s of %s is not a whole number of bytes",
                         fn, tn, shs, st_dtype_name(t->dtype));
    t->numel = st_dtype_bits(t->dtype) ? bytes * 8 / st_dtype_bits(t->dtype) : 0;
    if (t->end - t->begin != bytes)
        return lomo_fail(ctx, LOMO_ERR_FORMAT,
                         "%s: tensor %s: data_offsets: [%llu, %llu] hold %llu bytes, but shape %s of %s needs %llu",
                         fn, tn, (unsigned long long)t->begin, (unsigned long long)t->end,
                         (unsigned long long)(t->end - t->begin), shs, st_dtype_name(t->dtype),
                         (unsigned long long)bytes);
    if (t->end > f->data_len)
        return lomo_fail(ctx, LOMO_ERR_FORMAT,
                         "%s: tensor %s: data_offsets: end %llu is past the end of the data section (%llu bytes)",
                         fn, tn, (unsigned long long)t->end, (unsigned long long)f->data_len);
    return LOMO_OK;
}

static lomo_status parse_metadata(lomo_ctx *ctx, const st_file *f, const json_t *v) {
    if (!json_is_object(v))
        return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: __metadata__: expected an object, found %s", f->name,
                         st_json_kind(v));
    const char *k;
    const json_t *e;
    json_object_foreach((json_t *)v, k, e) {
        if (!json_is_string(e))
            return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: __metadata__: %s: expected a string, found %s", f->name,
                             k, st_json_kind(e));
    }
    return LOMO_OK;
}

static int by_offset(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Sorted by offset, each range must begin at or after the end of every earlier one. */
static lomo_status check_overlaps(lomo_ctx *ctx, st_file *f) {
    qsort(f->tensors, (size_t)f->ntensors, sizeof *f->tensors, by_offset);
    const st_tensor *far = NULL;  /* the range reaching furthest so far */
    for (int i = 0; i < f->ntensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (far && t->begin < far->end && t->end > t->begin)
            return lomo_fail(ctx, LOMO_ERR_FORMAT,
                             "%s: tensor %s: data_offsets [%llu, %llu] overlap tensor %s's [%llu, %llu]", f->name,
                             t->name, (unsigned long long)t->begin, (unsigned long long)t->end, far->name,
                             (unsigned long long)far->begin, (unsigned long long)far->end);
        if (!far || t->end > far->end) far = t;
    }
    return LOMO_OK;
}

lomo_status st_parse_memory(lomo_ctx *ctx, const char *name, const uint8_t *bytes, size_t len, st_file *out) {
    memset(out, 0, sizeof *out);
    if (!name || (!bytes && len)) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "st_parse_memory: NULL argument");
    out->name = strdup(name);
    if (!out->name) return lomo_fail(ctx, LOMO_ERR_OOM, "out of memory reading %s", name);
    out->base = bytes;
    out->size = len;
    lomo_status st = LOMO_OK;
    json_t *root = NULL;
    if (len < 8) {
        st = lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: truncated: %zu bytes, shorter than the 8-byte header length",
                       name, len);
        goto fail;
    }
    uint64_t hlen;
    memcpy(&hlen, bytes, 8);
    if (hlen > ST_MAX_HEADER_BYTES) {
        st = lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: header length %llu exceeds the limit of %llu bytes", name,
                       (unsigned long long)hlen, ST_MAX_HEADER_BYTES);
        goto fail;
    }
    if (hlen > len - 8) {
        st = lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)",
                       name, (unsigned long long)hlen, len);
        goto fail;
    }
    out->data = bytes + 8 + hlen;
    out->data_len = len - 8 - hlen;

    json_error_t je;
    root = json_loadb((const char *)bytes + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        st = lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: header: invalid JSON at byte %d: %s", name, je.position, je.text);
        goto fail;
    }
    if (!json_is_object(root)) {
        st = lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: header: expected a JSON object, found %s", name, st_json_kind(root));
        goto fail;
    }
    size_t count = json_object_size(root);
    out->tensors = calloc(count ? count : 1, sizeof *out->tensors);
    if (!out->tensors) {
        st = lomo_fail(ctx, LOMO_ERR_OOM, "out of memory reading the header of %s", name);
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((st = parse_metadata(ctx, out, val))) goto fail;
            continue;
        }
        st_tensor *t = &out->tensors[out->ntensors++];
        t->name = strdup(key);
        if (!t->name) {
            st = lomo_fail(ctx, LOMO_ERR_OOM, "out of memory reading the header of %s", name);
            goto fail;
        }
        if ((st = parse_entry(ctx, out, val, t))) goto fail;
    }
    if ((st = check_overlaps(ctx, out))) goto fail;
    qsort(out->tensors, (size_t)out->ntensors, sizeof *out->tensors, by_name);
    json_decref(root);
    return LOMO_OK;
fail:
    json_decref(root);
    st_close(out);
    return st;
}

lomo_status st_open(lomo_ctx *ctx, const char *path, st_file *out) {
    memset(out, 0, sizeof *out);
    if (!path) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "st_open: NULL path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lomo_fail(ctx, LOMO_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return lomo_fail(ctx, LOMO_ERR_IO, "%s: not a readable regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    void *p = NULL;
    if (size > 0) {
        p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return lomo_fail(ctx, LOMO_ERR_IO, "%s: cannot map %zu bytes: %s", path, size, strerror(e));
        }
    }
    close(fd);
    lomo_status st = st_parse_memory(ctx, path, p, size, out);
    if (st) {
        if (p) munmap(p, size);
        return st;
    }
    out->mapped = p != NULL;
    return LOMO_OK;
}

void st_close(st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->ntensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->name);
    if (f->mapped) munmap((void *)f->base, f->size);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    if (!f || !name || !f->ntensors) return NULL;
    st_tensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, (size_t)f->ntensors, sizeof *f->tensors, by_name);
}

/* ---- writing ---- */

static json_t *int_array(const int64_t *v, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_integer(v[i]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

lomo_status st_build_header(lomo_ctx *ctx, const char *file, const st_out_tensor *t, int n, uint8_t **out,
                            size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    lomo_status st = LOMO_OK;
    json_t *root = json_object(), *meta = json_object();
    if (!root || !meta || json_object_set_new(meta, "format", json_string("pt")) ||
        json_object_set(root, "__metadata__", meta)) {
        st = lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory building the header", file);
        goto done;
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t bytes;
        if (t[i].ndim < 0 || t[i].ndim > ST_MAX_DIMS || (unsigned)t[i].dtype >= ST_DTYPE_COUNT ||
            st_data_bytes(t[i].dtype, t[i].shape, t[i].ndim, &bytes) || off + bytes < off ||
            off + bytes > INT64_MAX) {
            st = lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "%s: tensor %s: invalid dtype or shape", file, t[i].name);
            goto done;
        }
        if (strcmp(t[i].name, "__metadata__") == 0 || json_object_get(root, t[i].name)) {
            st = lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "%s: tensor %s: name used twice", file, t[i].name);
            goto done;
        }
        int64_t range[2] = {(int64_t)off, (int64_t)(off + bytes)};
        json_t *e = json_object();
        int bad = !e || json_object_set_new(e, "dtype", json_string(st_dtype_name(t[i].dtype))) ||
                  json_object_set_new(e, "shape", int_array(t[i].shape, t[i].ndim)) ||
                  json_object_set_new(e, "data_offsets", int_array(range, 2));
        if (bad) json_decref(e);
        if (bad || json_object_set_new(root, t[i].name, e)) {  /* _new frees e when it fails */
            st = lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: cannot encode the header entry (name not UTF-8?)",
                           file, t[i].name);
            goto done;
        }
        off += bytes;
    }
    char *js = json_dumps(root, JSON_COMPACT);  /* jansson keeps insertion order */
    if (!js) {
        st = lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory encoding the header", file);
        goto done;
    }
    size_t hlen = strlen(js), padded = (hlen + 7) & ~(size_t)7;
    uint8_t *buf = malloc(8 + padded);
    if (!buf) {
        free(js);
        st = lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory encoding the header", file);
        goto done;
    }
    uint64_t le = padded;
    memcpy(buf, &le, 8);
    memcpy(buf + 8, js, hlen);
    memset(buf + 8 + hlen, ' ', padded - hlen);
    free(js);
    *out = buf;
    *out_len = 8 + padded;
done:
    json_decref(meta);
    json_decref(root);
    return st;
}
