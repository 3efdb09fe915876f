/*
 * tokenizer.c: the tokenizer core: vocabulary and merge tables, construction
 * from a tokenizer_spec, encode (added tokens -> normalizer -> pre-tokenizer
 * -> BPE -> post-processor) and decode (ids -> token texts -> decoder steps).
 *
 * BPE follows HF tokenizers' word merge: symbols start as the piece's
 * characters; a min-heap holds every adjacent pair that has a merge, keyed
 * by (rank, position of the left symbol); the best pair merges and its two
 * new neighbour pairs are pushed. Entries made stale by an earlier merge are
 * recognised by the symbol lengths they recorded. Score mode (GGUF "llama"
 * vocabularies without merges) uses the same heap keyed by minus the score
 * of the merged token, as llama.cpp's SentencePiece tokenizer does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "tokenizer.h"

/* ---------------------------------------------------------------- hashing */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* text -> id; keys point at strings the tokenizer owns. */
struct tok_strmap {
    size_t cap;    /* power of two */
    const char **key;
    uint32_t *len;
    int32_t *id;   /* -1: empty slot */
};

static tok_strmap *strmap_create(size_t n) {
    tok_strmap *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->cap = 16;
    while (m->cap < 2 * n + 16) m->cap <<= 1;
    m->key = calloc(m->cap, sizeof *m->key);
    m->len = calloc(m->cap, sizeof *m->len);
    m->id = malloc(m->cap * sizeof *m->id);
    if (!m->key || !m->len || !m->id) {
        free(m->key), free(m->len), free(m->id), free(m);
        return NULL;
    }
    for (size_t i = 0; i < m->cap; i++) m->id[i] = -1;
    return m;
}

static void strmap_free(tok_strmap *m) {
    if (!m) return;
    free(m->key), free(m->len), free(m->id), free(m);
}

