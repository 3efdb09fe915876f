/*
 * bench_cuda.c: first the two tensor-core attention families side by side (the
 * faster, when their bits agree, runs what follows unless LOMO_ATTENTION names
 * one); then LOMO training steps on the GPU for LLaMA shapes with random
 * weights (bf16, activation checkpointing, seq 1024): peak device memory, step
 * time, tokens/s and model FLOP utilization, at batch 1 and at the largest
 * batch the memory plan says fits; the 7B step again with checkpointing that
 * keeps attention outputs, and without checkpointing; then the largest LLaMA
 * shape that trains.
 *
 *   bench_cuda [--quick] [--out results.md]
 *
 * MFU counts 6 * N_nonembedding + 6 * L * T * C (causal attention: half of
 * PaLM's 12 L T C) FLOPs per token, against the dense bf16 peak of an
 * H100/H200 SXM, 989 TFLOP/s (override with LOMO_PEAK_TFLOPS).
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>
#include "runtime/model.h"
#include "tests/gpu/attention_pipe_support.h"

typedef struct shape {
    const char *name;
    int C, F, L, NH, NKV, V;
} shape;

static const shape SHAPES[] = {
    {"LLaMA 1B (TinyLlama)", 2048, 5632, 22, 32, 4, 32000},
    {"LLaMA-7B", 4096, 11008, 32, 32, 32, 32000},
    {"LLaMA-13B", 5120, 13824, 40, 40, 40, 32000},
    {"LLaMA-30B", 6656, 17920, 60, 52, 52, 32000},
    {"LLaMA-65B", 8192, 22016, 80, 64, 64, 32000},
    {"LLaMA-2-70B", 8192, 28672, 80, 64, 8, 32000},
};

static FILE *OUT;
/* the checkpointing mode of the models benchmarked (a lomo_checkpointing; the first tables: blocks) */
static int CKPT = LOMO_CHECKPOINT_BLOCKS;
/* the LM head's vocabulary rows at a time (lomo_model_options.logits_chunk; LOMO_BENCH_LOGITS_CHUNK):
 * 0, the product's default, is 8192 under checkpointing; 32000 keeps the logits whole */
static int LOGITS_CHUNK = 0;
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
    if (OUT) {
        va_start(ap, fmt);
        vfprintf(OUT, fmt, ap);
        va_end(ap);
        fflush(OUT);
    }
}

static lomo_llama_config config_of(const shape *s, int T) {
    return (lomo_llama_config){.hidden_size = s->C, .intermediate_size = s->F, .num_hidden_layers = s->L,
                               .num_attention_heads = s->NH, .num_key_value_heads = s->NKV, .vocab_size = s->V,
                               .max_position_embeddings = T, .tie_word_embeddings = 0, .rms_norm_eps = 1e-5,
                               .rope_theta = 10000.0};
}

static double nonembedding_params(const lomo_llama_config *c) {
    double C = c->hidden_size, F = c->intermediate_size, hd = C / c->num_attention_heads;
    double per = 2 * C * C + 2 * C * hd * c->num_key_value_heads + 3 * C * F + 2 * C;
    return per * c->num_hidden_layers + C + (double)c->vocab_size * C;   /* the LM head is a GEMM too */
}

/* Random weights on the device: the host never draws billions of numbers. */
static lomo_status random_model(lomo_model **out, lomo_ctx *ctx, const lomo_llama_config *cfg) {
    lomo_model_options mo = {.dtype = LOMO_BF16, .checkpointing = CKPT, .logits_chunk = LOGITS_CHUNK};
    lomo_status st = model_create(out, ctx, cfg, &mo, 0);
    if (st) return st;
    lomo_model *m = *out;
    float *ones = NULL;
    for (int p = 0; p < m->nparams; p++) {
        const param_desc *d = &m->params[p];
        if (d->kind == LOMO_PARAM_NORM) {
            ones = realloc(ones, d->numel * sizeof(float));
            for (size_t i = 0; i < d->numel; i++) ones[i] = 1.0f;
            model_param_write_f32(m, p, 0, ones, d->numel);
        } else {
            /* uniform with std 0.02 */
            m->be->fill_uniform(param_ptr(m, p), m->dtype, d->numel, 1000 + p, 0.02f * 1.7320508f);
        }
    }
    free(ones);
    return LOMO_OK;
}

