/*
 * test_model.c: the whole LLaMA model against PyTorch float64 fixtures
 * (logits, loss, every parameter gradient) for plain multi-head, GQA with odd
 * sizes, and tied embeddings; plus checkpointing, determinism, hook order and
 * the error paths of forward and backward.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model_check.h"

/* Records the order in which the hook sees parameters. */
typedef struct order_rec { int n, seen[4096], calls[4096], tied; } order_rec;
static int rec_linear(void *u, int p, const float *d, const float *x, int BT) {
    (void)d; (void)x; (void)BT;
    order_rec *r = u;
    r->seen[r->n++] = p;
    r->calls[p]++;
    return 0;
}
static int rec_dense(void *u, int p, float *g) { return rec_linear(u, p, g, NULL, 0); }
static int rec_rows(void *u, int p, const int32_t *rows, int n, float *g) {
    (void)rows; (void)n;
    return rec_linear(u, p, g, NULL, 0);
}
/* a tied weight's second part: recorded in the order, counted apart from the calls */
static int rec_tied(void *u, int p, const int32_t *rows, int n, float *g, const float *head) {
    (void)rows; (void)n; (void)g; (void)head;
    order_rec *r = u;
    r->seen[r->n++] = p;
    r->tied++;
    return 0;
}
static int fail_on_6(void *u, int p, float *g) { (void)u; (void)g; return p == 6; }
static int ok_linear(void *u, int p, const float *d, const float *x, int BT) {
    (void)u; (void)p; (void)d; (void)x; (void)BT;
    return 0;
}

