/* test_matmul.c: the linear layer y = x W^T, dX and dW, in f32 and with 16-bit weights (also widened in
 * blocks of rows). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "op_check.h"
#include "kernels/cpu/cpu_ops.h"
#include "runtime/dtype.h"

/* 0 if every got[i] is within atol + rtol * |want[i]| of want[i] */
static int compare_f32(const char *what, const float *got, const float *want, size_t n, double atol, double rtol) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += !(fabs((double)got[i] - want[i]) <= atol + rtol * fabs(want[i]));
    if (bad) printf("  %s: %zu of %zu outside tolerance\n", what, bad, n);
    return bad != 0;
}

static float *ramp(size_t n, unsigned seed) {
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (float)((i * 2654435761u + seed) % 2001) / 1000.0f - 1.0f;
    return v;
}

/* fraction of a [n] and b [n] (16-bit) that are the same, and whether all are within one unit in the last place */
static double same_bits(const uint16_t *a, const uint16_t *b, size_t n, int *near) {
    size_t same = 0;
    *near = 1;
    for (size_t i = 0; i < n; i++) {
        same += a[i] == b[i];
        *near &= abs((int)a[i] - (int)b[i]) <= 1;
    }
    return (double)same / (double)n;
}

/*
 * A 16-bit matrix over CPU_WBUF_FLOATS is widened a block of rows at a time
 * (three blocks here, the last one short): forward, dX (its sum split across
 * the blocks) and the fused update agree with f32 GEMMs on the whole widened
 * matrix; the update's stochastic rounding is indexed by place in the whole
 * matrix (a block-local index would change about half the elements of every
 * block after the first).
 */
static void blocked_widening(const lomo_backend *be) {
    int BT = 5, IC = 96, R = (int)(CPU_WBUF_FLOATS / (size_t)IC), OC = 2 * R + 37;
    CHECK(cpu_wbuf_rows(IC, OC) == R && cpu_wbuf_rows(IC, 7) == 7 && cpu_wbuf_rows((int)CPU_WBUF_FLOATS + 1, 3) == 1,
          "rows per block");
    size_t nw = (size_t)OC * IC, ny = (size_t)BT * OC, nx = (size_t)BT * IC;
    float *wf = ramp(nw, 1), *x = ramp(nx, 2), *dout = ramp(ny, 3), *wbuf = op_zeros(CPU_WBUF_FLOATS);
    float *wr = op_zeros(nw), *y = op_zeros(ny), *yref = op_zeros(ny), *dx = op_zeros(nx), *dxref = op_zeros(nx);
    uint16_t *w16 = malloc(nw * 2), *upd = malloc(nw * 2), *ref = malloc(nw * 2);
    be->from_f32(w16, LOMO_BF16, wf, nw);
    be->to_f32(wr, w16, LOMO_BF16, nw);
    be->matmul_forward(y, x, w16, LOMO_BF16, wbuf, BT, IC, OC);
    be->matmul_forward(yref, x, wr, LOMO_F32, NULL, BT, IC, OC);
    CHECK(compare_f32("blocked forward", y, yref, ny, 1e-6, 1e-6) == 0, "blocked forward");
    for (size_t i = 0; i < nx; i++) dx[i] = dxref[i] = 0.25f * x[i];
    be->matmul_backward_input(dx, dout, w16, LOMO_BF16, wbuf, 0.5f, BT, IC, OC);
    be->matmul_backward_input(dxref, dout, wr, LOMO_F32, NULL, 0.5f, BT, IC, OC);
    CHECK(compare_f32("blocked dX", dx, dxref, nx, 1e-3, 1e-5) == 0, "blocked dX (beta 0.5)");
    for (int sr = 0; sr <= 1; sr++) {
        uint64_t seed = sr ? 0x1234567u : 0;
        memcpy(upd, w16, nw * 2);
        be->linear_update(upd, LOMO_BF16, wbuf, dout, x, -0.01f, 0.999f, BT, IC, OC, seed, NULL);
        float *whole = op_zeros(nw);
        memcpy(whole, wr, nw * sizeof *whole);
        be->matmul_backward_weight(whole, dout, x, -0.01f, 0.999f, BT, IC, OC);
        be->round_from_f32(ref, LOMO_BF16, whole, nw, seed);
        int near;
        double same = same_bits(upd, ref, nw, &near);
        printf("blocked update%s: %.6f of the elements identical to the whole matrix's\n", sr ? " (stochastic)" : "",
               same);
        CHECK(near && same > 0.999, "blocked update%s: %.6f identical", sr ? " (stochastic rounding)" : "", same);
        free(whole);
    }
    free(wf); free(x); free(dout); free(wbuf); free(wr); free(y); free(yref); free(dx); free(dxref);
    free(w16); free(upd); free(ref);
}

