/*
 * test_safetensors.c: the safetensors reader and header writer on their own.
 * A reference file written by the `safetensors` package (fixtures/st/tiny)
 * parses with exact values; every kind of corrupt file, made here by
 * mutating that one, is refused with an error naming the file, the tensor
 * and the field; headers we build read back.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"
#include "runtime/lomo.h"
#include "runtime/safetensors.h"

#define BAD "bad.safetensors"

static lomo_ctx *ctx;


/* u64 length + header text + data: a file with exactly this header. */
static uint8_t *assemble(const char *header, const uint8_t *data, size_t dlen, size_t *len) {
    size_t h = strlen(header);
    uint8_t *b = malloc(8 + h + dlen + 1);
    uint64_t le = h;
    memcpy(b, &le, 8);
    memcpy(b + 8, header, h);
    if (dlen) memcpy(b + 8 + h, data, dlen);
    *len = 8 + h + dlen;
    return b;
}

/* The reference file, its parsed header and its data section. */
static uint8_t *ref;
static size_t ref_len;
static json_t *ref_hdr;
static const uint8_t *ref_data;
static size_t ref_dlen;

static int load_reference(void) {
    ref = fx_read_file(fx_path("st/tiny/model.safetensors"), &ref_len);
    CHECK(ref != NULL, "cannot read fixtures/st/tiny/model.safetensors");
    if (!ref) return -1;
    uint64_t h;
    memcpy(&h, ref, 8);
    ref_hdr = json_loadb((const char *)ref + 8, (size_t)h, 0, NULL);
    ref_data = ref + 8 + h;
    ref_dlen = ref_len - 8 - h;
    return ref_hdr ? 0 : -1;
}

/* Parses a file whose header is the reference one after `edit`; the error must name every needle. */
static void expect_bad(const uint8_t *bytes, size_t len, lomo_status want, const char *const *needles,
                       const char *what) {
    st_file f;
    lomo_status st = st_parse_memory(ctx, BAD, bytes, len, &f);
    CHECK(st == want, "%s: status %s, want %s (%s)", what, lomo_status_name(st), lomo_status_name(want),
          lomo_last_error(ctx));
    if (st == LOMO_OK) {
        st_close(&f);
        return;
    }
    const char *err = lomo_last_error(ctx);
    CHECK(strstr(err, BAD) != NULL, "%s: error does not name the file: %s", what, err);
    for (int i = 0; needles && needles[i]; i++)
        CHECK(strstr(err, needles[i]) != NULL, "%s: error lacks \"%s\": %s", what, needles[i], err);
    CHECK(f.ntensors == 0 && f.tensors == NULL && f.name == NULL, "%s: failed parse left state behind", what);
}

static void expect_bad_header(json_t *hdr, const char *const *needles, const char *what) {
    char *s = json_dumps(hdr, JSON_COMPACT);
    size_t len;
    uint8_t *b = assemble(s, ref_data, ref_dlen, &len);
    expect_bad(b, len, LOMO_ERR_FORMAT, needles, what);
    free(b);
    free(s);
}

/* A copy of the reference header with field `key` of tensor `name` replaced (val) or removed (NULL). */
static void bad_field(const char *name, const char *key, json_t *val, const char *const *needles, const char *what) {
    json_t *h = json_deep_copy(ref_hdr);
    json_t *t = json_object_get(h, name);
    if (val) json_object_set_new(t, key, val);
    else json_object_del(t, key);
    expect_bad_header(h, needles, what);
    json_decref(h);
}

#define NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NORM0 "model.layers.0.input_layernorm.weight"
#define NORM1 "model.layers.0.post_attention_layernorm.weight"

/* Same formula as gen_safetensors.py: weight i of parameter p (p = 19: model.norm). */
static float st_value(int p, size_t i, int is_norm) {
    uint32_t h = (uint32_t)((uint64_t)i * 2654435761u + (uint64_t)p * 40503u + 12345u);
    h ^= h >> 16;
    h *= 0x45d9f3bu;
    h ^= h >> 16;
    double v = (double)((int64_t)h - 2147483648LL) / 8589934592.0;
    return (float)(is_norm ? 1.0 + v : v);
}

