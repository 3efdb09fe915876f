/*
 * bench_model.c: speed and memory of the model on the CPU backend.
 *
 * Each row runs in a forked child, so its peak RSS is its own. A row prints
 * the accounted peak bytes by category, the process peak RSS, the median
 * step time, tokens/s and effective GFLOP/s (model FLOPs: forward =
 * 2 * matmul weights * tokens + 4 * B * T^2 * C * L for attention as full
 * T^2; training = 3x forward, whatever checkpointing recomputes).
 *
 * Rows: forward (inference), fwdbwd (backward into full gradients, no
 * update), and one per optimizer: lomo, lomo-clip (norm clipping at 1.0),
 * adalomo, sgd, adamw.
 *
 *   bench_model [--hidden 768 --layers 12 --heads 12 --kv-heads 12 --ffn 2048
 *                --vocab 32000 --tied 0 --seq 256 --batch 2 --threads 2 --steps 5
 *                --dtypes f32,bf16 --ckpt 0,1
 *                --modes forward,fwdbwd,lomo,lomo-clip,adalomo,sgd,adamw --profile 0
 *                --logits-chunk 0]
 *
 * --ckpt lists checkpointing modes (lomo_checkpointing: 0 off, 1 blocks, 2 keep attention), run in
 * that order (repeat them, 1,2,1,2, to alternate on a noisy machine).
 *
 * --logits-chunk N: the LM head's vocabulary rows at a time (lomo_model_options.logits_chunk;
 * 0, the default: 8192 under checkpointing, the whole vocabulary without).
 *
 * --profile 1: after the timed steps each row runs one more with the op
 * profile on (lomo_profile_enable) and prints where its time went.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "lomo.h"

typedef struct opts {
    lomo_llama_config cfg;
    int B, T, threads, steps, profile;
    int logits_chunk;     /* lomo_model_options.logits_chunk */
    lomo_dtype dtype;
} opts;

/* An optimizer row's options, or 0 for forward / fwdbwd. */
static int optim_for(const char *mode, lomo_optim_options *o) {
    static const struct { const char *name; lomo_optim_kind kind; float clip; } rows[] = {
        {"lomo", LOMO_OPTIM_LOMO, 0}, {"lomo-clip", LOMO_OPTIM_LOMO, 1.0f}, {"adalomo", LOMO_OPTIM_ADALOMO, 0},
        {"sgd", LOMO_OPTIM_SGD, 0}, {"adamw", LOMO_OPTIM_ADAMW, 0}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (strcmp(mode, rows[i].name)) continue;
        lomo_optim_options_default(o, rows[i].kind);
        o->clip_grad_norm = rows[i].clip;
        return 1;
    }
    return 0;
}

typedef struct row {
    char mode[32];
    int ckpt;
    double step_s, rss_mib, loss;
    lomo_mem_stats mem;
    lomo_op_stats prof;   /* one profiled step after the timed ones (--profile 1) */
    int ok;
} row;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double forward_flops(const opts *o, size_t matmul_weights) {
    double tokens = (double)o->B * o->T;
    return 2.0 * matmul_weights * tokens +
           4.0 * o->B * (double)o->T * o->T * o->cfg.hidden_size * o->cfg.num_hidden_layers;
}