static void test_fixture(const char *file) {
    setup s;
    if (load_setup(&s, file)) return;
    lomo_ctx *ctx;
    lomo_ctx_create(&ctx, NULL);
    lomo_model *m = make_model(ctx, &s, LOMO_F32, 0);
    if (!m) goto done;
    const lomo_llama_config *c = &s.cfg;
    size_t nlog = (size_t)s.B * s.T * c->vocab_size;
    float loss = 0, *logits = malloc(nlog * sizeof(float));
    lomo_grads *g = fwd_bwd(m, &s, &loss, logits);

    /* logits and loss */
    const double *want_logits = check_logits_loss(&s, logits, loss, file);
    double want_loss = fx_scalar(&s.fx, "loss");

    /* per-token log-probabilities: their mean over kept targets is minus the loss */
    {
        size_t bt = (size_t)s.B * s.T;
        float *lp = malloc(bt * sizeof(float));
        lomo_model_forward(m, s.tokens, s.targets, s.B, s.T, &loss, NULL);
        CHECK(lomo_model_token_logprobs(m, lp, bt) == LOMO_OK, "token_logprobs");
        double sum = 0;
        int kept = 0, zeros = 1;
        for (size_t i = 0; i < bt; i++) {
            if (s.targets[i] == -100) { zeros &= lp[i] == 0.0f; continue; }
            sum += lp[i];
            kept++;
            CHECK(lp[i] < 0.0f, "log-probability must be negative");
        }
        CHECK(zeros && fabs(-sum / kept - loss) <= 1e-6 * fabs(loss), "%s: logprobs disagree with the loss", file);
        CHECK(lomo_model_token_logprobs(m, lp, bt - 1) == LOMO_ERR_INVALID_ARG, "wrong length");
        free(lp);
    }

    /* next-token logits at each row's last position, full-length rows and rows of other lengths (what
     * follows a row's end cannot reach it), against PyTorch's; no backward may follow */
    {
        size_t V = (size_t)c->vocab_size;
        float *next = malloc((size_t)s.B * V * sizeof(float));
        double *want_next = malloc((size_t)s.B * V * sizeof(double));
        int32_t *lengths = malloc((size_t)s.B * sizeof(int32_t));
        for (int ragged = 0; ragged <= 1; ragged++) {
            for (int b = 0; b < s.B; b++) {
                lengths[b] = ragged ? s.T - (b * 5) % s.T : s.T;
                memcpy(want_next + b * V, want_logits + ((size_t)b * s.T + lengths[b] - 1) * V, V * sizeof(double));
            }
            CHECK(lomo_model_next_logits(m, s.tokens, s.B, s.T, ragged ? lengths : NULL, next) == LOMO_OK,
                  "next_logits: %s", lomo_last_error(ctx));
            CHECK(fx_compare("next logits", next, want_next, (size_t)s.B * V,
                             MODEL_ATOL_REL * fx_max_abs(want_logits, nlog), MODEL_RTOL) == 0,
                  "%s: next-token logits differ (ragged %d)", file, ragged);
        }
        lengths[0] = s.T + 1;
        CHECK(lomo_model_next_logits(m, s.tokens, s.B, s.T, lengths, next) == LOMO_ERR_INVALID_ARG &&
                  strstr(lomo_last_error(ctx), "lengths[0]"),
              "a length past T: %s", lomo_last_error(ctx));
        lengths[0] = 0;
        CHECK(lomo_model_next_logits(m, s.tokens, s.B, s.T, lengths, next) == LOMO_ERR_INVALID_ARG, "length 0");
        free(lengths);
        lomo_grad_hook h = {.on_linear = ok_linear, .on_dense = fail_on_6};   /* touches no user data */
        CHECK(lomo_model_backward(m, 1.0f, &h) == LOMO_ERR_STATE, "backward after next_logits must be refused");
        float one;
        CHECK(lomo_model_token_logprobs(m, &one, 1) == LOMO_ERR_STATE, "token_logprobs after next_logits");
        CHECK(lomo_model_next_logits(m, s.tokens, s.B, s.T, NULL, NULL) == LOMO_ERR_INVALID_ARG, "NULL logits_out");
        CHECK(lomo_model_next_logits(m, s.tokens, 0, s.T, NULL, next) == LOMO_ERR_INVALID_ARG, "batch 0");
        free(next);
        free(want_next);
    }

    /* every parameter gradient */
    int np = lomo_model_num_params(m);
    check_grads(m, &s, g, file);

    /* the comparison can fail: a 1e-4 relative error in the largest element of a gradient is caught */
    {
        lomo_param_info info;
        lomo_model_param(m, 1, &info);
        float *copy = malloc(info.numel * sizeof(float));
        memcpy(copy, lomo_grads_get(g, 1), info.numel * sizeof(float));
        size_t big = 0;
        for (size_t i = 0; i < info.numel; i++) big = fabsf(copy[i]) > fabsf(copy[big]) ? i : big;
        copy[big] *= 1.0001f;
        fprintf(stderr, "  (a deliberately perturbed gradient follows; it must fail)\n");
        CHECK(compare_grad(m, &s, 1, copy) > 0, "%s: perturbed gradient passed the comparison", file);
        free(copy);
    }

    /* without logits asked for, the head runs on the rows with a target only (the fixtures mask
     * some): the same loss and gradients, and a rerun of that path is bitwise identical */
    float loss2 = 0, loss3 = 0;
    lomo_grads *g2 = fwd_bwd(m, &s, &loss2, NULL), *again = fwd_bwd(m, &s, &loss3, NULL);
    char what[160];
    snprintf(what, sizeof what, "%s: head rows", file);
    check_loss(&s, loss2, what);
    check_grads(m, &s, g2, what);
    CHECK(loss3 == loss2 && bitwise_equal_grads(m, g2, again, 1.0f), "%s: rerun is not bitwise identical", file);
    lomo_grads_destroy(again);
    /* what follows runs that path: it is the reference from here on */
    lomo_grads_destroy(g);
    g = g2;
    loss = loss2;

    /* a hook without on_rows and on_tied gets the embedding's gradient dense (a tied one summed in
     * one [V, C] buffer): the same gradients */
    {
        lomo_grads *gd;
        lomo_grads_create(&gd, m);
        lomo_grad_hook h = lomo_grads_hook(gd);
        h.on_rows = NULL;
        h.on_tied = NULL;
        float ld;
        lomo_model_forward(m, s.tokens, s.targets, s.B, s.T, &ld, NULL);
        CHECK(lomo_model_backward(m, 1.0f, &h) == LOMO_OK, "dense backward");
        snprintf(what, sizeof what, "%s: dense embedding", file);
        check_grads(m, &s, gd, what);
        lomo_grads_destroy(gd);
    }

    /* two backward passes after one forward (the LOMO norm pass) give the same gradients, bit for bit */
    {
        lomo_grads *g3, *g4;
        lomo_grads_create(&g3, m);
        lomo_grads_create(&g4, m);
        lomo_grad_hook h3 = lomo_grads_hook(g3), h4 = lomo_grads_hook(g4);
        float l3;
        lomo_model_forward(m, s.tokens, s.targets, s.B, s.T, &l3, NULL);
        CHECK(lomo_model_backward(m, 1.0f, &h3) == LOMO_OK, "first backward");
        CHECK(lomo_model_backward(m, 1.0f, &h4) == LOMO_OK, "second backward");
        CHECK(bitwise_equal_grads(m, g, g3, 1.0f) && bitwise_equal_grads(m, g, g4, 1.0f),
              "%s: second backward differs from the first", file);
        lomo_grads_destroy(g3);
        lomo_grads_destroy(g4);
    }

    /* a recorded backward, then its replay: both give exactly the plain gradients, with and
     * without checkpointing; a replay without a record (or at another scale) is refused */
    for (int ckpt = LOMO_CHECKPOINT_OFF; ckpt <= LOMO_CHECKPOINT_KEEP_ATTENTION; ckpt++) {
        lomo_model_set_checkpointing(m, ckpt);
        lomo_grads *gr;
        lomo_grads_create(&gr, m);
        lomo_grad_hook h = lomo_grads_hook(gr);
        float l3;
        lomo_model_forward(m, s.tokens, s.targets, s.B, s.T, &l3, NULL);
        CHECK(model_backward(m, 1.0f, &h, BWD_REPLAY) == LOMO_ERR_STATE, "replay before record must fail");
        CHECK(model_backward(m, 1.0f, &h, BWD_RECORD) == LOMO_OK, "record");
        CHECK(bitwise_equal_grads(m, g, gr, 1.0f), "%s: recorded backward differs (ckpt %d)", file, ckpt);
        CHECK(model_backward(m, 2.0f, &h, BWD_REPLAY) == LOMO_ERR_STATE, "replay at another scale must fail");
        CHECK(model_backward(m, 1.0f, &h, BWD_RECORD) == LOMO_OK, "record again");
        lomo_grads_zero(gr);
        CHECK(model_backward(m, 1.0f, &h, BWD_REPLAY) == LOMO_OK, "replay");
        CHECK(bitwise_equal_grads(m, g, gr, 1.0f), "%s: replayed backward differs (ckpt %d)", file, ckpt);
        lomo_grads_destroy(gr);
    }
    lomo_model_set_checkpointing(m, 0);

    /* activation checkpointing, either mode: bitwise-identical loss and gradients, also over two
     * backward passes */
    for (int ckpt = LOMO_CHECKPOINT_BLOCKS; ckpt <= LOMO_CHECKPOINT_KEEP_ATTENTION; ckpt++) {
        lomo_model_set_checkpointing(m, ckpt);
        float lc;
        lomo_grads *gc = fwd_bwd(m, &s, &lc, NULL);
        CHECK(lc == loss && bitwise_equal_grads(m, g, gc, 1.0f), "%s: checkpointing %d changes gradients", file, ckpt);
        lomo_grads_zero(gc);
        lomo_grad_hook h = lomo_grads_hook(gc);
        CHECK(lomo_model_backward(m, 1.0f, &h) == LOMO_OK, "checkpointed second backward");
        CHECK(bitwise_equal_grads(m, g, gc, 1.0f), "%s: checkpointing %d: second backward differs", file, ckpt);
        lomo_grads_destroy(gc);
        lomo_model_set_checkpointing(m, 0);
    }

    /* loss scale multiplies every gradient exactly (a power of two) */
    {
        lomo_grads *gs;
        lomo_grads_create(&gs, m);
        lomo_grad_hook h = lomo_grads_hook(gs);
        float ls;
        lomo_model_forward(m, s.tokens, s.targets, s.B, s.T, &ls, NULL);
        lomo_model_backward(m, 1024.0f, &h);
        CHECK(bitwise_equal_grads(m, g, gs, 1024.0f), "%s: loss scale is not exact", file);
        lomo_grads_destroy(gs);
    }

    /* hook order: each parameter once, blocks last to first, embedding last; the embedding dense,
     * as rows, and a tied one in its two parts (the head's through on_linear first, the rows
     * through on_tied last) */
    for (int parts = 0; parts < 2; parts++) {
        order_rec *r = calloc(1, sizeof *r);
        lomo_grad_hook h = {.user = r, .on_linear = rec_linear, .on_dense = rec_dense,
                            .on_rows = parts ? rec_rows : NULL, .on_tied = parts ? rec_tied : NULL};
        float l;
        lomo_model_forward(m, s.tokens, s.targets, s.B, s.T, &l, NULL);
        lomo_model_backward(m, 1.0f, &h);
        int split = parts && c->tie_word_embeddings;
        int once = r->n == np + split && r->tied == split && (!split || r->seen[0] == 0);
        for (int p = 0; p < np; p++) once &= r->calls[p] == 1;
        CHECK(once, "%s: hook must see each of %d parameters once (saw %d calls, parts %d)", file, np, r->n, parts);
        int ordered = r->seen[r->n - 1] == 0;
        int L = c->num_hidden_layers, last_layer = L;
        for (int i = 0; i < r->n; i++) {
            int p = r->seen[i];
            if (p < 1 || p > L * 9) continue;
            int layer = (p - 1) / 9;
            if (layer > last_layer) ordered = 0;
            last_layer = layer;
        }
        CHECK(ordered, "%s: hook order is not last block to first, embedding last (parts %d)", file, parts);
        free(r);
    }

    /* a failing hook stops backward with a status naming the parameter */
    {
        lomo_grad_hook h = {.on_linear = ok_linear, .on_dense = fail_on_6};
        float l;
        lomo_model_forward(m, s.tokens, s.targets, s.B, s.T, &l, NULL);
        lomo_param_info info;
        lomo_model_param(m, 6, &info); /* layer 0 post_attention_layernorm */
        CHECK(lomo_model_backward(m, 1.0f, &h) == LOMO_ERR_CALLBACK &&
              strstr(lomo_last_error(ctx), info.name) != NULL,
              "%s: failing hook not reported: %s", file, lomo_last_error(ctx));
    }

    /* bf16 and f16 weights track the f32 model within their precision */
    for (int dt = LOMO_BF16; dt <= LOMO_F16; dt++) {
        lomo_model *m16 = make_model(ctx, &s, (lomo_dtype)dt, 0);
        float l16;
        lomo_model_forward(m16, s.tokens, s.targets, s.B, s.T, &l16, logits);
        double tol = dt == LOMO_BF16 ? 3e-2 : 4e-3;
        CHECK(fx_compare("logits 16-bit", logits, want_logits, nlog, tol * fx_max_abs(want_logits, nlog), tol) == 0,
              "%s: %s logits too far", file, lomo_dtype_name((lomo_dtype)dt));
        CHECK(fabs(l16 - want_loss) <= tol * fabs(want_loss), "%s: %s loss %.6g want %.6g", file,
              lomo_dtype_name((lomo_dtype)dt), l16, want_loss);
        lomo_model_destroy(m16);
    }

    lomo_grads_destroy(g);
    free(logits);
    lomo_model_destroy(m);
done:
    lomo_ctx_destroy(ctx);
    fx_free(&s.fx);
}

