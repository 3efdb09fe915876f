/*
 * gguf_tokenizer.c: a tokenizer from GGUF metadata (tokenizer.ggml.*).
 *
 * tokenizer.ggml.model says the kind ("gpt2": byte-level BPE, "llama":
 * SentencePiece-style BPE), tokenizer.ggml.pre the byte-level pre-tokenizer
 * regex; tokens, scores, token_type and merges are parallel arrays. The
 * arrays are copied out of the file into a tokenizer_spec and handed to
 * tokenizer_create, which keeps what it needs.
 */
#include <stdlib.h>
#include <string.h>
#include "gguf.h"
#include "tokenizer.h"

/* llama.cpp's tokenizer.ggml.pre names -> lomo's regex presets */
static const struct { const char *pre, *preset; } PRESETS[] = {
    {"smollm", "smollm"}, {"llama-bpe", "llama3"}, {"llama3", "llama3"},
    {"gpt-2", "gpt2"},    {"gpt2", "gpt2"},        {"default", "gpt2"},
};

typedef struct spec_buffers {
    char *model, *pre;
    char **tokens, **merges;
    float *scores;
    int32_t *types;
} spec_buffers;

static void free_buffers(spec_buffers *b) {
    free(b->model);
    free(b->pre);
    free(b->tokens);
    free(b->merges);
    free(b->scores);
    free(b->types);
}

/* An optional token id: -1 when absent; must name a token when present. */
static lomo_status token_id(const gguf_file *f, const char *key, int n_tokens, int *out) {
    *out = -1;
    if (!gguf_find(f, key)) return LOMO_OK;
    uint32_t v;
    lomo_status st = gguf_get_u32(f, key, &v);
    if (st) return st;
    if (v >= (uint32_t)n_tokens)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s: token id %u is outside the vocabulary of %d tokens",
                         f->name, key, v, n_tokens);
    *out = (int)v;
    return LOMO_OK;
}

static lomo_status optional_bool(const gguf_file *f, const char *key, int *out) {
    return gguf_find(f, key) ? gguf_get_bool(f, key, out) : LOMO_OK;
}

/* A per-token array must have one entry per token. */
static lomo_status check_count(const gguf_file *f, const char *key, uint64_t n, int n_tokens) {
    if (n != (uint64_t)n_tokens)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key %s: %llu entries for %d tokens", f->name, key,
                         (unsigned long long)n, n_tokens);
    return LOMO_OK;
}

