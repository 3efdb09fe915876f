/*
 * test_head_chunks.c: the LM head with its logits formed a chunk of the
 * vocabulary at a time (lomo_model_options.logits_chunk) against PyTorch's
 * float64 fixtures: logits, loss and every gradient, with the head's gradient
 * handed over chunk by chunk (on_linear_rows), or formed whole for a hook
 * without that callback; a tied head's gradient at the embedding's rows
 * (on_tied's head) against the head's own part; the [V, C] gradients in
 * passes (on_head_chunk); the recorded and replayed backward bit for bit;
 * and the memory the chunks save.
 */
#include <math.h>
#include "model_check.h"

#define CHUNK 16

/*
 * A hook around the accumulating one that also checks what a tied head hands
 * over: each chunk's rows once, in order, and on_tied's head rows against the
 * head's part the accumulated gradient holds at that moment.
 */
typedef struct watch {
    lomo_grad_hook inner;
    lomo_model *m;
    lomo_grads *g;
    int next_row;               /* the row the next chunk must start at */
    int chunks, tied_calls;
    double head_err;            /* largest |head - head's part| at the rows, over the largest |head's part| */
} watch;

static int watch_rows(void *u, int p, int row0, int nrows, const float *dout, const float *inp, int N) {
    watch *w = u;
    CHECK(row0 == w->next_row && nrows > 0 && nrows <= CHUNK, "chunk at row %d of %d rows, want row %d", row0, nrows,
          w->next_row);
    w->next_row = row0 + nrows;
    w->chunks++;
    return w->inner.on_linear_rows(w->inner.user, p, row0, nrows, dout, inp, N);
}

static int watch_tied(void *u, int p, const int32_t *rows, int nrows, float *grad, const float *head) {
    watch *w = u;
    int C = lomo_model_config(w->m)->hidden_size;
    const float *part = lomo_grads_get(w->g, p);   /* the head's part only, so far */
    double err = 0, big = 0;
    for (int i = 0; head && i < nrows; i++)
        for (int j = 0; j < C; j++) {
            double want = part[(size_t)rows[i] * C + j];
            err = fmax(err, fabs(head[(size_t)i * C + j] - want));
            big = fmax(big, fabs(want));
        }
    w->head_err = head && big > 0 ? err / big : INFINITY;
    w->tied_calls++;
    return w->inner.on_tied(w->inner.user, p, rows, nrows, grad, head);
}

static int watch_linear(void *u, int p, const float *d, const float *x, int BT) {
    watch *w = u;
    return w->inner.on_linear(w->inner.user, p, d, x, BT);
}
static int watch_dense(void *u, int p, float *grad) {
    watch *w = u;
    return w->inner.on_dense(w->inner.user, p, grad);
}
static int watch_erows(void *u, int p, const int32_t *rows, int n, float *grad) {
    watch *w = u;
    return w->inner.on_rows(w->inner.user, p, rows, n, grad);
}

/*
 * [V, C] gradients taken in passes (on_head_chunk, head_passes 2), around the
 * accumulating hook for everything else: an untied head's right after its
 * dX, then the embedding's (a tied weight's whole) at the end. Each tensor's
 * pass 0 chunks assemble its gradient, its pass 1 must give the same chunks,
 * bit for bit, in the same order; nothing else may carry these tensors.
 */
typedef struct passes {
    lomo_grad_hook inner;
    lomo_grads *g;
    int V, C, head;             /* head: the untied head's parameter, -1 if tied */
    int p, next_row, next_pass, calls, tensors, stray, mismatched;
} passes;