static void test_reference(void) {
    st_file f;
    lomo_status st = st_open(ctx, fx_path("st/tiny/model.safetensors"), &f);
    CHECK(st == LOMO_OK, "open reference: %s", lomo_last_error(ctx));
    if (st) return;
    CHECK(f.ntensors == 21, "21 tensors, got %d", f.ntensors);
    CHECK(f.mapped == 1, "file is mapped");
    const st_tensor *e = st_find(&f, "model.embed_tokens.weight");
    CHECK(e && e->dtype == ST_F32 && e->ndim == 2 && e->shape[0] == 37 && e->shape[1] == 16 && e->numel == 592,
          "embed_tokens entry");
    const st_tensor *n = st_find(&f, "model.norm.weight");
    CHECK(n && n->ndim == 1 && n->shape[0] == 16 && n->end - n->begin == 64, "model.norm entry");
    if (n) {
        int same = 1;
        for (size_t i = 0; i < 16; i++) {
            float v;
            memcpy(&v, st_tensor_data(&f, n) + 4 * i, 4);
            same &= v == st_value(19, i, 1);
        }
        CHECK(same, "model.norm values are the generator's");
    }
    CHECK(st_find(&f, "lm_head.weight") != NULL, "lm_head present");
    CHECK(st_find(&f, "model.nothing") == NULL, "unknown name -> NULL");
    CHECK(((uintptr_t)(f.data - f.base)) % 8 == 0, "the package aligns data to 8 bytes");
    st_close(&f);
    st_close(&f);  /* idempotent */
}

static void test_bad_lengths(void) {
    expect_bad(ref, 5, LOMO_ERR_FORMAT, NEEDLES("truncated"), "5-byte file");
    expect_bad(ref, 0, LOMO_ERR_FORMAT, NEEDLES("truncated"), "empty file");

    uint8_t *b = malloc(ref_len);
    memcpy(b, ref, ref_len);
    uint64_t h = ref_len - 7;
    memcpy(b, &h, 8);
    expect_bad(b, ref_len, LOMO_ERR_FORMAT, NEEDLES("header length", "past the end"), "header length past end");
    h = 200000000;
    memcpy(b, &h, 8);
    expect_bad(b, ref_len, LOMO_ERR_FORMAT, NEEDLES("header length", "exceeds"), "header length over the cap");
    h = UINT64_MAX;
    memcpy(b, &h, 8);
    expect_bad(b, ref_len, LOMO_ERR_FORMAT, NEEDLES("header length"), "header length 2^64-1");
    free(b);

    /* cut inside the data: the last tensor by offset now runs past the end */
    const char *last = NULL;
    json_int_t far = -1;
    const char *k;
    json_t *v;
    json_object_foreach(ref_hdr, k, v) {
        json_t *o = json_object_get(v, "data_offsets");
        if (o && json_integer_value(json_array_get(o, 1)) > far) {
            far = json_integer_value(json_array_get(o, 1));
            last = k;
        }
    }
    expect_bad(ref, ref_len - 10, LOMO_ERR_FORMAT, NEEDLES(last, "data_offsets", "past the end"),
               "file truncated inside the data");
}

