/*
 * lomo.h: the public C API of the lomo runtime.
 *
 * Everything lives under a lomo_ctx: the device backend, the memory
 * accounting and the last error text. There is no global mutable state, so
 * several contexts can live in one process. Every call that can fail returns
 * a lomo_status; the message for the last failure is lomo_last_error(ctx).
 * Nothing here calls exit() or abort().
 *
 * Shapes follow llm.c: B = batch, T = sequence length, C = hidden size,
 * V = vocabulary size, BT = B*T rows of the residual stream.
 */
#ifndef LOMO_H
#define LOMO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lomo_status {
    LOMO_OK = 0,
    LOMO_ERR_INVALID_ARG,   /* a caller passed something unusable */
    LOMO_ERR_CONFIG,        /* a model config field is invalid */
    LOMO_ERR_OOM,           /* an allocation failed */
    LOMO_ERR_IO,            /* a file could not be read or written */
    LOMO_ERR_FORMAT,        /* a file's contents are malformed */
    LOMO_ERR_STATE,         /* call order is wrong (e.g. backward before forward) */
    LOMO_ERR_NONFINITE,     /* a loss or gradient is NaN or infinite */
    LOMO_ERR_CALLBACK,      /* a gradient hook reported failure */
    LOMO_ERR_DEVICE,        /* the device (CUDA, cuBLAS) failed or is missing */
} lomo_status;

typedef enum lomo_dtype {
    LOMO_F32 = 0,
    LOMO_BF16 = 1,
    LOMO_F16 = 2,
} lomo_dtype;

/* Memory categories, accounted exactly (bytes requested from the backend). */
typedef enum lomo_mem_category {
    LOMO_MEM_WEIGHTS = 0,
    LOMO_MEM_ACTIVATIONS,
    LOMO_MEM_GRADIENTS,
    LOMO_MEM_OPTIMIZER,
    LOMO_MEM_SCRATCH,
    LOMO_MEM_COUNT
} lomo_mem_category;

typedef struct lomo_ctx lomo_ctx;
typedef struct lomo_model lomo_model;

typedef struct lomo_ctx_options {
    int num_threads;        /* 0: leave OpenMP/OpenBLAS defaults */
    /*
     * "cpu" or "cuda". NULL or "": the environment variable LOMO_DEVICE if
     * set, else cuda when this build has it and a GPU is present, else cpu.
     * Asking for cuda where there is none is an error naming why.
     */
    const char *device;
    /*
     * When lomo_ctx_create fails there is no context to ask for the reason:
     * it is written here (NUL-terminated, cut to why_len bytes). With no
     * buffer it goes to stderr instead.
     */
    char *why;
    size_t why_len;
    /*
     * 0: no limit. Else the most bytes of device memory the context's models
     * and optimizers may hold together (every category of lomo_mem_stats):
     * an allocation past it fails as out of memory, as the device's own would,
     * so a plan can be tried against a smaller device.
     */
    size_t memory_limit;
} lomo_ctx_options;

/*
 * Where a step's time goes, by kind of backend op, when profiling is on
 * (lomo_profile_enable). Each op then waits for the device before and after,
 * so the times are the ops' own; a profiled step runs a little slower.
 */
typedef enum lomo_op {
    LOMO_OP_EMBEDDING = 0,     /* lookup and its scatter backward */
    LOMO_OP_RMSNORM,
    LOMO_OP_MATMUL,            /* linear layers' forward and input gradient */
    LOMO_OP_WEIGHT_GRAD,       /* dW = dout^T inp, formed (baselines, clipping by value, adalomo) */
    LOMO_OP_LINEAR_UPDATE,     /* the fused LOMO update: w += alpha dout^T inp, no dW */
    LOMO_OP_ROPE,
    LOMO_OP_ATTENTION_FWD,
    LOMO_OP_ATTENTION_BWD,
    LOMO_OP_SWIGLU,
    LOMO_OP_RESIDUAL,          /* additions into the residual stream and gradient sums */
    LOMO_OP_CROSSENTROPY,
    LOMO_OP_OPTIMIZER,         /* elementwise updates of materialized gradients */
    LOMO_OP_GRAD_CHECK,        /* non-finite checks and squared norms */
    LOMO_OP_NORM_GRAM,         /* the norm pass's Gram-matrix route */
    LOMO_OP_COPY,              /* fills, device copies, host <-> device transfers */
    LOMO_OP_COUNT
} lomo_op;

