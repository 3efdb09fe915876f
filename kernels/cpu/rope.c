/* rope.c: rotary position embedding, HF rotate-half convention (pairs j, j + hd/2). */
#include "cpu_ops.h"

void cpu_rope(float *x, const float *cos, const float *sin, int B, int T, int H, int hd,
              int pos_offset, int inverse) {
    int half = hd / 2;
    float sgn = inverse ? -1.0f : 1.0f;
#pragma omp parallel for collapse(2) if (CPU_PARALLEL((size_t)B * T * H * hd)) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float *c = cos + (size_t)(pos_offset + t) * half;
            const float *s = sin + (size_t)(pos_offset + t) * half;
            for (int h = 0; h < H; h++) {
                float *v = x + (((size_t)b * T + t) * H + h) * hd;
                for (int j = 0; j < half; j++) {
                    float a = v[j], bb = v[j + half], sn = sgn * s[j];
                    v[j] = a * c[j] - bb * sn;
                    v[j + half] = bb * c[j] + a * sn;
                }
            }
        }
    }
}
