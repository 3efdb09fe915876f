/*
 * model.h: the LLaMA model's internals, shared by its files (layout, forward,
 * backward). Parameter order: embedding, then 9 per layer, then final norm,
 * then the LM head when it is not tied.
 */
#ifndef LOMO_MODEL_H
#define LOMO_MODEL_H

#include "internal.h"

/* floats of the constant buffer set aside for the update's finiteness gate (one int, 16 bytes kept) */
#define MODEL_GATE_FLOATS 4

enum { P_LN1, P_WQ, P_WK, P_WV, P_WO, P_LN2, P_WG, P_WU, P_WD, P_PER_LAYER };

typedef struct param_desc {
    char name[96];
    lomo_param_kind kind;
    int ndim;
    int64_t shape[2];
    size_t numel;
    size_t offset;              /* bytes into the weights allocation */
} param_desc;

/* One block's saved activations, all f32. */
typedef struct layer_acts {
    float *ln1, *rstd1;         /* [BT, C], [BT] */
    float *q, *k, *v;           /* [BT, NH*hd] post-RoPE, [BT, NKV*hd] post-RoPE, [BT, NKV*hd] */
    float *att;                 /* [B, NH, T, T] softmax probabilities */
    float *atty;                /* [BT, NH*hd] attention output before o_proj */
    float *xmid;                /* [BT, C] residual after attention */
    float *ln2, *rstd2;         /* [BT, C], [BT] */
    float *gate, *up, *hmlp;    /* [BT, F] each; hmlp = silu(gate) * up */
} layer_acts;

/* A block's attention output and softmax statistics, kept by LOMO_CHECKPOINT_KEEP_ATTENTION. */
typedef struct kept_attention {
    float *att, *atty;          /* as in layer_acts */
} kept_attention;

/*
 * The key/value cache of incremental decoding (decode.c): layer l's keys at
 * mem + 2l * B * cap * kvd and its values right after, each [B, cap, NKV*hd],
 * post-RoPE. len positions of each row are filled, from weights of version
 * `version` (lomo_model.weights_version when position 0 went in).
 */
typedef struct kv_cache {
    float *mem;
    size_t bytes;
    int B, cap, len;
    uint64_t version;
} kv_cache;

/* Activation gradients for one block at a time (backward scratch), f32. */
typedef struct block_grads {
    float *dres;                /* [BT, C] gradient of the residual stream */
    float *dln;                 /* [BT, C] gradient of a norm's output */
    float *dq, *dk, *dv;        /* [BT, NH*hd], [BT, NKV*hd] x2 */
    float *datt;                /* [B, NH, T, T] */
    float *datty;               /* [BT, NH*hd] */
    float *dh, *dup;            /* [BT, F]; dgate is written over dh */
} block_grads;

struct lomo_model {
    lomo_ctx *ctx;
    const lomo_backend *be;
    lomo_llama_config cfg;
    lomo_dtype dtype;
    int checkpointing;
    int logits_chunk_opt;       /* lomo_model_options.logits_chunk as given (model_logits_chunk resolves it) */
    int head_dim;

    int nparams;
    param_desc *params;
    void *weights;              /* every parameter, one allocation */
    size_t weights_bytes;

    float *rope_cos, *rope_sin; /* [rope_cap, hd/2] each, one allocation (scratch): model_rope_reserve */
    int rope_cap;               /* positions the tables hold: what forwards and the cache have needed */
    double *inv_freq;           /* [hd/2] host: each dimension pair's frequency, for growing the tables */
    float *wbuf;                /* f32 widening buffer for 16-bit linear weights; NULL for f32 */
    float *normw;               /* [C] f32 copy of a 16-bit norm weight */
    int *gate;                  /* the LOMO update's finiteness gate (backend.h check_finite), in device memory */
    size_t const_bytes;         /* bytes of wbuf + normw + gate (scratch) */

    /*
     * The gradient buffer: [C] for norms, then either the dense [V, C]
     * embedding (and tied head) gradient, or, for a hook with on_rows, the
     * embedding's touched rows [<= BT, C] with their ids and a token -> row map.
     */
    float *normgrad, *gradbuf;
    int32_t *erows, *emap;      /* [BT] each (sparse layout only) */
    int32_t *ecols;             /* [BT] each of erows's column in its chunk of the head's logits (sparse) */
    float *hrows;               /* [BT, C] a tied head's gradient at erows (sparse, when a hook wants it) */
    float *hchunk;              /* [hchunk_rows, C] a chunk of a [V, C] gradient (head, embedding, tied), for head passes */
    int hchunk_rows;
    size_t gradbuf_bytes;
    int gradbuf_dense;
    int gradbuf_rows;           /* row capacity of the sparse layout */
    int32_t *tokens_host;       /* [BT] host copy of the last forward's tokens */
    int32_t *erows_host;        /* [BT] host copy of erows */
    int32_t *head_pos_host;     /* [BT] host copy of head_pos */