typedef struct lomo_op_stats {
    uint64_t calls[LOMO_OP_COUNT];
    double seconds[LOMO_OP_COUNT];
    double flops[LOMO_OP_COUNT];   /* matrix products and attention; 0 for the others */
} lomo_op_stats;

typedef struct lomo_mem_stats {
    size_t current[LOMO_MEM_COUNT];
    size_t peak[LOMO_MEM_COUNT];
    size_t current_total;
    size_t peak_total;      /* peak of the sum, not the sum of peaks */
} lomo_mem_stats;

/*
 * RoPE frequency scaling, HF config.json's rope_scaling. Each kind changes only
 * the rotary frequencies: LINEAR divides every one by factor (position
 * interpolation); LLAMA3 (Llama 3.1 and later) divides the low frequencies by
 * factor, keeps the high ones and blends between. A zeroed struct is no scaling.
 */
typedef enum lomo_rope_type { LOMO_ROPE_DEFAULT = 0, LOMO_ROPE_LINEAR = 1, LOMO_ROPE_LLAMA3 = 2 } lomo_rope_type;

typedef struct lomo_rope_scaling {
    int rope_type;                          /* lomo_rope_type */
    double factor;                          /* LINEAR and LLAMA3: positive */
    double low_freq_factor;                 /* LLAMA3: 0 < low_freq_factor < high_freq_factor */
    double high_freq_factor;
    int original_max_position_embeddings;   /* LLAMA3: the context length before scaling */
} lomo_rope_scaling;

/* LLaMA-family config; field names are those of HF config.json. */
typedef struct lomo_llama_config {
    int hidden_size;
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads;
    int vocab_size;
    int max_position_embeddings;
    int tie_word_embeddings;  /* 0 or 1 */
    double rms_norm_eps;
    double rope_theta;
    lomo_rope_scaling rope_scaling;
} lomo_llama_config;

/*
 * Activation checkpointing: what a forward keeps for the backward.
 * OFF keeps every block's activations. BLOCKS keeps only each block's input
 * and recomputes the block in backward (one block's activations live at a
 * time). KEEP_ATTENTION is BLOCKS that also keeps each block's attention
 * output and softmax statistics, so the recompute skips attention, the
 * costliest op per byte kept (plan the memory with lomo_plan_memory).
 */
typedef enum lomo_checkpointing {
    LOMO_CHECKPOINT_OFF = 0,
    LOMO_CHECKPOINT_BLOCKS = 1,
    LOMO_CHECKPOINT_KEEP_ATTENTION = 2,
} lomo_checkpointing;

/* The LM head's vocabulary chunk under checkpointing (lomo_model_options.logits_chunk). */
#define LOMO_LOGITS_CHUNK 8192

typedef struct lomo_model_options {
    lomo_dtype dtype;          /* storage dtype of the weights */
    int checkpointing;         /* a lomo_checkpointing; 1 = BLOCKS, so a boolean works */
    uint64_t seed;             /* deterministic init */
    /*
     * How many vocabulary rows of the LM head a training forward and backward
     * form logits for at a time: 0 picks LOMO_LOGITS_CHUNK under checkpointing
     * and the whole vocabulary without; a value of at least the vocabulary is
     * the whole. In chunks, the logits kept are [positions, chunk] f32 instead
     * of [positions, vocabulary], and backward forms each chunk again (one
     * more head forward a backward); the loss is the same to float rounding.
     */
    int logits_chunk;
} lomo_model_options;

/* What kind of parameter a tensor is; the engine treats linear weights specially. */
typedef enum lomo_param_kind {
    LOMO_PARAM_EMBEDDING = 0,  /* [V, C] */
    LOMO_PARAM_NORM,           /* [C] */
    LOMO_PARAM_LINEAR,         /* [out, in], y = x W^T */
} lomo_param_kind;

typedef struct lomo_param_info {
    const char *name;          /* HF name, e.g. "model.layers.3.mlp.up_proj.weight" */
    lomo_param_kind kind;
    int ndim;
    int64_t shape[2];
    size_t numel;
    lomo_dtype dtype;
    const char *device;        /* the backend holding data: "cpu" or "cuda" */
    void *data;                /* device pointer to the weights, storage dtype */
} lomo_param_info;

