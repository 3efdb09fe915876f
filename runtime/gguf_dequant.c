/*
 * gguf_dequant.c: ggml's block formats decoded into f32.
 *
 * Block layouts (little endian, fp16 scales), as ggml-common.h defines them:
 *   Q4_0  [d f16][qs 16]                      32 values: lo nibbles 0..15, hi 16..31, (q-8)*d
 *   Q4_1  [d f16][m f16][qs 16]               q*d + m
 *   Q5_0  [d f16][qh u32][qs 16]              bit j of qh is bit 4 of value j, (q-16)*d
 *   Q5_1  [d f16][m f16][qh u32][qs 16]       q*d + m
 *   Q8_0  [d f16][qs i8 x32]                  q*d
 *   Q4_K  [d f16][dmin f16][scales 12][qs 128]           256 values, 8 sub-blocks of 32
 *   Q5_K  [d f16][dmin f16][scales 12][qh 32][qs 128]
 *   Q6_K  [ql 128][qh 64][scales i8 x16][d f16]          16 sub-blocks of 16
 * Q4_K/Q5_K pack 8 six-bit scales and 8 six-bit mins into 12 bytes: sub-block
 * j < 4 keeps scale and min in the low 6 bits of bytes j and j+4; j >= 4 keeps
 * their low 4 bits in byte j+4 (scale low nibble, min high nibble) and their
 * top 2 bits in the top bits of bytes j-4 (scale) and j (min).
 *
 * Every product and difference is its own f32 statement, in ggml's order, so
 * no compiler may fuse them into an FMA: results match ggml bit for bit.
 */
#include <string.h>
#include "dtype.h"
#include "gguf_dequant.h"

#define QK_K 256

static const ggml_type_desc TYPES[] = {
    [0] = {"F32", 1, 4},        [1] = {"F16", 1, 2},         [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},     [6] = {"Q5_0", 32, 22},      [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},     [9] = {"Q8_1", 32, 40},      [10] = {"Q2_K", QK_K, 84},
    [11] = {"Q3_K", QK_K, 110}, [12] = {"Q4_K", QK_K, 144},  [13] = {"Q5_K", QK_K, 176},
    [14] = {"Q6_K", QK_K, 210}, [15] = {"Q8_K", QK_K, 292},  [16] = {"IQ2_XXS", QK_K, 66},
    [17] = {"IQ2_XS", QK_K, 74},[18] = {"IQ3_XXS", QK_K, 98},[19] = {"IQ1_S", QK_K, 50},
    [20] = {"IQ4_NL", 32, 18},  [21] = {"IQ3_S", QK_K, 110}, [22] = {"IQ2_S", QK_K, 82},
    [23] = {"IQ4_XS", QK_K, 136},[24] = {"I8", 1, 1},        [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},       [27] = {"I64", 1, 8},        [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", QK_K, 56}, [30] = {"BF16", 1, 2},       [34] = {"TQ1_0", QK_K, 54},
    [35] = {"TQ2_0", QK_K, 66}, [39] = {"MXFP4", 32, 17},    [40] = {"NVFP4", 64, 36},
    [41] = {"Q1_0", 128, 18},
};

const ggml_type_desc *ggml_type_get(uint32_t type) {
    if (type >= sizeof TYPES / sizeof TYPES[0] || !TYPES[type].name) return NULL;
    return &TYPES[type];
}

const char *ggml_type_name(uint32_t type) {
    const ggml_type_desc *d = ggml_type_get(type);
    return d ? d->name : "unknown";
}

int gguf_can_dequantize(uint32_t type) {
    switch (type) {
    case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16: case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0:
    case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
        return 1;
    default:
        return 0;
    }
}

static inline float f16_at(const uint8_t *p) { return lomo_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }
static inline uint32_t u32_at(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* out [32] from one Q4_0 (off = -8, no min) or Q4_1 block body qs [16]: q*d then + m */
static void nibbles32(float *out, const uint8_t *qs, float d, float m, int off, int has_min) {
    for (int j = 0; j < 16; j++) {
        float lo = (float)((qs[j] & 0xF) + off) * d;
        float hi = (float)((qs[j] >> 4) + off) * d;
        out[j] = has_min ? lo + m : lo;
        out[j + 16] = has_min ? hi + m : hi;
    }
}

/* Q5_0 / Q5_1: as above with the fifth bits in qh */
static void fives32(float *out, const uint8_t *qs, uint32_t qh, float d, float m, int off, int has_min) {
    for (int j = 0; j < 16; j++) {
        int lo_q = (qs[j] & 0xF) | (int)((qh >> j) & 1u) << 4;
        int hi_q = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4;
        float lo = (float)(lo_q + off) * d;
        float hi = (float)(hi_q + off) * d;
        out[j] = has_min ? lo + m : lo;
        out[j + 16] = has_min ? hi + m : hi;
    }
}

/* The six-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block. */
static void k_scale_min(const uint8_t *s, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | (s[j - 4] >> 6) << 4;
        *mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* out [256]: Q4_K (qh NULL) or Q5_K. Pairs of sub-blocks share 32 bytes of qs:
 * low nibbles for the first, high nibbles for the second. */
static void k4or5(float *out, const uint8_t *b, int five) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    const uint8_t *scales = b + 4;
    const uint8_t *qh = five ? b + 16 : NULL;
    const uint8_t *qs = five ? b + 48 : b + 16;
    for (int pair = 0; pair < 4; pair++) {
        for (int half = 0; half < 2; half++) {
            int sc, mn;
            k_scale_min(scales, 2 * pair + half, &sc, &mn);
            float d1 = d * (float)sc;
            float m1 = dmin * (float)mn;
            unsigned hbit = 1u << (2 * pair + half);
            float *o = out + 64 * pair + 32 * half;
            const uint8_t *q = qs + 32 * pair;
            for (int l = 0; l < 32; l++) {
                int v = half ? q[l] >> 4 : q[l] & 0xF;
                if (qh && (qh[l] & hbit)) v += 16;
                float t = d1 * (float)v;
                o[l] = t - m1;
            }
        }
    }
}

/* out [256] from a Q6_K block: two halves of 128 values; in each, ql[0..63],
 * qh[0..31] and scales[0..7] give values l, l+32, l+64, l+96 for l < 32. */
static void k6(float *out, const uint8_t *b) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = f16_at(b + 208);
    for (int h = 0; h < 2; h++) {
        const uint8_t *L = ql + 64 * h, *H = qh + 32 * h;
        const int8_t *S = sc + 8 * h;
        float *o = out + 128 * h;
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q[4] = {(L[l] & 0xF) | ((H[l] >> 0) & 3) << 4, (L[l + 32] & 0xF) | ((H[l] >> 2) & 3) << 4,
                        (L[l] >> 4) | ((H[l] >> 4) & 3) << 4, (L[l + 32] >> 4) | ((H[l] >> 6) & 3) << 4};
            for (int k = 0; k < 4; k++) {
                float ds = d * (float)S[is + 2 * k];
                o[l + 32 * k] = ds * (float)(q[k] - 32);
            }
        }
    }
}