    /* activations, sized for B_cap x T_cap */
    int B_cap, T_cap;
    void *act_mem;
    size_t act_bytes;
    float **x;                  /* [L+1] block inputs; x[L] is the final residual */
    layer_acts *la;             /* L sets, or 1 with checkpointing */
    kept_attention *kept;       /* blocks 0..L-2 under KEEP_ATTENTION (block L-1's stay in la[0]), else NULL */
    float *lnf, *rstdf;         /* [BT, C], [BT] */
    /*
     * [head_rows, logits_chunk] (at least [1, V]): the head's logits over one
     * chunk of the vocabulary, turned into dlogits in place by backward. With
     * the whole vocabulary in one chunk, forward's logits stay for backward
     * (logits_valid); in chunks, backward forms each chunk again.
     */
    float *logits;
    float *losses, *lse;        /* [head_rows] */
    int32_t *tokens;            /* [BT] */
    int32_t *targets;           /* [head_rows]: the targets of the head's rows */
    /*
     * Prompt masking leaves most rows without a target, and the LM head has
     * work only on those that have one: a forward with targets (and no
     * logits asked for) gathers those rows of lnf to its front and runs the
     * head and cross-entropy on them alone. head_pos [head_rows] are their
     * positions in [BT]; head_from [BT] maps each position back to its head
     * row, or to head_rows (a zeroed row) when it has none, so backward
     * spreads the head's dX with a gather. head_rows is BT when every row
     * runs the head.
     */
    int32_t *head_pos, *head_from;
    int head_rows;
    block_grads g;

    /*
     * A recorded backward (the LOMO norm pass) for replay: the residual-stream
     * gradient at every block input [L+1][BT, C] and after every attention
     * [L][BT, C], then the norm weights' gradients [2L+1][C]. Replaying needs
     * no dX GEMM except the down and o projections' (to reach SwiGLU and
     * attention inside the block); the logits buffer still holds dlogits.
     */
    float *rec;
    size_t rec_bytes;
    int rec_BT, rec_valid;
    float rec_scale;

    kv_cache kv;
    int decoding;               /* a block forward appends to kv and attends over it, from position kv_pos */
    int kv_pos;
    uint64_t weights_version;   /* changes whenever the weights may have (a backward's hook, a write) */

    /* state of the last forward */
    int B, T;
    int have_forward, have_targets, logits_valid;
    int acts_layer;             /* which layer la[0] holds under checkpointing; -1 none */
    int n_valid;
    float loss;
};

static inline int param_index(int layer, int which) { return 1 + layer * P_PER_LAYER + which; }
static inline int param_norm(const lomo_model *m) { return 1 + m->cfg.num_hidden_layers * P_PER_LAYER; }
/* The LM head's parameter: its own when untied, the embedding when tied. */
static inline int param_head(const lomo_model *m) { return m->cfg.tie_word_embeddings ? 0 : param_norm(m) + 1; }
static inline void *param_ptr(const lomo_model *m, int p) { return (char *)m->weights + m->params[p].offset; }

/* Block l's activations: its own set, or under checkpointing the one shared set with
 * block l's kept attention (KEEP_ATTENTION) in place of the shared buffers. */
static inline layer_acts model_layer_acts(const lomo_model *m, int l) {
    if (!m->checkpointing) return m->la[l];
    layer_acts a = m->la[0];
    if (m->kept && l < m->cfg.num_hidden_layers - 1) {
        a.att = m->kept[l].att;
        a.atty = m->kept[l].atty;
    }
    return a;
}

/* A norm weight as f32: the weights themselves for f32 storage, else widened into normw. */
const float *model_norm_weight(lomo_model *m, int p);

/* Re-points the activation buffers for a (B, T) within the reserved capacity. */
void model_layout_for(lomo_model *m, int B, int T);

typedef enum bwd_mode { BWD_PLAIN = 0, BWD_RECORD, BWD_REPLAY } bwd_mode;
/* lomo_model_backward, optionally recording the pass or replaying a recorded one
 * (same result, bit for bit, as a plain backward with the same weights). */
lomo_status model_backward(lomo_model *m, float loss_scale, const lomo_grad_hook *hook, bwd_mode mode);

/* inv_freq [hd/2]: the rotary frequency of each dimension pair under c's rope_theta and rope_scaling */
void rope_inv_freq(double *inv_freq, const lomo_llama_config *c, int hd);

/* the constant buffer (scratch) of a shaped model: the f32 widening buffer of the largest non-norm
 * weight (16-bit weights on a backend that needs it; else 0), a norm weight as f32 [C], and the
 * update gate */