/*
 * The per-parameter gradient hook. Backward visits blocks from last to first
 * and calls the hook the moment a parameter's gradient is final; after the
 * call the model never reads that gradient again, and it never reads that
 * parameter's weights again within this backward pass either (dX has already
 * been computed with the old weights), so the hook may update them.
 *
 * on_linear: the gradient of a linear weight is dW = dout^T inp, given as its
 *   two factors, dout [BT, out] and inp [BT, in] (f32, device). The hook may
 *   form dW or fuse it into an update (dW never needs to exist).
 * on_dense: any other gradient, materialized: grad is f32 [numel], device
 *   memory owned by the model that the hook may overwrite.
 * on_rows (optional): a gradient that is zero outside a few rows, given as
 *   those rows only: rows [nrows] sorted ascending (device), grad [nrows, cols]
 *   f32 (device, the hook may overwrite). The untied embedding uses it, so
 *   its gradient costs B*T rows instead of the vocabulary. When NULL, the
 *   model hands over the dense gradient through on_dense instead.
 * on_linear_rows (optional): a linear weight's gradient a block of its rows
 *   at a time: rows row0..row0+nrows-1 of dW = dout^T inp, dout [N, nrows],
 *   inp [N, in], N the positions it ran on. A model whose LM head forms its
 *   logits in vocabulary chunks (lomo_model_options.logits_chunk) hands the
 *   head over this way, chunk after chunk, each chunk's rows never read
 *   again by the backward once handed over. When NULL, such a model forms
 *   the head's whole gradient and hands it over through on_dense, and the
 *   embedding's too (no on_rows, no on_tied).
 * on_tied (optional): a tied LM head shares the embedding's weight [V, C],
 *   whose gradient then comes in two parts and no [V, C] gradient is ever
 *   formed: first the head's, through on_linear or on_linear_rows (param 0,
 *   in the head's turn, first of all), then, after every other parameter's,
 *   the embedding's through on_tied, as on_rows's rows (rows [nrows] sorted
 *   ascending, grad [nrows, C], the hook may overwrite grad); dW is the sum.
 *   For what needs both parts at once, such as the gradient's norm, a hook
 *   that sets tied_head gets the head's gradient at those rows as head
 *   [nrows, C] (device, the hook may overwrite it); else head is NULL. When
 *   on_tied is NULL, a tied model forms the dense gradient and calls
 *   on_dense once instead.
 * on_head_chunk with head_passes > 0 (optional): for what needs statistics
 *   of a whole [V, C] gradient before it can change any row (AdaLomo's
 *   factored moments), without a [V, C] buffer. When the head's logits come
 *   in vocabulary chunks, the model hands the [V, C] gradients over a chunk
 *   of rows at a time: an untied head's right after its dX, the embedding's
 *   at the end of backward (a tied weight's there too, head's part and
 *   embedding's summed). For each: pass 0 .. head_passes-1, each pass every
 *   chunk in row order, grad [nrows, C] for rows row0..row0+nrows-1 (device,
 *   formed again each pass, the hook may overwrite it). Those tensors go to
 *   no other callback. Ignored when the logits come whole.
 * Return 0 to continue; non-zero aborts backward with LOMO_ERR_CALLBACK.
 */
typedef struct lomo_grad_hook {
    void *user;
    int (*on_linear)(void *user, int param, const float *dout, const float *inp, int BT);
    int (*on_dense)(void *user, int param, float *grad);
    int (*on_rows)(void *user, int param, const int32_t *rows, int nrows, float *grad);
    int (*on_linear_rows)(void *user, int param, int row0, int nrows, const float *dout, const float *inp, int N);
    int (*on_tied)(void *user, int param, const int32_t *rows, int nrows, float *grad, const float *head);
    int tied_head;
    int (*on_head_chunk)(void *user, int param, int pass, int row0, int nrows, float *grad);
    int head_passes;
} lomo_grad_hook;

