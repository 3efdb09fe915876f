/*
 * op_check.h: shared steps of the per-op tests: load ops.bin, fetch inputs as
 * f32, compare outputs with a tolerance scaled to each reference tensor.
 */
#ifndef LOMO_OP_CHECK_H
#define LOMO_OP_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include "fixture.h"
#include "runtime/backend.h"

/*
 * f32 kernels against float64 references: rtol 1e-5 as DESIGN.md asks, and an
 * absolute floor of 1e-6 of the tensor's largest magnitude, since elements
 * that cancel to near zero carry f32 rounding of their larger summands.
 */
#define OP_RTOL 1e-5
#define OP_ATOL_REL 1e-6

static inline void op_compare(const fixture *fx, const char *name, const float *got) {
    const fx_tensor *t = fx_get(fx, name);
    CHECK(t != NULL, "missing record %s", name);
    if (!t) return;
    const double *want = t->data;
    size_t bad = fx_compare(name, got, want, t->numel, OP_ATOL_REL * fx_max_abs(want, t->numel), OP_RTOL);
    CHECK(bad == 0, "%s differs from the PyTorch reference", name);
}

static inline size_t op_numel(const fixture *fx, const char *name) {
    const fx_tensor *t = fx_get(fx, name);
    return t ? t->numel : 0;
}

static inline int op_dim(const fixture *fx, const char *name, int d) {
    const fx_tensor *t = fx_get(fx, name);
    return t && d < t->ndim ? (int)t->dims[d] : 0;
}

static inline float *op_zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

#endif