size_t model_wbuf_floats(const lomo_model *m);
size_t model_const_bytes(const lomo_model *m);
/* bytes of the RoPE tables (scratch) for positions [0, npos): cos and sin [npos, hd/2] each */
size_t model_rope_bytes(const lomo_model *m, int npos);
/* The RoPE tables for positions [0, npos) at least: grown (never shrunk) to what a forward or the
 * key/value cache needs, so a model of 128K positions that trains at 1024 holds 1024 positions'
 * tables. LOMO_ERR_OOM (message set) when they do not fit; the tables are then empty. */
lomo_status model_rope_reserve(lomo_model *m, int npos);
/* Fills m's shape (config, parameter table, weights_bytes) for backend be
 * (whose rules size the buffers; not necessarily ctx's) without allocating
 * anything on a device; free(m->params) when done. For planning. */
lomo_status model_shape(lomo_model *m, lomo_ctx *ctx, const lomo_backend *be, const lomo_llama_config *cfg,
                        const lomo_model_options *opts);
/* Bytes of the activation allocation for (B, T). */
size_t model_activation_bytes(lomo_model *m, int B, int T);

/* lomo_model_create; with init = 0 the weights are left for a loader to fill. */
lomo_status model_create(lomo_model **out, lomo_ctx *ctx, const lomo_llama_config *cfg,
                         const lomo_model_options *opts, int init);

/*
 * Writes src f32 [n] into parameter p at element offset `first`, rounding to
 * the storage dtype: loaders fill a tensor slice by slice this way, so no f32
 * copy of a whole tensor is needed. The caller checks bounds.
 */
void model_param_write_f32(lomo_model *m, int p, size_t first, const float *src, size_t n);

/* Makes the gradient buffer fit this backward: dense, or sparse for BT rows (with hrows if asked),
 * and hchunk for a head's chunk of hchunk rows (0: none). */
lomo_status model_reserve_gradbuf(lomo_model *m, int dense, int hrows, int hchunk);

/* The vocabulary rows of the head's logits formed at a time (lomo_model_options.logits_chunk): at most V. */
int model_logits_chunk(const lomo_model *m);
/* logits [N, n] of vocabulary rows v0..v0+n-1 from the final norm output's first N rows */
void model_head_logits(lomo_model *m, int v0, int n);
/* out [rows, V] on the host: the head on inp [rows, C] (device), as many rows at a time as m->logits holds */
void model_head_to_host(lomo_model *m, float *out, const float *inp, int rows);
/* Floats of m->logits for BT positions. */
size_t model_logits_floats(const lomo_model *m, size_t BT);

/* Embedding, blocks and the final norm over tokens [B, T] (targets, if given, checked): m->lnf holds
 * the final norm's output. Under m->decoding the blocks run against the key/value cache. */
lomo_status model_forward_trunk(lomo_model *m, const int32_t *tokens, const int32_t *targets, int B, int T);

/* Block l's attention under decoding: appends a's k and v at kv_pos, attends a's q over the cache. */
void model_kv_attention(lomo_model *m, int l, const layer_acts *a);
void model_kv_free(lomo_model *m);

/* After a forward trunk over [B, T]: the head on each row's last position (position lengths[b] - 1,
 * or T - 1 without lengths), logits_out [B, V] on the host. */
void model_head_on_last(lomo_model *m, const int32_t *lengths, float *logits_out);


/* Block l's forward from x [BT, C] into a; out [BT, C] is its output, or NULL for a backward's
 * recompute (no down projection, and no attention when the model keeps its output). */
void model_block_forward(lomo_model *m, int l, const layer_acts *a, const float *x, float *out);

/* The graph's linear layers, timed into the profile, for the current B*T rows:
 * out [BT, OC] = inp [BT, IC] @ W_p^T, and dinp [BT, IC] = beta*dinp + dout [BT, OC] @ W_p. */
void model_linear(lomo_model *m, float *out, const float *inp, int p, int IC, int OC);
/* the same over `rows` rows of inp */
void model_linear_rows(lomo_model *m, float *out, const float *inp, int p, int rows, int IC, int OC);
/* the same with W_p's rows row0..row0+OC-1 only: out [rows, OC], dinp from dout [rows, OC] */
void model_linear_block(lomo_model *m, float *out, const float *inp, int p, int row0, int rows, int IC, int OC);
void model_linear_block_dinp(lomo_model *m, float *dinp, const float *dout, int p, int row0, float beta, int rows,
                             int IC, int OC);
void model_linear_dinp(lomo_model *m, float *dinp, const float *dout, int p, float beta, int IC, int OC);
void model_linear_dinp_rows(lomo_model *m, float *dinp, const float *dout, int p, float beta, int rows, int IC,
                            int OC);
/* The flops of a causal attention forward over (B, T) with the config's heads (the backward: twice). */
double model_attention_flops(const lomo_model *m);

#endif