int main(void) {
    fixture fx;
    if (fx_load(&fx, fx_path("ops.bin"))) return 1;
    const lomo_backend *be = lomo_backend_cpu();
    int N = op_dim(&fx, "linear.x", 0), IC = op_dim(&fx, "linear.x", 1), OC = op_dim(&fx, "linear.w", 0);
    size_t nx = (size_t)N * IC, nw = (size_t)OC * IC, ny = (size_t)N * OC;
    float *x = fx_f32(&fx, "linear.x", nx), *w = fx_f32(&fx, "linear.w", nw), *d = fx_f32(&fx, "linear.dout", ny);
    float *y = op_zeros(ny), *dx = op_zeros(nx), *dw = op_zeros(nw), *wbuf = op_zeros(nw);

    be->matmul_forward(y, x, w, LOMO_F32, NULL, N, IC, OC);
    op_compare(&fx, "linear.out", y);
    for (size_t i = 0; i < nx; i++) dx[i] = 7.0f;  /* beta = 0 must ignore what was there */
    be->matmul_backward_input(dx, d, w, LOMO_F32, NULL, 0.0f, N, IC, OC);
    op_compare(&fx, "linear.dx", dx);
    be->matmul_backward_weight(dw, d, x, 1.0f, 0.0f, N, IC, OC);
    op_compare(&fx, "linear.dw", dw);
    /* alpha and beta: dw = 0.5*dw + 0.5*dW leaves dW */
    be->matmul_backward_weight(dw, d, x, 0.5f, 0.5f, N, IC, OC);
    op_compare(&fx, "linear.dw", dw);

    /* bf16 and f16 weights go through the widening buffer: the result equals the f32
     * matmul on the rounded weights exactly */
    uint16_t *w16 = malloc(nw * 2);
    float *wr = op_zeros(nw), *yref = op_zeros(ny);
    for (int dt = LOMO_BF16; dt <= LOMO_F16; dt++) {
        be->from_f32(w16, (lomo_dtype)dt, w, nw);
        be->to_f32(wr, w16, (lomo_dtype)dt, nw);
        be->matmul_forward(yref, x, wr, LOMO_F32, NULL, N, IC, OC);
        be->matmul_forward(y, x, w16, (lomo_dtype)dt, wbuf, N, IC, OC);
        int same = 1;
        for (size_t i = 0; i < ny; i++) same &= y[i] == yref[i];
        CHECK(same, "%s matmul differs from f32 matmul on rounded weights", lomo_dtype_name((lomo_dtype)dt));
        /* and stays near the exact product (bf16 has 8 mantissa bits) */
        const double *want = fx_f64(&fx, "linear.out", ny);
        double tol = dt == LOMO_BF16 ? 2e-2 : 2e-3;
        CHECK(fx_compare("linear.out 16-bit", y, want, ny, tol * fx_max_abs(want, ny), tol) == 0,
              "%s matmul too far from reference", lomo_dtype_name((lomo_dtype)dt));
    }
    free(x); free(w); free(d); free(y); free(dx); free(dw); free(wbuf); free(w16); free(wr); free(yref);
    blocked_widening(be);
    fx_free(&fx);
    return test_summary("test_matmul");
}