typedef struct result {
    int ok;
    double step_s, tok_s, mfu;
    double fwd_s, attn_s;   /* one forward with loss; attention's share of a step (estimate) */
    double accounted_gib, used_gib;
    float loss;
    lomo_op_stats prof;     /* one more step, profiled op by op */
    double prof_step_s;
    char err[400];
} result;

static result bench_one(const shape *s, int B, int T, int steps, size_t free0) {
    result r = {0};
    lomo_ctx *ctx = NULL;
    lomo_ctx_options co = {.device = "cuda"};
    if (lomo_ctx_create(&ctx, &co)) {
        snprintf(r.err, sizeof r.err, "no cuda context");
        return r;
    }
    lomo_llama_config cfg = config_of(s, T);
    lomo_model *m = NULL;
    lomo_optim *o = NULL;
    lomo_optim_options oo;
    lomo_optim_options_default(&oo, LOMO_OPTIM_LOMO);
    int32_t *tok = malloc((size_t)B * T * 4), *tgt = malloc((size_t)B * T * 4);
    uint64_t z = 12345;
    for (int i = 0; i < B * T; i++) {
        z = z * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((z >> 33) % (uint64_t)s->V);
    }
    for (int i = 0; i < B * T; i++) tgt[i] = (i + 1) % T ? tok[i + 1] : -100;
    if (random_model(&m, ctx, &cfg) || lomo_optim_create(&o, m, &oo)) {
        snprintf(r.err, sizeof r.err, "%s", lomo_last_error(ctx));
        goto done;
    }
    lomo_step_result sr;
    /* the first step allocates activations and warms cuBLAS: not timed */
    if (lomo_optim_step(o, tok, tgt, B, T, 1e-5f, &sr)) {
        snprintf(r.err, sizeof r.err, "%s", lomo_last_error(ctx));
        goto done;
    }
    m->be->sync();
    double t0 = now();
    for (int i = 0; i < steps; i++) {
        if (lomo_optim_step(o, tok, tgt, B, T, 1e-5f, &sr)) {
            snprintf(r.err, sizeof r.err, "%s", lomo_last_error(ctx));
            goto done;
        }
    }
    m->be->sync();
    r.step_s = (now() - t0) / steps;
    /* where the time goes: a forward alone, and attention alone (forward twice, with the
     * recompute, and backward once per layer) */
    float loss;
    m->be->sync();
    t0 = now();
    lomo_model_forward(m, tok, tgt, B, T, &loss, NULL);
    m->be->sync();
    r.fwd_s = now() - t0;
    {
        const lomo_backend *be = m->be;
        int NH = cfg.num_attention_heads, NKV = cfg.num_key_value_heads, hd = cfg.hidden_size / NH;
        size_t nq = (size_t)B * T * NH * hd, nk = (size_t)B * T * NKV * hd, ns = be->attention_saved_floats(B, T, NH);
        float *q = be->alloc(nq * 4), *k = be->alloc(nk * 4), *v = be->alloc(nk * 4), *ao = be->alloc(nq * 4);
        float *dq = be->alloc(nq * 4), *dk = be->alloc(nk * 4), *dv = be->alloc(nk * 4), *dy = be->alloc(nq * 4);
        float *sv = be->alloc(ns * 4), *sc = be->alloc(be->attention_scratch_floats(B, T, NH) * 4);
        if (q && k && v && ao && dq && dk && dv && dy && sv && sc) {
            be->fill_uniform(q, LOMO_F32, nq, 1, 1.0f);
            be->fill_uniform(k, LOMO_F32, nk, 2, 1.0f);
            be->fill_uniform(v, LOMO_F32, nk, 3, 1.0f);
            be->fill_uniform(dy, LOMO_F32, nq, 4, 1.0f);
            be->attention_forward(ao, sv, q, k, v, B, T, NH, NKV, hd, LOMO_BF16);
            be->sync();
            t0 = now();
            be->attention_forward(ao, sv, q, k, v, B, T, NH, NKV, hd, LOMO_BF16);
            be->sync();
            double tf = now() - t0;
            t0 = now();
            be->attention_backward(dq, dk, dv, sc, dy, ao, sv, q, k, v, B, T, NH, NKV, hd, LOMO_BF16);
            be->sync();
            double tb = now() - t0;
            /* the recompute is a second forward unless the attention output was kept */
            r.attn_s = cfg.num_hidden_layers * ((CKPT == LOMO_CHECKPOINT_BLOCKS ? 2 : 1) * tf + tb);
        }
        void *bufs[] = {q, k, v, ao, dq, dk, dv, dy, sv, sc};
        for (int i = 0; i < 10; i++) be->free(bufs[i]);
    }
    /* and op by op: one more step with the profile on (each op drained, so a little slower) */
    lomo_profile_reset(ctx);
    lomo_profile_enable(ctx, 1);
    t0 = now();
    if (lomo_optim_step(o, tok, tgt, B, T, 1e-5f, &sr)) {
        snprintf(r.err, sizeof r.err, "%s", lomo_last_error(ctx));
        goto done;
    }
    m->be->sync();
    r.prof_step_s = now() - t0;
    lomo_profile_enable(ctx, 0);
    lomo_profile_get(ctx, &r.prof);
    r.loss = sr.loss;
    r.tok_s = B * T / r.step_s;
    const char *peak_env = getenv("LOMO_PEAK_TFLOPS");
    double peak = (peak_env ? atof(peak_env) : 989.0) * 1e12;
    double flops_tok = 6 * nonembedding_params(&cfg) + 6.0 * cfg.num_hidden_layers * T * cfg.hidden_size;
    r.mfu = flops_tok * r.tok_s / peak;
    lomo_mem_stats ms;
    lomo_mem_get_stats(ctx, &ms);
    r.accounted_gib = ms.peak_total / 1073741824.0;
    size_t fr, tot;
    cudaMemGetInfo(&fr, &tot);
    r.used_gib = (double)(free0 - fr) / 1073741824.0;   /* everything this run holds: plan, scratch, cuBLAS */
    r.ok = 1;
done:
    lomo_optim_destroy(o);
    lomo_model_destroy(m);
    lomo_ctx_destroy(ctx);
    free(tok);
    free(tgt);
    return r;
}