static void test_bad_json(void) {
    size_t len;
    uint8_t *b = assemble("{\"a\": {\"dtype\": ", ref_data, 0, &len);
    expect_bad(b, len, LOMO_ERR_FORMAT, NEEDLES("header", "invalid JSON"), "malformed JSON");
    free(b);
    b = assemble("[1, 2]", NULL, 0, &len);
    expect_bad(b, len, LOMO_ERR_FORMAT, NEEDLES("expected a JSON object"), "header is an array");
    free(b);
    b = assemble("{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, "
                 "\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
                 (const uint8_t *)"01234567", 8, &len);
    expect_bad(b, len, LOMO_ERR_FORMAT, NEEDLES("duplicate"), "duplicate tensor name");
    free(b);
    b = assemble("{\"x\": 3}", NULL, 0, &len);
    expect_bad(b, len, LOMO_ERR_FORMAT, NEEDLES("tensor x", "expected an object"), "entry not an object");
    free(b);
    b = assemble("{\"__metadata__\": {\"format\": 1}}", NULL, 0, &len);
    expect_bad(b, len, LOMO_ERR_FORMAT, NEEDLES("__metadata__", "format", "expected a string"),
               "metadata value not a string");
    free(b);
    b = assemble("{\"__metadata__\": [\"pt\"]}", NULL, 0, &len);
    expect_bad(b, len, LOMO_ERR_FORMAT, NEEDLES("__metadata__"), "metadata not an object");
    free(b);
    b = assemble("{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}  \n ",
                 (const uint8_t *)"\0\0\x80?", 4, &len);
    st_file f;
    lomo_status st = st_parse_memory(ctx, "ok.safetensors", b, len, &f);
    CHECK(st == LOMO_OK && f.ntensors == 1 && f.data_len == 4, "padded header, no metadata: %s",
          lomo_last_error(ctx));
    if (!st) st_close(&f);
    free(b);
    b = assemble("{}", NULL, 0, &len);
    st = st_parse_memory(ctx, "empty.safetensors", b, len, &f);
    CHECK(st == LOMO_OK && f.ntensors == 0, "no tensors at all is a valid file");
    if (!st) st_close(&f);
    free(b);
}

