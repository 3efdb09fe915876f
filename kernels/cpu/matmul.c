/* matmul.c: the linear layer (y = x W^T, W [OC, IC] as HF stores it) on OpenBLAS. */
#include <cblas.h>
#include "cpu_ops.h"

/* f32 weights are used in place; 16-bit ones are widened one tensor at a time
 * into wbuf, so no f32 copy of the whole model ever exists. */
static const float *widen(const void *w, lomo_dtype dt, float *wbuf, size_t n) {
    if (dt == LOMO_F32) return w;
    cpu_to_f32(wbuf, w, dt, n);
    return wbuf;
}

void cpu_matmul_forward(float *out, const float *inp, const void *w, lomo_dtype dt,
                        float *wbuf, int BT, int IC, int OC) {
    const float *wf = widen(w, dt, wbuf, (size_t)OC * IC);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, BT, OC, IC,
                1.0f, inp, IC, wf, IC, 0.0f, out, OC);
}

void cpu_matmul_backward_input(float *dinp, const float *dout, const void *w, lomo_dtype dt,
                               float *wbuf, float beta, int BT, int IC, int OC) {
    const float *wf = widen(w, dt, wbuf, (size_t)OC * IC);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, BT, IC, OC,
                1.0f, dout, OC, wf, IC, beta, dinp, IC);
}

void cpu_matmul_backward_weight(float *dw, const float *dout, const float *inp,
                                float alpha, float beta, int BT, int IC, int OC) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, BT,
                alpha, dout, OC, inp, IC, beta, dw, IC);
}
