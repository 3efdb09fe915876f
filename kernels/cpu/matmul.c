/* matmul.c: the linear layer (y = x W^T, W [OC, IC] as HF stores it) on OpenBLAS. */
#include <cblas.h>
#include "cpu_ops.h"

/*
 * f32 weights are used in place. 16-bit ones are widened into wbuf a block of
 * rows at a time (cpu_wbuf_rows), so no f32 copy of the model, nor of its
 * largest matrix (a 128k-vocabulary embedding), ever exists.
 */
static const float *widen_rows(const void *w, lomo_dtype dt, float *wbuf, int o0, int n, int IC) {
    cpu_to_f32(wbuf, (const char *)w + (size_t)o0 * IC * lomo_dtype_size(dt), dt, (size_t)n * IC);
    return wbuf;
}

void cpu_matmul_forward(float *out, const float *inp, const void *w, lomo_dtype dt,
                        float *wbuf, int BT, int IC, int OC) {
    if (dt == LOMO_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, BT, OC, IC, 1.0f, inp, IC, w, IC, 0.0f, out, OC);
        return;
    }
    /* each block of rows makes a block of out's columns */
    int R = cpu_wbuf_rows(IC, OC);
    for (int o0 = 0; o0 < OC; o0 += R) {
        int n = OC - o0 < R ? OC - o0 : R;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, BT, n, IC, 1.0f, inp, IC,
                    widen_rows(w, dt, wbuf, o0, n, IC), IC, 0.0f, out + o0, OC);
    }
}

void cpu_matmul_backward_input(float *dinp, const float *dout, const void *w, lomo_dtype dt,
                               float *wbuf, float beta, int BT, int IC, int OC) {
    if (dt == LOMO_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, BT, IC, OC, 1.0f, dout, OC, w, IC, beta, dinp, IC);
        return;
    }
    /* each block of rows adds its share of the sum over OC */
    int R = cpu_wbuf_rows(IC, OC);
    for (int o0 = 0; o0 < OC; o0 += R) {
        int n = OC - o0 < R ? OC - o0 : R;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, BT, IC, n, 1.0f, dout + o0, OC,
                    widen_rows(w, dt, wbuf, o0, n, IC), IC, o0 == 0 ? beta : 1.0f, dinp, IC);
    }
}

void cpu_matmul_backward_weight(float *dw, const float *dout, const float *inp,
                                float alpha, float beta, int BT, int IC, int OC) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, BT,
                alpha, dout, OC, inp, IC, beta, dw, IC);
}