static int strmap_get(const tok_strmap *m, const char *s, size_t n) {
    size_t i = hash_bytes(s, n) & (m->cap - 1);
    while (m->id[i] >= 0) {
        if (m->len[i] == n && memcmp(m->key[i], s, n) == 0) return m->id[i];
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

/* Keeps the first id a text was given. The map is sized for every insert up front. */
static void strmap_put(tok_strmap *m, const char *s, size_t n, int id) {
    size_t i = hash_bytes(s, n) & (m->cap - 1);
    while (m->id[i] >= 0) {
        if (m->len[i] == n && memcmp(m->key[i], s, n) == 0) return;
        i = (i + 1) & (m->cap - 1);
    }
    m->key[i] = s;
    m->len[i] = (uint32_t)n;
    m->id[i] = id;
}

/* (left, right) -> (rank, merged id) */
struct tok_pairmap {
    size_t cap;
    uint64_t *key;   /* UINT64_MAX: empty */
    int32_t *rank, *merged;
};

static tok_pairmap *pairmap_create(size_t n) {
    tok_pairmap *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->cap = 16;
    while (m->cap < 2 * n + 16) m->cap <<= 1;
    m->key = malloc(m->cap * sizeof *m->key);
    m->rank = malloc(m->cap * sizeof *m->rank);
    m->merged = malloc(m->cap * sizeof *m->merged);
    if (!m->key || !m->rank || !m->merged) {
        free(m->key), free(m->rank), free(m->merged), free(m);
        return NULL;
    }
    for (size_t i = 0; i < m->cap; i++) m->key[i] = UINT64_MAX;
    return m;
}

static void pairmap_free(tok_pairmap *m) {
    if (!m) return;
    free(m->key), free(m->rank), free(m->merged), free(m);
}

static uint64_t pair_key(int a, int b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

/* Returns the slot of (a, b), or -1. */
static long pairmap_find(const tok_pairmap *m, int a, int b) {
    uint64_t k = pair_key(a, b);
    size_t i = hash_u64(k) & (m->cap - 1);
    while (m->key[i] != UINT64_MAX) {
        if (m->key[i] == k) return (long)i;
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

/* Keeps the lowest rank when a pair repeats. */
static void pairmap_put(tok_pairmap *m, int a, int b, int rank, int merged) {
    uint64_t k = pair_key(a, b);
    size_t i = hash_u64(k) & (m->cap - 1);
    while (m->key[i] != UINT64_MAX) {
        if (m->key[i] == k) return;
        i = (i + 1) & (m->cap - 1);
    }
    m->key[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
}

/* --------------------------------------------------------- growable buffers */

typedef struct buf {
    char *s;
    size_t n, cap;
} buf;

static int buf_reserve(buf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) return -1;
    b->s = s;
    b->cap = cap;
    return 0;
}

static int buf_add(buf *b, const void *p, size_t n) {
    if (buf_reserve(b, n)) return -1;
    if (n) memcpy(b->s + b->n, p, n);
    b->n += n;
    b->s[b->n] = 0;
    return 0;
}

typedef struct idbuf {
    int32_t *v;
    size_t n, cap;
} idbuf;

static int ids_push(idbuf *b, int32_t id) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        int32_t *v = realloc(b->v, cap * sizeof *v);
        if (!v) return -1;
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = id;
    return 0;
}

/* A piece of text inside a buf; at_start: it begins at offset 0 of the original text. */
typedef struct piece {
    size_t off, len;
    int at_start;
} piece;

typedef struct piecebuf {
    piece *p;
    size_t n, cap;
} piecebuf;

static int pieces_push(piecebuf *b, size_t off, size_t len, int at_start) {
    if (len == 0) return 0;   /* HF drops empty splits */
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        piece *p = realloc(b->p, cap * sizeof *p);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    b->p[b->n++] = (piece){off, len, at_start};
    return 0;
}

/* ------------------------------------------------------------ construction */

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

static void norm_step_free(tok_norm_step *s) { free(s->a), free(s->b); }
static void pre_step_free(tok_pre_step *s) { tok_regex_free(s->re); }
static void dec_step_free(tok_dec_step *s) { free(s->a), free(s->b); }

void tok_pipeline_clear(lomo_tokenizer *t) {
    for (int i = 0; i < t->n_norm; i++) norm_step_free(&t->norm[i]);
    for (int i = 0; i < t->n_pre; i++) pre_step_free(&t->pre[i]);
    for (int i = 0; i < t->n_dec; i++) dec_step_free(&t->dec[i]);
    free(t->norm), free(t->pre), free(t->dec), free(t->prefix), free(t->suffix);
    t->norm = NULL, t->pre = NULL, t->dec = NULL, t->prefix = NULL, t->suffix = NULL;
    t->n_norm = t->n_pre = t->n_dec = t->n_prefix = t->n_suffix = 0;
    t->has_decoder = 0;
}

void lomo_tokenizer_destroy(lomo_tokenizer *t) {
    if (!t) return;
    tok_pipeline_clear(t);
    if (t->tokens)
        for (int i = 0; i < t->n_tokens; i++) free(t->tokens[i]);
    free(t->tokens), free(t->token_len), free(t->scores), free(t->special);
    strmap_free(t->vocab);
    pairmap_free(t->merges);
    free(t->added), free(t->by_first);
    free(t->chat_template);
    free(t);
}

lomo_status tok_set_chat_template(lomo_tokenizer *t, const char *src, const char *what) {
    char *copy = strdup(src);
    if (!copy) return lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory for the chat template", what);
    free(t->chat_template);
    t->chat_template = copy;
    return LOMO_OK;
}

/* Grows an array of n elements of size sz by one; NULL on OOM (the old array stays valid). */
static void *grow1(void *p, int n, size_t sz) { return realloc(p, (size_t)(n + 1) * sz); }

lomo_status tok_norm_add(lomo_tokenizer *t, tok_norm_step step) {
    tok_norm_step *v = grow1(t->norm, t->n_norm, sizeof *v);
    if (!v || !step.a || (step.kind == TOK_NORM_REPLACE && !step.b)) {
        if (v) t->norm = v;
        norm_step_free(&step);
        return lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory", t->source);
    }
    t->norm = v;
    t->norm[t->n_norm++] = step;
    return LOMO_OK;
}

lomo_status tok_pre_add(lomo_tokenizer *t, tok_pre_step step) {
    tok_pre_step *v = grow1(t->pre, t->n_pre, sizeof *v);
    if (!v) {
        pre_step_free(&step);
        return lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory", t->source);
    }
    t->pre = v;
    t->pre[t->n_pre++] = step;
    return LOMO_OK;
}

lomo_status tok_dec_add(lomo_tokenizer *t, tok_dec_step step) {
    tok_dec_step *v = grow1(t->dec, t->n_dec, sizeof *v);
    int need_a = step.kind == TOK_DEC_REPLACE || step.kind == TOK_DEC_STRIP || step.kind == TOK_DEC_METASPACE;
    if (!v || (need_a && !step.a) || (step.kind == TOK_DEC_REPLACE && !step.b)) {
        if (v) t->dec = v;
        dec_step_free(&step);
        return lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory", t->source);
    }
    t->dec = v;
    t->dec[t->n_dec++] = step;
    t->has_decoder = 1;
    return LOMO_OK;
}

lomo_status tok_post_add(lomo_tokenizer *t, int prefix, int32_t id) {
    if (id < 0 || id >= t->n_tokens)
        return lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: post-processor token id %d is out of range [0, %d)",
                         t->source, (int)id, t->n_tokens);
    int32_t **arr = prefix ? &t->prefix : &t->suffix;
    int *n = prefix ? &t->n_prefix : &t->n_suffix;
    int32_t *v = grow1(*arr, *n, sizeof *v);
    if (!v) return lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory", t->source);
    *arr = v;
    v[(*n)++] = id;
    return LOMO_OK;
}

static lomo_status add_regex_step(lomo_tokenizer *t, tok_pre_kind kind, const char *pattern) {
    char err[256];
    tok_regex *re = tok_regex_compile(pattern, strlen(pattern), err, sizeof err);
    if (!re) return lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: pre-tokenizer regex: %s", t->source, err);
    tok_pre_step s = {.kind = kind, .re = re, .behavior = TOK_SPLIT_ISOLATED};
    return tok_pre_add(t, s);
}

lomo_status tok_pre_add_preset(lomo_tokenizer *t, const char *name) {
    lomo_status st;
    if (strcmp(name, "gpt2") == 0) return add_regex_step(t, TOK_PRE_BYTELEVEL, TOK_RE_GPT2);
    if (strcmp(name, "llama3") == 0) {
        /* llama.cpp and HF both skip BPE for a piece that is already a token */
        t->ignore_merges = 1;
        if ((st = add_regex_step(t, TOK_PRE_SPLIT, TOK_RE_LLAMA3))) return st;
        return tok_pre_add(t, (tok_pre_step){.kind = TOK_PRE_BYTELEVEL});
    }
    if (strcmp(name, "smollm") == 0) {
        /* HF: Digits(individual_digits) then ByteLevel(use_regex); llama.cpp: "\p{N}" then GPT-2's regex */
        if ((st = add_regex_step(t, TOK_PRE_SPLIT, "\\p{N}"))) return st;
        return add_regex_step(t, TOK_PRE_BYTELEVEL, TOK_RE_GPT2);
    }
    return lomo_fail(t->ctx, LOMO_ERR_FORMAT,
                     "%s: pre-tokenizer \"%s\" is not supported (expected gpt2, llama3 or smollm)", t->source,
                     name);
}

static int rank_cmp(const void *a, const void *b) {
    const int32_t *x = a, *y = b;
    return (x[0] > y[0]) - (x[0] < y[0]);
}

typedef struct score_merge {
    float score;            /* the merged token's */
    int32_t merged, left, right;
} score_merge;

static int score_merge_cmp(const void *a, const void *b) {
    const score_merge *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->merged != y->merged) return x->merged < y->merged ? -1 : 1;
    if (x->left != y->left) return x->left < y->left ? -1 : 1;
    return (x->right > y->right) - (x->right < y->right);
}

/* Score mode as merges, as HF converts a SentencePiece model: every split of a token into two
 * tokens (at character boundaries) is a merge, ranked by the token's score, highest first. */
static int merges_from_scores(const lomo_tokenizer *t, int32_t **pairs) {
    size_t n = 0, cap = 1024;
    score_merge *v = malloc(cap * sizeof *v);
    if (!v) return -1;
    for (int id = 0; id < t->n_tokens; id++) {
        const char *s = t->tokens[id];
        uint32_t len = t->token_len[id];
        for (uint32_t i = 0; s && i < len;) {
            uint32_t cp;
            size_t cl = tok_utf8_len((const unsigned char *)s + i, len - i, &cp);
            i += cl ? (uint32_t)cl : 1;
            if (i >= len) break;
            int l = strmap_get(t->vocab, s, i), r = strmap_get(t->vocab, s + i, len - i);
            if (l < 0 || r < 0) continue;
            if (n == cap) {
                score_merge *w = realloc(v, 2 * cap * sizeof *v);
                if (!w) {
                    free(v);
                    return -1;
                }
                v = w, cap *= 2;
            }
            v[n++] = (score_merge){t->scores[id], id, l, r};
        }
    }
    qsort(v, n, sizeof *v, score_merge_cmp);
    *pairs = malloc((n ? n : 1) * 2 * sizeof **pairs);
    if (!*pairs) {
        free(v);
        return -1;
    }
    for (size_t k = 0; k < n; k++) (*pairs)[2 * k] = v[k].left, (*pairs)[2 * k + 1] = v[k].right;
    free(v);
    return (int)n;
}

int tok_merges_by_rank(const lomo_tokenizer *t, int32_t **pairs) {
    *pairs = NULL;
    if (t->use_scores) return merges_from_scores(t, pairs);
    const tok_pairmap *m = t->merges;
    if (!m) return 0;
    size_t n = 0;
    for (size_t i = 0; i < m->cap; i++) n += m->key[i] != UINT64_MAX;
    int32_t *tri = malloc((n ? n : 1) * 3 * sizeof *tri);   /* (rank, left, right), sorted by rank */
    *pairs = malloc((n ? n : 1) * 2 * sizeof **pairs);
    if (!tri || !*pairs) {
        free(tri);
        free(*pairs);
        *pairs = NULL;
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->key[i] == UINT64_MAX) continue;
        tri[3 * k] = m->rank[i];
        tri[3 * k + 1] = (int32_t)(m->key[i] >> 32);
        tri[3 * k + 2] = (int32_t)(uint32_t)m->key[i];
        k++;
    }
    qsort(tri, n, 3 * sizeof *tri, rank_cmp);
    for (size_t r = 0; r < n; r++) (*pairs)[2 * r] = tri[3 * r + 1], (*pairs)[2 * r + 1] = tri[3 * r + 2];
    free(tri);
    return (int)n;
}

void tok_added_set_strip(lomo_tokenizer *t, int id, int lstrip, int rstrip) {
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id == id) t->added[i].lstrip = lstrip, t->added[i].rstrip = rstrip;
}