static int passes_chunk(void *u, int p, int pass, int row0, int nrows, float *grad) {
    passes *w = u;
    if (w->next_pass == 2 || w->p < 0) {   /* a tensor done (or none yet): the next one starts */
        w->p = p;
        w->next_pass = w->next_row = 0;
        w->tensors++;
    }
    CHECK(p == w->p && pass == w->next_pass && row0 == w->next_row && nrows > 0 && nrows <= CHUNK,
          "param %d pass %d chunk at row %d of %d rows; want param %d pass %d row %d", p, pass, row0, nrows, w->p,
          w->next_pass, w->next_row);
    float *whole = (float *)lomo_grads_get(w->g, p) + (size_t)row0 * w->C;   /* host memory on the CPU */
    size_t bytes = (size_t)nrows * w->C * sizeof(float);
    if (pass == 0) memcpy(whole, grad, bytes);
    else w->mismatched += memcmp(whole, grad, bytes) != 0;
    w->next_row = row0 + nrows;
    if (w->next_row == w->V) w->next_row = 0, w->next_pass++;
    w->calls++;
    return 0;
}
static int passes_dense(void *u, int p, float *grad) {
    passes *w = u;
    w->stray += p == 0 || p == w->head;
    return w->inner.on_dense(w->inner.user, p, grad);
}
static int passes_linear(void *u, int p, const float *d, const float *x, int BT) {
    passes *w = u;
    w->stray += p == w->head;
    return w->inner.on_linear(w->inner.user, p, d, x, BT);
}
static int passes_stray_rows(void *u, int p, const int32_t *rows, int n, float *grad) {
    passes *w = u;
    (void)p; (void)rows; (void)n; (void)grad;
    w->stray++;
    return 0;
}

/* the passes' gradients against PyTorch's, and the same chunks recorded and replayed */
static void check_passes(lomo_ctx *ctx, lomo_model *m, setup *s, const char *file) {
    const lomo_llama_config *c = lomo_model_config(m);
    int tensors = c->tie_word_embeddings ? 1 : 2, per_pass = (c->vocab_size + CHUNK - 1) / CHUNK;
    for (int mode = BWD_PLAIN; mode <= BWD_REPLAY; mode++) {
        passes w = {.V = c->vocab_size, .C = c->hidden_size, .head = c->tie_word_embeddings ? -1 : param_head(m),
                    .p = -1};
        lomo_grads_create(&w.g, m);
        w.inner = lomo_grads_hook(w.g);
        lomo_grad_hook h = {.user = &w, .on_linear = passes_linear, .on_dense = passes_dense,
                            .on_rows = passes_stray_rows, .on_head_chunk = passes_chunk, .head_passes = 2};
        float l;
        CHECK(lomo_model_forward(m, s->tokens, s->targets, s->B, s->T, &l, NULL) == LOMO_OK, "forward");
        if (mode == BWD_REPLAY) {
            CHECK(model_backward(m, 1.0f, &h, BWD_RECORD) == LOMO_OK, "record");
            lomo_grads_zero(w.g);
            w.p = -1;
            w.calls = w.tensors = 0;
        }
        CHECK(model_backward(m, 1.0f, &h, (bwd_mode)mode) == LOMO_OK, "backward in passes: %s", lomo_last_error(ctx));
        CHECK(w.calls == 2 * per_pass * tensors && w.tensors == tensors && w.next_pass == 2 && !w.stray &&
                  !w.mismatched,
              "%s (mode %d): %d chunk calls of %d over %d tensors, %d stray, %d chunks differ between the passes", file,
              mode, w.calls, 2 * per_pass * tensors, w.tensors, w.stray, w.mismatched);
        check_grads(m, s, w.g, mode == BWD_REPLAY ? "[V, C] gradients in passes, replayed" : "[V, C] gradients in passes");
        lomo_grads_destroy(w.g);
    }
}