/* The plan's total for one LOMO step, in GiB. */
static double plan_gib(const shape *s, int B, int T) {
    lomo_ctx *ctx = NULL;
    lomo_ctx_options co = {.device = "cuda"};
    if (lomo_ctx_create(&ctx, &co)) return 1e9;
    lomo_llama_config cfg = config_of(s, T);
    lomo_model_options mo = {.dtype = LOMO_BF16, .checkpointing = CKPT, .logits_chunk = LOGITS_CHUNK};
    lomo_optim_options oo;
    lomo_optim_options_default(&oo, LOMO_OPTIM_LOMO);
    lomo_plan p;
    double g = lomo_plan_memory(ctx, &cfg, &mo, &oo, B, T, &p) ? 1e9 : p.total / 1073741824.0;
    lomo_ctx_destroy(ctx);
    return g;
}

static void row(const shape *s, int B, int T, const result *r, double plan) {
    if (r->ok)
        say("| %s | %d | %d | %.2f | %.2f | %.2f | %.3f | %.3f | %.3f | %.0f | %.1f%% | %.3f |\n", s->name, B, T,
            plan, r->accounted_gib, r->used_gib, r->step_s, r->fwd_s, r->attn_s, r->tok_s, 100 * r->mfu, r->loss);
    else
        say("| %s | %d | %d | %.2f | failed: %s |\n", s->name, B, T, plan, r->err);
}