/* ---- context ---- */
lomo_status lomo_ctx_create(lomo_ctx **out, const lomo_ctx_options *opts);
void lomo_ctx_destroy(lomo_ctx *ctx);
const char *lomo_last_error(const lomo_ctx *ctx);
/* "cpu" or "cuda": the backend this context runs on. */
const char *lomo_ctx_device(const lomo_ctx *ctx);
void lomo_mem_get_stats(const lomo_ctx *ctx, lomo_mem_stats *out);
void lomo_mem_reset_peak(lomo_ctx *ctx);
const char *lomo_mem_category_name(lomo_mem_category c);
/* on = 1: time every backend op into the context's profile (see lomo_op); 0: stop (the default) */
void lomo_profile_enable(lomo_ctx *ctx, int on);
void lomo_profile_get(const lomo_ctx *ctx, lomo_op_stats *out);
void lomo_profile_reset(lomo_ctx *ctx);
const char *lomo_op_name(lomo_op op);
const char *lomo_status_name(lomo_status s);
const char *lomo_dtype_name(lomo_dtype d);
const char *lomo_rope_type_name(lomo_rope_type t);  /* "default", "linear", "llama3" as HF spells them */
int lomo_rope_type_from_name(const char *name);      /* the lomo_rope_type so named, -1 if none is */
size_t lomo_dtype_size(lomo_dtype d);
/*
 * What this build runs on, into out (NUL-terminated, cut to n bytes): the
 * BLAS library actually loaded and its threading (OpenMP, pthreads or none:
 * a pthread OpenBLAS next to OpenMP kernels makes two thread pools fight over
 * the cores), and whether the CUDA backend was built.
 */
void lomo_build_info(char *out, size_t n);

/* ---- config ---- */
/* Checks every field; on failure the error names the field. */
lomo_status lomo_config_validate(lomo_ctx *ctx, const lomo_llama_config *cfg);

/* ---- model ---- */
lomo_status lomo_model_create(lomo_model **out, lomo_ctx *ctx, const lomo_llama_config *cfg,
                              const lomo_model_options *opts);
void lomo_model_destroy(lomo_model *m);
const lomo_llama_config *lomo_model_config(const lomo_model *m);
int lomo_model_num_params(const lomo_model *m);
size_t lomo_model_num_weights(const lomo_model *m);       /* total scalar count */
lomo_status lomo_model_param(const lomo_model *m, int index, lomo_param_info *out);
int lomo_model_find_param(const lomo_model *m, const char *name);  /* -1 if absent */
/* Copies f32 values into a parameter, converting to its storage dtype. */
lomo_status lomo_model_set_param_f32(lomo_model *m, int index, const float *src, size_t n);
lomo_status lomo_model_get_param_f32(const lomo_model *m, int index, float *dst, size_t n);
/* Switches activation checkpointing (a lomo_checkpointing); the activations are re-reserved (with an
 * automatic logits_chunk, the head's chunk follows: LOMO_LOGITS_CHUNK rows under checkpointing). */
lomo_status lomo_model_set_checkpointing(lomo_model *m, int mode);

/* Allocates activations for (B, T); forward does this itself when needed. */
lomo_status lomo_model_reserve(lomo_model *m, int B, int T);

/*
 * Forward over tokens [B, T]. targets [B, T] (-100 = ignored) may be NULL for
 * inference, in which case *loss is not written. Loss is the mean token
 * cross-entropy over the targets that are not ignored (0 if all are).
 * logits_out [B, T, V], optional, receives a copy of the logits. Without it,
 * the LM head and the cross-entropy run on the positions that have a target
 * only (prompt masking leaves most without one): the same loss, gradients
 * and token_logprobs (to the rounding of the head's products), in less time.
 */
lomo_status lomo_model_forward(lomo_model *m, const int32_t *tokens, const int32_t *targets,
                               int B, int T, float *loss, float *logits_out);

/*
 * Backward from the last forward's loss times loss_scale. Calls the hook for
 * every parameter exactly once. Can be run several times after one forward
 * (the LOMO norm pass needs two); with checkpointing each run recomputes.
 */
lomo_status lomo_model_backward(lomo_model *m, float loss_scale, const lomo_grad_hook *hook);

/* After a forward with targets: log p(target) per token, out [B*T] (n = B*T), 0 where ignored. */
lomo_status lomo_model_token_logprobs(lomo_model *m, float *out, size_t n);

