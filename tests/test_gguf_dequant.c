/*
 * test_gguf_dequant.c: ggml block formats decoded by gguf_dequantize against
 * gguf-py's independent numpy dequantization (tests/fixtures/gguf/quants.gguf,
 * written by gen_gguf.py), for quantized real data and for random bytes.
 *
 * The comparison is bitwise (0 ulp): both sides compute each value with the
 * same IEEE f32 operations in the same order (an fp16 scale widened exactly,
 * times a small integer, minus or plus an fp16 offset), and lomo keeps each
 * operation a separate statement so no FMA contraction can change a rounding.
 * Hand-built blocks also pin the layouts down where the random data might not
 * (the high bits of the packed k-quant scales, Q6_K's interleaving).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"
#include "runtime/dtype.h"
#include "runtime/gguf.h"
#include "runtime/gguf_dequant.h"

static const struct { const char *name; uint32_t type; uint32_t block, size; } TYPES[] = {
    {"F32", GGML_TYPE_F32, 1, 4},       {"F16", GGML_TYPE_F16, 1, 2},       {"BF16", GGML_TYPE_BF16, 1, 2},
    {"Q4_0", GGML_TYPE_Q4_0, 32, 18},   {"Q4_1", GGML_TYPE_Q4_1, 32, 20},   {"Q5_0", GGML_TYPE_Q5_0, 32, 22},
    {"Q5_1", GGML_TYPE_Q5_1, 32, 24},   {"Q8_0", GGML_TYPE_Q8_0, 32, 34},   {"Q4_K", GGML_TYPE_Q4_K, 256, 144},
    {"Q5_K", GGML_TYPE_Q5_K, 256, 176}, {"Q6_K", GGML_TYPE_Q6_K, 256, 210},
};
#define NTYPES (sizeof TYPES / sizeof TYPES[0])

/* Index of the first value whose bits differ, or -1. */
static long first_diff(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (lomo_f32_bits(a[i]) != lomo_f32_bits(b[i])) return (long)i;
    return -1;
}

/* Dequantizes tensor `name` and compares it bitwise with the F32 tensor `want`. */
static void check_pair(const gguf_file *f, const char *name, const char *want_name, uint32_t type) {
    const gguf_tensor *t = gguf_find_tensor(f, name), *w = gguf_find_tensor(f, want_name);
    CHECK(t && w, "quants.gguf lacks %s or %s", name, want_name);
    if (!t || !w) return;
    CHECK(t->type == type, "%s: type %s, expected %s", name, ggml_type_name(t->type), ggml_type_name(type));
    CHECK(w->type == GGML_TYPE_F32 && w->nelem == t->nelem, "%s: shape mismatch", want_name);
    if (t->type != type || w->nelem != t->nelem) return;
    float *got = malloc(t->nelem * sizeof *got), *want = malloc(t->nelem * sizeof *want);
    gguf_dequantize(got, gguf_tensor_data(f, t), type, t->nelem);
    memcpy(want, gguf_tensor_data(f, w), t->nelem * sizeof *want);
    long d = first_diff(got, want, t->nelem);
    CHECK(d < 0, "%s: value %ld is %.9g, gguf-py says %.9g", name, d, d < 0 ? 0.0 : got[d], d < 0 ? 0.0 : want[d]);

    /* the comparison can fail: one flipped bit in the first block changes some value */
    const ggml_type_desc *td = ggml_type_get(type);
    uint8_t *copy = malloc(t->nbytes);
    memcpy(copy, gguf_tensor_data(f, t), t->nbytes);
    copy[td->type_size / 2] ^= 0x10;
    gguf_dequantize(got, copy, type, t->nelem);
    CHECK(first_diff(got, want, t->nelem) >= 0, "%s: a flipped bit went unnoticed", name);
    free(copy);
    free(got);
    free(want);
}

static void test_against_gguf_py(lomo_ctx *ctx) {
    gguf_file *f;
    lomo_status st = gguf_open(&f, ctx, fx_path("gguf/quants.gguf"));
    CHECK(st == LOMO_OK, "open quants.gguf: %s", lomo_last_error(ctx));
    if (st) return;
    char a[64], b[64];
    for (size_t i = 0; i < NTYPES; i++) {
        CHECK(gguf_can_dequantize(TYPES[i].type), "%s must be supported", TYPES[i].name);
        snprintf(a, sizeof a, "%s.data", TYPES[i].name);
        snprintf(b, sizeof b, "%s.want", TYPES[i].name);
        check_pair(f, a, b, TYPES[i].type);
        snprintf(a, sizeof a, "%s.rand", TYPES[i].name);
        snprintf(b, sizeof b, "%s.rand_want", TYPES[i].name);
        check_pair(f, a, b, TYPES[i].type);
    }
    gguf_close(f);
}