static int added_cmp(const void *a, const void *b) {
    const tok_added *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Added tokens, longest first, indexed by first byte for the matcher. */
static lomo_status build_added(lomo_tokenizer *t, const int32_t *types) {
    if (!types) return LOMO_OK;
    int n = 0;
    for (int i = 0; i < t->n_tokens; i++)
        if ((types[i] == 3 || types[i] == 4) && t->tokens[i] && t->token_len[i] > 0) n++;
    if (n == 0) return LOMO_OK;
    t->added = calloc((size_t)n, sizeof *t->added);
    t->by_first = malloc((size_t)n * sizeof *t->by_first);
    if (!t->added || !t->by_first) return lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory", t->source);
    for (int i = 0; i < t->n_tokens; i++) {
        if (!((types[i] == 3 || types[i] == 4) && t->tokens[i] && t->token_len[i] > 0)) continue;
        t->added[t->n_added++] = (tok_added){t->tokens[i], t->token_len[i], i, types[i] == 3, 0, 0};
    }
    qsort(t->added, (size_t)n, sizeof *t->added, added_cmp);
    int count[256] = {0};
    for (int i = 0; i < n; i++) count[(unsigned char)t->added[i].text[0]]++;
    t->added_first[0] = 0;
    for (int b = 0; b < 256; b++) t->added_first[b + 1] = t->added_first[b] + count[b];
    int fill[256];
    for (int b = 0; b < 256; b++) fill[b] = t->added_first[b];
    for (int i = 0; i < n; i++) t->by_first[fill[(unsigned char)t->added[i].text[0]]++] = i;
    return LOMO_OK;
}

static lomo_status build_merges(lomo_tokenizer *t, const tokenizer_spec *spec) {
    t->merges = pairmap_create((size_t)spec->n_merges);
    if (!t->merges) return lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory", t->source);
    buf cat = {0};
    lomo_status st = LOMO_OK;
    for (int r = 0; r < spec->n_merges && st == LOMO_OK; r++) {
        const char *m = spec->merges[r];
        if (!m) {
            st = lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: merges[%d] is missing", t->source, r);
            break;
        }
        /* from index 1, as llama.cpp does, so a left token may itself be a space */
        const char *sp = m[0] ? strchr(m + 1, ' ') : NULL;
        if (!sp) {
            st = lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: merges[%d] \"%.64s\": expected \"left right\"",
                           t->source, r, m);
            break;
        }
        size_t ln = (size_t)(sp - m), rn = strlen(sp + 1);
        int a = strmap_get(t->vocab, m, ln), b = strmap_get(t->vocab, sp + 1, rn);
        cat.n = 0;
        if (buf_add(&cat, m, ln) || buf_add(&cat, sp + 1, rn)) {
            st = lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory", t->source);
            break;
        }
        int c = strmap_get(t->vocab, cat.s, cat.n);
        if (a < 0 || b < 0 || c < 0) {
            const char *what = a < 0 ? m : b < 0 ? sp + 1 : cat.s;
            int wn = (int)(a < 0 ? ln : b < 0 ? rn : cat.n);
            st = lomo_fail(t->ctx, LOMO_ERR_FORMAT,
                           "%s: merges[%d] \"%.64s\": token \"%.*s\" is not in the vocabulary", t->source, r, m,
                           wn > 64 ? 64 : wn, what);
            break;
        }
        pairmap_put(t->merges, a, b, r, c);
    }
    free(cat.s);
    return st;
}

static lomo_status check_id(lomo_tokenizer *t, int id, const char *what) {
    if (id < -1 || id >= t->n_tokens)
        return lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: %s %d is out of range [0, %d)", t->source, what, id,
                         t->n_tokens);
    if (id >= 0 && !t->tokens[id])
        return lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: %s %d names no token", t->source, what, id);
    return LOMO_OK;
}

