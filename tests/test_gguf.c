/*
 * test_gguf.c: the GGUF reader and the llama mapping.
 *
 *  - meta.gguf (gen_gguf.py): every metadata type, nested arrays, typed
 *    getters and their refusals, tensor infos with alignment 64;
 *  - malformed files, built here byte by byte or by mutating valid bytes:
 *    each must fail with LOMO_ERR_FORMAT and a message naming the file and
 *    the key or tensor;
 *  - llama_gqa.gguf / llama_tied.gguf: model_*.bin as llama.cpp's converter
 *    writes it (q/k rows permuted); the loaded weights must equal the HF
 *    weights exactly and the logits must match the PyTorch fixture;
 *  - config/tensor errors of llama files (missing keys, tensors, shapes);
 *  - tokenizer metadata through lomo_tokenizer_load_gguf.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fixture.h"
#include "runtime/dtype.h"
#include "runtime/gguf.h"
#include "runtime/gguf_dequant.h"
#include "runtime/lomo.h"

#define MODEL_RTOL 1e-5     /* as test_model.c */
#define MODEL_ATOL_REL 2e-6

static lomo_ctx *ctx;

/* ------------------------------------------------------------------ helpers */

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)sz + 1);
    *n = fread(buf, 1, (size_t)sz, fp);
    fclose(fp);
    return buf;
}

/* Parses bytes as "bad.gguf"; expects failure whose message contains each non-NULL needle. */
static void expect_bad(const void *data, size_t n, const char *what, const char *needle1, const char *needle2) {
    gguf_file *f = NULL;
    lomo_status st = gguf_open_memory(&f, ctx, data, n, "bad.gguf");
    const char *msg = lomo_last_error(ctx);
    CHECK(st == LOMO_ERR_FORMAT && f == NULL, "%s: expected a format error, got %s", what, lomo_status_name(st));
    if (st == LOMO_OK) {
        gguf_close(f);
        return;
    }
    CHECK(strstr(msg, "bad.gguf") != NULL, "%s: message does not name the file: %s", what, msg);
    CHECK(!needle1 || strstr(msg, needle1), "%s: message lacks \"%s\": %s", what, needle1, msg);
    CHECK(!needle2 || strstr(msg, needle2), "%s: message lacks \"%s\": %s", what, needle2, msg);
}

/* ---- a small GGUF writer for hand-made files ---- */

typedef struct gbuf { uint8_t *p; size_t n, cap; } gbuf;

