/* test_embedding.c: embedding lookup and scatter-add backward (repeated tokens) against PyTorch; the
 * column gather of a tied head against its definition. */
#include <string.h>
#include "op_check.h"

int main(void) {
    fixture fx;
    if (fx_load(&fx, fx_path("ops.bin"))) return 1;
    const lomo_backend *be = lomo_backend_cpu();
    int N = (int)op_numel(&fx, "embedding.tokens");
    int V = op_dim(&fx, "embedding.weight", 0), C = op_dim(&fx, "embedding.weight", 1);
    const int32_t *tok = fx_i32(&fx, "embedding.tokens", N);
    float *w = fx_f32(&fx, "embedding.weight", (size_t)V * C), *d = fx_f32(&fx, "embedding.dout", (size_t)N * C);
    float *out = op_zeros((size_t)N * C), *dw = op_zeros((size_t)V * C);
    be->embedding_forward(out, tok, w, LOMO_F32, N, C);
    op_compare(&fx, "embedding.out", out);
    be->embedding_backward(dw, d, tok, N, C);
    op_compare(&fx, "embedding.dweight", dw);
    free(w); free(d); free(out); free(dw);

    /* gather_cols: [N, n] from [N, V], out of order and repeated columns, and from an offset base */
    enum { GN = 5, GV = 13, GC = 4 };
    float in[GN * GV], got[GN * GC], want[GN * GC];
    const int32_t cols[GC] = {12, 0, 7, 7};
    for (int i = 0; i < GN * GV; i++) in[i] = (float)(i * 37 % 101) - 50.0f;
    be->gather_cols(got, in, cols, GN, GV, GC);
    for (int i = 0; i < GN; i++)
        for (int j = 0; j < GC; j++) want[i * GC + j] = in[i * GV + cols[j]];
    CHECK(memcmp(got, want, sizeof got) == 0, "gather_cols");
    const int32_t first[2] = {0, 1};
    be->gather_cols(got, in + 11, first, GN, GV, 2);   /* columns 11 and 12 */
    int ok = 1;
    for (int i = 0; i < GN; i++) ok &= got[i * 2] == in[i * GV + 11] && got[i * 2 + 1] == in[i * GV + 12];
    CHECK(ok, "gather_cols from an offset base");
    fx_free(&fx);
    return test_summary("test_embedding");
}