static void test_bad_fields(void) {
    bad_field(NORM0, "dtype", NULL, NEEDLES(NORM0, "dtype", "missing"), "missing dtype");
    bad_field(NORM0, "shape", NULL, NEEDLES(NORM0, "shape", "missing"), "missing shape");
    bad_field(NORM0, "data_offsets", NULL, NEEDLES(NORM0, "data_offsets", "missing"), "missing data_offsets");
    bad_field(NORM0, "dtype", json_string("Q9"), NEEDLES(NORM0, "dtype", "Q9"), "unknown dtype");
    bad_field(NORM0, "dtype", json_integer(5), NEEDLES(NORM0, "dtype", "string"), "dtype not a string");
    bad_field(NORM0, "shape", json_string("16"), NEEDLES(NORM0, "shape", "array"), "shape not an array");
    bad_field(NORM0, "shape", json_pack("[i]", -1), NEEDLES(NORM0, "shape[0]"), "negative shape");
    bad_field(NORM0, "shape", json_pack("[f]", 16.0), NEEDLES(NORM0, "shape[0]"), "real shape entry");
    bad_field(NORM0, "shape", json_pack("[I, I, i]", (json_int_t)1 << 40, (json_int_t)1 << 40, 16),
              NEEDLES(NORM0, "shape", "overflow"), "shape product overflows");
    bad_field(NORM0, "shape", json_pack("[i,i,i,i,i,i,i,i,i]", 1, 1, 1, 1, 1, 1, 1, 1, 16),
              NEEDLES(NORM0, "shape", "dimensions"), "too many dimensions");
    bad_field(NORM0, "shape", json_pack("[i]", 17), NEEDLES(NORM0, "data_offsets", "[17]"),
              "shape does not match the byte range");
    bad_field(NORM0, "dtype", json_string("F64"), NEEDLES(NORM0, "data_offsets", "F64"),
              "dtype does not match the byte range");
    bad_field(NORM0, "data_offsets", json_pack("[i]", 0), NEEDLES(NORM0, "data_offsets"), "one offset");
    bad_field(NORM0, "data_offsets", json_pack("[i, i]", 64, 0), NEEDLES(NORM0, "data_offsets", "after end"),
              "begin after end");
    bad_field(NORM0, "data_offsets", json_pack("[i, i]", -64, 0), NEEDLES(NORM0, "data_offsets[0]"),
              "negative offset");
    bad_field(NORM0, "data_offsets", json_pack("[I, I]", (json_int_t)ref_dlen, (json_int_t)ref_dlen + 64),
              NEEDLES(NORM0, "data_offsets", "past the end"), "offsets past the data section");
    bad_field(NORM0, "data_offsets", json_pack("[I, I]", INT64_MAX - 10, INT64_MAX + (json_int_t)0),
              NEEDLES(NORM0, "data_offsets"), "offsets near 2^63");
    bad_field(NORM0, "dtype", json_string("F4"), NEEDLES(NORM0, "data_offsets"), "F4 of 16 is 8 bytes, not 64");

    /* two tensors on one byte range */
    json_t *h = json_deep_copy(ref_hdr);
    json_t *src = json_object_get(json_object_get(h, NORM0), "data_offsets");
    json_object_set(json_object_get(h, NORM1), "data_offsets", src);
    expect_bad_header(h, NEEDLES(NORM0, NORM1, "overlap"), "overlapping ranges");
    /* partly overlapping, shifted by one element */
    json_t *o = json_pack("[I, I]", json_integer_value(json_array_get(src, 0)) + 4,
                          json_integer_value(json_array_get(src, 1)) + 4);
    json_object_set_new(json_object_get(h, NORM1), "data_offsets", o);
    expect_bad_header(h, NEEDLES(NORM1, "overlap"), "partly overlapping ranges");
    json_decref(h);

    /* sub-byte dtype with an odd count */
    size_t len;
    uint8_t *b = assemble("{\"q\": {\"dtype\": \"F4\", \"shape\": [3], \"data_offsets\": [0, 2]}}",
                          (const uint8_t *)"ab", 2, &len);
    expect_bad(b, len, LOMO_ERR_FORMAT, NEEDLES("tensor q", "whole number of bytes"), "3 x F4");
    free(b);

    /* dtypes the model cannot use still parse; only loading refuses them */
    b = assemble("{\"i\": {\"dtype\": \"I64\", \"shape\": [2], \"data_offsets\": [0, 16]},"
                 " \"z\": {\"dtype\": \"U8\", \"shape\": [0, 5], \"data_offsets\": [16, 16]},"
                 " \"s\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [16, 20]}}",
                 (const uint8_t *)"0123456789abcdefghij", 20, &len);
    st_file f;
    lomo_status st = st_parse_memory(ctx, "other.safetensors", b, len, &f);
    CHECK(st == LOMO_OK, "I64, empty U8 and a scalar parse: %s", lomo_last_error(ctx));
    if (!st) {
        const st_tensor *t = st_find(&f, "i");
        CHECK(t && t->dtype == ST_I64 && t->numel == 2, "I64 entry");
        t = st_find(&f, "z");
        CHECK(t && t->numel == 0 && t->ndim == 2, "empty tensor");
        t = st_find(&f, "s");
        CHECK(t && t->numel == 1 && t->ndim == 0, "scalar");
        st_close(&f);
    }
    free(b);
}

static void test_open_errors(void) {
    st_file f;
    lomo_status st = st_open(ctx, "/nonexistent/x.safetensors", &f);
    CHECK(st == LOMO_ERR_IO && strstr(lomo_last_error(ctx), "/nonexistent/x.safetensors"), "missing file: %s",
          lomo_last_error(ctx));
    st = st_open(ctx, fx_path("st"), &f);
    CHECK(st == LOMO_ERR_IO && strstr(lomo_last_error(ctx), "regular file"), "folder: %s", lomo_last_error(ctx));
    st = st_open(ctx, fx_path("st/tiny/config.json"), &f);
    CHECK(st == LOMO_ERR_FORMAT && strstr(lomo_last_error(ctx), "config.json"), "not a safetensors file: %s",
          lomo_last_error(ctx));
}

