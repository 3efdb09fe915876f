/*
 * backend.h: the table of ops a device backend implements.
 *
 * All pointers are device pointers of that backend. Activations and
 * gradients are f32; weights may be stored as f32, bf16 or f16 and are read
 * through the dtype argument. Following llm.c, outputs come first, inputs
 * next, sizes last, and backward functions accumulate (+=) into gradients
 * unless stated otherwise, so callers decide what is zeroed.
 */
#ifndef LOMO_BACKEND_H
#define LOMO_BACKEND_H

#include <math.h>
#include "lomo.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lomo_backend {
    const char *name;
    /*
     * 0 if GEMMs take 16-bit weights as they are. Else they are widened into
     * an f32 buffer (wbuf) a block of rows at a time, blocks of at most this
     * many floats (one row where a row is longer): the runtime allocates
     * min(the largest matrix, max(this, the longest row)) floats for it.
     */
    size_t wbuf_floats;
    /* the largest head size its attention takes (config validation checks it); 0: any */
    int max_head_dim;
    /*
     * 1 if a prompt's first positions (decoding from position 0) run faster
     * through attention_forward than attention_cached: CUDA's flash attention
     * against a kernel that gives each query its own pass over the keys. The
     * CPU's forward keeps the probabilities for a backward, which costs more.
     */
    int prefill_with_forward;

    /*
     * The first failure of an asynchronous device call (CUDA launch, cuBLAS
     * status), with the call named; NULL while all is well. Ops return void,
     * so the runtime checks this at the end of every forward, backward and
     * step. Sticky: a device error leaves the device unusable.
     */
    const char *(*error)(void);
    /* waits for queued device work (timing) */
    void (*sync)(void);
    /* gives back the backend's own temporary buffers (they grow again on demand) */
    void (*release_scratch)(void);

    /* memory: 64-byte aligned; free(NULL) is a no-op */
    void *(*alloc)(size_t bytes);
    void (*free)(void *p);
    void (*memset0)(void *p, size_t bytes);
    void (*memcpy_d2d)(void *dst, const void *src, size_t bytes);
    void (*to_host)(void *dst_host, const void *src, size_t bytes);
    void (*to_device)(void *dst, const void *src_host, size_t bytes);

    /* out f32 [n] = src (dtype) [n]; and back, rounding to nearest even */
    void (*to_f32)(float *out, const void *src, lomo_dtype dt, size_t n);
    void (*from_f32)(void *out, lomo_dtype dt, const float *src, size_t n);
    /* the same between host and device: out (dt) [n] on the device from host f32 src,
     * and host f32 out from device src (dt) */
    void (*upload_f32)(void *out, lomo_dtype dt, const float *src_host, size_t n);
    void (*download_f32)(float *out_host, const void *src, lomo_dtype dt, size_t n);

    /* out [BT, C] = wte[tokens] ; tokens [BT], wte [V, C] */
    void (*embedding_forward)(float *out, const int32_t *tokens, const void *wte, lomo_dtype dt,
                              int BT, int C);
    /* dwte [V, C] += scatter of dout [BT, C] by tokens */
    void (*embedding_backward)(float *dwte, const float *dout, const int32_t *tokens, int BT, int C);
    /* out [N, n] = in [N, V] at columns cols [n]: the tied head's gradient rows of the embedding's tokens */
    void (*gather_cols)(float *out, const float *in, const int32_t *cols, int N, int V, int n);

    /* out [BT, C] = inp * rstd * w ; rstd [BT] saved for backward; w f32 [C] */
    void (*rmsnorm_forward)(float *out, float *rstd, const float *inp, const float *w,
                            int BT, int C, float eps);
    /* dinp [BT, C] += ; dw [C] += ; dout, inp [BT, C] */
    void (*rmsnorm_backward)(float *dinp, float *dw, const float *dout, const float *inp,
                             const float *w, const float *rstd, int BT, int C);

    /*
     * out [BT, OC] = inp [BT, IC] @ w^T, w [OC, IC] of dtype dt. A non-f32 w
     * is widened into wbuf (wbuf_floats above; unused for f32).
     */
    void (*matmul_forward)(float *out, const float *inp, const void *w, lomo_dtype dt,
                           float *wbuf, int BT, int IC, int OC);
    /* dinp [BT, IC] = beta*dinp + dout [BT, OC] @ w [OC, IC]; wbuf as above */
    void (*matmul_backward_input)(float *dinp, const float *dout, const void *w, lomo_dtype dt,
                                  float *wbuf, float beta, int BT, int IC, int OC);
    /* dw [OC, IC] = beta*dw + alpha * dout^T [OC, BT] @ inp [BT, IC] (f32) */
    void (*matmul_backward_weight)(float *dw, const float *dout, const float *inp,
                                   float alpha, float beta, int BT, int IC, int OC);
    /*
     * The fused LOMO update of a linear weight w [OC, IC] of dtype dt, with no
     * gradient ever stored: w = round(beta*w + alpha * dout^T @ inp), the
     * arithmetic in f32 and rounded once to storage (stochastically when
     * sr_seed != 0). wbuf as for matmul_forward. gate: NULL, or a gate of
     * check_finite: w is left untouched, bit for bit, if it is raised when
     * the update runs (in stream order on a device).
     */
    void (*linear_update)(void *w, lomo_dtype dt, float *wbuf, const float *dout, const float *inp,
                          float alpha, float beta, int BT, int IC, int OC, uint64_t sr_seed, const int *gate);

    /*
     * RoPE, HF rotate-half convention, in place on x [B, T, H, hd]. Row t
     * uses position pos_offset + t; cos, sin are tables [max_pos, hd/2].
     * inverse = 1 rotates by the negative angle, which is the backward.
     */
    void (*rope)(float *x, const float *cos, const float *sin, int B, int T, int H, int hd,
                 int pos_offset, int inverse);

    /*
     * Causal attention with grouped-query heads, scale 1/sqrt(hd). q [B, T, NH, hd],
     * k, v [B, T, NKV, hd] -> out [B, T, NH, hd]. `att` is what the backend
     * saves for backward, attention_saved_floats(B, T, NH) floats: the CPU
     * keeps the softmax probabilities [B, NH, T, T]; CUDA keeps only the
     * log-sum-exp of each row [B, NH, T] and recomputes (flash attention).
     * dt is the model's storage dtype: for a 16-bit model a backend may take
     * the products in that dtype on tensor cores (accumulating in f32), as
     * it does for the linear layers; f32 models get f32 products.
     */
    void (*attention_forward)(float *out, float *att, const float *q, const float *k,
                              const float *v, int B, int T, int NH, int NKV, int hd, lomo_dtype dt);
    /* dq, dk, dv overwritten (not accumulated); datt scratch of
     * attention_scratch_floats(B, T, NH) floats; out is the forward's output */
    void (*attention_backward)(float *dq, float *dk, float *dv, float *datt, const float *dout,
                               const float *out, const float *att, const float *q, const float *k,
                               const float *v, int B, int T, int NH, int NKV, int hd, lomo_dtype dt);
    /*
     * Attention of n new queries against a key/value cache (incremental
     * decoding), in f32: q [B, n, NH, hd] holds positions pos..pos+n-1; kc and
     * vc [B, cap, NKV, hd] hold positions 0..pos+n-1 of each row (cap >=
     * pos + n). Query i sees keys 0..pos+i. out [B, n, NH, hd]. Nothing is
     * kept for backward: decoding is inference only.
     */
    void (*attention_cached)(float *out, const float *q, const float *kc, const float *vc, int B, int n, int pos,
                             int cap, int NH, int NKV, int hd);
    size_t (*attention_saved_floats)(int B, int T, int NH);
    size_t (*attention_scratch_floats)(int B, int T, int NH);

    /* out [N] = silu(gate) * up */
    void (*swiglu_forward)(float *out, const float *gate, const float *up, size_t n);
    /* dgate, dup [N] overwritten */
    void (*swiglu_backward)(float *dgate, float *dup, const float *dout, const float *gate,
                            const float *up, size_t n);

    /* a [N] += b [N] */
    void (*add_inplace)(float *a, const float *b, size_t n);

    /*
     * Cross-entropy per row against targets [N] (-100 = ignored), over the
     * vocabulary [0, V) in chunks: logits [N, n] are its columns v0..v0+n-1.
     * The first chunk (v0 = 0) starts lse [N] and losses [N]; each folds its
     * log-sum-exp into lse (saved for backward) and, where a row's target
     * falls in it, subtracts that logit from losses; the last (v0 + n = V)
     * leaves losses = lse - z[target], 0 for ignored rows. One call with
     * v0 = 0, n = V is the whole vocabulary at once.
     */
    void (*crossentropy_forward)(float *losses, float *lse, const float *logits, const int32_t *targets, int N,
                                 int n, int v0, int V);
    /*
     * dlogits [N, n] = dloss * (softmax(logits) - onehot(target)) over the
     * columns v0..v0+n-1 (logits as above, lse the forward's), 0 for ignored
     * rows. dlogits may alias logits (in place).
     */
    void (*crossentropy_backward)(float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                                  float dloss, int N, int n, int v0);
    /* ---- optimizer math: f32 throughout, weights rounded to storage at the end ---- */

    /* sum of x[i]^2 in double, bitwise reproducible for any thread count; NaN/inf propagate */
    double (*sumsq)(const float *x, size_t n);
    /*
     * Deferred finiteness checks, so a device need not wait on each one. A
     * gate is one int in device memory, 0 (memset0) while every tensor checked
     * through it was finite; the first check that finds a NaN or inf raises it
     * to tag + 1 (tag >= 0), and later checks leave it so. x NULL raises it
     * unconditionally (if not raised yet). Queued like any op: does not wait.
     */
    void (*check_finite)(int *gate, const float *x, size_t n, int tag);
    /* waits for the queued work; the gate's value (0, or the first tag + 1) */
    int (*gate_read)(const int *gate);
    /* out (dt) [n] = round(src [n]); sr_seed 0: to nearest even, else stochastic, seeded */
    void (*round_from_f32)(void *out, lomo_dtype dt, const float *src, size_t n, uint64_t sr_seed);
    /*
     * SGD / LOMO element update on a materialized gradient:
     *   g' = clamp(g * gscale, -clip_value, clip_value) * coef  (no clamp if clip_value <= 0)
     *   w  = round(w * (1 - lr*wd) - lr * g')
     * skipped if gate (NULL: none) is raised when it runs, as for linear_update
     */
    void (*sgd_update)(void *w, lomo_dtype dt, const float *g, size_t n, float lr, float wd, float gscale,
                       float clip_value, float coef, uint64_t sr_seed, const int *gate);
    /*
     * sgd_update for a [V, C] tensor whose gradient is zero outside rows
     * [nrows] (sorted), given as g [nrows, C]; other rows only decay. Same
     * result as sgd_update on the dense gradient.
     */
    void (*sgd_update_rows)(void *w, lomo_dtype dt, const float *g, const int32_t *rows, int nrows, int V, int C,
                            float lr, float wd, float gscale, float clip_value, float coef, uint64_t sr_seed);
    /* dst [V, C] rows[i] += src [nrows, C] row i */
    void (*rows_add)(float *dst, const float *src, const int32_t *rows, int nrows, int C);
    /* g [n] = clamp(g * gscale, -clip_value, clip_value) * coef, in place */
    void (*grad_prepare)(float *g, size_t n, float gscale, float clip_value, float coef);
    /*
     * AdaLomo (DESIGN.md 1): g [rows, cols] is overwritten. 2-D when cols > 0
     * with row [rows], col [cols] factored second moments; 1-D when cols == 0
     * with row [rows] the full second moment.
     */
    void (*adalomo_update)(void *w, lomo_dtype dt, float *g, float *row, float *col, int rows, int cols,
                           float beta, float lr, float wd, float eps1, float eps2, float clip_threshold,
                           uint64_t sr_seed);
    /*
     * AdaLomo 2-D in parts, for a [rows, cols] gradient that comes a block of
     * rows at a time (a [V, C] head or embedding in vocabulary chunks), with adalomo_update's
     * arithmetic. adalomo_rows: rmean [n] = each row's mean of g^2 + eps1;
     * colsum [cols] (f64) += the block's column sums of g^2 + eps1, its rows
     * in order. adalomo_factors, once every block is in: row [rows] =
     * beta*row + (1-beta)*rmean, col [cols] = beta*col + (1-beta)*colsum/rows,
     * mean_row [1] = the new row's mean. adalomo_scale: g [n, cols] of the
     * block whose factors are row [n] := g * rsqrt(row_i / mean_row) *
     * rsqrt(col_j), in place. mean_row lives in device memory.
     */
    void (*adalomo_rows)(float *rmean, double *colsum, const float *g, int n, int cols, float eps1);
    void (*adalomo_factors)(float *row, float *col, float *mean_row, const float *rmean, const double *colsum,
                            int rows, int cols, float beta);
    void (*adalomo_scale)(float *g, const float *row, const float *col, const float *mean_row, int n, int cols);
    /* sum of squares of w (dt) [n] taken as f32 values, in f64 (AdaLomo's weight RMS) */
    double (*weights_sumsq)(const void *w, lomo_dtype dt, size_t n);
    /* AdamW with bias corrections bc1 = 1 - b1^t, bc2 = 1 - b2^t; m, v [n] f32 state */
    void (*adamw_update)(void *w, lomo_dtype dt, const float *g, float *m, float *v, size_t n, float lr,
                         float wd, float b1, float b2, float eps, float bc1, float bc2, uint64_t sr_seed);
    /*
     * Squared Frobenius norm of dW = dout^T inp [OC, IC] without forming it:
     * <inp inp^T, dout dout^T> through two [BT, BT] Gram matrices in gram
     * (2*BT*BT floats). If inp_gram_valid, gram already holds inp inp^T.
     */
    double (*linear_grad_sumsq_gram)(float *gram, int inp_gram_valid, const float *dout, const float *inp,
                                     int BT, int IC, int OC);
    /* w (dt) [n] = uniform in [-scale, scale] from a counter hash of (seed, i):
     * for benchmarks, which must not spend minutes drawing billions of weights on the host */
    void (*fill_uniform)(void *w, lomo_dtype dt, size_t n, uint64_t seed, float scale);
} lomo_backend;