/* Runs one mode in this process. */
static void run_mode(const opts *o, const char *mode, int ckpt, row *r) {
    lomo_ctx *ctx;
    lomo_ctx_options co = {.num_threads = o->threads};
    if (lomo_ctx_create(&ctx, &co)) return;
    lomo_model *m = NULL;
    lomo_model_options mo = {.dtype = o->dtype, .checkpointing = ckpt, .seed = 42, .logits_chunk = o->logits_chunk};
    if (lomo_model_create(&m, ctx, &o->cfg, &mo)) {
        fprintf(stderr, "%s\n", lomo_last_error(ctx));
        lomo_ctx_destroy(ctx);
        return;
    }
    int n = o->B * o->T;
    int32_t *tok = malloc(n * sizeof *tok), *tgt = malloc(n * sizeof *tgt);
    uint64_t s = 12345;
    for (int i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((s >> 33) % (uint64_t)o->cfg.vocab_size);
    }
    for (int i = 0; i < n; i++) tgt[i] = (i + 1) % o->T ? tok[i + 1] : -100;
    lomo_grads *g = NULL;
    lomo_optim *opt = NULL;
    lomo_optim_options oo;
    int use_optim = optim_for(mode, &oo), fwdbwd = strcmp(mode, "fwdbwd") == 0;
    double *t = calloc((size_t)o->steps + 1, sizeof *t);
    if (fwdbwd && lomo_grads_create(&g, m)) goto fail;
    if (use_optim && lomo_optim_create(&opt, m, &oo)) goto fail;
    lomo_grad_hook h = fwdbwd ? lomo_grads_hook(g) : (lomo_grad_hook){0};
    for (int i = 0; i <= o->steps; i++) {   /* step 0 warms up */
        double t0 = now();
        float loss;
        if (use_optim) {
            lomo_step_result res;
            if (lomo_optim_step(opt, tok, tgt, o->B, o->T, 1e-4f, &res)) goto fail;
            loss = res.loss;
        } else {
            if (lomo_model_forward(m, tok, tgt, o->B, o->T, &loss, NULL)) goto fail;
            if (fwdbwd && lomo_model_backward(m, 1.0f, &h)) goto fail;
        }
        t[i] = now() - t0;
        r->loss = loss;
    }
    if (o->profile) {
        lomo_profile_enable(ctx, 1);
        float loss;
        lomo_step_result res;
        if (use_optim ? lomo_optim_step(opt, tok, tgt, o->B, o->T, 1e-4f, &res)
                      : lomo_model_forward(m, tok, tgt, o->B, o->T, &loss, NULL) ||
                            (fwdbwd && lomo_model_backward(m, 1.0f, &h)))
            goto fail;
        lomo_profile_get(ctx, &r->prof);
    }
    qsort(t + 1, (size_t)o->steps, sizeof *t, cmp_double);
    r->step_s = t[1 + o->steps / 2];
    lomo_mem_get_stats(ctx, &r->mem);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    r->rss_mib = ru.ru_maxrss / 1024.0;
    r->ok = 1;
fail:
    if (!r->ok) fprintf(stderr, "%s: %s\n", mode, lomo_last_error(ctx));
    free(t);
    lomo_optim_destroy(opt);
    lomo_grads_destroy(g);
    free(tok);
    free(tgt);
    lomo_model_destroy(m);
    lomo_ctx_destroy(ctx);
}

/* Forks so that the child's peak RSS belongs to this row alone. */
static row run_isolated(const opts *o, const char *mode, int ckpt) {
    row r = {0};
    snprintf(r.mode, sizeof r.mode, "%s", mode);
    r.ckpt = ckpt;
    int fd[2];
    if (pipe(fd)) return r;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        run_mode(o, mode, ckpt, &r);
        ssize_t w = write(fd[1], &r, sizeof r);
        _exit(w == (ssize_t)sizeof r ? 0 : 1);
    }
    close(fd[1]);
    ssize_t got = pid > 0 ? read(fd[0], &r, sizeof r) : -1;
    close(fd[0]);
    if (pid > 0) waitpid(pid, NULL, 0);
    if (got != (ssize_t)sizeof r) r.ok = 0;
    return r;
}

/* r's profiled step, op by op, in the order of lomo_op */
static void print_profile(const row *r, lomo_dtype dt) {
    double total = 0;
    for (int op = 0; op < LOMO_OP_COUNT; op++) total += r->prof.seconds[op];
    printf("\n%s %s ckpt %d, one profiled step: %.1f ms in ops\n", r->mode, lomo_dtype_name(dt), r->ckpt,
           total * 1e3);
    printf("  %-14s %6s %9s %7s %9s\n", "op", "calls", "ms", "share", "GFLOP/s");
    for (int op = 0; op < LOMO_OP_COUNT; op++) {
        if (!r->prof.calls[op]) continue;
        double sec = r->prof.seconds[op], fl = r->prof.flops[op];
        char rate[32] = "-";
        if (fl > 0 && sec > 0) snprintf(rate, sizeof rate, "%.1f", fl / sec / 1e9);
        printf("  %-14s %6llu %9.2f %6.1f%% %9s\n", lomo_op_name((lomo_op)op), (unsigned long long)r->prof.calls[op],
               sec * 1e3, total > 0 ? 100 * sec / total : 0, rate);
    }
}

static int arg_int(int argc, char **argv, const char *name, int def) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return atoi(argv[i + 1]);
    return def;
}

static const char *arg_str(int argc, char **argv, const char *name, const char *def) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return def;
}