static void put(gbuf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put_u32(gbuf *b, uint32_t v) { put(b, &v, 4); }   /* little-endian host */
static void put_u64(gbuf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(gbuf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

typedef struct builder {
    gbuf kv, ti;
    uint64_t nkv, nt;
    size_t data_end, align;
    uint32_t version;
} builder;

static void b_init(builder *b) {
    memset(b, 0, sizeof *b);
    b->align = 32;
    b->version = 3;
}
static void kv_head(builder *b, const char *key, uint32_t type) {
    put_str(&b->kv, key);
    put_u32(&b->kv, type);
    b->nkv++;
}
static void kv_u32(builder *b, const char *key, uint32_t v) { kv_head(b, key, GGUF_UINT32); put_u32(&b->kv, v); }
static void kv_f32(builder *b, const char *key, float v) { kv_head(b, key, GGUF_FLOAT32); put(&b->kv, &v, 4); }
static void kv_str(builder *b, const char *key, const char *v) { kv_head(b, key, GGUF_STRING); put_str(&b->kv, v); }

static size_t type_bytes(uint32_t type, uint64_t nelem) {   /* wraps for absurd dims; only used for layout */
    const ggml_type_desc *d = ggml_type_get(type);
    return d ? (size_t)nelem / d->block_size * d->type_size : (size_t)nelem * 4;
}

/* A tensor info at an explicit offset (from the data section start). */
static void tensor_at(builder *b, const char *name, int nd, const int64_t *ne, uint32_t type, uint64_t offset) {
    put_str(&b->ti, name);
    put_u32(&b->ti, (uint32_t)nd);
    uint64_t nelem = 1;
    for (int d = 0; d < nd; d++) {
        put_u64(&b->ti, (uint64_t)ne[d]);
        nelem *= (uint64_t)ne[d];
    }
    put_u32(&b->ti, type);
    put_u64(&b->ti, offset);
    b->nt++;
    size_t end = (size_t)offset + type_bytes(type, nelem);
    if (end > b->data_end) b->data_end = end;
}
/* A tensor info placed after the previous ones. */
static void tensor(builder *b, const char *name, int nd, const int64_t *ne, uint32_t type) {
    size_t off = (b->data_end + b->align - 1) / b->align * b->align;
    tensor_at(b, name, nd, ne, type, off);
}

/* header + kv + tensor infos + padding + data (bytes i -> i*7 so tensors are not all zeros) */
static uint8_t *b_finish(builder *b, size_t *n) {
    gbuf out = {0};
    put(&out, "GGUF", 4);
    put_u32(&out, b->version);
    put_u64(&out, b->nt);
    put_u64(&out, b->nkv);
    put(&out, b->kv.p, b->kv.n);
    put(&out, b->ti.p, b->ti.n);
    while (out.n % b->align) put(&out, "", 1);
    for (size_t i = 0; i < b->data_end; i++) {
        uint8_t v = (uint8_t)(i * 7);
        put(&out, &v, 1);
    }
    free(b->kv.p);
    free(b->ti.p);
    *n = out.n;
    return out.p;
}

/* ------------------------------------------------------------------ meta.gguf */

static int64_t int_at(const gguf_file *f, size_t off, gguf_vtype t) {
    int64_t v = 0;
    gguf_scalar_as_i64(f, off, t, &v);
    return v;
}

static void test_meta_scalars(gguf_file *f) {
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    int64_t i64;
    float fv;
    double dv;
    int bv;
    char *s;
    CHECK(f->version == 3 && f->alignment == 64 && f->data_start % 64 == 0, "version %u alignment %zu start %zu",
          f->version, f->alignment, f->data_start);
    CHECK(gguf_get_u32(f, "test.u8", &u32) == LOMO_OK && u32 == 200, "u8");
    CHECK(gguf_get_i32(f, "test.i8", &i32) == LOMO_OK && i32 == -100, "i8");
    CHECK(gguf_get_u32(f, "test.u16", &u32) == LOMO_OK && u32 == 60000, "u16");
    CHECK(gguf_get_i32(f, "test.i16", &i32) == LOMO_OK && i32 == -30000, "i16");
    CHECK(gguf_get_u32(f, "test.u32", &u32) == LOMO_OK && u32 == 4000000000u, "u32");
    CHECK(gguf_get_i32(f, "test.i32", &i32) == LOMO_OK && i32 == -2000000000, "i32");
    CHECK(gguf_get_f32(f, "test.f32", &fv) == LOMO_OK && fv == 3.25f, "f32");
    CHECK(gguf_get_bool(f, "test.bool_t", &bv) == LOMO_OK && bv == 1, "bool true");
    CHECK(gguf_get_bool(f, "test.bool_f", &bv) == LOMO_OK && bv == 0, "bool false");
    CHECK(gguf_get_u64(f, "test.u64", &u64) == LOMO_OK && u64 == (1ull << 63) + 5, "u64");
    CHECK(gguf_get_i64(f, "test.i64", &i64) == LOMO_OK && i64 == -(1ll << 62) - 3, "i64");
    CHECK(gguf_get_f64(f, "test.f64", &dv) == LOMO_OK && dv == 3.141592653589793, "f64");
    CHECK(gguf_get_str(f, "test.str", &s) == LOMO_OK && strcmp(s, "h\xc3\xa9llo w\xc3\xb6rld") == 0, "str");
    free(s);
    CHECK(gguf_get_str(f, "test.str_empty", &s) == LOMO_OK && s[0] == 0, "empty str");
    free(s);
    CHECK(gguf_get_str(f, "general.architecture", &s) == LOMO_OK && strcmp(s, "test") == 0, "architecture");
    free(s);

    /* refusals name the file and key */
    const char *name = f->name;
    CHECK(gguf_get_u32(f, "test.str", &u32) == LOMO_ERR_FORMAT && strstr(lomo_last_error(ctx), name) &&
              strstr(lomo_last_error(ctx), "key test.str: expected UINT32, found STRING"), "u32 of a string: %s",
          lomo_last_error(ctx));
    CHECK(gguf_get_u32(f, "test.i32", &u32) == LOMO_ERR_FORMAT && strstr(lomo_last_error(ctx), "test.i32"),
          "negative into u32: %s", lomo_last_error(ctx));
    CHECK(gguf_get_i32(f, "test.u32", &i32) == LOMO_ERR_FORMAT, "4e9 into i32");
    CHECK(gguf_get_i64(f, "test.u64", &i64) == LOMO_ERR_FORMAT && strstr(lomo_last_error(ctx), "9223372036854775813"),
          "u64 > INT64_MAX into i64: %s", lomo_last_error(ctx));
    CHECK(gguf_get_u64(f, "test.i64", &u64) == LOMO_ERR_FORMAT, "negative into u64");
    CHECK(gguf_get_f32(f, "test.u32", &fv) == LOMO_ERR_FORMAT, "f32 of an int");
    CHECK(gguf_get_bool(f, "test.u8", &bv) == LOMO_ERR_FORMAT, "bool of an int");
    CHECK(gguf_get_str(f, "test.arr_str", &s) == LOMO_ERR_FORMAT &&
              strstr(lomo_last_error(ctx), "found an array of STRING"), "str of an array: %s", lomo_last_error(ctx));
    CHECK(gguf_get_u32(f, "test.nope", &u32) == LOMO_ERR_FORMAT && strstr(lomo_last_error(ctx), name) &&
              strstr(lomo_last_error(ctx), "missing key test.nope"), "missing: %s", lomo_last_error(ctx));
}

static void test_meta_arrays(gguf_file *f) {
    int32_t *iv;
    float *fv;
    char **sv;
    uint64_t n;
    static const struct { const char *key; int n; int32_t v[3]; } ints[] = {
        {"test.arr_u8", 3, {1, 2, 255}},       {"test.arr_i8", 3, {-128, 0, 127}},
        {"test.arr_u16", 2, {65535, 1}},       {"test.arr_i16", 2, {-32768, 32767}},
        {"test.arr_i32", 3, {-1, 7, 2147483647}}, {"test.arr_bool", 3, {1, 0, 1}},
    };
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
        lomo_status st = gguf_get_i32_array(f, ints[k].key, &iv, &n);
        if (!strcmp(ints[k].key, "test.arr_bool")) {
            CHECK(st == LOMO_ERR_FORMAT, "bool array is not an int array");
            continue;
        }
        int ok = st == LOMO_OK && n == (uint64_t)ints[k].n;
        for (int i = 0; ok && i < ints[k].n; i++) ok = iv[i] == ints[k].v[i];
        CHECK(ok, "%s: %s", ints[k].key, lomo_last_error(ctx));
        free(iv);
    }
    CHECK(gguf_get_i32_array(f, "test.arr_u32", &iv, &n) == LOMO_ERR_FORMAT &&
              strstr(lomo_last_error(ctx), "element 0"), "u32 4e9 in an int32 array: %s", lomo_last_error(ctx));
    CHECK(gguf_get_f32_array(f, "test.arr_f32", &fv, &n) == LOMO_OK && n == 3 && fv[0] == 0.5f && fv[1] == -1.25f &&
              fv[2] == 3e38f, "f32 array");
    free(fv);
    CHECK(gguf_get_f32_array(f, "test.arr_f64", &fv, &n) == LOMO_OK && n == 2 && fv[0] == 0.1f && fv[1] == -2.5f,
          "f64 array as f32");
    free(fv);
    CHECK(gguf_get_str_array(f, "test.arr_str", &sv, &n) == LOMO_OK && n == 3 && !strcmp(sv[0], "a") &&
              !strcmp(sv[1], "") && !strcmp(sv[2], "\xc3\xbcn\xc3\xaf"), "string array");
    free(sv);
    CHECK(gguf_get_str_array(f, "test.arr_i32", &sv, &n) == LOMO_ERR_FORMAT &&
              strstr(lomo_last_error(ctx), "test.arr_i32: expected an array of STRING, found an array of INT32"),
          "string array of ints: %s", lomo_last_error(ctx));
    CHECK(gguf_get_i32_array(f, "test.nested", &iv, &n) == LOMO_ERR_FORMAT &&
              strstr(lomo_last_error(ctx), "found an array of ARRAY"), "nested as flat: %s", lomo_last_error(ctx));

    /* 64-bit arrays, element by element */
    const gguf_kv *kv = gguf_find(f, "test.arr_u64");
    CHECK(kv && kv->elem_type == GGUF_UINT64 && kv->count == 2 && gguf_read_u64(f, kv->value) == UINT64_MAX &&
              gguf_read_u64(f, kv->value + 8) == 0, "u64 array");
    kv = gguf_find(f, "test.arr_i64");
    CHECK(kv && kv->elem_type == GGUF_INT64 && int_at(f, kv->value, GGUF_INT64) == -(1ll << 40) &&
              int_at(f, kv->value + 8, GGUF_INT64) == 5, "i64 array");

    /* [[1, 2, 3], [4], [5, 6]]: walk the nested arrays */
    kv = gguf_find(f, "test.nested");
    CHECK(kv && kv->type == GGUF_ARRAY && kv->elem_type == GGUF_ARRAY && kv->count == 3, "nested header");
    if (kv) {
        static const int lens[3] = {3, 1, 2};
        size_t pos = kv->value;
        int next = 1, ok = 1;
        for (int i = 0; i < 3; i++) {
            ok &= int_at(f, pos, GGUF_UINT32) == GGUF_INT32 && gguf_read_u64(f, pos + 4) == (uint64_t)lens[i];
            for (int j = 0; j < lens[i]; j++) ok &= int_at(f, pos + 12 + 4 * (size_t)j, GGUF_INT32) == next++;
            pos += gguf_value_size(f, pos, GGUF_ARRAY);
        }
        CHECK(ok && pos == gguf_find(f, "test.nested_str")->value - 12 - 4 - 8 - strlen("test.nested_str"),
              "nested contents");
    }
    /* [["x", "y"], ["z"]] and [[[1], [2, 3]], [[4]]] */
    kv = gguf_find(f, "test.nested_str");
    CHECK(kv && kv->elem_type == GGUF_ARRAY && kv->count == 2 && int_at(f, kv->value, GGUF_UINT32) == GGUF_STRING &&
              gguf_read_u64(f, kv->value + 4) == 2 && gguf_read_u64(f, kv->value + 12) == 1 &&
              f->data[kv->value + 20] == 'x', "nested strings");
    kv = gguf_find(f, "test.nested3");
    CHECK(kv && kv->count == 2 && int_at(f, kv->value, GGUF_UINT32) == GGUF_ARRAY &&
              int_at(f, kv->value + 12, GGUF_UINT32) == GGUF_INT32 &&
              gguf_value_size(f, kv->value, GGUF_ARRAY) == 12 + (12 + 4) + (12 + 8), "three levels");
}

static void test_meta_tensors(gguf_file *f) {
    CHECK(f->n_tensors == 3, "3 tensors, found %llu", (unsigned long long)f->n_tensors);
    const gguf_tensor *t1 = gguf_find_tensor(f, "t1"), *t2 = gguf_find_tensor(f, "t2"), *t4 = gguf_find_tensor(f, "t4");
    CHECK(t1 && t2 && t4 && !gguf_find_tensor(f, "t3"), "tensor lookup");
    if (!t1 || !t2 || !t4) return;
    CHECK(t1->n_dims == 1 && t1->ne[0] == 5 && t1->type == GGML_TYPE_F32 && t1->nbytes == 20, "t1 info");
    CHECK(t2->n_dims == 2 && t2->ne[0] == 4 && t2->ne[1] == 3 && t2->type == GGML_TYPE_F16 && t2->nbytes == 24,
          "t2 info (numpy [3, 4] is GGUF dims [4, 3])");
    CHECK(t4->n_dims == 4 && t4->ne[0] == 2 && t4->ne[1] == 3 && t4->ne[2] == 1 && t4->ne[3] == 2 && t4->nelem == 12,
          "t4 info");
    for (uint64_t i = 0; i < f->n_tensors; i++)
        CHECK(gguf_tensor_at(f, i)->offset % 64 == 0, "offset aligned to general.alignment");
    float v[12];
    gguf_dequantize(v, gguf_tensor_data(f, t1), t1->type, 5);
    CHECK(v[0] == -2 && v[4] == 2, "t1 data");
    gguf_dequantize(v, gguf_tensor_data(f, t2), t2->type, 12);
    CHECK(v[5] == 1.25f && v[11] == 2.75f, "t2 data");
    gguf_dequantize(v, gguf_tensor_data(f, t4), t4->type, 12);
    CHECK(v[7] == -7, "t4 data");
    char dims[64];
    CHECK(strcmp(gguf_dims_str(t4, dims, sizeof dims), "[2, 3, 1, 2]") == 0, "dims string %s", dims);
}

static void test_meta(void) {
    gguf_file *f;
    lomo_status st = gguf_open(&f, ctx, fx_path("gguf/meta.gguf"));
    CHECK(st == LOMO_OK, "open meta.gguf: %s", lomo_last_error(ctx));
    if (st) return;
    test_meta_scalars(f);
    test_meta_arrays(f);
    test_meta_tensors(f);
    gguf_close(f);
}

/* ------------------------------------------------------------------ malformed files */

static size_t find_mem(const uint8_t *buf, size_t n, const void *pat, size_t k) {
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(buf + i, pat, k)) return i;
    return (size_t)-1;
}
static size_t find_bytes(const uint8_t *buf, size_t n, const char *s) { return find_mem(buf, n, s, strlen(s)); }
/* The tensor info of a two-letter tensor name: its u64 length 2, then the name. */
static size_t find_tensor2(const uint8_t *buf, size_t n, const char *name) {
    uint8_t pat[10] = {2, 0, 0, 0, 0, 0, 0, 0, (uint8_t)name[0], (uint8_t)name[1]};
    return find_mem(buf, n, pat, sizeof pat);
}

static void test_mutations(void) {
    size_t n;
    uint8_t *good = read_all(fx_path("gguf/meta.gguf"), &n);
    CHECK(good != NULL, "read meta.gguf");
    if (!good) return;
    uint8_t *b = malloc(n);
    gguf_file *f;

    /* version 2 has the same layout as 3 */
    memcpy(b, good, n);
    b[4] = 2;
    CHECK(gguf_open_memory(&f, ctx, b, n, "v2.gguf") == LOMO_OK && f->version == 2, "version 2: %s",
          lomo_last_error(ctx));
    if (f) gguf_close(f);
    memcpy(b, good, n);
    b[4] = 1;
    expect_bad(b, n, "version 1", "GGUF version 1 is not supported", NULL);
    b[4] = 99;
    expect_bad(b, n, "version 99", "unsupported GGUF version 99", NULL);
    b[4] = 0;
    b[7] = 3;
    expect_bad(b, n, "big endian", "big-endian", NULL);
    memcpy(b, good, n);
    b[0] = 'X';
    expect_bad(b, n, "magic", "not a GGUF file", NULL);
    expect_bad(b, 0, "empty", "not a GGUF file", NULL);

    /* truncation anywhere before the end of the last tensor's data fails; after it, only padding is lost */
    gguf_open_memory(&f, ctx, good, n, "meta.gguf");
    size_t data_end = 0;
    for (uint64_t i = 0; f && i < f->n_tensors; i++) {
        size_t e = f->data_start + f->tensors[i].offset + f->tensors[i].nbytes;
        data_end = e > data_end ? e : data_end;
    }
    gguf_close(f);
    int bad_ok = 0, good_fail = 0;
    for (size_t cut = 0; cut < n; cut++) {
        uint8_t *p = malloc(cut ? cut : 1);   /* exact size, so ASan sees any overread */
        memcpy(p, good, cut);
        lomo_status st = gguf_open_memory(&f, ctx, p, cut, "cut.gguf");
        if (st == LOMO_OK) {
            gguf_close(f);
            bad_ok += cut < data_end;
        } else {
            good_fail += cut >= data_end;
            if (st != LOMO_ERR_FORMAT || !strstr(lomo_last_error(ctx), "cut.gguf")) bad_ok++;
        }
        free(p);
    }
    CHECK(bad_ok == 0 && good_fail == 0, "truncation: %d bad prefixes accepted, %d complete ones refused", bad_ok,
          good_fail);

    /* a string length running past the end */
    memcpy(b, good, n);
    size_t k = find_bytes(b, n, "test.str_empty");
    CHECK(k != (size_t)-1, "find test.str_empty");
    size_t lenpos = k + strlen("test.str_empty") + 4;   /* after the key and the type: the string's length */
    uint64_t huge = 1ull << 40;
    memcpy(b + lenpos, &huge, 8);
    expect_bad(b, n, "string length", "test.str_empty", "runs past the end");

    /* a huge array count */
    memcpy(b, good, n);
    k = find_bytes(b, n, "test.arr_u8");
    size_t countpos = k + strlen("test.arr_u8") + 4 + 4;
    uint64_t count = 1ull << 62;
    memcpy(b + countpos, &count, 8);
    expect_bad(b, n, "array count", "test.arr_u8", "does not fit");
    count = UINT64_MAX;
    memcpy(b + countpos, &count, 8);
    expect_bad(b, n, "array count max", "test.arr_u8", "does not fit");

    /* a bool that is neither 0 nor 1 */
    memcpy(b, good, n);
    k = find_bytes(b, n, "test.bool_t");
    b[k + strlen("test.bool_t") + 4] = 2;
    expect_bad(b, n, "bool 2", "test.bool_t", "neither 0 nor 1");

    /* an unknown value type */
    memcpy(b, good, n);
    b[k + strlen("test.bool_t")] = 13;
    expect_bad(b, n, "value type 13", "test.bool_t", "unknown value type 13");

    /* counts that cannot fit */
    memcpy(b, good, n);
    uint64_t many = 1ull << 60;
    memcpy(b + 16, &many, 8);
    expect_bad(b, n, "kv count", "key/value count", NULL);
    memcpy(b, good, n);
    memcpy(b + 8, &many, 8);
    expect_bad(b, n, "tensor count", "tensor count", NULL);

    /* tensor t2's n_dims, type and offset */
    memcpy(b, good, n);
    k = find_tensor2(b, n, "t2");
    size_t nd_pos = k + 10;
    b[nd_pos] = 5;
    expect_bad(b, n, "n_dims 5", "tensor t2", "5 dimensions");
    memcpy(b, good, n);
    size_t type_pos = nd_pos + 4 + 2 * 8;
    b[type_pos] = 99;
    expect_bad(b, n, "type 99", "tensor t2", "unknown ggml type 99");
    b[type_pos] = 4;   /* removed from ggml (Q4_2) */
    expect_bad(b, n, "type 4", "tensor t2", "unknown ggml type 4");
    b[type_pos] = GGML_TYPE_Q4_0;   /* 4 columns are not a Q4_0 block */
    expect_bad(b, n, "block size", "tensor t2", "not a whole number of Q4_0 blocks");
    memcpy(b, good, n);
    size_t off_pos = type_pos + 4;
    uint64_t off;
    memcpy(&off, b + off_pos, 8);
    uint64_t bad_off = off + 32;
    memcpy(b + off_pos, &bad_off, 8);
    expect_bad(b, n, "misaligned", "tensor t2", "not a multiple of the alignment 64");
    bad_off = 1ull << 40;
    memcpy(b + off_pos, &bad_off, 8);
    expect_bad(b, n, "out of file", "tensor t2", "runs past the end");
    bad_off = UINT64_MAX - 63;
    memcpy(b + off_pos, &bad_off, 8);
    expect_bad(b, n, "offset near 2^64", "tensor t2", "runs past the end");
    bad_off = 0;   /* on top of t1 */
    memcpy(b + off_pos, &bad_off, 8);
    expect_bad(b, n, "overlap", "tensors t1 and t2 overlap", NULL);

    /* general.alignment: 48 (not a power of two), 0, and a string */
    memcpy(b, good, n);
    k = find_bytes(b, n, "general.alignment");
    size_t aval = k + strlen("general.alignment") + 4;
    uint32_t a = 48;
    memcpy(b + aval, &a, 4);
    expect_bad(b, n, "alignment 48", "general.alignment", "not a power of two");
    a = 0;
    memcpy(b + aval, &a, 4);
    expect_bad(b, n, "alignment 0", "general.alignment", "not a power of two");
    memcpy(b, good, n);
    b[aval - 4] = GGUF_FLOAT32;
    expect_bad(b, n, "alignment float", "general.alignment", "expected an unsigned integer");

    /* a duplicate key and a duplicate tensor name */
    memcpy(b, good, n);
    k = find_bytes(b, n, "test.u16");
    memcpy(b + k, "test.u32", 8);
    expect_bad(b, n, "duplicate key", "key test.u32 appears twice", NULL);
    memcpy(b, good, n);
    k = find_tensor2(b, n, "t4");
    b[k + 9] = '2';
    expect_bad(b, n, "duplicate tensor", "tensor t2 appears twice", NULL);

    free(b);
    free(good);
}

static void test_built_files(void) {
    builder b;
    size_t n;
    uint8_t *buf;
    gguf_file *f;

    /* the builder itself makes valid files */
    b_init(&b);
    kv_u32(&b, "a", 1);
    int64_t ne[4] = {64, 2};
    tensor(&b, "w", 2, ne, GGML_TYPE_Q8_0);
    buf = b_finish(&b, &n);
    CHECK(gguf_open_memory(&f, ctx, buf, n, "ok.gguf") == LOMO_OK, "built file: %s", lomo_last_error(ctx));
    if (f) {
        CHECK(f->tensors[0].nbytes == 4 * 34, "Q8_0 size");
        gguf_close(f);
    }
    free(buf);

    /* nesting deeper than the limit */
    b_init(&b);
    kv_head(&b, "deep", GGUF_ARRAY);
    for (int d = 0; d < 9; d++) {
        put_u32(&b.kv, GGUF_ARRAY);
        put_u64(&b.kv, 1);
    }
    put_u32(&b.kv, GGUF_INT32);
    put_u64(&b.kv, 0);
    buf = b_finish(&b, &n);
    expect_bad(buf, n, "deep nesting", "key deep", "nested deeper");
    free(buf);

    /* dims whose product overflows */
    b_init(&b);
    int64_t big[4] = {1ll << 40, 1ll << 40};
    tensor_at(&b, "huge", 2, big, GGML_TYPE_F32, 0);
    b.data_end = 0;
    buf = b_finish(&b, &n);
    expect_bad(buf, n, "overflow", "tensor huge", "overflows");
    free(buf);

    /* a key holding a NUL byte, a tensor with an empty name */
    b_init(&b);
    put_u64(&b.kv, 3);
    put(&b.kv, "a\0b", 3);
    put_u32(&b.kv, GGUF_UINT8);
    put(&b.kv, "x", 1);
    b.nkv = 1;
    buf = b_finish(&b, &n);
    expect_bad(buf, n, "NUL in key", "key #0", "NUL byte");
    free(buf);
    b_init(&b);
    int64_t one[1] = {4};
    tensor(&b, "", 1, one, GGML_TYPE_F32);
    buf = b_finish(&b, &n);
    expect_bad(buf, n, "empty tensor name", "tensor #0", "empty");
    free(buf);

    /* files that are not there or not GGUF */
    CHECK(gguf_open(&f, ctx, "/nonexistent/x.gguf") == LOMO_ERR_IO && strstr(lomo_last_error(ctx), "/nonexistent/x.gguf"),
          "missing file: %s", lomo_last_error(ctx));
    CHECK(gguf_open(&f, ctx, fx_path("model_gqa.bin")) == LOMO_ERR_FORMAT &&
              strstr(lomo_last_error(ctx), "model_gqa.bin: not a GGUF file"), "not GGUF: %s", lomo_last_error(ctx));
}

/* ------------------------------------------------------------------ llama models */

static void check_model_file(const char *gguf_name, const char *fixture_name) {
    printf("== %s\n", gguf_name);
    fixture fx;
    if (fx_load(&fx, fx_path(fixture_name))) {
        CHECK(0, "cannot load %s", fixture_name);
        return;
    }
    lomo_llama_config want, got;
    fx_llama_config(&fx, &want);
    lomo_status st = lomo_config_load_gguf(ctx, fx_path(gguf_name), &got);
    CHECK(st == LOMO_OK, "%s: config: %s", gguf_name, lomo_last_error(ctx));
    CHECK(got.hidden_size == want.hidden_size && got.intermediate_size == want.intermediate_size &&
              got.num_hidden_layers == want.num_hidden_layers && got.num_attention_heads == want.num_attention_heads &&
              got.num_key_value_heads == want.num_key_value_heads && got.vocab_size == want.vocab_size &&
              got.max_position_embeddings == want.max_position_embeddings &&
              got.tie_word_embeddings == want.tie_word_embeddings && (float)got.rms_norm_eps == (float)want.rms_norm_eps &&
              got.rope_theta == want.rope_theta && got.rope_scaling.rope_type == want.rope_scaling.rope_type,
          "%s: config differs", gguf_name);

    lomo_model *m = NULL;
    lomo_model_options o = {.dtype = LOMO_F32};
    st = lomo_model_load_gguf(&m, ctx, fx_path(gguf_name), &o);
    CHECK(st == LOMO_OK, "%s: load: %s", gguf_name, lomo_last_error(ctx));
    if (st) {
        fx_free(&fx);
        return;
    }
    /* every weight exactly as HF has it: q/k rows back in rotate-half order */
    for (int p = 0; p < lomo_model_num_params(m); p++) {
        lomo_param_info info;
        lomo_model_param(m, p, &info);
        float *w = fx_f32(&fx, info.name, info.numel), *g = malloc(info.numel * sizeof *g);
        lomo_model_get_param_f32(m, p, g, info.numel);
        CHECK(w && memcmp(w, g, info.numel * sizeof *g) == 0, "%s: %s differs from the HF weights", gguf_name,
              info.name);
        free(w);
        free(g);
    }
    /* ...and the file really holds them permuted, so the check above can fail */
    {
        gguf_file *f;
        gguf_open(&f, ctx, fx_path(gguf_name));
        const gguf_tensor *t = gguf_find_tensor(f, "blk.0.attn_q.weight");
        const gguf_tensor *tk = gguf_find_tensor(f, "blk.1.attn_k.weight");
        float *q = fx_f32(&fx, "model.layers.0.self_attn.q_proj.weight", t->nelem);
        float *k = fx_f32(&fx, "model.layers.1.self_attn.k_proj.weight", tk->nelem);
        CHECK(memcmp(q, gguf_tensor_data(f, t), t->nbytes) != 0 && memcmp(k, gguf_tensor_data(f, tk), tk->nbytes) != 0,
              "%s: q/k are stored unpermuted; the test would not see a wrong un-permutation", gguf_name);
        /* row 1 of head 0 in the file is HF row hd/2 (the partner of row 0 in rotate-half) */
        int hd = got.hidden_size / got.num_attention_heads, C = got.hidden_size;
        CHECK(memcmp((const float *)gguf_tensor_data(f, t) + C, q + (size_t)(hd / 2) * C, (size_t)C * 4) == 0,
              "%s: GGUF q row 1 should be HF row %d", gguf_name, hd / 2);
        free(q);
        free(k);
        gguf_close(f);
    }
    /* logits and loss as PyTorch computed them for the HF model */
    int B = (int)fx_scalar(&fx, "batch"), T = (int)fx_scalar(&fx, "seq");
    const int32_t *tokens = fx_i32(&fx, "tokens", (size_t)B * T), *targets = fx_i32(&fx, "targets", (size_t)B * T);
    size_t nlog = (size_t)B * T * got.vocab_size;
    float loss = 0, *logits = malloc(nlog * sizeof *logits);
    st = lomo_model_forward(m, tokens, targets, B, T, &loss, logits);
    CHECK(st == LOMO_OK, "%s: forward: %s", gguf_name, lomo_last_error(ctx));
    const double *wl = fx_f64(&fx, "logits", nlog);
    CHECK(fx_compare("logits", logits, wl, nlog, MODEL_ATOL_REL * fx_max_abs(wl, nlog), MODEL_RTOL) == 0,
          "%s: logits differ", gguf_name);
    double want_loss = fx_scalar(&fx, "loss");
    CHECK(fabs(loss - want_loss) <= 1e-6 + MODEL_RTOL * fabs(want_loss), "%s: loss %.9g, want %.9g", gguf_name, loss,
          want_loss);
    free(logits);
    lomo_model_destroy(m);

    /* 16-bit storage: each value is the f32 weight rounded to bf16, written slice by slice */
    o.dtype = LOMO_BF16;
    st = lomo_model_load_gguf(&m, ctx, fx_path(gguf_name), &o);
    CHECK(st == LOMO_OK, "%s: bf16 load: %s", gguf_name, lomo_last_error(ctx));
    if (!st) {
        lomo_param_info info;
        int p = lomo_model_find_param(m, "model.layers.0.self_attn.q_proj.weight");
        lomo_model_param(m, p, &info);
        float *w = fx_f32(&fx, info.name, info.numel), *g = malloc(info.numel * sizeof *g);
        lomo_model_get_param_f32(m, p, g, info.numel);
        int ok = 1;
        for (size_t i = 0; i < info.numel; i++) ok &= g[i] == lomo_bf16_to_f32(lomo_f32_to_bf16(w[i]));
        CHECK(ok, "%s: bf16 q_proj is not the rounded HF weight", gguf_name);
        free(w);
        free(g);
        lomo_model_destroy(m);
    }
    fx_free(&fx);
}

/* ------------------------------------------------------------------ llama errors */

/* A tiny llama file: C 8, F 16, 1 layer, 2 heads, 1 kv head, vocab 10, context 16. */
typedef struct variant {
    const char *skip_key, *arch, *skip_tensor, *swap_tensor, *extra_tensor, *i8_tensor;
    int no_head_kv, tied, tokens, no_embd;
    const char *extra_u32_key;
    uint32_t extra_u32;
    int extra_n;               /* extra_tensor's values: 2 unless given */
    const char *rope_scaling;  /* llama.rope.scaling.type, with llama.rope.scaling.factor when rope_factor != 0 */
    float rope_factor;
} variant;

static uint8_t *build_llama(const variant *v, size_t *n) {
    builder b;
    b_init(&b);
    kv_str(&b, "general.architecture", v->arch ? v->arch : "llama");
    static const struct { const char *key; uint32_t v; } u32s[] = {
        {"llama.embedding_length", 8}, {"llama.feed_forward_length", 16}, {"llama.block_count", 1},
        {"llama.attention.head_count", 2}, {"llama.attention.head_count_kv", 1}, {"llama.context_length", 16},
        {"llama.rope.dimension_count", 4}};
    for (size_t i = 0; i < sizeof u32s / sizeof u32s[0]; i++) {
        if (v->skip_key && !strcmp(v->skip_key, u32s[i].key)) continue;
        if (v->no_head_kv && !strcmp(u32s[i].key, "llama.attention.head_count_kv")) continue;
        kv_u32(&b, u32s[i].key, u32s[i].v);
    }
    if (!v->skip_key || strcmp(v->skip_key, "llama.attention.layer_norm_rms_epsilon"))
        kv_f32(&b, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    if (!v->skip_key || strcmp(v->skip_key, "llama.rope.freq_base")) kv_f32(&b, "llama.rope.freq_base", 5e5f);
    if (v->extra_u32_key) kv_u32(&b, v->extra_u32_key, v->extra_u32);
    if (v->rope_scaling) kv_str(&b, "llama.rope.scaling.type", v->rope_scaling);
    if (v->rope_factor != 0) kv_f32(&b, "llama.rope.scaling.factor", v->rope_factor);
    if (v->tokens) {
        kv_head(&b, "tokenizer.ggml.tokens", GGUF_ARRAY);
        put_u32(&b.kv, GGUF_STRING);
        put_u64(&b.kv, (uint64_t)v->tokens);
        for (int i = 0; i < v->tokens; i++) put_str(&b.kv, "t");
    }
    int kvd = v->no_head_kv ? 8 : 4;
    struct { const char *name; int nd; int64_t ne0, ne1; } ts[] = {
        {"token_embd.weight", 2, 8, 10},       {"blk.0.attn_norm.weight", 1, 8, 1},
        {"blk.0.attn_q.weight", 2, 8, 8},      {"blk.0.attn_k.weight", 2, 8, kvd},
        {"blk.0.attn_v.weight", 2, 8, kvd},    {"blk.0.attn_output.weight", 2, 8, 8},
        {"blk.0.ffn_norm.weight", 1, 8, 1},    {"blk.0.ffn_gate.weight", 2, 8, 16},
        {"blk.0.ffn_up.weight", 2, 8, 16},     {"blk.0.ffn_down.weight", 2, 16, 8},
        {"output_norm.weight", 1, 8, 1},       {"output.weight", 2, 8, 10}};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        const char *nm = ts[i].name;
        if ((v->skip_tensor && !strcmp(nm, v->skip_tensor)) || (v->tied && !strcmp(nm, "output.weight")) ||
            (v->no_embd && !strcmp(nm, "token_embd.weight")))
            continue;
        int swap = v->swap_tensor && !strcmp(nm, v->swap_tensor);
        int64_t ne[2] = {swap ? ts[i].ne1 : ts[i].ne0, swap ? ts[i].ne0 : ts[i].ne1};
        uint32_t type = v->i8_tensor && !strcmp(nm, v->i8_tensor) ? 24 : GGML_TYPE_F32;
        tensor(&b, nm, ts[i].nd, ne, type);
    }
    if (v->extra_tensor) {
        int64_t ne[1] = {v->extra_n ? v->extra_n : 2};
        tensor(&b, v->extra_tensor, 1, ne, GGML_TYPE_F32);
    }
    return b_finish(&b, n);
}

static char tmp_path[64];

static const char *write_tmp(const uint8_t *buf, size_t n) {
    snprintf(tmp_path, sizeof tmp_path, "/tmp/lomo_test_gguf_XXXXXX");
    int fd = mkstemp(tmp_path);
    if (fd < 0) return NULL;
    ssize_t w = write(fd, buf, n);
    close(fd);
    return w == (ssize_t)n ? tmp_path : NULL;
}

/* Loads the variant as a model; returns its status, leaving the message in ctx. */
static lomo_status load_variant(const variant *v, lomo_llama_config *cfg) {
    size_t n;
    uint8_t *buf = build_llama(v, &n);
    const char *path = write_tmp(buf, n);
    free(buf);
    if (!path) return LOMO_ERR_IO;
    lomo_status st = lomo_config_load_gguf(ctx, path, cfg);
    if (!st) {
        lomo_model *m = NULL;
        st = lomo_model_load_gguf(&m, ctx, path, NULL);
        lomo_model_destroy(m);
    }
    unlink(path);
    return st;
}

static void expect_llama_error(const variant *v, const char *what, const char *needle) {
    lomo_llama_config cfg;
    lomo_status st = load_variant(v, &cfg);
    const char *msg = lomo_last_error(ctx);
    CHECK(st == LOMO_ERR_FORMAT || st == LOMO_ERR_CONFIG, "%s: expected an error, got %s", what,
          lomo_status_name(st));
    CHECK(strstr(msg, "/tmp/lomo_test_gguf_") && strstr(msg, needle), "%s: message lacks the file or \"%s\": %s",
          what, needle, msg);
}

static void test_llama_errors(void) {
    lomo_llama_config cfg;
    variant ok = {0};
    CHECK(load_variant(&ok, &cfg) == LOMO_OK, "the base variant loads: %s", lomo_last_error(ctx));
    CHECK(cfg.hidden_size == 8 && cfg.num_key_value_heads == 1 && cfg.vocab_size == 10 && cfg.tie_word_embeddings == 0 &&
              cfg.rope_theta == 5e5 && cfg.max_position_embeddings == 16 && (float)cfg.rms_norm_eps == 1e-5f,
          "base config");
    variant tied = {.tied = 1};
    CHECK(load_variant(&tied, &cfg) == LOMO_OK && cfg.tie_word_embeddings == 1, "no output.weight: tied");
    variant defaults = {.no_head_kv = 1, .skip_key = "llama.rope.freq_base"};
    CHECK(load_variant(&defaults, &cfg) == LOMO_OK && cfg.num_key_value_heads == 2 && cfg.rope_theta == 10000.0,
          "defaults: head_count_kv = head_count, freq_base 10000: %s", lomo_last_error(ctx));
    CHECK(cfg.rope_scaling.rope_type == LOMO_ROPE_DEFAULT, "no scaling key: no RoPE scaling");
    variant none = {.rope_scaling = "none"}, linear = {.rope_scaling = "linear", .rope_factor = 4};
    CHECK(load_variant(&none, &cfg) == LOMO_OK && cfg.rope_scaling.rope_type == LOMO_ROPE_DEFAULT,
          "scaling none: %s", lomo_last_error(ctx));
    CHECK(load_variant(&linear, &cfg) == LOMO_OK && cfg.rope_scaling.rope_type == LOMO_ROPE_LINEAR &&
              cfg.rope_scaling.factor == 4.0,
          "linear scaling with factor 4: %s", lomo_last_error(ctx));
    variant by_tokens = {.no_embd = 1, .tokens = 12};
    CHECK(lomo_config_load_gguf(ctx, "/nonexistent.gguf", &cfg) == LOMO_ERR_IO, "missing file");
    {
        size_t n;
        uint8_t *buf = build_llama(&by_tokens, &n);
        const char *path = write_tmp(buf, n);
        free(buf);
        CHECK(path && lomo_config_load_gguf(ctx, path, &cfg) == LOMO_OK && cfg.vocab_size == 12,
              "vocab from the token list without token_embd");
        if (path) unlink(path);
    }

    variant v;
    static const char *required[] = {"llama.embedding_length", "llama.feed_forward_length", "llama.block_count",
                                     "llama.attention.head_count", "llama.context_length",
                                     "llama.attention.layer_norm_rms_epsilon"};
    char needle[96];
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        v = (variant){.skip_key = required[i]};
        snprintf(needle, sizeof needle, "missing key %s", required[i]);
        expect_llama_error(&v, required[i], needle);
    }
    v = (variant){.arch = "qwen2"};
    expect_llama_error(&v, "arch", "general.architecture: \"qwen2\" is not supported");
    v = (variant){.skip_tensor = "blk.0.ffn_up.weight"};
    expect_llama_error(&v, "missing tensor", "tensor blk.0.ffn_up.weight (model.layers.0.mlp.up_proj.weight) is missing");
    v = (variant){.skip_tensor = "output_norm.weight"};
    expect_llama_error(&v, "missing norm", "tensor output_norm.weight (model.norm.weight) is missing");
    v = (variant){.swap_tensor = "blk.0.ffn_up.weight"};
    expect_llama_error(&v, "wrong shape", "tensor blk.0.ffn_up.weight: expected dims [8, 16] (GGUF order, fastest "
                                          "first), found [16, 8]");
    v = (variant){.i8_tensor = "blk.0.attn_norm.weight"};
    expect_llama_error(&v, "unsupported type", "tensor blk.0.attn_norm.weight: unsupported tensor type I8");
    v = (variant){.extra_tensor = "rope_freqs.weight"};
    expect_llama_error(&v, "rope divisors below 1", "tensor rope_freqs.weight: [0] = ");
    v = (variant){.extra_tensor = "rope_freqs.weight", .extra_n = 3};
    expect_llama_error(&v, "rope divisors of another size", "tensor rope_freqs.weight: expected 2 F32 values");
    v = (variant){.extra_tensor = "rope_freqs.weight", .rope_scaling = "linear", .rope_factor = 2};
    expect_llama_error(&v, "two scalings", "tensor rope_freqs.weight and key llama.rope.scaling.type");
    v = (variant){.extra_tensor = "blk.0.attn_q.bias"};
    expect_llama_error(&v, "extra tensor", "tensor blk.0.attn_q.bias is not part of a llama model");
    v = (variant){.rope_scaling = "yarn", .rope_factor = 4};
    expect_llama_error(&v, "yarn", "key llama.rope.scaling.type: \"yarn\" RoPE scaling is not supported");
    v = (variant){.rope_scaling = "linear"};
    expect_llama_error(&v, "linear without factor", "llama.rope.scaling.factor");
    v = (variant){.rope_scaling = "linear", .rope_factor = -2};
    expect_llama_error(&v, "negative factor", "rope_scaling.factor: must be a positive finite number");
    v = (variant){.extra_u32_key = "llama.expert_count", .extra_u32 = 8};
    expect_llama_error(&v, "moe", "mixture-of-experts");
    v = (variant){.skip_key = "llama.rope.dimension_count", .extra_u32_key = "llama.rope.dimension_count",
                  .extra_u32 = 2};
    expect_llama_error(&v, "partial rope", "key llama.rope.dimension_count: 2, but lomo needs 4");
    v = (variant){.skip_key = "llama.attention.head_count", .extra_u32_key = "llama.attention.head_count",
                  .extra_u32 = 3};
    expect_llama_error(&v, "bad heads", "num_attention_heads");
    v = (variant){.skip_key = "llama.block_count", .extra_u32_key = "llama.block_count", .extra_u32 = 3000000000u};
    expect_llama_error(&v, "huge block count", "llama.block_count");
}