/*
 * AdaLomo's step scalars from the sums of squares of the update u and of the
 * weights w over their n elements: *inv_d = 1 / max(1, rms(u) / clip) and
 * *lr_t = lr * max(eps2, rms(w)). One definition for both backends' whole
 * update and the engine's passes, so all three agree bit for bit.
 */
static inline void lomo_adalomo_scalars(float *lr_t, float *inv_d, double usq, double wsq, size_t n, float lr,
                                        float eps2, float clip) {
    float rms_u = (float)sqrt(usq / (double)n), rms_w = (float)sqrt(wsq / (double)n);
    *inv_d = 1.0f / fmaxf(1.0f, rms_u / clip);
    *lr_t = lr * fmaxf(eps2, rms_w);
}

const lomo_backend *lomo_backend_cpu(void);
#ifdef LOMO_HAVE_CUDA
/* The CUDA backend, opened from its module on first use (cuda_loader.c), or NULL with the reason in
 * why[] when the driver, the module or a usable device is not there. *unloadable (NULL: not asked)
 * := 1 when the NVIDIA driver is here but lomo's module could not be opened: a GPU machine on
 * which this lomo is not set up, which the default device should not pass over in silence. */
const lomo_backend *lomo_backend_cuda(char *why, size_t why_len, int *unloadable);
#endif
/* The CUDA module's one exported function: its backend, or NULL with the reason in why[]. abi is
 * the caller's digest of this header (LOMO_BACKEND_ABI); a module built with another is refused
 * before it touches the GPU, with *abi_ok := 0 (1 when the digests agree). */
#define LOMO_CUDA_MODULE_ENTRY "lomo_cuda_module_open"
typedef const lomo_backend *(*lomo_cuda_module_open_fn)(const char *abi, char *why, size_t why_len, int *abi_ok);

#ifdef __cplusplus
}
#endif

#endif /* LOMO_BACKEND_H */
