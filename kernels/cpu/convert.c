/* convert.c: widening and rounding between f32 and the storage dtypes. */
#include "cpu_ops.h"
#include "../../runtime/dtype.h"

void cpu_to_f32(float *out, const void *src, lomo_dtype dt, size_t n) {
    if (dt == LOMO_F32) {
        memcpy(out, src, n * sizeof(float));
    } else if (dt == LOMO_BF16) {
        const uint16_t *s = src;
#pragma omp parallel for if (CPU_PARALLEL(n)) schedule(static)
        for (size_t i = 0; i < n; i++) out[i] = lomo_bf16_to_f32(s[i]);
    } else {
        const uint16_t *s = src;
#pragma omp parallel for if (CPU_PARALLEL(n)) schedule(static)
        for (size_t i = 0; i < n; i++) out[i] = lomo_f16_to_f32(s[i]);
    }
}

void cpu_from_f32(void *out, lomo_dtype dt, const float *src, size_t n) {
    if (dt == LOMO_F32) {
        memmove(out, src, n * sizeof(float));
    } else if (dt == LOMO_BF16) {
        uint16_t *o = out;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) o[i] = lomo_f32_to_bf16(src[i]);
    } else {
        uint16_t *o = out;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) o[i] = lomo_f32_to_f16(src[i]);
    }
}