/* ------------------------------------------------------------------ tokenizer */

/* a builder holding a SentencePiece ("llama") vocabulary of the one token "a" */
static void b_one_token(builder *b) {
    b_init(b);
    kv_str(b, "tokenizer.ggml.model", "llama");
    kv_head(b, "tokenizer.ggml.tokens", GGUF_ARRAY);
    put_u32(&b->kv, GGUF_STRING);
    put_u64(&b->kv, 1);
    put_str(&b->kv, "a");
}

/* the tokenizer of b's file (finished, written, loaded, removed): its status, *t NULL on failure */
static lomo_status load_built_tokenizer(builder *b, lomo_tokenizer **t) {
    size_t n;
    uint8_t *buf = b_finish(b, &n);
    const char *path = write_tmp(buf, n);
    free(buf);
    *t = NULL;
    lomo_status st = path ? lomo_tokenizer_load_gguf(t, ctx, path) : LOMO_ERR_IO;
    if (path) unlink(path);
    return st;
}

static void test_tokenizer(void) {
    lomo_tokenizer *t = NULL;
    lomo_status st = lomo_tokenizer_load_gguf(&t, ctx, fx_path("gguf/llama_gqa.gguf"));
    CHECK(st == LOMO_OK, "byte-level tokenizer: %s", lomo_last_error(ctx));
    if (!st) {
        CHECK(lomo_tokenizer_vocab_size(t) == 211, "vocab %d", lomo_tokenizer_vocab_size(t));
        CHECK(lomo_tokenizer_bos_id(t) == 0 && lomo_tokenizer_eos_id(t) == 0, "bos/eos");
        CHECK(!lomo_tokenizer_chat_template(t), "no tokenizer.chat_template: none");
        CHECK(lomo_tokenizer_token_to_id(t, "\xc4\xa0the") == 98, "token_to_id(Gthe) = %d",
              lomo_tokenizer_token_to_id(t, "\xc4\xa0the"));
        CHECK(lomo_tokenizer_id_to_token(t, 1) && !strcmp(lomo_tokenizer_id_to_token(t, 1), "!"), "id_to_token(1)");
        lomo_tokenizer_destroy(t);
    }
    t = NULL;
    st = lomo_tokenizer_load_gguf(&t, ctx, fx_path("gguf/llama_tied.gguf"));
    CHECK(st == LOMO_OK, "sentencepiece tokenizer: %s", lomo_last_error(ctx));
    if (!st) {
        CHECK(lomo_tokenizer_vocab_size(t) == 97 && lomo_tokenizer_bos_id(t) == 1 && lomo_tokenizer_eos_id(t) == 2,
              "spm vocab/bos/eos");
        CHECK(lomo_tokenizer_token_to_id(t, "\xe2\x96\x81the") >= 0, "spm piece lookup");
        lomo_tokenizer_destroy(t);
    }

    /* refusals, each naming the file and key */
    static const struct { const char *model, *pre, *needle; } bad[] = {
        {"gpt2", "falcon", "tokenizer.ggml.pre: pre-tokenizer \"falcon\" is not supported"},
        {"bert", NULL, "tokenizer.ggml.model: \"bert\" is not supported"},
        {"gpt2", "smollm", "missing key tokenizer.ggml.merges"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        builder b;
        b_init(&b);
        kv_str(&b, "tokenizer.ggml.model", bad[i].model);
        if (bad[i].pre) kv_str(&b, "tokenizer.ggml.pre", bad[i].pre);
        kv_head(&b, "tokenizer.ggml.tokens", GGUF_ARRAY);
        put_u32(&b.kv, GGUF_STRING);
        put_u64(&b.kv, 2);
        put_str(&b.kv, "a");
        put_str(&b.kv, "b");
        size_t n;
        uint8_t *buf = b_finish(&b, &n);
        const char *path = write_tmp(buf, n);
        free(buf);
        t = NULL;
        st = path ? lomo_tokenizer_load_gguf(&t, ctx, path) : LOMO_ERR_IO;
        CHECK(st == LOMO_ERR_FORMAT && t == NULL && strstr(lomo_last_error(ctx), "/tmp/lomo_test_gguf_") &&
                  strstr(lomo_last_error(ctx), bad[i].needle), "tokenizer refusal %zu: %s", i, lomo_last_error(ctx));
        if (path) unlink(path);
    }
    /* a token id outside the vocabulary */
    {
        builder b;
        b_one_token(&b);
        kv_u32(&b, "tokenizer.ggml.eos_token_id", 5);
        st = load_built_tokenizer(&b, &t);
        CHECK(st == LOMO_ERR_FORMAT && strstr(lomo_last_error(ctx), "tokenizer.ggml.eos_token_id: token id 5"),
              "eos out of range: %s", lomo_last_error(ctx));
    }
    /* tokenizer.chat_template: kept as it is; not a string, an error naming the key */
    for (int wrong = 0; wrong < 2; wrong++) {
        builder b;
        b_one_token(&b);
        kv_u32(&b, "tokenizer.ggml.bos_token_id", 0);   /* SentencePiece adds one */
        if (wrong) kv_u32(&b, "tokenizer.chat_template", 7);
        else kv_str(&b, "tokenizer.chat_template", "{{ '<|user|>' }}\n");
        st = load_built_tokenizer(&b, &t);
        if (wrong)
            CHECK(st == LOMO_ERR_FORMAT && !t && strstr(lomo_last_error(ctx), "tokenizer.chat_template"),
                  "a chat template that is not a string: %s", lomo_last_error(ctx));
        else
            CHECK(st == LOMO_OK && lomo_tokenizer_chat_template(t) &&
                      !strcmp(lomo_tokenizer_chat_template(t), "{{ '<|user|>' }}\n"),
                  "the chat template: %s", st ? lomo_last_error(ctx) : lomo_tokenizer_chat_template(t));
        lomo_tokenizer_destroy(t);
    }
}

int main(void) {
    lomo_ctx_create(&ctx, NULL);
    test_meta();
    test_mutations();
    test_built_files();
    check_model_file("gguf/llama_gqa.gguf", "model_gqa.bin");
    check_model_file("gguf/llama_tied.gguf", "model_tied.bin");
    test_llama_errors();
    test_tokenizer();
    lomo_ctx_destroy(ctx);
    return test_summary("test_gguf");
}
