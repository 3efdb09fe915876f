/* cpu_backend.c: the CPU backend table; host memory, 64-byte aligned. */
#include <stdlib.h>
#include <string.h>
#include "cpu_ops.h"

static void *cpu_alloc(size_t bytes) {
    size_t rounded = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, rounded ? rounded : 64);
}
static void cpu_free(void *p) { free(p); }
static void cpu_memset0(void *p, size_t bytes) { memset(p, 0, bytes); }
static void cpu_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }

static const char *cpu_error(void) { return NULL; }
static void cpu_sync(void) {}
static void cpu_release_scratch(void) {}

static const lomo_backend cpu_backend = {
    .name = "cpu",
    .wbuf_floats = CPU_WBUF_FLOATS,
    .max_head_dim = 0,
    .prefill_with_forward = 0,
    .error = cpu_error,
    .sync = cpu_sync,
    .release_scratch = cpu_release_scratch,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .memset0 = cpu_memset0,
    .memcpy_d2d = cpu_copy,
    .to_host = cpu_copy,
    .to_device = cpu_copy,
    .to_f32 = cpu_to_f32,
    .from_f32 = cpu_from_f32,
    .upload_f32 = cpu_from_f32,
    .download_f32 = cpu_to_f32,
    .embedding_forward = cpu_embedding_forward,
    .embedding_backward = cpu_embedding_backward,
    .gather_cols = cpu_gather_cols,
    .rmsnorm_forward = cpu_rmsnorm_forward,
    .rmsnorm_backward = cpu_rmsnorm_backward,
    .matmul_forward = cpu_matmul_forward,
    .matmul_backward_input = cpu_matmul_backward_input,
    .matmul_backward_weight = cpu_matmul_backward_weight,
    .rope = cpu_rope,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .attention_cached = cpu_attention_cached,
    .attention_saved_floats = cpu_attention_saved_floats,
    .attention_scratch_floats = cpu_attention_saved_floats,
    .swiglu_forward = cpu_swiglu_forward,
    .swiglu_backward = cpu_swiglu_backward,
    .add_inplace = cpu_add_inplace,
    .crossentropy_forward = cpu_crossentropy_forward,
    .crossentropy_backward = cpu_crossentropy_backward,
    .sumsq = cpu_sumsq,
    .check_finite = cpu_check_finite,
    .gate_read = cpu_gate_read,
    .round_from_f32 = cpu_round_from_f32,
    .sgd_update = cpu_sgd_update,
    .sgd_update_rows = cpu_sgd_update_rows,
    .rows_add = cpu_rows_add,
    .grad_prepare = cpu_grad_prepare,
    .adalomo_update = cpu_adalomo_update,
    .adalomo_rows = cpu_adalomo_rows,
    .adalomo_factors = cpu_adalomo_factors,
    .adalomo_scale = cpu_adalomo_scale,
    .weights_sumsq = cpu_weights_sumsq,
    .adamw_update = cpu_adamw_update,
    .linear_grad_sumsq_gram = cpu_linear_grad_sumsq_gram,
    .linear_update = cpu_linear_update,
    .fill_uniform = cpu_fill_uniform,
};

const lomo_backend *lomo_backend_cpu(void) { return &cpu_backend; }