static void test_fixture(const char *file) {
    setup s;
    if (load_setup(&s, file)) return;
    lomo_ctx *ctx;
    lomo_ctx_create(&ctx, NULL);
    const lomo_llama_config *c = &s.cfg;
    int V = c->vocab_size;
    CHECK(V > 2 * CHUNK, "vocabulary %d: several chunks wanted", V);
    lomo_model_options o = {.logits_chunk = CHUNK - 3};   /* rounded up to whole 16s */
    lomo_model *m = make_model_with(ctx, &s, &o);
    if (!m) goto done;
    CHECK(model_logits_chunk(m) == CHUNK, "a chunk of %d rows is %d", CHUNK - 3, model_logits_chunk(m));

    /* logits (formed a block of rows at a time for the host), loss, every gradient through on_linear_rows */
    size_t nlog = (size_t)s.B * s.T * V;
    float loss = 0, *logits = malloc(nlog * sizeof(float));
    lomo_grads *g = fwd_bwd(m, &s, &loss, logits);
    char what[160];
    snprintf(what, sizeof what, "%s, head in chunks", file);
    const double *want_logits = check_logits_loss(&s, logits, loss, what);
    check_grads(m, &s, g, file);
    lomo_grads_destroy(g);

    /* the head on the rows with a target only, and the chunks watched: each once, in order; a tied
     * head's rows at the embedding's tokens as its own part */
    for (int want_head = 0; want_head <= 1; want_head++) {
        watch w = {.m = m};
        lomo_grads_create(&w.g, m);
        w.inner = lomo_grads_hook(w.g);
        lomo_grad_hook h = {.user = &w, .on_linear = watch_linear, .on_dense = watch_dense, .on_rows = watch_erows,
                            .on_linear_rows = watch_rows, .on_tied = watch_tied, .tied_head = want_head};
        float l;
        CHECK(lomo_model_forward(m, s.tokens, s.targets, s.B, s.T, &l, NULL) == LOMO_OK, "forward");
        CHECK(lomo_model_backward(m, 1.0f, &h) == LOMO_OK, "backward: %s", lomo_last_error(ctx));
        CHECK(w.next_row == V && w.chunks == (V + CHUNK - 1) / CHUNK, "%s: chunks covered %d of %d rows in %d",
              file, w.next_row, V, w.chunks);
        check_grads(m, &s, w.g, "head rows only");
        if (c->tie_word_embeddings) {
            CHECK(w.tied_calls == 1, "%s: on_tied called %d times", file, w.tied_calls);
            if (want_head)
                CHECK(w.head_err < 1e-6, "%s: on_tied's head rows off by %.3g of the largest", file, w.head_err);
            else
                CHECK(isinf(w.head_err), "%s: head rows given without tied_head", file);
        }
        lomo_grads_destroy(w.g);
    }
    check_passes(ctx, m, &s, file);

    /* a hook without on_linear_rows gets the head's gradient whole (and the embedding's dense) */
    {
        lomo_grads *gd;
        lomo_grads_create(&gd, m);
        lomo_grad_hook h = lomo_grads_hook(gd);
        h.on_linear_rows = NULL;
        float l;
        lomo_model_forward(m, s.tokens, s.targets, s.B, s.T, &l, NULL);
        CHECK(lomo_model_backward(m, 1.0f, &h) == LOMO_OK, "backward, head whole: %s", lomo_last_error(ctx));
        check_grads(m, &s, gd, "head formed whole");
        lomo_grads_destroy(gd);
    }

    /* record and replay under each checkpointing mode: the plain gradients, bit for bit */
    {
        lomo_grads *ref = NULL;
        float lr;
        for (int ckpt = LOMO_CHECKPOINT_OFF; ckpt <= LOMO_CHECKPOINT_KEEP_ATTENTION; ckpt++) {
            lomo_model_set_checkpointing(m, ckpt);
            if (!ref) ref = fwd_bwd(m, &s, &lr, NULL);
            lomo_grads *gr;
            lomo_grads_create(&gr, m);
            lomo_grad_hook h = lomo_grads_hook(gr);
            lomo_model_forward(m, s.tokens, s.targets, s.B, s.T, &lr, NULL);
            CHECK(model_backward(m, 1.0f, &h, BWD_RECORD) == LOMO_OK, "record");
            CHECK(bitwise_equal_grads(m, ref, gr, 1.0f), "%s: chunked recorded backward differs (ckpt %d)", file,
                  ckpt);
            lomo_grads_zero(gr);
            CHECK(model_backward(m, 1.0f, &h, BWD_REPLAY) == LOMO_OK, "replay");
            CHECK(bitwise_equal_grads(m, ref, gr, 1.0f), "%s: chunked replayed backward differs (ckpt %d)", file,
                  ckpt);
            lomo_grads_destroy(gr);
        }
        lomo_grads_destroy(ref);
        lomo_model_set_checkpointing(m, LOMO_CHECKPOINT_OFF);
    }

    /* next-token logits, a block of rows at a time, against PyTorch's */
    {
        float *next = malloc((size_t)s.B * V * sizeof(float));
        double *want_next = malloc((size_t)s.B * V * sizeof(double));
        for (int b = 0; b < s.B; b++)
            memcpy(want_next + (size_t)b * V, want_logits + ((size_t)b * s.T + s.T - 1) * V, (size_t)V * sizeof(double));
        CHECK(lomo_model_next_logits(m, s.tokens, s.B, s.T, NULL, next) == LOMO_OK, "next_logits");
        CHECK(fx_compare("next logits", next, want_next, (size_t)s.B * V, MODEL_ATOL_REL * fx_max_abs(want_logits, nlog),
                         MODEL_RTOL) == 0, "%s: chunked next-token logits differ", file);
        free(next);
        free(want_next);
    }

    /* the default: chunks under checkpointing, the whole vocabulary without; the logits they save */
    {
        lomo_llama_config big = *c;
        big.vocab_size = 3 * LOMO_LOGITS_CHUNK + 5;
        size_t want = (size_t)s.B * s.T * (big.vocab_size - LOMO_LOGITS_CHUNK) * sizeof(float);
        for (int ckpt = LOMO_CHECKPOINT_OFF; ckpt <= LOMO_CHECKPOINT_BLOCKS; ckpt++) {
            lomo_model_options d = {.checkpointing = ckpt}, w = d, k = d;
            w.logits_chunk = big.vocab_size;
            k.logits_chunk = LOMO_LOGITS_CHUNK;
            lomo_plan pd, pw, pk;
            CHECK(lomo_plan_memory(ctx, &big, &d, NULL, s.B, s.T, &pd) == LOMO_OK &&
                      lomo_plan_memory(ctx, &big, &w, NULL, s.B, s.T, &pw) == LOMO_OK &&
                      lomo_plan_memory(ctx, &big, &k, NULL, s.B, s.T, &pk) == LOMO_OK, "plan: %s", lomo_last_error(ctx));
            size_t saved = pw.activations - pk.activations;
            CHECK(saved >= want && saved < want + 64, "%s: chunks save %zu bytes of logits, want %zu", file, saved, want);
            CHECK(pd.activations == (ckpt ? pk.activations : pw.activations),
                  "checkpointing %d: the default chunk is %s", ckpt, ckpt ? "LOMO_LOGITS_CHUNK" : "the vocabulary");
        }
        lomo_model_options d = {.logits_chunk = -1};
        lomo_plan pd;
        CHECK(lomo_plan_memory(ctx, &big, &d, NULL, s.B, s.T, &pd) == LOMO_ERR_INVALID_ARG &&
                  strstr(lomo_last_error(ctx), "logits_chunk"),
              "a negative chunk: %s", lomo_last_error(ctx));
        lomo_model *bad;
        CHECK(lomo_model_create(&bad, ctx, c, &d) == LOMO_ERR_INVALID_ARG &&
                  strstr(lomo_last_error(ctx), "logits_chunk"),
              "a negative chunk at create: %s", lomo_last_error(ctx));
    }

    free(logits);
    lomo_model_destroy(m);
done:
    lomo_ctx_destroy(ctx);
    fx_free(&s.fx);
}

int main(void) {
    test_fixture("model_mha.bin");
    test_fixture("model_gqa.bin");
    test_fixture("model_tied.bin");
    return test_summary("test_head_chunks");
}
