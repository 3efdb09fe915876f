/* test_crossentropy.c: mean cross-entropy with -100 ignored, and its gradient, against PyTorch. */
#include <math.h>
#include "op_check.h"

int main(void) {
    fixture fx;
    if (fx_load(&fx, fx_path("ops.bin"))) return 1;
    const lomo_backend *be = lomo_backend_cpu();
    int N = op_dim(&fx, "xent.logits", 0), V = op_dim(&fx, "xent.logits", 1);
    float *z = fx_f32(&fx, "xent.logits", (size_t)N * V);
    const int32_t *tg = fx_i32(&fx, "xent.targets", N);
    float *losses = op_zeros(N), *lse = op_zeros(N);
    be->crossentropy_forward(losses, lse, z, tg, N, V);
    double sum = 0;
    int kept = 0, ignored_zero = 1;
    for (int i = 0; i < N; i++) {
        if (tg[i] == -100) { ignored_zero &= losses[i] == 0.0f; continue; }
        sum += losses[i];
        kept++;
    }
    CHECK(kept > 0 && kept < N, "fixture should mix kept and ignored targets");
    CHECK(ignored_zero, "ignored rows must have zero loss");
    float mean = (float)(sum / kept);
    double want = fx_scalar(&fx, "xent.loss");
    CHECK(fabs(mean - want) <= 1e-6 + 1e-5 * fabs(want), "loss %.9g, want %.9g", mean, want);

    /* in place, as the model uses it */
    be->crossentropy_backward(z, z, lse, tg, 1.0f / kept, N, V);
    op_compare(&fx, "xent.dlogits", z);
    free(z); free(losses); free(lse);
    fx_free(&fx);
    return test_summary("test_crossentropy");
}
