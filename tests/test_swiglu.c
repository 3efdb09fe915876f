/* test_swiglu.c: silu(gate) * up forward and backward against PyTorch, and the same bits on one
 * thread as on two. */
#include <omp.h>
#include <string.h>
#include "op_check.h"

/* forward and backward over n elements on 1 and on 2 threads: vector and scalar expf differ in
 * their last bits, and which elements take which must not depend on how the loop is shared out
 * (one parallel-for-simd over all n gave 2 and 3 elements of these two sizes other bits at the
 * threads' boundary) */
static void check_threads_agree(const lomo_backend *be, size_t n) {
    float *g = op_zeros(n), *u = op_zeros(n), *o[2] = {op_zeros(n), op_zeros(n)};
    float *dg[2] = {op_zeros(n), op_zeros(n)}, *du[2] = {op_zeros(n), op_zeros(n)};
    for (size_t i = 0; i < n; i++) {
        g[i] = (float)((i * 2654435761u) % 20001) / 1000.0f - 10.0f;
        u[i] = 1.0f + (float)(i % 13) / 8.0f;
    }
    int saved = omp_get_max_threads();
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        be->swiglu_forward(o[t], g, u, n);
        be->swiglu_backward(dg[t], du[t], u, g, u, n);
    }
    omp_set_num_threads(saved);
    CHECK(memcmp(o[0], o[1], n * sizeof(float)) == 0, "swiglu forward: 1 and 2 threads differ");
    CHECK(memcmp(dg[0], dg[1], n * sizeof(float)) == 0 && memcmp(du[0], du[1], n * sizeof(float)) == 0,
          "swiglu backward: 1 and 2 threads differ");
    free(g); free(u);
    for (int t = 0; t < 2; t++) { free(o[t]); free(dg[t]); free(du[t]); }
}

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
    check_threads_agree(be, 100003);
    check_threads_agree(be, 196613);
    free(g); free(u); free(d); free(out); free(dg); free(du);
    fx_free(&fx);
    return test_summary("test_swiglu");
}