static lomo_status create_inner(lomo_tokenizer *t, const tokenizer_spec *spec) {
    lomo_status st;
    int n = spec->n_tokens;
    t->n_tokens = n;
    t->tokens = calloc((size_t)n, sizeof *t->tokens);
    t->token_len = calloc((size_t)n, sizeof *t->token_len);
    t->special = calloc((size_t)n, 1);
    t->vocab = strmap_create((size_t)n);
    if (!t->tokens || !t->token_len || !t->special || !t->vocab)
        return lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory for %d tokens", t->source, n);
    for (int i = 0; i < n; i++) {
        if (!spec->tokens[i]) continue;
        size_t len = strlen(spec->tokens[i]);
        if (len > UINT32_MAX / 2)
            return lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: token %d is too long", t->source, i);
        if (!(t->tokens[i] = dup_str(spec->tokens[i])))
            return lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory", t->source);
        t->token_len[i] = (uint32_t)len;
        strmap_put(t->vocab, t->tokens[i], len, i);
        if (spec->token_types && spec->token_types[i] == 3) t->special[i] = 1;
    }
    if (spec->scores) {
        if (!(t->scores = malloc((size_t)n * sizeof *t->scores)))
            return lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory", t->source);
        memcpy(t->scores, spec->scores, (size_t)n * sizeof *t->scores);
    }
    if ((st = check_id(t, spec->bos_id, "bos id")) || (st = check_id(t, spec->eos_id, "eos id")) ||
        (st = check_id(t, spec->unk_id, "unk id")))
        return st;
    t->bos_id = spec->bos_id, t->eos_id = spec->eos_id, t->unk_id = spec->unk_id;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_ids[b] = strmap_get(t->vocab, name, 6);
    }
    if (spec->n_merges > 0) {
        if ((st = build_merges(t, spec))) return st;
    } else if (spec->kind == TOK_BPE_SENTENCEPIECE && spec->scores) {
        t->use_scores = 1;
    }
    if ((st = build_added(t, spec->token_types))) return st;

    if (spec->kind == TOK_BPE_BYTELEVEL) {
        if ((st = tok_pre_add_preset(t, spec->pretokenizer ? spec->pretokenizer : "gpt2"))) return st;
        if ((st = tok_dec_add(t, (tok_dec_step){.kind = TOK_DEC_BYTELEVEL}))) return st;
    } else {
        /* SentencePiece as HF's Llama-2 tokenizer.json spells it: "▁" before each segment, spaces as "▁" */
        t->byte_fallback = 1;
        t->fuse_unk = 1;
        if ((st = tok_norm_add(t, (tok_norm_step){TOK_NORM_PREPEND, dup_str("\xE2\x96\x81"), NULL})) ||
            (st = tok_norm_add(t, (tok_norm_step){TOK_NORM_REPLACE, dup_str(" "), dup_str("\xE2\x96\x81")})) ||
            (st = tok_dec_add(t, (tok_dec_step){.kind = TOK_DEC_REPLACE, .a = dup_str("\xE2\x96\x81"),
                                                 .b = dup_str(" ")})) ||
            (st = tok_dec_add(t, (tok_dec_step){.kind = TOK_DEC_BYTEFALLBACK})) ||
            (st = tok_dec_add(t, (tok_dec_step){.kind = TOK_DEC_FUSE})) ||
            (st = tok_dec_add(t, (tok_dec_step){.kind = TOK_DEC_STRIP, .a = dup_str(" "), .start = 1})))
            return st;
    }
    if (spec->add_bos) {
        if (spec->bos_id < 0) return lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: add_bos is set but there is no bos id", t->source);
        if ((st = tok_post_add(t, 1, spec->bos_id))) return st;
    }
    if (spec->add_eos) {
        if (spec->eos_id < 0) return lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: add_eos is set but there is no eos id", t->source);
        if ((st = tok_post_add(t, 0, spec->eos_id))) return st;
    }
    return LOMO_OK;
}

lomo_status tokenizer_create(lomo_tokenizer **out, lomo_ctx *ctx, const tokenizer_spec *spec, const char *source_name) {
    if (!out) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "tokenizer_create: out is NULL");
    *out = NULL;
    const char *src = source_name ? source_name : "tokenizer";
    if (!spec || !spec->tokens || spec->n_tokens <= 0)
        return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "%s: the tokenizer has no tokens", src);
    if (spec->kind != TOK_BPE_BYTELEVEL && spec->kind != TOK_BPE_SENTENCEPIECE)
        return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "%s: unknown tokenizer kind %d", src, (int)spec->kind);
    if (spec->n_merges < 0 || (spec->n_merges > 0 && !spec->merges))
        return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "%s: %d merges but no merge list", src, spec->n_merges);
    lomo_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory", src);
    t->ctx = ctx;
    snprintf(t->source, sizeof t->source, "%s", src);
    lomo_status st = create_inner(t, spec);
    if (st) {
        lomo_tokenizer_destroy(t);
        return st;
    }
    *out = t;
    return LOMO_OK;
}

/* -------------------------------------------------------------------- BPE */

typedef struct sym {
    uint32_t start, len;   /* bytes of the piece; len 0: merged away */
    int32_t id;
    int32_t prev, next;    /* -1 at the ends */
    int unk;               /* an unknown char (fuse_unk joins neighbours) */
} sym;

typedef struct cand {
    double key;            /* rank, or minus the score */
    int32_t left, right;
    uint32_t llen, rlen;   /* lengths when pushed: a merge since then makes the entry stale */
    int32_t merged;
} cand;

typedef struct scratch {
    tok_match_ctx *m;
    buf a, b;              /* piece texts, before and after a pre-tokenizer step */
    piecebuf pa, pb;
    sym *syms;
    size_t syms_cap;
    cand *heap;
    size_t heap_n, heap_cap;
} scratch;

static void scratch_free(scratch *s) {
    tok_match_ctx_free(s->m);
    free(s->a.s), free(s->b.s), free(s->pa.p), free(s->pb.p), free(s->syms), free(s->heap);
}

static int cand_less(const cand *x, const cand *y) {
    if (x->key != y->key) return x->key < y->key;
    return x->left < y->left;
}

static int heap_push(scratch *s, cand c) {
    if (s->heap_n == s->heap_cap) {
        size_t cap = s->heap_cap ? 2 * s->heap_cap : 64;
        cand *h = realloc(s->heap, cap * sizeof *h);
        if (!h) return -1;
        s->heap = h;
        s->heap_cap = cap;
    }
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = c;
    return 0;
}

static cand heap_pop(scratch *s) {
    cand top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const cand *best = &last;
        if (l < n && cand_less(&s->heap[l], best)) m = l, best = &s->heap[l];
        if (r < n && cand_less(&s->heap[r], best)) m = r;
        if (m == i) break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (n) s->heap[i] = last;
    return top;
}

/* Pushes the pair (l, r) if it can merge. */
static int push_pair(const lomo_tokenizer *t, scratch *s, const char *w, int l, int r) {
    if (l < 0 || r < 0) return 0;
    const sym *L = &s->syms[l], *R = &s->syms[r];
    cand c = {.left = l, .right = r, .llen = L->len, .rlen = R->len};
    if (t->use_scores) {
        int id = strmap_get(t->vocab, w + L->start, L->len + R->len);
        if (id < 0) return 0;
        c.key = -(double)t->scores[id];
        c.merged = id;
    } else {
        long slot = pairmap_find(t->merges, L->id, R->id);
        if (slot < 0) return 0;
        c.key = t->merges->rank[slot];
        c.merged = t->merges->merged[slot];
    }
    return heap_push(s, c);
}