static void test_errors(void) {
    printf("== error paths\n");
    lomo_ctx *ctx;
    lomo_ctx_create(&ctx, NULL);
    lomo_llama_config c = {.hidden_size = 16, .intermediate_size = 24, .num_hidden_layers = 1,
                           .num_attention_heads = 2, .num_key_value_heads = 1, .vocab_size = 11,
                           .max_position_embeddings = 8, .rms_norm_eps = 1e-5, .rope_theta = 1e4};
    lomo_model *m;
    CHECK(lomo_model_create(&m, ctx, &c, NULL) == LOMO_OK, "create: %s", lomo_last_error(ctx));
    int32_t tok[4] = {1, 2, 3, 4}, tgt[4] = {2, 3, -100, 5};
    float loss;
    lomo_grads *g;
    lomo_grads_create(&g, m);
    lomo_grad_hook h = lomo_grads_hook(g);

    CHECK(lomo_model_backward(m, 1.0f, &h) == LOMO_ERR_STATE, "backward before forward must fail");
    tok[2] = 11;
    CHECK(lomo_model_forward(m, tok, tgt, 1, 4, &loss, NULL) == LOMO_ERR_INVALID_ARG &&
          strstr(lomo_last_error(ctx), "tokens[2] = 11"), "bad token: %s", lomo_last_error(ctx));
    tok[2] = 3;
    tgt[1] = -5;
    CHECK(lomo_model_forward(m, tok, tgt, 1, 4, &loss, NULL) == LOMO_ERR_INVALID_ARG &&
          strstr(lomo_last_error(ctx), "targets[1] = -5"), "bad target: %s", lomo_last_error(ctx));
    tgt[1] = 3;
    int32_t tok16[16], tgt16[16];
    for (int i = 0; i < 16; i++) { tok16[i] = i % 11; tgt16[i] = (i * 7) % 11; }
    CHECK(lomo_model_forward(m, tok16, tgt16, 4, 4, &loss, NULL) == LOMO_OK, "forward 4x4");
    int32_t long_tok[9] = {0};
    CHECK(lomo_model_forward(m, long_tok, NULL, 1, 9, NULL, NULL) == LOMO_ERR_INVALID_ARG &&
          strstr(lomo_last_error(ctx), "max_position_embeddings"), "long seq: %s", lomo_last_error(ctx));
    CHECK(lomo_model_forward(m, tok, tgt, 0, 4, &loss, NULL) == LOMO_ERR_INVALID_ARG, "zero batch");
    CHECK(lomo_model_forward(m, NULL, tgt, 1, 4, &loss, NULL) == LOMO_ERR_INVALID_ARG, "NULL tokens");
    /* inference only (no targets) then backward: refused */
    CHECK(lomo_model_forward(m, tok, NULL, 1, 4, NULL, NULL) == LOMO_OK, "inference forward");
    CHECK(lomo_model_backward(m, 1.0f, &h) == LOMO_ERR_STATE, "backward after inference forward");
    lomo_grad_hook half = {0};
    CHECK(lomo_model_backward(m, 1.0f, &half) == LOMO_ERR_INVALID_ARG, "hook without callbacks");
    /* all targets ignored: loss 0, zero gradients, no NaN */
    int32_t none[4] = {-100, -100, -100, -100};
    CHECK(lomo_model_forward(m, tok, none, 1, 4, &loss, NULL) == LOMO_OK && loss == 0.0f, "all ignored");
    lomo_grads_zero(g);
    CHECK(lomo_model_backward(m, 1.0f, &h) == LOMO_OK, "backward with all ignored");
    const float *ge = lomo_grads_get(g, 0);
    int zero = 1;
    for (int i = 0; i < 11 * 16; i++) zero &= ge[i] == 0.0f;
    CHECK(zero, "all-ignored batch must give zero gradients");
    /* smaller shapes after a larger reserve reuse the memory */
    lomo_mem_stats before, after;
    lomo_mem_get_stats(ctx, &before);
    CHECK(lomo_model_forward(m, tok, tgt, 1, 2, &loss, NULL) == LOMO_OK, "smaller forward");
    lomo_mem_get_stats(ctx, &after);
    CHECK(before.current[LOMO_MEM_ACTIVATIONS] == after.current[LOMO_MEM_ACTIVATIONS], "no realloc for smaller");
    lomo_param_info info;
    CHECK(lomo_model_param(m, 99, &info) == LOMO_ERR_INVALID_ARG, "param index out of range");
    float buf[3];
    CHECK(lomo_model_set_param_f32(m, 0, buf, 3) == LOMO_ERR_INVALID_ARG &&
          strstr(lomo_last_error(ctx), "model.embed_tokens.weight"), "wrong size: %s", lomo_last_error(ctx));
    CHECK(lomo_model_find_param(m, "model.layers.0.mlp.up_proj.weight") == 8, "find_param");
    CHECK(lomo_model_find_param(m, "nope") == -1, "find_param absent");
    CHECK(lomo_model_param(m, 8, &info) == LOMO_OK && strcmp(info.device, "cpu") == 0 && info.ndim == 2 &&
          info.shape[0] == 24 && info.shape[1] == 16 && info.dtype == LOMO_F32, "param info of up_proj");
    lomo_grads_destroy(g);
    lomo_model_destroy(m);
    lomo_ctx_destroy(ctx);
}

int main(void) {
    test_fixture("model_mha.bin");
    test_fixture("model_gqa.bin");
    test_fixture("model_tied.bin");
    test_errors();
    return test_summary("test_model");
}
