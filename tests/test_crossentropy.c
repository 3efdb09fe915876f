/*
 * test_crossentropy.c: mean cross-entropy with -100 ignored, and its gradient,
 * against PyTorch: over the whole vocabulary at once, and a chunk of
 * vocabulary columns at a time (the LM head's chunked logits), uneven last
 * chunk included.
 */
#include <math.h>
#include <string.h>
#include "op_check.h"

/* The loss and, in place in z [N, V], dlogits (dloss 1/kept) with the vocabulary in chunks of w columns;
 * each chunk is copied out to [N, w] first, as the model's head forms it. */
static void xent_in_chunks(const fixture *fx, const char *what, int w) {
    const lomo_backend *be = lomo_backend_cpu();
    int N = op_dim(fx, "xent.logits", 0), V = op_dim(fx, "xent.logits", 1);
    float *z = fx_f32(fx, "xent.logits", (size_t)N * V), *chunk = op_zeros((size_t)N * w);
    const int32_t *tg = fx_i32(fx, "xent.targets", N);
    float *losses = op_zeros(N), *lse = op_zeros(N);
    for (int v0 = 0; v0 < V; v0 += w) {
        int n = V - v0 < w ? V - v0 : w;
        for (int i = 0; i < N; i++) memcpy(chunk + (size_t)i * n, z + (size_t)i * V + v0, (size_t)n * sizeof(float));
        be->crossentropy_forward(losses, lse, chunk, tg, N, n, v0, V);
    }
    double sum = 0;
    int kept = 0, ignored_zero = 1;
    for (int i = 0; i < N; i++) {
        if (tg[i] == -100) { ignored_zero &= losses[i] == 0.0f; continue; }
        sum += losses[i];
        kept++;
    }
    CHECK(kept > 0 && kept < N, "%s: the fixture should mix kept and ignored targets", what);
    CHECK(ignored_zero, "%s: ignored rows must have zero loss", what);
    float mean = (float)(sum / kept);
    double want = fx_scalar(fx, "xent.loss");
    CHECK(fabs(mean - want) <= 1e-6 + 1e-5 * fabs(want), "%s: loss %.9g, want %.9g", what, mean, want);

    /* in place, as the model uses it */
    for (int v0 = 0; v0 < V; v0 += w) {
        int n = V - v0 < w ? V - v0 : w;
        for (int i = 0; i < N; i++) memcpy(chunk + (size_t)i * n, z + (size_t)i * V + v0, (size_t)n * sizeof(float));
        be->crossentropy_backward(chunk, chunk, lse, tg, 1.0f / kept, N, n, v0);
        for (int i = 0; i < N; i++) memcpy(z + (size_t)i * V + v0, chunk + (size_t)i * n, (size_t)n * sizeof(float));
    }
    printf("%s:\n", what);
    op_compare(fx, "xent.dlogits", z);
    free(z); free(chunk); free(losses); free(lse);
}

int main(void) {
    fixture fx;
    if (fx_load(&fx, fx_path("ops.bin"))) return 1;
    int V = op_dim(&fx, "xent.logits", 1);
    CHECK(V > 64 && V % 64 != 0, "the fixture's vocabulary (%d) should leave an uneven last chunk of 64", V);
    xent_in_chunks(&fx, "the whole vocabulary", V);
    xent_in_chunks(&fx, "chunks of 64 columns", 64);
    xent_in_chunks(&fx, "chunks of 1 column", 1);
    fx_free(&fx);
    return test_summary("test_crossentropy");
}