static int push_sym(scratch *s, size_t *n, uint32_t start, uint32_t len, int32_t id, int unk) {
    if (*n == s->syms_cap) {
        size_t cap = s->syms_cap ? 2 * s->syms_cap : 256;
        sym *v = realloc(s->syms, cap * sizeof *v);
        if (!v) return -1;
        s->syms = v;
        s->syms_cap = cap;
    }
    s->syms[*n] = (sym){start, len, id, (int32_t)*n - 1, (int32_t)*n + 1, unk};
    (*n)++;
    return 0;
}

/* Emits the ids for one pre-tokenized piece w[0, n). Returns -1 on OOM. */
static int bpe_piece(const lomo_tokenizer *t, scratch *s, const char *w, size_t n, idbuf *out) {
    if (t->ignore_merges && !t->use_scores) {
        int id = strmap_get(t->vocab, w, n);
        if (id >= 0) return ids_push(out, id);
    }
    size_t ns = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t cl = tok_utf8_len((const unsigned char *)w + i, n - i, &cp);
        if (cl == 0) cl = 1;   /* cannot happen after validation; keeps the loop finite */
        if (t->use_scores) {
            /* llama.cpp: characters merge by text; unknown ones fall back at the end */
            if (push_sym(s, &ns, (uint32_t)i, (uint32_t)cl, -1, 0)) return -1;
            i += cl;
            continue;
        }
        int id = strmap_get(t->vocab, w + i, cl);
        if (id >= 0) {
            if (push_sym(s, &ns, (uint32_t)i, (uint32_t)cl, id, 0)) return -1;
        } else {
            int all = t->byte_fallback;
            for (size_t k = 0; k < cl && all; k++) all = t->byte_ids[(unsigned char)w[i + k]] >= 0;
            if (all) {
                for (size_t k = 0; k < cl; k++)
                    if (push_sym(s, &ns, (uint32_t)(i + k), 1, t->byte_ids[(unsigned char)w[i + k]], 0)) return -1;
            } else if (t->unk_id >= 0) {
                if (t->fuse_unk && ns > 0 && s->syms[ns - 1].unk)
                    s->syms[ns - 1].len += (uint32_t)cl;
                else if (push_sym(s, &ns, (uint32_t)i, (uint32_t)cl, t->unk_id, 1))
                    return -1;
            }
            /* no unk token: HF drops the character */
        }
        i += cl;
    }
    if (ns == 0) return 0;
    s->syms[ns - 1].next = -1;

    s->heap_n = 0;
    if (t->use_scores || t->merges) {
        for (size_t i = 0; i + 1 < ns; i++)
            if (push_pair(t, s, w, (int)i, (int)i + 1)) return -1;
    }
    while (s->heap_n > 0) {
        cand c = heap_pop(s);
        sym *L = &s->syms[c.left], *R = &s->syms[c.right];
        if (L->len != c.llen || R->len != c.rlen || L->next != c.right) continue;   /* stale */
        L->len += R->len;
        L->id = c.merged;
        L->unk = 0;
        L->next = R->next;
        if (R->next >= 0) s->syms[R->next].prev = c.left;
        R->len = 0;
        if (push_pair(t, s, w, L->prev, c.left) || push_pair(t, s, w, c.left, L->next)) return -1;
    }

    for (int i = 0; i >= 0; i = s->syms[i].next) {
        const sym *y = &s->syms[i];
        int id = y->id;
        if (t->use_scores && id < 0) {
            id = strmap_get(t->vocab, w + y->start, y->len);
            if (id < 0) {
                int all = t->byte_fallback;
                for (uint32_t k = 0; k < y->len && all; k++) all = t->byte_ids[(unsigned char)w[y->start + k]] >= 0;
                if (all) {
                    for (uint32_t k = 0; k < y->len; k++)
                        if (ids_push(out, t->byte_ids[(unsigned char)w[y->start + k]])) return -1;
                    continue;
                }
                if (t->unk_id < 0) continue;
                id = t->unk_id;
            }
        }
        if (ids_push(out, id)) return -1;
    }
    return 0;
}

/* -------------------------------------------------------------- pipeline */

/* Appends s[0, n) to b with every occurrence of a replaced by r. */
static int replace_into(buf *b, const char *s, size_t n, const char *a, const char *r) {
    size_t an = strlen(a), rn = strlen(r);
    if (an == 0) return buf_add(b, s, n);
    size_t i = 0;
    while (i < n) {
        if (i + an <= n && memcmp(s + i, a, an) == 0) {
            if (buf_add(b, r, rn)) return -1;
            i += an;
        } else {
            size_t j = i + 1;
            while (j < n && s[j] != a[0]) j++;
            if (buf_add(b, s + i, j - i)) return -1;
            i = j;
        }
    }
    return 0;
}

/* Splits every piece of s->pa (text in s->a) by the regex, into s->pb. Pieces keep their text. */
static int split_pieces(scratch *s, const tok_regex *re, tok_split_behavior beh, int *match_err) {
    s->pb.n = 0;
    for (size_t k = 0; k < s->pa.n; k++) {
        piece p = s->pa.p[k];
        const char *x = s->a.s + p.off;
        size_t prev = 0, from = 0, ms, me, open = 0;   /* open: start of the piece being built */
        int last_was_match = 0;
        size_t lm_start = 0;
        for (;;) {
            int r = tok_regex_find(re, s->m, x, p.len, from, &ms, &me);
            if (r < 0) {
                *match_err = 1;
                return -1;
            }
            if (r == 0) break;
            if (me == ms) {   /* empty match: not a delimiter; step over one character */
                if (ms >= p.len) break;
                uint32_t cp;
                size_t cl = tok_utf8_len((const unsigned char *)x + ms, p.len - ms, &cp);
                from = ms + (cl ? cl : 1);
                continue;
            }
            switch (beh) {
            case TOK_SPLIT_REMOVED:
                if (pieces_push(&s->pb, p.off + prev, ms - prev, p.at_start && prev == 0)) return -1;
                break;
            case TOK_SPLIT_ISOLATED:
                if (pieces_push(&s->pb, p.off + prev, ms - prev, p.at_start && prev == 0) ||
                    pieces_push(&s->pb, p.off + ms, me - ms, p.at_start && ms == 0))
                    return -1;
                break;
            case TOK_SPLIT_MERGED_PREV:
                if (pieces_push(&s->pb, p.off + prev, me - prev, p.at_start && prev == 0)) return -1;
                break;
            case TOK_SPLIT_MERGED_NEXT:
                if (pieces_push(&s->pb, p.off + open, ms - open, p.at_start && open == 0)) return -1;
                open = ms;
                break;
            case TOK_SPLIT_CONTIGUOUS:
                if (last_was_match && ms == prev) {
                    s->pb.n--;   /* extend the previous match */
                    if (pieces_push(&s->pb, p.off + lm_start, me - lm_start, p.at_start && lm_start == 0))
                        return -1;
                } else {
                    if (pieces_push(&s->pb, p.off + prev, ms - prev, p.at_start && prev == 0) ||
                        pieces_push(&s->pb, p.off + ms, me - ms, p.at_start && ms == 0))
                        return -1;
                    lm_start = ms;
                }
                break;
            }
            last_was_match = 1;
            prev = me;
            from = me;
        }
        if (beh == TOK_SPLIT_MERGED_NEXT) {
            if (pieces_push(&s->pb, p.off + open, p.len - open, p.at_start && open == 0)) return -1;
        } else if (pieces_push(&s->pb, p.off + prev, p.len - prev, p.at_start && prev == 0)) {
            return -1;
        }
    }
    piecebuf tmp = s->pa;
    s->pa = s->pb;
    s->pb = tmp;
    return 0;
}

