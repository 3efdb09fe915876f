/* fixture.c: LOMOFIX1 reader and tolerance comparison for the tests. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"
#include "lomo.h"

int test_failures = 0, test_checks = 0;

int test_summary(const char *name) {
    printf("%s: %d checks, %d failed\n", name, test_checks, test_failures);
    return test_failures ? 1 : 0;
}

float fx_uniform(uint64_t *state) {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return (float)((*state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

const char *fx_path(const char *file) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", LOMO_FIXTURE_DIR, file);
    return buf;
}

static int rd(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n ? 0 : -1; }

int fx_load(fixture *fx, const char *path) {
    memset(fx, 0, sizeof *fx);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: cannot open\n", path);
        return -1;
    }
    char magic[8];
    uint32_t count;
    if (rd(f, magic, 8) || memcmp(magic, "LOMOFIX1", 8) || rd(f, &count, 4) || count > 100000) goto bad;
    fx->t = calloc(count, sizeof *fx->t);
    if (!fx->t) goto bad;
    for (uint32_t i = 0; i < count; i++) {
        fx_tensor *t = &fx->t[i];
        uint32_t len, dtype, ndim;
        if (rd(f, &len, 4) || len > 4096) goto bad;
        t->name = calloc(len + 1, 1);
        fx->count = (int)i + 1;
        if (!t->name || rd(f, t->name, len) || rd(f, &dtype, 4) || rd(f, &ndim, 4) || dtype > 1 || ndim > 8)
            goto bad;
        t->dtype = (int)dtype;
        t->ndim = (int)ndim;
        t->numel = 1;
        for (uint32_t d = 0; d < ndim; d++) {
            uint64_t v;
            if (rd(f, &v, 8) || v > (1u << 30)) goto bad;
            t->dims[d] = (int64_t)v;
            t->numel *= v;
        }
        size_t bytes = t->numel * (dtype ? 4 : 8);
        t->data = malloc(bytes ? bytes : 1);
        if (!t->data || rd(f, t->data, bytes)) goto bad;
    }
    fclose(f);
    return 0;
bad:
    fprintf(stderr, "%s: malformed fixture file\n", path);
    fclose(f);
    fx_free(fx);
    return -1;
}

void fx_free(fixture *fx) {
    for (int i = 0; i < fx->count; i++) {
        free(fx->t[i].name);
        free(fx->t[i].data);
    }
    free(fx->t);
    memset(fx, 0, sizeof *fx);
}

const fx_tensor *fx_get(const fixture *fx, const char *name) {
    for (int i = 0; i < fx->count; i++)
        if (strcmp(fx->t[i].name, name) == 0) return &fx->t[i];
    fprintf(stderr, "fixture has no record %s\n", name);
    return NULL;
}

static const fx_tensor *typed(const fixture *fx, const char *name, int dtype, size_t n) {
    const fx_tensor *t = fx_get(fx, name);
    if (!t) return NULL;
    if (t->dtype != dtype || (n && t->numel != n)) {
        fprintf(stderr, "fixture record %s: dtype %d numel %zu, expected dtype %d numel %zu\n", name,
                t->dtype, t->numel, dtype, n);
        return NULL;
    }
    return t;
}

const double *fx_f64(const fixture *fx, const char *name, size_t n) {
    const fx_tensor *t = typed(fx, name, 0, n);
    return t ? t->data : NULL;
}

const int32_t *fx_i32(const fixture *fx, const char *name, size_t n) {
    const fx_tensor *t = typed(fx, name, 1, n);
    return t ? t->data : NULL;
}

double fx_scalar(const fixture *fx, const char *name) {
    const fx_tensor *t = fx_get(fx, name);
    if (!t) return NAN;
    return t->dtype ? (double)*(const int32_t *)t->data : *(const double *)t->data;
}

float *fx_f32(const fixture *fx, const char *name, size_t n) {
    const fx_tensor *t = typed(fx, name, 0, n);
    if (!t) return NULL;
    float *out = malloc(t->numel * sizeof(float));
    for (size_t i = 0; out && i < t->numel; i++) out[i] = (float)((const double *)t->data)[i];
    return out;
}

double fx_max_abs(const double *x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

size_t fx_compare(const char *what, const float *got, const double *want, size_t n, double atol, double rtol) {
    if (!got || !want) {
        fprintf(stderr, "  %s: missing data\n", what);
        return 1;
    }
    size_t bad = 0, worst = 0;
    double worst_ratio = -1.0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]), lim = atol + rtol * fabs(want[i]);
        double ratio = err / lim;
        if (!(err <= lim)) bad++;          /* NaN counts as a failure */
        if (!(ratio <= worst_ratio)) {
            worst_ratio = ratio;
            worst = i;
        }
    }
    if (bad)
        fprintf(stderr, "  %s: %zu of %zu outside tolerance; worst [%zu] got %.9g want %.9g (atol %.2g rtol %.2g)\n",
                what, bad, n, worst, got[worst], want[worst], atol, rtol);
    return bad;
}

int fx_same_config(const lomo_llama_config *a, const lomo_llama_config *b) {
    const lomo_rope_scaling *x = &a->rope_scaling, *y = &b->rope_scaling;
    return a->hidden_size == b->hidden_size && a->intermediate_size == b->intermediate_size &&
           a->num_hidden_layers == b->num_hidden_layers && a->num_attention_heads == b->num_attention_heads &&
           a->num_key_value_heads == b->num_key_value_heads && a->vocab_size == b->vocab_size &&
           a->max_position_embeddings == b->max_position_embeddings &&
           a->tie_word_embeddings == b->tie_word_embeddings && a->rms_norm_eps == b->rms_norm_eps &&
           a->rope_theta == b->rope_theta && x->rope_type == y->rope_type && x->factor == y->factor &&
           x->low_freq_factor == y->low_freq_factor && x->high_freq_factor == y->high_freq_factor &&
           x->original_max_position_embeddings == y->original_max_position_embeddings;
}

void fx_llama_config(const fixture *fx, lomo_llama_config *c) {
    *c = (lomo_llama_config){
        .hidden_size = (int)fx_scalar(fx, "config.hidden_size"),
        .intermediate_size = (int)fx_scalar(fx, "config.intermediate_size"),
        .num_hidden_layers = (int)fx_scalar(fx, "config.num_hidden_layers"),
        .num_attention_heads = (int)fx_scalar(fx, "config.num_attention_heads"),
        .num_key_value_heads = (int)fx_scalar(fx, "config.num_key_value_heads"),
        .vocab_size = (int)fx_scalar(fx, "config.vocab_size"),
        .max_position_embeddings = (int)fx_scalar(fx, "config.max_position_embeddings"),
        .tie_word_embeddings = (int)fx_scalar(fx, "config.tie_word_embeddings"),
        .rms_norm_eps = fx_scalar(fx, "config.rms_norm_eps"),
        .rope_theta = fx_scalar(fx, "config.rope_theta"),
    };
}

void *fx_read_file(const char *path, size_t *len) {
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    char *b = n >= 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (!b) return NULL;
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

float *fx_model_weights(const lomo_model *m, size_t *n) {
    *n = lomo_model_num_weights(m);
    float *w = malloc(*n * sizeof(float));
    if (!w) return NULL;
    size_t off = 0;
    for (int p = 0; p < lomo_model_num_params(m); p++) {
        lomo_param_info info;
        lomo_model_param(m, p, &info);
        lomo_model_get_param_f32(m, p, w + off, info.numel);
        off += info.numel;
    }
    return w;
}
