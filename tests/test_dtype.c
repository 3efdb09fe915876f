/* test_dtype.c: f32 <-> bf16 / f16 conversions: exact round trips and round-to-nearest-even. */
#include <math.h>
#include <stdio.h>
#include "fixture.h"
#include "runtime/dtype.h"

int main(void) {
    /* every f16 value survives f16 -> f32 -> f16 (NaNs stay NaN) */
    int f16_ok = 1, bf16_ok = 1;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = lomo_f16_to_f32((uint16_t)h);
        uint16_t back = lomo_f32_to_f16(f);
        if (isnan(f) ? !isnan(lomo_f16_to_f32(back)) : back != h) f16_ok = 0;
        float g = lomo_bf16_to_f32((uint16_t)h);
        uint16_t bback = lomo_f32_to_bf16(g);
        if (isnan(g) ? !isnan(lomo_bf16_to_f32(bback)) : bback != h) bf16_ok = 0;
    }
    CHECK(f16_ok, "f16 round trip");
    CHECK(bf16_ok, "bf16 round trip");

    /* known values */
    CHECK(lomo_f16_to_f32(0x3c00) == 1.0f, "f16 1.0");
    CHECK(lomo_f16_to_f32(0x0001) == 5.9604644775390625e-8f, "f16 smallest subnormal");
    CHECK(lomo_f16_to_f32(0x7bff) == 65504.0f, "f16 max");
    CHECK(lomo_f32_to_f16(65520.0f) == 0x7c00, "f16 overflow to inf");
    CHECK(lomo_f32_to_f16(65519.0f) == 0x7bff, "f16 just below overflow");
    CHECK(lomo_f32_to_f16(-1e-9f) == 0x8000, "f16 underflow keeps sign");
    CHECK(lomo_f32_to_bf16(1.0f) == 0x3f80, "bf16 1.0");

    /* ties go to even: 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125 */
    CHECK(lomo_f32_to_bf16(1.0f + 1.0f / 256) == 0x3f80, "bf16 tie to even (down)");
    CHECK(lomo_f32_to_bf16(1.0f + 3.0f / 256) == 0x3f82, "bf16 tie to even (up)");
    CHECK(lomo_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00, "f16 tie to even (down)");
    CHECK(lomo_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02, "f16 tie to even (up)");
    /* subnormal tie: 1.5 * 2^-24 rounds to 2 * 2^-24 (even) */
    CHECK(lomo_f32_to_f16(1.5f * 5.9604644775390625e-8f) == 0x0002, "f16 subnormal tie");

    /* every f32 in a sweep rounds to the nearest f16 and bf16 */
    int nearest = 1;
    for (uint32_t u = 0x33000000u; u < 0x477fe000u; u += 977) { /* up to 65504: above, inf is right */
        float f = lomo_bits_f32(u);
        float r = lomo_f16_to_f32(lomo_f32_to_f16(f));
        uint16_t h = lomo_f32_to_f16(f);
        float up = lomo_f16_to_f32((uint16_t)(h + 1)), dn = h ? lomo_f16_to_f32((uint16_t)(h - 1)) : 0.0f;
        if (fabsf(up - f) < fabsf(r - f) || fabsf(dn - f) < fabsf(r - f)) nearest = 0;
        float rb = lomo_bf16_to_f32(lomo_f32_to_bf16(f));
        uint16_t b = lomo_f32_to_bf16(f);
        float bup = lomo_bf16_to_f32((uint16_t)(b + 1)), bdn = lomo_bf16_to_f32((uint16_t)(b - 1));
        if (fabsf(bup - f) < fabsf(rb - f) || fabsf(bdn - f) < fabsf(rb - f)) nearest = 0;
    }
    CHECK(nearest, "conversion is not round-to-nearest");
    CHECK(isnan(lomo_bf16_to_f32(lomo_f32_to_bf16(NAN))), "bf16 NaN");
    CHECK(isinf(lomo_bf16_to_f32(lomo_f32_to_bf16(INFINITY))), "bf16 inf");
    return test_summary("test_dtype");
}