/* Rewrites every piece of s->pa into s->b (new text), then swaps. */
static int bytelevel_pieces(scratch *s, int add_prefix_space) {
    s->b.n = 0;
    s->pb.n = 0;
    for (size_t k = 0; k < s->pa.n; k++) {
        piece p = s->pa.p[k];
        const unsigned char *x = (const unsigned char *)s->a.s + p.off;
        size_t start = s->b.n;
        char u[4];
        if (add_prefix_space && x[0] != ' ' && buf_add(&s->b, u, tok_utf8_put(u, tok_byte_to_cp(' ')))) return -1;
        if (buf_reserve(&s->b, 2 * p.len)) return -1;
        for (size_t i = 0; i < p.len; i++) s->b.n += tok_utf8_put(s->b.s + s->b.n, tok_byte_to_cp(x[i]));
        if (pieces_push(&s->pb, start, s->b.n - start, p.at_start)) return -1;
    }
    buf tb = s->a;
    s->a = s->b;
    s->b = tb;
    piecebuf tp = s->pa;
    s->pa = s->pb;
    s->pb = tp;
    return 0;
}

static int metaspace_pieces(scratch *s, const tok_pre_step *st) {
    const char *rep = st->replacement;
    size_t rn = strlen(rep);
    s->b.n = 0;
    s->pb.n = 0;
    for (size_t k = 0; k < s->pa.n; k++) {
        piece p = s->pa.p[k];
        const char *x = s->a.s + p.off;
        size_t start = s->b.n;
        int starts_rep = (p.len >= rn && memcmp(x, rep, rn) == 0) || (x[0] == ' ' && p.len > 0);
        int prepend = st->prepend == TOK_PREPEND_ALWAYS || (st->prepend == TOK_PREPEND_FIRST && p.at_start);
        if (prepend && !starts_rep && buf_add(&s->b, rep, rn)) return -1;
        if (replace_into(&s->b, x, p.len, " ", rep)) return -1;
        size_t end = s->b.n;
        if (!st->split) {
            if (pieces_push(&s->pb, start, end - start, p.at_start)) return -1;
            continue;
        }
        /* MergedWithNext on the replacement: each piece starts at one */
        size_t open = start;
        for (size_t i = start + 1; i + rn <= end; i++) {
            if (memcmp(s->b.s + i, rep, rn) == 0) {
                if (pieces_push(&s->pb, open, i - open, p.at_start && open == start)) return -1;
                open = i;
                i += rn - 1;
            }
        }
        if (pieces_push(&s->pb, open, end - open, p.at_start && open == start)) return -1;
    }
    buf tb = s->a;
    s->a = s->b;
    s->b = tb;
    piecebuf tp = s->pa;
    s->pa = s->pb;
    s->pb = tp;
    return 0;
}

/* Normalizes, pre-tokenizes and BPE-encodes one segment between added tokens. */
static lomo_status encode_segment(lomo_tokenizer *t, scratch *s, const char *x, size_t n, int at_start,
                                  idbuf *out) {
    if (n == 0) return LOMO_OK;
    s->a.n = 0;
    if (buf_add(&s->a, x, n)) goto oom;
    for (int i = 0; i < t->n_norm; i++) {
        const tok_norm_step *st = &t->norm[i];
        s->b.n = 0;
        if (st->kind == TOK_NORM_PREPEND) {
            if (s->a.n > 0 && (buf_add(&s->b, st->a, strlen(st->a)) || buf_add(&s->b, s->a.s, s->a.n))) goto oom;
        } else if (replace_into(&s->b, s->a.s, s->a.n, st->a, st->b)) {
            goto oom;
        }
        if (buf_add(&s->b, "", 0)) goto oom;
        buf tb = s->a;
        s->a = s->b;
        s->b = tb;
    }
    s->pa.n = 0;
    if (pieces_push(&s->pa, 0, s->a.n, at_start)) goto oom;
    for (int i = 0; i < t->n_pre; i++) {
        const tok_pre_step *st = &t->pre[i];
        int match_err = 0;
        int rc = 0;
        switch (st->kind) {
        case TOK_PRE_SPLIT:
            rc = split_pieces(s, st->re, st->behavior, &match_err);
            break;
        case TOK_PRE_BYTELEVEL:
            /* HF order: the prefix space, then the regex split, then the byte map */
            if (st->add_prefix_space) {
                s->b.n = 0;
                s->pb.n = 0;
                for (size_t k = 0; k < s->pa.n && rc == 0; k++) {
                    piece p = s->pa.p[k];
                    size_t start = s->b.n;
                    if (s->a.s[p.off] != ' ') rc = buf_add(&s->b, " ", 1);
                    if (!rc) rc = buf_add(&s->b, s->a.s + p.off, p.len);
                    if (!rc) rc = pieces_push(&s->pb, start, s->b.n - start, p.at_start);
                }
                buf tb = s->a;
                s->a = s->b, s->b = tb;
                piecebuf tp = s->pa;
                s->pa = s->pb, s->pb = tp;
            }
            if (!rc && st->re) rc = split_pieces(s, st->re, TOK_SPLIT_ISOLATED, &match_err);
            if (!rc) rc = bytelevel_pieces(s, 0);
            break;
        case TOK_PRE_METASPACE:
            rc = metaspace_pieces(s, st);
            break;
        }
        if (match_err)
            return lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: pre-tokenizer regex failed to match (PCRE2 error)",
                             t->source);
        if (rc) goto oom;
    }
    for (size_t k = 0; k < s->pa.n; k++)
        if (bpe_piece(t, s, s->a.s + s->pa.p[k].off, s->pa.p[k].len, out)) goto oom;
    return LOMO_OK;
oom:
    return lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory while encoding", t->source);
}

