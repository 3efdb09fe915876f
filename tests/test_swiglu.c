/* test_swiglu.c: silu(gate) * up forward and backward against PyTorch. */
#include "op_check.h"

int main(void) {
    fixture fx;
    if (fx_load(&fx, fx_path("ops.bin"))) return 1;
    const lomo_backend *be = lomo_backend_cpu();
    size_t n = op_numel(&fx, "swiglu.gate");
    float *g = fx_f32(&fx, "swiglu.gate", n), *u = fx_f32(&fx, "swiglu.up", n), *d = fx_f32(&fx, "swiglu.dout", n);
    float *out = op_zeros(n), *dg = op_zeros(n), *du = op_zeros(n);
    be->swiglu_forward(out, g, u, n);
    op_compare(&fx, "swiglu.out", out);
    be->swiglu_backward(dg, du, d, g, u, n);
    op_compare(&fx, "swiglu.dgate", dg);
    op_compare(&fx, "swiglu.dup", du);
    /* the model writes dgate over dout: aliasing must give the same result */
    be->swiglu_backward(d, du, d, g, u, n);
    op_compare(&fx, "swiglu.dgate", d);
    free(g); free(u); free(d); free(out); free(dg); free(du);
    fx_free(&fx);
    return test_summary("test_swiglu");
}