/*
 * Inference forward over tokens [B, T] that forms only what predicts each
 * row's next token: logits_out [B, V] receives row b's logits at position
 * lengths[b] - 1 (lengths [B], each in 1..T; NULL: every row is T long). The
 * LM head runs on B rows instead of B*T. Rows of different lengths batch
 * together: positions past a row's length may hold any valid id, since causal
 * attention keeps them out of the positions before. No backward may follow.
 */
lomo_status lomo_model_next_logits(lomo_model *m, const int32_t *tokens, int B, int T, const int32_t *lengths,
                                   float *logits_out);

/*
 * Incremental decoding (generation) with a key/value cache: tokens [B, n] are
 * positions pos..pos+n-1 of B sequences, and logits_out [B, V] receives the
 * logits that follow each row's last token. pos = 0 starts new sequences (a
 * prompt of any length, then one token a call, say); pos > 0 must continue the
 * cache exactly: the same B, pos equal to the positions filled so far, and the
 * same weights (after a training step or a parameter write, start again at 0;
 * continuing is refused with LOMO_ERR_STATE). The cache (2 * L * B * NKV * hd
 * floats a position, in activations memory) grows as needed up to
 * max_position_embeddings and is kept until the model is destroyed or
 * lomo_model_decode_reset. No backward may follow.
 */
lomo_status lomo_model_decode(lomo_model *m, const int32_t *tokens, int B, int n, int pos, float *logits_out);
/* Frees the key/value cache. */
void lomo_model_decode_reset(lomo_model *m);

/* Default hook: accumulates full f32 gradients (LOMO_MEM_GRADIENTS), for tests and baselines. */
typedef struct lomo_grads lomo_grads;
lomo_status lomo_grads_create(lomo_grads **out, lomo_model *m);
void lomo_grads_destroy(lomo_grads *g);
void lomo_grads_zero(lomo_grads *g);
lomo_grad_hook lomo_grads_hook(lomo_grads *g);
const float *lomo_grads_get(const lomo_grads *g, int param);   /* f32 [numel], device memory of the context */

/* ---- optimizers: the LOMO engine (DESIGN.md 1) ----
 *
 * lomo and adalomo update each parameter inside backward, the moment its
 * gradient is final, and keep no full gradients; sgd and adamw are baselines
 * that keep full gradients (and, for adamw, moments) as PyTorch does.
 *
 * Non-finite values: a non-finite loss skips the step before backward. With
 * a measuring pass (clip_grad_norm > 0, loss scaling, or guard_nonfinite)
 * every gradient is checked before any weight changes, so an overflow skips
 * the whole step. Without one, gradients are checked as they are applied; a
 * non-finite one (possible only by f32 overflow inside backward, since the
 * loss was finite) stops the step with LOMO_ERR_NONFINITE naming the
 * parameter, and the parameters after it in backward order keep their old
 * weights while those before it are updated (on a GPU the checks never wait
 * for the device: every update queued after a failed check leaves its weight
 * as it was). f16 storage always runs the measuring pass: it never applies
 * half a step.
 */
typedef enum lomo_optim_kind {
    LOMO_OPTIM_LOMO = 0,
    LOMO_OPTIM_ADALOMO,
    LOMO_OPTIM_SGD,
    LOMO_OPTIM_ADAMW,
} lomo_optim_kind;

typedef enum lomo_norm_method {
    LOMO_NORM_AUTO = 0,      /* per linear shape, whichever is faster, by measurement; the two
                                differ in the last bits, so pick one for bitwise-reproducible runs */
    LOMO_NORM_FORM_GRAD,     /* form dW = dY^T X in scratch, sum its squares */
    LOMO_NORM_GRAM,          /* <X X^T, dY dY^T>, two T x T Gram matrices */
} lomo_norm_method;