/* The largest power-of-two batch (up to 64) the plan fits into budget GiB; 0 if none. */
static int largest_batch(const shape *s, int T, double budget, int quick) {
    int best = 0;
    for (int B = 1; B <= 64; B *= 2)
        if (plan_gib(s, B, T) <= budget) best = B;
    return quick && best > 8 ? 8 : best;
}

/* Benchmarks s at batch *B, halving it while the device runs out of memory (each failure a row). */
static result bench_fitting(const shape *s, int *B, int T, int steps, size_t free0) {
    result r = bench_one(s, *B, T, *B > 8 ? 2 : steps, free0);
    while (!r.ok && *B > 1 && strstr(r.err, "out of")) {
        row(s, *B, T, &r, plan_gib(s, *B, T));
        *B /= 2;
        r = bench_one(s, *B, T, *B > 8 ? 2 : steps, free0);
    }
    row(s, *B, T, &r, plan_gib(s, *B, T));
    return r;
}

static void table_head(void) {
    say("| shape | batch | seq | plan GiB | accounted GiB | used GiB | step s | forward s | attention s/step | "
        "tokens/s | MFU | loss |\n");
    say("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
}

/* The profiled step of r, op by op, slowest first: calls, time, share, achieved TFLOP/s. */
static void profile_table(const shape *s, int B, int T, const result *r) {
    if (!r->ok) return;
    double total = 0;
    int order[LOMO_OP_COUNT], n = 0;
    for (int op = 0; op < LOMO_OP_COUNT; op++) {
        total += r->prof.seconds[op];
        if (r->prof.calls[op]) order[n++] = op;
    }
    for (int i = 1; i < n; i++)   /* insertion sort by time, descending */
        for (int j = i; j > 0 && r->prof.seconds[order[j]] > r->prof.seconds[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    say("\n%s, batch %d, seq %d: one profiled step, %.3f s (the ops' own time %.3f s; unprofiled step %.3f s)\n\n",
        s->name, B, T, r->prof_step_s, total, r->step_s);
    say("| op | calls | s | share | TFLOP/s |\n|---|---|---|---|---|\n");
    for (int i = 0; i < n; i++) {
        int op = order[i];
        double sec = r->prof.seconds[op], fl = r->prof.flops[op];
        if (fl > 0 && sec > 0)
            say("| %s | %llu | %.4f | %.1f%% | %.1f |\n", lomo_op_name((lomo_op)op),
                (unsigned long long)r->prof.calls[op], sec, 100 * sec / total, fl / sec / 1e12);
        else
            say("| %s | %llu | %.4f | %.1f%% | - |\n", lomo_op_name((lomo_op)op),
                (unsigned long long)r->prof.calls[op], sec, 100 * sec / total);
    }
}

/*
 * The attention kernel families for 16-bit models side by side on the 7B
 * attention shape (NH = NKV = 32, hd 128, bf16) at batch B: each family's
 * forward and backward timed alone (the best of three after a warm-up),
 * TFLOP/s counted as the profile counts them (forward 2 B NH T^2 hd for
 * causal attention, backward twice that), and whether its outputs are the
 * mma family's bit for bit. *faster (NULL: not asked): 1 if pipe ran and beat
 * mma with the same bits. LOMO_ATTENTION is read at every call (cuda_backend.cu), so the
 * families run in this one process, on the same inputs.
 */
static void attention_families(const lomo_backend *be, int B, int T, int *faster) {
    const int NH = 32, NKV = 32, hd = 128;
    const char *fam[] = {"mma", "pipe"};
    size_t nq = (size_t)B * T * NH * hd, nk = (size_t)B * T * NKV * hd, ns = be->attention_saved_floats(B, T, NH);
    float *q = be->alloc(nq * 4), *k = be->alloc(nk * 4), *v = be->alloc(nk * 4), *dy = be->alloc(nq * 4);
    float *ao = be->alloc(nq * 4), *sv = be->alloc(ns * 4), *dq = be->alloc(nq * 4), *dk = be->alloc(nk * 4);
    float *dv = be->alloc(nk * 4), *sc = be->alloc(be->attention_scratch_floats(B, T, NH) * 4);
    float *host[2] = {malloc((2 * nq + 2 * nk) * 4), malloc((2 * nq + 2 * nk) * 4)};
    double t[2][2] = {{0, 0}, {0, 0}};
    int ok = q && k && v && dy && ao && sv && dq && dk && dv && sc && host[0] && host[1];
    if (ok) {
        be->fill_uniform(q, LOMO_F32, nq, 11, 1.0f);
        be->fill_uniform(k, LOMO_F32, nk, 12, 1.0f);
        be->fill_uniform(v, LOMO_F32, nk, 13, 1.0f);
        be->fill_uniform(dy, LOMO_F32, nq, 14, 1.0f);
    }
    int nfam = attention_pipe_runs_here(hd) ? 2 : 1;
    for (int f = 0; ok && f < nfam; f++) {
        setenv("LOMO_ATTENTION", fam[f], 1);
        for (int pass = 0; pass < 2; pass++) {   /* the best of three after a warm-up */
            double best = 1e30;
            for (int rep = 0; rep < 4; rep++) {
                be->sync();
                double t0 = now();
                if (pass == 0) be->attention_forward(ao, sv, q, k, v, B, T, NH, NKV, hd, LOMO_BF16);
                else be->attention_backward(dq, dk, dv, sc, dy, ao, sv, q, k, v, B, T, NH, NKV, hd, LOMO_BF16);
                be->sync();
                if (rep) best = fmin(best, now() - t0);
            }
            t[f][pass] = best;
        }
        float *h = host[f];
        be->to_host(h, ao, nq * 4);
        be->to_host(h + nq, dq, nq * 4);
        be->to_host(h + 2 * nq, dk, nk * 4);
        be->to_host(h + 2 * nq + nk, dv, nk * 4);
    }
    unsetenv("LOMO_ATTENTION");
    const char *err = be->error();
    if (!ok || err) {
        say("| attention B%d | %s |\n", B, err ? err : "out of device memory");
    } else {
        int same = nfam == 2 && !memcmp(host[0], host[1], (2 * nq + 2 * nk) * 4);
        double fl = 2.0 * B * NH * (double)T * T * hd;
        for (int f = 0; f < nfam; f++)
            say("| %s | %d | %d | %.3f | %.1f | %.3f | %.1f | %s |\n", fam[f], B, T, t[f][0] * 1e3, fl / t[f][0] / 1e12,
                t[f][1] * 1e3, 2 * fl / t[f][1] / 1e12, f == 0 ? "-" : same ? "yes" : "NO");
        if (nfam < 2)
            say("| pipe | %d | %d | not on this GPU: its opt-in shared memory a block is below the kernels' |\n", B,
                T);
        if (faster) *faster = nfam == 2 && same && t[1][0] + t[1][1] < t[0][0] + t[0][1];
    }
    void *bufs[] = {q, k, v, dy, ao, sv, dq, dk, dv, sc};
    for (int i = 0; i < 10; i++) be->free(bufs[i]);
    free(host[0]);
    free(host[1]);
}

/*
 * The families' table in a child process: 77 if no GPU is usable, 10 if pipe beat mma at batch 8
 * with the same bits, 0 if not, another status if the child failed (1000 + the signal if a signal
 * ended it). The child inherits OUT (say flushes every line, so nothing is written twice).
 */
static int families_in_child(void) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return 2;
    if (pid == 0) {
        char why[256] = "";
        const lomo_backend *gpu = lomo_backend_cuda(why, sizeof why, NULL);
        if (!gpu) {
            printf("SKIP: no usable GPU: %s\n", why);
            fflush(stdout);
            _exit(77);
        }
        say("Attention kernels for 16-bit models on the 7B attention shape (32 heads of 128, bf16; forward "
            "and backward each timed alone, the best of three): mma = attention_tc.cu (tiles rounded from f32 "
            "between barriers), pipe = the same products from 16-bit copies, tiles double-buffered with "
            "cp.async).\n\n"
            "| family | batch | seq | forward ms | TFLOP/s | backward ms | TFLOP/s | same bits as mma |\n"
            "|---|---|---|---|---|---|---|---|\n");
        int faster8 = 0;   /* the choice is batch 8's */
        attention_families(gpu, 1, 1024, NULL);
        attention_families(gpu, 8, 1024, &faster8);
        fflush(stdout);
        _exit(gpu->error() ? 1 : faster8 ? 10 : 0);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return 3;
    return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 1000 + WTERMSIG(st) : 4;
}

int main(int argc, char **argv) {
    int quick = 0;
    const char *out_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out_path = argv[++i];
    }
    if (out_path && !(OUT = fopen(out_path, "w"))) {
        perror(out_path);
        return 1;
    }
    /* the attention families first, in a child process (CUDA is not used here before it ends): a
     * fault of one is sticky for the process, and must not cost the tables below. The faster of
     * mma and pipe (same bits) runs the steps, unless LOMO_ATTENTION names a family. */
    char att_set[16] = "";
    if (getenv("LOMO_ATTENTION")) snprintf(att_set, sizeof att_set, "%s", getenv("LOMO_ATTENTION"));
    int fam = families_in_child();
    if (fam == 77) return 77;
    if (fam != 0 && fam != 10) say("(the attention families' table did not finish: %s %d)\n",
                                   fam >= 1000 ? "signal" : "exit status", fam >= 1000 ? fam - 1000 : fam);
    int pipe_b8 = fam == 10;
    if (att_set[0]) setenv("LOMO_ATTENTION", att_set, 1);
    else if (pipe_b8) setenv("LOMO_ATTENTION", "pipe", 1);
    say("\n");
    char why[256] = "";
    if (!lomo_backend_cuda(why, sizeof why, NULL)) {
        printf("SKIP: no usable GPU: %s\n", why);
        return 77;
    }
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    size_t free0, total;
    cudaMemGetInfo(&free0, &total);
    time_t t = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%d", gmtime(&t));
    say("GPU: %s, %.1f GiB (%.1f free), %d SMs; %s\n\n", prop.name, total / 1073741824.0, free0 / 1073741824.0,
        prop.multiProcessorCount, date);
    const char *att = getenv("LOMO_ATTENTION"), *chunk = getenv("LOMO_BENCH_LOGITS_CHUNK");
    LOGITS_CHUNK = chunk && *chunk ? atoi(chunk) : 0;
    say("LOMO step (plain SGD fused into backward), bf16 weights, activation checkpointing, random weights; "
        "attention kernels: %s%s; the LM head's logits %d vocabulary rows at a time (0: 8192 under checkpointing).\n",
        att && *att ? att : "default (mma)",
        att_set[0] ? " (LOMO_ATTENTION)" : pipe_b8 ? " (faster above at batch 8, same bits)" : "", LOGITS_CHUNK);
    say("plan = lomo_plan_memory total; accounted = the runtime's peak; used = cudaMemGetInfo delta "
        "(adds scratch, cuBLAS workspace, CUDA context). forward = one forward with the loss; attention = "
        "the flash-attention kernels' time in one step (two forwards, one backward per layer), timed alone.\n\n");
    table_head();
    int T = 1024, steps = quick ? 2 : 3;
    result r7[2];   /* 7B at batch 1 and at its largest batch, for the profiles */
    int b7[2] = {1, 1};
    memset(r7, 0, sizeof r7);
    double budget = free0 / 1073741824.0 - 4.0;   /* headroom for scratch, workspace, fragmentation */
    for (int si = 0; si < 2; si++) {
        const shape *s = &SHAPES[si];
        result r = bench_one(s, 1, T, steps, free0);
        row(s, 1, T, &r, plan_gib(s, 1, T));
        if (si == 1) r7[0] = r;
        int best = largest_batch(s, T, budget, quick);
        if (best > 1) {
            /* big batches: fewer timed steps, the run must stay within minutes */
            r = bench_fitting(s, &best, T, steps, free0);
            if (si == 1) {
                r7[1] = r;
                b7[1] = best;
            }
        }
    }
    say("\nWhere the 7B step's time goes: every backend op timed alone (lomo_profile_enable); matmul = the linear "
        "layers' forward, recompute and input gradients, linear_update = the fused LOMO weight update; flops "
        "are those each op performs, recompute included.\n");
    for (int i = 0; i < 2; i++) profile_table(&SHAPES[1], b7[i], T, &r7[i]);

    /* Checkpointing that also keeps every block's attention output: the recompute skips attention
     * (31 of the 63 attention forwards of a 7B step) for about 4 * B * T * C bytes more a block (the
     * output in f32 and each row's log-sum-exp). */
    CKPT = LOMO_CHECKPOINT_KEEP_ATTENTION;
    say("\nLLaMA-7B with checkpointing that keeps each block's attention output (LOMO_CHECKPOINT_KEEP_ATTENTION: "
        "the recompute skips attention), batch 1 and the largest batch that fits:\n\n");
    table_head();
    {
        result rk = bench_one(&SHAPES[1], 1, T, steps, free0);
        row(&SHAPES[1], 1, T, &rk, plan_gib(&SHAPES[1], 1, T));
        int bk = largest_batch(&SHAPES[1], T, budget, quick);
        if (bk > 1) {
            rk = bench_fitting(&SHAPES[1], &bk, T, steps, free0);
            profile_table(&SHAPES[1], bk, T, &rk);
        }
    }

    /* Without checkpointing there is no recompute (6N instead of 8N GEMM flops a token) and
     * every block keeps its activations: what a GPU with room to spare would run. */
    CKPT = LOMO_CHECKPOINT_OFF;
    int bn = largest_batch(&SHAPES[1], T, budget, quick);
    say("\nLLaMA-7B without activation checkpointing (every block's activations kept, no recompute), the "
        "largest batch that fits:\n\n");
    table_head();
    if (bn) {
        result rn = bench_fitting(&SHAPES[1], &bn, T, 2, free0);
        profile_table(&SHAPES[1], bn, T, &rn);
    } else {
        say("| LLaMA-7B | 1 | %d | %.2f | does not fit |\n", T, plan_gib(&SHAPES[1], 1, T));
    }
    CKPT = LOMO_CHECKPOINT_BLOCKS;
    /* the largest shape that trains: from the largest down, batch 1 */
    say("\nLargest LLaMA shape that trains here (batch 1, seq %d, 2 timed steps):\n\n", T);
    table_head();
    for (int si = (int)(sizeof SHAPES / sizeof *SHAPES) - 1; si >= 2; si--) {
        const shape *s = &SHAPES[si];
        double plan = plan_gib(s, 1, T);
        if (plan > free0 / 1073741824.0) {
            say("| %s | 1 | %d | %.2f | does not fit (%.1f GiB free) |\n", s->name, T, plan, free0 / 1073741824.0);
            continue;
        }
        result r = bench_one(s, 1, T, 2, free0);
        row(s, 1, T, &r, plan);
        if (r.ok) break;
    }
    if (OUT) fclose(OUT);
    return 0;
}
