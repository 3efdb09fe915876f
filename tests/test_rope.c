/* test_rope.c: RoPE (rotate-half, position offset) and its inverse against PyTorch. */
#include <math.h>
#include "op_check.h"

int main(void) {
    fixture fx;
    if (fx_load(&fx, fx_path("ops.bin"))) return 1;
    const lomo_backend *be = lomo_backend_cpu();
    int B = op_dim(&fx, "rope.x", 0), T = op_dim(&fx, "rope.x", 1), H = op_dim(&fx, "rope.x", 2),
        hd = op_dim(&fx, "rope.x", 3);
    int off = (int)fx_scalar(&fx, "rope.pos_offset");
    double theta = fx_scalar(&fx, "rope.theta");
    size_t n = (size_t)B * T * H * hd;
    int max_pos = off + T, half = hd / 2;
    float *cs = op_zeros((size_t)max_pos * half), *sn = op_zeros((size_t)max_pos * half);
    for (int t = 0; t < max_pos; t++)
        for (int j = 0; j < half; j++) {
            double a = t * pow(theta, -2.0 * j / hd);
            cs[t * half + j] = (float)cos(a);
            sn[t * half + j] = (float)sin(a);
        }
    float *x = fx_f32(&fx, "rope.x", n), *d = fx_f32(&fx, "rope.dout", n);
    be->rope(x, cs, sn, B, T, H, hd, off, 0);
    op_compare(&fx, "rope.out", x);
    be->rope(d, cs, sn, B, T, H, hd, off, 1);
    op_compare(&fx, "rope.dx", d);

    /* offset 0 must differ: guards against the offset being ignored */
    float *x0 = fx_f32(&fx, "rope.x", n);
    be->rope(x0, cs, sn, B, T, H, hd, 0, 0);
    const double *want = fx_f64(&fx, "rope.out", n);
    CHECK(fx_compare("rope.out at offset 0 (expected to differ)", x0, want, n, 1e-6, 1e-5) > 0,
          "rope ignores pos_offset");
    free(cs); free(sn); free(x); free(d); free(x0);
    fx_free(&fx);
    return test_summary("test_rope");
}
