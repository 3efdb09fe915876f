/* test_matmul.c: the linear layer y = x W^T, dX and dW, in f32 and with 16-bit weights. */
#include <math.h>
#include "op_check.h"
#include "runtime/dtype.h"

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
    fx_free(&fx);
    return test_summary("test_matmul");
}