static lomo_status read_spec(const gguf_file *f, tokenizer_spec *s, spec_buffers *b) {
    memset(s, 0, sizeof *s);
    lomo_status st = gguf_get_str(f, "tokenizer.ggml.model", &b->model);
    if (st) return st;
    if (strcmp(b->model, "gpt2") == 0) {
        s->kind = TOK_BPE_BYTELEVEL;
    } else if (strcmp(b->model, "llama") == 0) {
        s->kind = TOK_BPE_SENTENCEPIECE;
    } else {
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key tokenizer.ggml.model: \"%.64s\" is not supported "
                         "(lomo reads \"gpt2\" byte-level BPE and \"llama\" SentencePiece BPE)", f->name, b->model);
    }
    if (s->kind == TOK_BPE_BYTELEVEL) {
        s->pretokenizer = "gpt2";   /* llama.cpp's default when the key is absent */
        if (gguf_find(f, "tokenizer.ggml.pre")) {
            if ((st = gguf_get_str(f, "tokenizer.ggml.pre", &b->pre))) return st;
            s->pretokenizer = NULL;
            for (size_t i = 0; i < sizeof PRESETS / sizeof PRESETS[0]; i++)
                if (strcmp(b->pre, PRESETS[i].pre) == 0) s->pretokenizer = PRESETS[i].preset;
            if (!s->pretokenizer)
                return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key tokenizer.ggml.pre: pre-tokenizer \"%.64s\" is not "
                                 "supported (lomo knows smollm, llama-bpe, llama3, gpt-2, default)", f->name, b->pre);
        }
    }

    uint64_t n;
    if ((st = gguf_get_str_array(f, "tokenizer.ggml.tokens", &b->tokens, &n))) return st;
    if (n == 0 || n > INT32_MAX)
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key tokenizer.ggml.tokens: %llu tokens", f->name,
                         (unsigned long long)n);
    s->n_tokens = (int)n;
    s->tokens = (const char *const *)b->tokens;
    if (gguf_find(f, "tokenizer.ggml.scores")) {
        if ((st = gguf_get_f32_array(f, "tokenizer.ggml.scores", &b->scores, &n)) ||
            (st = check_count(f, "tokenizer.ggml.scores", n, s->n_tokens)))
            return st;
        s->scores = b->scores;
    }
    if (gguf_find(f, "tokenizer.ggml.token_type")) {
        if ((st = gguf_get_i32_array(f, "tokenizer.ggml.token_type", &b->types, &n)) ||
            (st = check_count(f, "tokenizer.ggml.token_type", n, s->n_tokens)))
            return st;
        s->token_types = b->types;
    }
    if (gguf_find(f, "tokenizer.ggml.merges")) {
        if ((st = gguf_get_str_array(f, "tokenizer.ggml.merges", &b->merges, &n))) return st;
        if (n > INT32_MAX)
            return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: key tokenizer.ggml.merges: %llu merges", f->name,
                             (unsigned long long)n);
        s->n_merges = (int)n;
        s->merges = (const char *const *)b->merges;
    } else if (s->kind == TOK_BPE_BYTELEVEL) {
        return lomo_fail(f->ctx, LOMO_ERR_FORMAT, "%s: missing key tokenizer.ggml.merges (a gpt2 tokenizer needs "
                         "its merges)", f->name);
    }

    if ((st = token_id(f, "tokenizer.ggml.bos_token_id", s->n_tokens, &s->bos_id)) ||
        (st = token_id(f, "tokenizer.ggml.eos_token_id", s->n_tokens, &s->eos_id)) ||
        (st = token_id(f, "tokenizer.ggml.unknown_token_id", s->n_tokens, &s->unk_id)))
        return st;
    /* Byte-level BPE covers every byte through its alphabet; where a vocabulary lacks
     * some byte symbols (SmolLM2 lacks 21), HF drops those bytes instead of emitting
     * unk, so an unk id from the file is not used for encoding. */
    if (s->kind == TOK_BPE_BYTELEVEL) s->unk_id = -1;
    /* tokenizer.ggml.padding_token_id is not read: encoding never pads */
    /* llama.cpp's defaults: SentencePiece and Llama-3 prepend BOS, other byte-level vocabularies do not */
    s->add_bos = s->kind == TOK_BPE_SENTENCEPIECE ||
                 (s->pretokenizer && strcmp(s->pretokenizer, "llama3") == 0);
    s->add_eos = 0;
    if ((st = optional_bool(f, "tokenizer.ggml.add_bos_token", &s->add_bos)) ||
        (st = optional_bool(f, "tokenizer.ggml.add_eos_token", &s->add_eos)))
        return st;
    return LOMO_OK;
}

lomo_status lomo_tokenizer_load_gguf(lomo_tokenizer **out, lomo_ctx *ctx, const char *gguf_path) {
    if (!out || !ctx || !gguf_path)
        return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "lomo_tokenizer_load_gguf: NULL argument");
    *out = NULL;
    gguf_file *f;
    lomo_status st = gguf_open(&f, ctx, gguf_path);
    if (st) return st;
    tokenizer_spec spec;
    spec_buffers b = {0};
    st = read_spec(f, &spec, &b);
    if (!st) st = tokenizer_create(out, ctx, &spec, gguf_path);
    free_buffers(&b);
    /* the chat template, when the file has one (a string, or an error naming the key) */
    char *tmpl = NULL;
    if (!st && gguf_find(f, "tokenizer.chat_template") && !(st = gguf_get_str(f, "tokenizer.chat_template", &tmpl)))
        st = tok_set_chat_template(*out, tmpl, gguf_path);
    free(tmpl);
    if (st && *out) {
        lomo_tokenizer_destroy(*out);
        *out = NULL;
    }
    gguf_close(f);
    return st;
}
