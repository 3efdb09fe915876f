/* test_embedding.c: embedding lookup and scatter-add backward (repeated tokens) against PyTorch. */
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
    fx_free(&fx);
    return test_summary("test_embedding");
}