int main(int argc, char **argv) {
    opts o = {0};
    lomo_llama_config *c = &o.cfg;
    c->hidden_size = arg_int(argc, argv, "--hidden", 768);
    c->num_hidden_layers = arg_int(argc, argv, "--layers", 12);
    c->num_attention_heads = arg_int(argc, argv, "--heads", 12);
    c->num_key_value_heads = arg_int(argc, argv, "--kv-heads", c->num_attention_heads);
    c->intermediate_size = arg_int(argc, argv, "--ffn", 2048);
    c->vocab_size = arg_int(argc, argv, "--vocab", 32000);
    c->tie_word_embeddings = arg_int(argc, argv, "--tied", 0);   /* the LM head shares the embedding */
    c->rms_norm_eps = 1e-5;
    c->rope_theta = 10000.0;
    o.T = arg_int(argc, argv, "--seq", 256);
    o.B = arg_int(argc, argv, "--batch", 2);
    c->max_position_embeddings = o.T;
    o.threads = arg_int(argc, argv, "--threads", 2);
    o.steps = arg_int(argc, argv, "--steps", 5);
    o.profile = arg_int(argc, argv, "--profile", 0);
    o.logits_chunk = arg_int(argc, argv, "--logits-chunk", 0);
    const char *dtypes = arg_str(argc, argv, "--dtypes", "f32");
    const char *ckpts = arg_str(argc, argv, "--ckpt", "0,1");
    const char *modes = arg_str(argc, argv, "--modes", "forward,fwdbwd");
    if (o.steps < 1) o.steps = 1;

    lomo_ctx *ctx;
    lomo_ctx_create(&ctx, NULL);
    if (lomo_config_validate(ctx, c)) {
        fprintf(stderr, "%s\n", lomo_last_error(ctx));
        return 2;
    }
    lomo_ctx_destroy(ctx);
    size_t C = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
    size_t hd = C / c->num_attention_heads, kvd = hd * c->num_key_value_heads;
    size_t matmul_w = c->num_hidden_layers * (2 * C * C + 2 * C * kvd + 3 * C * F) + V * C;
    size_t all_w = matmul_w + (c->tie_word_embeddings ? 0 : V * C) + (2 * c->num_hidden_layers + 1) * C;
    double ff = forward_flops(&o, matmul_w);
    printf("shape: hidden %d, layers %d, heads %d/%d kv, ffn %d, vocab %d%s, seq %d, batch %d, %d threads, "
           "logits chunk %d\n", c->hidden_size, c->num_hidden_layers, c->num_attention_heads, c->num_key_value_heads,
           c->intermediate_size, c->vocab_size, c->tie_word_embeddings ? " (tied)" : "", o.T, o.B, o.threads,
           o.logits_chunk);
    printf("parameters: %zu; forward %.2f GFLOP per step (training rows count 3x)\n", all_w, ff / 1e9);
    printf("%-9s %-4s %4s %8s %8s %8s %8s %8s %9s %9s %8s %9s %8s %8s\n", "mode", "dtype", "ckpt", "weights", "activ",
           "grads", "optim", "scratch", "acct-peak", "peak-RSS", "step-ms", "tokens/s", "GFLOP/s", "loss");
    char dbuf[64], cbuf[64], mbuf[256];
    snprintf(dbuf, sizeof dbuf, "%s", dtypes);
    /* the lists are parsed into arrays first: strtok is not reentrant */
    const char *dlist[4]; int nd = 0;
    for (char *p = strtok(dbuf, ","); p && nd < 4; p = strtok(NULL, ",")) dlist[nd++] = p;
    int clist[8], nc = 0;
    snprintf(cbuf, sizeof cbuf, "%s", ckpts);
    for (char *p = strtok(cbuf, ","); p && nc < 8; p = strtok(NULL, ",")) clist[nc++] = atoi(p);
    const char *mlist[16]; int nm = 0;
    snprintf(mbuf, sizeof mbuf, "%s", modes);
    for (char *p = strtok(mbuf, ","); p && nm < 16; p = strtok(NULL, ",")) mlist[nm++] = p;
    for (int di = 0; di < nd; di++) {
        o.dtype = strcmp(dlist[di], "bf16") == 0 ? LOMO_BF16 : strcmp(dlist[di], "f16") == 0 ? LOMO_F16 : LOMO_F32;
        for (int ci = 0; ci < nc; ci++) {
            for (int mi = 0; mi < nm; mi++) {
                row r = run_isolated(&o, mlist[mi], clist[ci]);
                if (!r.ok) {
                    printf("%-9s %-4s %4d failed\n", mlist[mi], lomo_dtype_name(o.dtype), clist[ci]);
                    continue;
                }
                double mib = 1048576.0, flops = ff * (strcmp(mlist[mi], "forward") ? 3.0 : 1.0);
                printf("%-9s %-4s %4d %8.1f %8.1f %8.1f %8.1f %8.1f %9.1f %9.1f %8.1f %9.1f %8.1f %8.4f\n", r.mode,
                       lomo_dtype_name(o.dtype), clist[ci], r.mem.peak[LOMO_MEM_WEIGHTS] / mib,
                       r.mem.peak[LOMO_MEM_ACTIVATIONS] / mib, r.mem.peak[LOMO_MEM_GRADIENTS] / mib,
                       r.mem.peak[LOMO_MEM_OPTIMIZER] / mib, r.mem.peak[LOMO_MEM_SCRATCH] / mib,
                       r.mem.peak_total / mib, r.rss_mib, r.step_s * 1e3, o.B * o.T / r.step_s,
                       flops / r.step_s / 1e9, r.loss);
                if (o.profile) print_profile(&r, o.dtype);
                fflush(stdout);
            }
        }
    }
    printf("(MiB; accounted peaks by category, and the process peak RSS; median step of %d after a warm-up)\n",
           o.steps);
    return 0;
}