void gguf_dequantize(float *out, const void *src, uint32_t type, size_t n) {
    const uint8_t *p = src;
    switch (type) {
    case GGML_TYPE_F32:
        memcpy(out, p, n * sizeof(float));
        break;
    case GGML_TYPE_F16:
        for (size_t i = 0; i < n; i++) out[i] = f16_at(p + 2 * i);
        break;
    case GGML_TYPE_BF16:
        for (size_t i = 0; i < n; i++) out[i] = lomo_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        break;
    case GGML_TYPE_Q4_0:
        for (size_t b = 0; b < n / 32; b++, p += 18) nibbles32(out + 32 * b, p + 2, f16_at(p), 0, -8, 0);
        break;
    case GGML_TYPE_Q4_1:
        for (size_t b = 0; b < n / 32; b++, p += 20) nibbles32(out + 32 * b, p + 4, f16_at(p), f16_at(p + 2), 0, 1);
        break;
    case GGML_TYPE_Q5_0:
        for (size_t b = 0; b < n / 32; b++, p += 22) fives32(out + 32 * b, p + 6, u32_at(p + 2), f16_at(p), 0, -16, 0);
        break;
    case GGML_TYPE_Q5_1:
        for (size_t b = 0; b < n / 32; b++, p += 24)
            fives32(out + 32 * b, p + 8, u32_at(p + 4), f16_at(p), f16_at(p + 2), 0, 1);
        break;
    case GGML_TYPE_Q8_0:
        for (size_t b = 0; b < n / 32; b++, p += 34) {
            float d = f16_at(p);
            for (int j = 0; j < 32; j++) out[32 * b + j] = (float)(int8_t)p[2 + j] * d;
        }
        break;
    case GGML_TYPE_Q4_K:
        for (size_t b = 0; b < n / QK_K; b++, p += 144) k4or5(out + QK_K * b, p, 0);
        break;
    case GGML_TYPE_Q5_K:
        for (size_t b = 0; b < n / QK_K; b++, p += 176) k4or5(out + QK_K * b, p, 1);
        break;
    case GGML_TYPE_Q6_K:
        for (size_t b = 0; b < n / QK_K; b++, p += 210) k6(out + QK_K * b, p);
        break;
    default:
        break;   /* callers check gguf_can_dequantize first */
    }
}