/* Length of the whitespace character that ends at x[end) and starts at or after lo, or 0. */
static size_t ws_before(const char *x, size_t lo, size_t end) {
    size_t j = end;
    while (j > lo && end - j < 4) {
        j--;
        if (((unsigned char)x[j] & 0xC0) != 0x80) break;
    }
    uint32_t cp;
    size_t cl = tok_utf8_len((const unsigned char *)x + j, end - j, &cp);
    return (cl && cl == end - j && tok_is_whitespace(cp)) ? cl : 0;
}

lomo_status lomo_tokenizer_encode(lomo_tokenizer *t, const char *text, size_t len, int add_special,
                                  int32_t **ids_out, size_t *n_out) {
    if (!t || !ids_out || !n_out || (!text && len > 0)) {
        return t ? lomo_fail(t->ctx, LOMO_ERR_INVALID_ARG, "lomo_tokenizer_encode: NULL argument")
                 : LOMO_ERR_INVALID_ARG;
    }
    *ids_out = NULL;
    *n_out = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t cl = tok_utf8_len((const unsigned char *)text + i, len - i, &cp);
        if (cl == 0)
            return lomo_fail(t->ctx, LOMO_ERR_INVALID_ARG, "%s: text is not valid UTF-8 at byte %zu", t->source, i);
        i += cl;
    }
    scratch s = {0};
    idbuf out = {0};
    lomo_status st = LOMO_OK;
    if (!(s.m = tok_match_ctx_create())) goto oom;
    if (add_special)
        for (int i = 0; i < t->n_prefix; i++)
            if (ids_push(&out, t->prefix[i])) goto oom;

    size_t seg = 0, pos = 0;
    while (pos < len) {
        unsigned char c = (unsigned char)text[pos];
        const tok_added *hit = NULL;
        for (int k = t->added_first[c]; k < t->added_first[c + 1]; k++) {
            const tok_added *a = &t->added[t->by_first[k]];
            if (a->len <= len - pos && memcmp(text + pos, a->text, a->len) == 0) {
                hit = a;   /* longest first */
                break;
            }
        }
        if (!hit) {
            uint32_t cp;
            pos += tok_utf8_len((const unsigned char *)text + pos, len - pos, &cp);
            continue;
        }
        size_t ms = pos, me = pos + hit->len, w;
        if (hit->lstrip)
            while (ms > seg && (w = ws_before(text, seg, ms)) > 0) ms -= w;
        if (hit->rstrip) {
            uint32_t cp;
            size_t cl;
            while (me < len && (cl = tok_utf8_len((const unsigned char *)text + me, len - me, &cp)) > 0 &&
                   tok_is_whitespace(cp))
                me += cl;
        }
        if ((st = encode_segment(t, &s, text + seg, ms - seg, seg == 0, &out))) goto done;
        if (ids_push(&out, hit->id)) goto oom;
        seg = pos = me;
    }
    if ((st = encode_segment(t, &s, text + seg, len - seg, seg == 0, &out))) goto done;
    if (add_special)
        for (int i = 0; i < t->n_suffix; i++)
            if (ids_push(&out, t->suffix[i])) goto oom;
    if (!out.v && !(out.v = malloc(sizeof *out.v))) goto oom;   /* a valid pointer even for no ids */
    *ids_out = out.v;
    *n_out = out.n;
    scratch_free(&s);
    return LOMO_OK;
oom:
    st = lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory while encoding", t->source);
done:
    scratch_free(&s);
    free(out.v);
    return st;
}

/* ----------------------------------------------------------------- decode */

/* A list of strings in one buffer. */
typedef struct strlist {
    buf text;
    size_t *off, *len;
    size_t n, cap;
} strlist;

static void strlist_free(strlist *l) { free(l->text.s), free(l->off), free(l->len); }

/* String i; "" rather than an offset from NULL while no byte has been stored yet. */
static const char *strlist_at(const strlist *l, size_t i) { return l->text.s ? l->text.s + l->off[i] : ""; }

/* Starts a new string at the end of the buffer; bytes added to l->text after it belong to it. */
static int strlist_open(strlist *l) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        size_t *o = realloc(l->off, cap * sizeof *o);
        if (!o) return -1;
        l->off = o;
        size_t *n = realloc(l->len, cap * sizeof *n);
        if (!n) return -1;
        l->len = n;
        l->cap = cap;
    }
    l->off[l->n] = l->text.n;
    l->len[l->n] = 0;
    l->n++;
    return 0;
}

static void strlist_close(strlist *l) { l->len[l->n - 1] = l->text.n - l->off[l->n - 1]; }

static int strlist_push(strlist *l, const char *s, size_t n) {
    if (strlist_open(l) || buf_add(&l->text, s, n)) return -1;
    strlist_close(l);
    return 0;
}

/* Appends bytes as valid UTF-8, each maximal invalid subpart as U+FFFD (Rust's from_utf8_lossy). */
static int add_lossy(buf *b, const unsigned char *x, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t cl = tok_utf8_len(x + i, n - i, &cp);
        if (cl) {
            if (buf_add(b, x + i, cl)) return -1;
            i += cl;
            continue;
        }
        unsigned c = x[i];
        size_t need = (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 1;
        size_t k = 1;
        if (need > 1 && i + 1 < n) {
            unsigned lo = 0x80, hi = 0xBF, d = x[i + 1];
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
            if (d >= lo && d <= hi) {
                k = 2;
                while (k < need && i + k < n && (x[i + k] & 0xC0) == 0x80) k++;
            }
        }
        if (buf_add(b, "\xEF\xBF\xBD", 3)) return -1;
        i += k;
    }
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* "<0xXX>" -> XX, else -1 */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int h = hexval(s[3]), l = hexval(s[4]);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
}

static int flush_bytes(strlist *o, buf *bytes) {
    if (bytes->n == 0) return 0;
    size_t i = 0;
    int ok = 1;
    while (i < bytes->n && ok) {
        uint32_t cp;
        size_t cl = tok_utf8_len((const unsigned char *)bytes->s + i, bytes->n - i, &cp);
        ok = cl > 0;
        i += cl;
    }
    if (ok) {
        if (strlist_push(o, bytes->s, bytes->n)) return -1;
    } else {
        /* HF: one U+FFFD per byte when the run is not valid UTF-8 */
        for (size_t k = 0; k < bytes->n; k++)
            if (strlist_push(o, "\xEF\xBF\xBD", 3)) return -1;
    }
    bytes->n = 0;
    return 0;
}

