/*
 * gguf_rope.c: Llama 3.1's RoPE scaling as llama.cpp stores it.
 *
 * convert_hf_to_gguf.py writes no scaling keys for rope_type "llama3"; it
 * writes rope_freqs.weight, one divisor per rotary frequency: 1 in the high
 * band, factor in the low band, 1 / ((1 - s) / factor + s) between, where
 * s = (old * u - low) / (high - low) for u = 1 / wavelength. The llama3
 * parameters are recovered from those divisors: factor is the largest, and
 * the blended ones give the line s(u) = A u - B, A = old / (high - low),
 * B = low / (high - low). Only the ratios are determined; with
 * low_freq_factor 1 (every Llama 3.x release) they are the original context
 * old = A / B and high = 1 + 1 / B. Divisors these parameters do not give
 * back, to float32 rounding, are refused: lomo computes every frequency from
 * config fields, and a saved config.json must say what the model ran.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "gguf.h"
#include "gguf_dequant.h"
#include "model.h"

#define TWO_PI 6.283185307179586

lomo_status gguf_rope_freqs_scaling(const gguf_file *f, const gguf_tensor *t, int hd, double theta,
                                    lomo_rope_scaling *out) {
    int half = hd / 2;
    const char *why = NULL;
    if (t->type != GGML_TYPE_F32 || t->nelem != (size_t)half || t->ne[0] != half)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor rope_freqs.weight: expected %d F32 values (one per "
                         "rotary frequency)", f->name, half);
    const float *d = gguf_tensor_data(f, t);
    double factor = 1;
    for (int j = 0; j < half; j++) {
        if (!isfinite(d[j]) || d[j] < 1 - 1e-6) {
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor rope_freqs.weight: [%d] = %g; frequency divisors "
                             "are finite and at least 1", f->name, j, (double)d[j]);
        }
        if (d[j] > factor) factor = d[j];
    }
    *out = (lomo_rope_scaling){0};
    if (factor <= 1 + 1e-6) return LOMO_OK;   /* all ones: no scaling */
    /* the unscaled frequencies [half], and those of the recovered parameters [half] */
    double *base = malloc(2 * (size_t)half * sizeof *base), *inv = base + half;
    if (!base) return lomo_fail(f->ctx, LOMO_ERR_OOM, "%s: out of memory reading rope_freqs.weight", f->name);
    lomo_llama_config c = {.rope_theta = theta};
    rope_inv_freq(base, &c, hd);

    /* the blended band: a least-squares line through (u, s) */
    double su = 0, ss = 0, suu = 0, sus = 0;
    int n = 0;
    for (int j = 0; j < half; j++) {
        if (d[j] <= 1 + 1e-5 || d[j] >= factor * (1 - 1e-5)) continue;
        double u = base[j] / TWO_PI, s = (1 / d[j] - 1 / factor) / (1 - 1 / factor);
        su += u, ss += s, suu += u * u, sus += u * s, n++;
    }
    double det = n * suu - su * su;
    double A = n >= 2 && det > 0 ? (n * sus - su * ss) / det : 0, B = n ? (A * su - ss) / n : 0;
    if (n < 2 || !(A > 0) || !(B > 0)) {
        why = "fewer than two blended frequencies, or no Llama 3 blend";
    } else {
        /* high_freq_factor to 4 decimals: the float32 divisors give 4.0000001 for 4 */
        *out = (lomo_rope_scaling){.rope_type = LOMO_ROPE_LLAMA3, .factor = factor, .low_freq_factor = 1,
                                   .high_freq_factor = round((1 + 1 / B) * 1e4) / 1e4,
                                   .original_max_position_embeddings = (int)lround(A / B)};
        /* the parameters must give the divisors back */
        c.rope_scaling = *out;
        rope_inv_freq(inv, &c, hd);
        for (int j = 0; j < half && !why; j++) {
            double want = base[j] / d[j];
            if (fabs(inv[j] - want) > 1e-5 * want) why = "divisors that Llama 3's scaling does not give";
        }
    }
    free(base);
    if (why) {
        *out = (lomo_rope_scaling){0};
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: tensor rope_freqs.weight: %s (lomo reads llama.cpp's Llama 3.1 "
                         "RoPE scaling with low_freq_factor 1; load the model's Hugging Face folder instead)",
                         f->name, why);
    }
    return LOMO_OK;
}