static void test_writer(void) {
    st_out_tensor t[3] = {
        {.name = "a", .dtype = ST_F32, .ndim = 2, .shape = {2, 3}},
        {.name = "b.weight", .dtype = ST_BF16, .ndim = 1, .shape = {5}},
        {.name = "c", .dtype = ST_F16, .ndim = 0},
    };
    uint8_t *hdr;
    size_t hlen;
    lomo_status st = st_build_header(ctx, "w.safetensors", t, 3, &hdr, &hlen);
    CHECK(st == LOMO_OK, "build header: %s", lomo_last_error(ctx));
    if (st) return;
    CHECK(hlen % 8 == 0, "data starts 8-byte aligned (%zu)", hlen);
    CHECK(hdr[hlen - 1] == ' ' || hdr[hlen - 1] == '}', "padding is spaces");
    char *text = calloc(1, hlen);
    memcpy(text, hdr + 8, hlen - 8);
    CHECK(strstr(text, "{\"__metadata__\":{\"format\":\"pt\"},\"a\":") == text, "metadata first, format pt: %s",
          text);
    free(text);
    size_t dlen = 24 + 10 + 2, len = hlen + dlen;
    uint8_t *file = calloc(1, len);
    memcpy(file, hdr, hlen);
    st_file f;
    st = st_parse_memory(ctx, "w.safetensors", file, len, &f);
    CHECK(st == LOMO_OK && f.ntensors == 3, "built header parses: %s", lomo_last_error(ctx));
    if (!st) {
        const st_tensor *a = st_find(&f, "a"), *b = st_find(&f, "b.weight"), *c = st_find(&f, "c");
        CHECK(a && a->begin == 0 && a->end == 24 && a->dtype == ST_F32, "a at [0, 24)");
        CHECK(b && b->begin == 24 && b->end == 34 && b->dtype == ST_BF16, "b at [24, 34)");
        CHECK(c && c->begin == 34 && c->end == 36 && c->dtype == ST_F16 && c->ndim == 0, "c at [34, 36)");
        st_close(&f);
    }
    expect_bad(file, len - 1, LOMO_ERR_FORMAT, NEEDLES("tensor c", "past the end"), "built file missing a byte");
    free(file);
    free(hdr);

    t[2].name = "a";
    st = st_build_header(ctx, "w.safetensors", t, 3, &hdr, &hlen);
    CHECK(st == LOMO_ERR_INVALID_ARG && strstr(lomo_last_error(ctx), "tensor a"), "duplicate name refused");
    t[2] = (st_out_tensor){.name = "big", .dtype = ST_F64, .ndim = 2, .shape = {INT64_MAX, 4}};
    st = st_build_header(ctx, "w.safetensors", t, 3, &hdr, &hlen);
    CHECK(st == LOMO_ERR_INVALID_ARG && strstr(lomo_last_error(ctx), "tensor big"), "overflowing shape refused");
}

/* Random byte flips in the header: whatever happens, no crash and no leak (ASan checks). */
static void test_mutations(void) {
    uint8_t *b = malloc(ref_len);
    uint64_t s = 12345;
    int ok = 0, bad = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(b, ref, ref_len);
        for (int k = 0; k < 1 + it % 4; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)(s >> 33) % 1200;  /* inside the header */
            b[pos] = (uint8_t)(s >> 17);
        }
        st_file f;
        if (st_parse_memory(ctx, BAD, b, ref_len, &f) == LOMO_OK) {
            for (int i = 0; i < f.ntensors; i++) {  /* every range must be readable */
                const st_tensor *t = &f.tensors[i];
                volatile uint8_t x = 0;
                if (t->end > t->begin) x ^= st_tensor_data(&f, t)[t->end - t->begin - 1];
                (void)x;
            }
            st_close(&f);
            ok++;
        } else {
            bad++;
        }
    }
    CHECK(bad > 0, "mutations were detected (%d ok, %d refused)", ok, bad);
    free(b);
}

int main(void) {
    if (lomo_ctx_create(&ctx, NULL) != LOMO_OK) return 1;
    if (load_reference() == 0) {
        test_reference();
        test_bad_lengths();
        test_bad_json();
        test_bad_fields();
        test_open_errors();
        test_writer();
        test_mutations();
    }
    json_decref(ref_hdr);
    free(ref);
    lomo_ctx_destroy(ctx);
    return test_summary("test_safetensors");
}