typedef struct lomo_optim_options {
    lomo_optim_kind kind;
    float weight_decay;        /* decoupled: w *= 1 - lr*wd */
    float clip_grad_norm;      /* > 0: global-norm clipping with a measuring pass */
    float clip_grad_value;     /* > 0: clamp every gradient element */
    int loss_scaling;          /* -1: on for f16 storage (default), 0 off, 1 on */
    float loss_scale_init;     /* 65536 */
    int loss_scale_window;     /* clean steps before the scale doubles: 1000 */
    int guard_nonfinite;       /* 1: always run the measuring pass (see above) */
    int stochastic_rounding;   /* 16-bit storage: round updates stochastically */
    uint64_t seed;             /* for stochastic rounding */
    lomo_norm_method norm_method;
    float adam_beta1, adam_beta2, adam_eps;           /* 0.9, 0.999, 1e-8 */
    float adalomo_decay, adalomo_eps1, adalomo_eps2;  /* -0.8, 1e-30, 1e-3 */
    float adalomo_clip;                                /* 1.0 */
} lomo_optim_options;

typedef struct lomo_step_result {
    float loss;
    float grad_norm;           /* global norm of the unscaled, unclipped gradient; NaN if not measured */
    int skipped;               /* 1: no weight changed this step */
    int nonfinite;             /* 1: a non-finite loss or gradient was found */
    float loss_scale;          /* the scale this step used (1 without scaling) */
} lomo_step_result;

typedef struct lomo_optim lomo_optim;

/* Fills the defaults above for that kind; the caller then edits fields. */
void lomo_optim_options_default(lomo_optim_options *o, lomo_optim_kind kind);
const char *lomo_optim_kind_name(lomo_optim_kind k);
lomo_status lomo_optim_create(lomo_optim **out, lomo_model *m, const lomo_optim_options *opts);
void lomo_optim_destroy(lomo_optim *o);
/* One training step on tokens/targets [B, T] with learning rate lr. */
lomo_status lomo_optim_step(lomo_optim *o, const int32_t *tokens, const int32_t *targets, int B, int T,
                            float lr, lomo_step_result *result);
float lomo_optim_loss_scale(const lomo_optim *o);
int64_t lomo_optim_steps(const lomo_optim *o);          /* updates applied so far */
/*
 * Optimizer state (updates applied, loss scale and its clean-step count, and
 * the moments of adalomo / adamw) to a file and back, for exact resume. The
 * write is atomic; loading checks the file against this optimizer and model.
 */
lomo_status lomo_optim_save(lomo_optim *o, const char *path);
lomo_status lomo_optim_load(lomo_optim *o, const char *path);

/* ---- memory plan: what a model needs, computed without allocating it ---- */
typedef struct lomo_plan {
    size_t weights, activations, gradients, optimizer, scratch;
    size_t total;              /* the sum: the peak of the accounted memory */
    /* generation (lomo_model_decode): the key/value cache's bytes per position of all B rows,
     * activations memory beyond the above; it grows 256 positions at a time, doubling (the RoPE
     * tables, scratch, follow it: head_dim * 4 bytes a position past T) */
    size_t kv_cache_per_position;
    int logits_chunk;          /* vocabulary rows of the LM head's logits formed at a time (the options' resolved) */
} lomo_plan;
/*
 * Bytes by category for batch B x seq T: inference when oo is NULL, else one
 * training step with that optimizer. Equal to what lomo_mem_get_stats reports
 * as peaks after such a step (the norm-method measurement aside).
 */
lomo_status lomo_plan_memory(lomo_ctx *ctx, const lomo_llama_config *cfg, const lomo_model_options *mo,
                             const lomo_optim_options *oo, int B, int T, lomo_plan *out);
/*
 * The same plan for device "cpu" or "cuda" (NULL: ctx's), whatever ctx runs
 * on: a GPU's plan on a machine without one, or from a build without CUDA.
 * The backends differ in what they keep (CUDA: no f32 widening buffer for
 * 16-bit weights, a head size limit of 256, attention statistics of B*NH*T
 * floats rather than the CPU's B*NH*T*T probabilities).
 */
lomo_status lomo_plan_memory_for(lomo_ctx *ctx, const char *device, const lomo_llama_config *cfg,
                                 const lomo_model_options *mo, const lomo_optim_options *oo, int B, int T,
                                 lomo_plan *out);

/* Testing aid: the next step's gradient of `param` is treated as non-finite. */
void lomo_optim_inject_nonfinite(lomo_optim *o, int param);

#ifdef __cplusplus
}
#endif

#include "lomo_io.h"
#include "lomo_tokenizer.h"

#endif /* LOMO_H */
