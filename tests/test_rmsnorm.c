/* test_rmsnorm.c: RMSNorm forward and backward against PyTorch. */
#include "op_check.h"

int main(void) {
    fixture fx;
    if (fx_load(&fx, fx_path("ops.bin"))) return 1;
    const lomo_backend *be = lomo_backend_cpu();
    int N = op_dim(&fx, "rmsnorm.x", 0), C = op_dim(&fx, "rmsnorm.x", 1);
    float *x = fx_f32(&fx, "rmsnorm.x", (size_t)N * C), *w = fx_f32(&fx, "rmsnorm.w", C);
    float *dout = fx_f32(&fx, "rmsnorm.dout", (size_t)N * C);
    float eps = (float)fx_scalar(&fx, "rmsnorm.eps");
    float *out = op_zeros((size_t)N * C), *rstd = op_zeros(N), *dx = op_zeros((size_t)N * C), *dw = op_zeros(C);

    be->rmsnorm_forward(out, rstd, x, w, N, C, eps);
    op_compare(&fx, "rmsnorm.out", out);
    be->rmsnorm_backward(dx, dw, dout, x, w, rstd, N, C);
    op_compare(&fx, "rmsnorm.dx", dx);
    op_compare(&fx, "rmsnorm.dw", dw);

    /* backward accumulates: a second call doubles both gradients */
    be->rmsnorm_backward(dx, dw, dout, x, w, rstd, N, C);
    for (size_t i = 0; i < (size_t)N * C; i++) dx[i] *= 0.5f;
    for (int i = 0; i < C; i++) dw[i] *= 0.5f;
    op_compare(&fx, "rmsnorm.dx", dx);
    op_compare(&fx, "rmsnorm.dw", dw);

    free(x); free(w); free(dout); free(out); free(rstd); free(dx); free(dw);
    fx_free(&fx);
    return test_summary("test_rmsnorm");
}
