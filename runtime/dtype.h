/*
 * dtype.h: scalar conversions between f32 and the 16-bit storage formats.
 * Rounding is to nearest, ties to even; NaN stays NaN; f16 overflow gives inf.
 * Stochastic rounding draws its bits from (seed, index) alone. The CPU and
 * CUDA backends both compile these (host and device), so they agree bit for bit.
 */
#ifndef LOMO_DTYPE_H
#define LOMO_DTYPE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define LOMO_HD __host__ __device__
#else
#define LOMO_HD
#endif

static inline LOMO_HD uint32_t lomo_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline LOMO_HD float lomo_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline LOMO_HD float lomo_bf16_to_f32(uint16_t h) { return lomo_bits_f32((uint32_t)h << 16); }

static inline LOMO_HD uint16_t lomo_f32_to_bf16(float f) {
    uint32_t u = lomo_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline LOMO_HD float lomo_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return lomo_bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0) return lomo_bits_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return lomo_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline LOMO_HD uint16_t lomo_f32_to_f16(float f) {
    uint32_t u = lomo_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);          /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);         /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {                                           /* below 2^-14: subnormal */
        /* a float with exponent e has value m*2^(e-150); f16 subnormal unit is 2^-24 */
        if (a < 0x33000000u) return sign;                            /* < 2^-25 rounds to 0 */
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;                                   /* 14..24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u);                      /* round mantissa to 10 bits */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

static inline LOMO_HD uint64_t lomo_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Stochastic rounding: round up with probability equal to the distance from the
 * lower neighbour, so the rounding is unbiased in expectation. The random bits
 * depend only on (seed, index): reproducible for any thread count or device.
 * (No multiply-add here that a compiler could fuse: both backends round alike.) */
static inline LOMO_HD uint16_t lomo_sr_bf16(float f, uint64_t seed, size_t i) {
    uint32_t u = lomo_f32_bits(f);
    if ((u & 0x7f800000u) == 0x7f800000u) return lomo_f32_to_bf16(f);   /* inf, NaN */
    uint32_t r = (uint32_t)lomo_mix64(seed ^ (i * 0x9e3779b97f4a7c15ull)) & 0xffffu;
    uint32_t s = u + r;
    if ((s & 0x7f800000u) == 0x7f800000u) return lomo_f32_to_bf16(f);  /* would carry into inf */
    return (uint16_t)(s >> 16);
}

static inline LOMO_HD uint16_t lomo_sr_f16(float f, uint64_t seed, size_t i) {
    uint16_t h = lomo_f32_to_f16(f);
    float r = lomo_f16_to_f32(h);
    if (r == f || !isfinite(r) || !isfinite(f)) return h;
    /* the neighbour on the other side of f */
    uint16_t other = (f > r) == !(h & 0x8000u) ? (uint16_t)(h + 1) : (uint16_t)(h - 1);
    if ((h & 0x7fffu) == 0) other = (uint16_t)(f > 0 ? 0x0001 : 0x8001);
    float o = lomo_f16_to_f32(other);
    if (!isfinite(o)) return h;
    double p = fabs((double)f - r) / fabs((double)o - r);   /* chance of taking `other` */
    double u = (double)(lomo_mix64(seed ^ (i * 0x9e3779b97f4a7c15ull)) >> 11) * (1.0 / 9007199254740992.0);
    return u < p ? other : h;
}

#endif /* LOMO_DTYPE_H */