/* Applies one decoder step from list a into list o. */
static int dec_apply(const tok_dec_step *st, const strlist *a, strlist *o) {
    switch (st->kind) {
    case TOK_DEC_BYTELEVEL: {
        buf raw = {0};
        int rc = 0;
        for (size_t i = 0; i < a->n && !rc; i++) {
            const unsigned char *x = (const unsigned char *)strlist_at(a, i);
            size_t n = a->len[i], start = raw.n, j = 0;
            while (j < n && !rc) {
                uint32_t cp;
                size_t cl = tok_utf8_len(x + j, n - j, &cp);
                int b = cl ? tok_cp_to_byte(cp) : -1;
                if (b < 0) break;
                unsigned char ub = (unsigned char)b;
                rc = buf_add(&raw, &ub, 1);
                j += cl;
            }
            if (!rc && j < n) {   /* a char outside the table: HF keeps the token's own bytes */
                raw.n = start;
                rc = buf_add(&raw, x, n);
            }
        }
        if (!rc) rc = strlist_open(o);
        if (!rc) rc = add_lossy(&o->text, (const unsigned char *)raw.s, raw.n);
        if (!rc) strlist_close(o);
        free(raw.s);
        return rc;
    }
    case TOK_DEC_REPLACE:
        for (size_t i = 0; i < a->n; i++) {
            if (strlist_open(o) || replace_into(&o->text, strlist_at(a, i), a->len[i], st->a, st->b)) return -1;
            strlist_close(o);
        }
        return 0;
    case TOK_DEC_BYTEFALLBACK: {
        buf bytes = {0};
        int rc = 0;
        for (size_t i = 0; i < a->n && !rc; i++) {
            int b = byte_token(strlist_at(a, i), a->len[i]);
            if (b >= 0) {
                unsigned char ub = (unsigned char)b;
                rc = buf_add(&bytes, &ub, 1);
            } else {
                rc = flush_bytes(o, &bytes);
                if (!rc) rc = strlist_push(o, strlist_at(a, i), a->len[i]);
            }
        }
        if (!rc) rc = flush_bytes(o, &bytes);
        free(bytes.s);
        return rc;
    }
    case TOK_DEC_FUSE:
        if (strlist_open(o)) return -1;
        for (size_t i = 0; i < a->n; i++)
            if (buf_add(&o->text, strlist_at(a, i), a->len[i])) return -1;
        strlist_close(o);
        return 0;
    case TOK_DEC_STRIP: {
        size_t cn = strlen(st->a);
        for (size_t i = 0; i < a->n; i++) {
            const char *x = strlist_at(a, i);
            size_t lo = 0, hi = a->len[i];
            for (int k = 0; k < st->start && cn && lo + cn <= hi && memcmp(x + lo, st->a, cn) == 0; k++) lo += cn;
            for (int k = 0; k < st->stop && cn && hi >= lo + cn && memcmp(x + hi - cn, st->a, cn) == 0; k++) hi -= cn;
            if (strlist_push(o, x + lo, hi - lo)) return -1;
        }
        return 0;
    }
    case TOK_DEC_METASPACE: {
        size_t rn = strlen(st->a);
        for (size_t i = 0; i < a->n; i++) {
            const char *x = strlist_at(a, i);
            size_t n = a->len[i];
            if (strlist_open(o)) return -1;
            for (size_t j = 0; j < n;) {
                if (rn && j + rn <= n && memcmp(x + j, st->a, rn) == 0) {
                    if (!(i == 0 && st->prepend) && buf_add(&o->text, " ", 1)) return -1;
                    j += rn;
                } else {
                    if (buf_add(&o->text, x + j, 1)) return -1;
                    j++;
                }
            }
            strlist_close(o);
        }
        return 0;
    }
    }
    return 0;
}

lomo_status lomo_tokenizer_decode(lomo_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **text_out,
                                  size_t *len_out) {
    if (!t || !text_out || (!ids && n > 0)) {
        return t ? lomo_fail(t->ctx, LOMO_ERR_INVALID_ARG, "lomo_tokenizer_decode: NULL argument")
                 : LOMO_ERR_INVALID_ARG;
    }
    *text_out = NULL;
    if (len_out) *len_out = 0;
    strlist a = {0}, b = {0};
    for (size_t i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_tokens || !t->tokens[id]) {
            strlist_free(&a);
            return lomo_fail(t->ctx, LOMO_ERR_INVALID_ARG, "%s: decode: id %d at position %zu is not a token (vocabulary size %d)",
                             t->source, id, i, t->n_tokens);
        }
        if (skip_special && t->special[id]) continue;
        if (strlist_push(&a, t->tokens[id], t->token_len[id])) goto oom;
    }
    if (!t->has_decoder) {
        /* HF without a decoder joins the tokens with spaces */
        if (strlist_open(&b)) goto oom;
        for (size_t i = 0; i < a.n; i++)
            if ((i && buf_add(&b.text, " ", 1)) || buf_add(&b.text, strlist_at(&a, i), a.len[i])) goto oom;
        strlist_close(&b);
        strlist tmp = a;
        a = b, b = tmp;
    }
    for (int k = 0; k < t->n_dec && t->has_decoder; k++) {
        b.n = 0;
        b.text.n = 0;
        if (dec_apply(&t->dec[k], &a, &b)) goto oom;
        strlist tmp = a;
        a = b, b = tmp;
    }
    buf res = {0};
    if (buf_reserve(&res, 0)) goto oom;
    for (size_t i = 0; i < a.n; i++)
        if (buf_add(&res, strlist_at(&a, i), a.len[i])) {
            free(res.s);
            goto oom;
        }
    res.s[res.n] = 0;
    *text_out = res.s;
    if (len_out) *len_out = res.n;
    strlist_free(&a), strlist_free(&b);
    return LOMO_OK;
oom:
    strlist_free(&a), strlist_free(&b);
    return lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory while decoding", t->source);
}

/* -------------------------------------------------------------- accessors */

int lomo_tokenizer_vocab_size(const lomo_tokenizer *t) { return t ? t->n_tokens : 0; }
int lomo_tokenizer_bos_id(const lomo_tokenizer *t) { return t ? t->bos_id : -1; }
int lomo_tokenizer_adds_bos(const lomo_tokenizer *t) {
    return t && t->bos_id >= 0 && t->n_prefix > 0 && t->prefix[0] == t->bos_id;
}
int lomo_tokenizer_eos_id(const lomo_tokenizer *t) { return t ? t->eos_id : -1; }
const char *lomo_tokenizer_chat_template(const lomo_tokenizer *t) { return t ? t->chat_template : NULL; }

int lomo_tokenizer_token_to_id(const lomo_tokenizer *t, const char *token) {
    if (!t || !token) return -1;
    return strmap_get(t->vocab, token, strlen(token));
}

const char *lomo_tokenizer_id_to_token(const lomo_tokenizer *t, int id) {
    if (!t || id < 0 || id >= t->n_tokens) return NULL;
    return t->tokens[id];
}