static void test_type_table(void) {
    for (size_t i = 0; i < NTYPES; i++) {
        const ggml_type_desc *d = ggml_type_get(TYPES[i].type);
        CHECK(d && strcmp(d->name, TYPES[i].name) == 0 && d->block_size == TYPES[i].block &&
                  d->type_size == TYPES[i].size, "type %s: wrong layout", TYPES[i].name);
    }
    /* known to ggml (sizes for validation) but not decoded */
    const ggml_type_desc *q2 = ggml_type_get(GGML_TYPE_Q2_K);
    CHECK(q2 && q2->block_size == 256 && q2->type_size == 84, "Q2_K layout");
    CHECK(!gguf_can_dequantize(GGML_TYPE_Q2_K) && !gguf_can_dequantize(GGML_TYPE_Q3_K), "Q2_K/Q3_K are not decoded");
    CHECK(ggml_type_get(4) == NULL && ggml_type_get(5) == NULL && ggml_type_get(31) == NULL, "removed ids are unknown");
    CHECK(ggml_type_get(1000) == NULL && strcmp(ggml_type_name(1000), "unknown") == 0, "id 1000 is unknown");
}

static void put_f16(uint8_t *p, float v) {
    uint16_t h = lomo_f32_to_f16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* Q4_K, built by hand: sub-block 5 with scale 37 and min 50 (both need the packed high bits). */
static void test_q4k_by_hand(void) {
    uint8_t b[144] = {0};
    float out[256];
    put_f16(b, 0.5f);       /* d */
    put_f16(b + 2, 0.25f);  /* dmin */
    uint8_t *s = b + 4;
    /* j = 5: scale 37 = 0b10'0101, min 50 = 0b11'0010 */
    s[9] = 0x5 | 0x2 << 4;  /* low nibbles of scale and min */
    s[1] |= 2 << 6;         /* top bits of the scale in byte j-4 */
    s[5] |= 3 << 6;         /* top bits of the min in byte j */
    /* j = 1: scale 3, min 1 in the plain low 6 bits of bytes 1 and 5 */
    s[1] |= 3;
    s[5] |= 1;
    uint8_t *qs = b + 16;
    /* sub-block 5 is the high nibbles of the third 32-byte group; value 7 at its index 4 */
    qs[64 + 4] = 7 << 4;
    /* sub-block 1 is the high nibbles of the first group; value 9 at its index 0 */
    qs[0] = 9 << 4;
    gguf_dequantize(out, b, GGML_TYPE_Q4_K, 256);
    CHECK(out[5 * 32 + 4] == 0.5f * 37 * 7 - 0.25f * 50, "Q4_K packed high scale bits: %g", out[5 * 32 + 4]);
    CHECK(out[5 * 32 + 5] == -0.25f * 50, "Q4_K min of sub-block 5: %g", out[5 * 32 + 5]);
    CHECK(out[32] == 0.5f * 3 * 9 - 0.25f, "Q4_K sub-block 1: %g", out[32]);
    CHECK(out[0] == 0.0f, "Q4_K sub-block 0 is zero: %g", out[0]);
}

/* Q6_K, built by hand: value 200 (second half) lies at l = 8, quarter 2 (l + 64) of half 1. */
static void test_q6k_by_hand(void) {
    uint8_t b[210] = {0};
    float out[256];
    put_f16(b + 208, 0.125f);
    int8_t *sc = (int8_t *)(b + 192);
    for (int i = 0; i < 16; i++) sc[i] = 1;
    sc[8 + 0 + 4] = -3;                 /* half 1, is = 0, quarter 2: scale index 8 + is + 4 */
    /* q = 45 = 0b10'1101: low nibble 13 in the high nibble of ql[64 + 8], top bits 2 in qh[32 + 8] bits 4..5 */
    b[64 + 8] = 13 << 4;
    b[128 + 32 + 8] = 2 << 4;
    gguf_dequantize(out, b, GGML_TYPE_Q6_K, 256);
    CHECK(out[200] == 0.125f * -3 * (45 - 32), "Q6_K value 200: %g", out[200]);
    CHECK(out[0] == 0.125f * 1 * -32, "Q6_K zero bits are -32: %g", out[0]);
}

int main(void) {
    lomo_ctx *ctx;
    lomo_ctx_create(&ctx, NULL);
    test_type_table();
    test_against_gguf_py(ctx);
    test_q4k_by_hand();
    test_q6k_by_hand();
    lomo_ctx_destroy(ctx);
    return test_summary("test_gguf_dequant");
}
