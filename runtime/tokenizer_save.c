/*
 * tokenizer_save.c: a tokenizer written as Hugging Face files.
 *
 * tokenizer.json holds the BPE model, the added tokens and every pipeline
 * stage in the forms tokenizer_hf.c reads and HF tokenizers runs; a GGUF's
 * tokenizer becomes the pre-tokenizer steps its preset stands for.
 * tokenizer_config.json names the BOS and EOS, which tokenizer.json cannot
 * (lomo_tokenizer_load_hf reads them back from it). Added tokens are written
 * "normalized": false, since lomo matches every added token in the raw text.
 *
 * A vocabulary that merges by token score (a GGUF SentencePiece one, which
 * has no merges) is written as HF converts a SentencePiece model: each split
 * of a token into two tokens is a merge, ranked by the token's score, and
 * unknown characters stay one <unk> each, as score mode leaves them.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "atomic_file.h"
#include "tokenizer.h"

static json_t *type_obj(const char *type) { return json_pack("{s:s}", "type", type); }

/* One step as itself, several as a Sequence under key; none is null. */
static json_t *sequence(json_t *steps, const char *key) {
    if (!steps) return NULL;
    size_t n = json_array_size(steps);
    if (n == 0) {
        json_decref(steps);
        return json_null();
    }
    if (n == 1) {
        json_t *one = json_incref(json_array_get(steps, 0));
        json_decref(steps);
        return one;
    }
    json_t *seq = type_obj("Sequence");
    if (seq) json_object_set(seq, key, steps);
    json_decref(steps);
    return seq;
}

static const char *prepend_name(tok_prepend p) {
    return p == TOK_PREPEND_ALWAYS ? "always" : p == TOK_PREPEND_FIRST ? "first" : "never";
}

static json_t *normalizer_json(const lomo_tokenizer *t) {
    json_t *steps = json_array();
    for (int i = 0; steps && i < t->n_norm; i++) {
        const tok_norm_step *s = &t->norm[i];
        json_array_append_new(steps, s->kind == TOK_NORM_PREPEND
                                         ? json_pack("{s:s,s:s}", "type", "Prepend", "prepend", s->a)
                                         : json_pack("{s:s,s:{s:s},s:s}", "type", "Replace", "pattern", "String", s->a,
                                                     "content", s->b));
    }
    return sequence(steps, "normalizers");
}

static json_t *pretok_json(const lomo_tokenizer *t) {
    static const char *const behaviors[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                            "Contiguous"};
    json_t *steps = json_array();
    for (int i = 0; steps && i < t->n_pre; i++) {
        const tok_pre_step *s = &t->pre[i];
        json_t *j;
        if (s->kind == TOK_PRE_BYTELEVEL)   /* its regex, when it has one, is GPT-2's: use_regex */
            j = json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", s->add_prefix_space,
                          "trim_offsets", 1, "use_regex", s->re != NULL);
        else if (s->kind == TOK_PRE_SPLIT)
            j = json_pack("{s:s,s:{s:s},s:s,s:b}", "type", "Split", "pattern", "Regex", tok_regex_pattern(s->re),
                          "behavior", behaviors[s->behavior], "invert", 0);
        else
            j = json_pack("{s:s,s:s,s:s,s:b}", "type", "Metaspace", "replacement", s->replacement, "prepend_scheme",
                          prepend_name(s->prepend), "split", s->split);
        json_array_append_new(steps, j);
    }
    return sequence(steps, "pretokenizers");
}

static json_t *decoder_json(const lomo_tokenizer *t) {
    if (!t->has_decoder) return json_null();
    json_t *steps = json_array();
    for (int i = 0; steps && i < t->n_dec; i++) {
        const tok_dec_step *s = &t->dec[i];
        json_t *j = NULL;
        switch (s->kind) {
        case TOK_DEC_BYTELEVEL:
            j = json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1,
                          "use_regex", 1);
            break;
        case TOK_DEC_REPLACE:
            j = json_pack("{s:s,s:{s:s},s:s}", "type", "Replace", "pattern", "String", s->a, "content", s->b);
            break;
        case TOK_DEC_BYTEFALLBACK: j = type_obj("ByteFallback"); break;
        case TOK_DEC_FUSE: j = type_obj("Fuse"); break;
        case TOK_DEC_STRIP:
            j = json_pack("{s:s,s:s,s:i,s:i}", "type", "Strip", "content", s->a, "start", s->start, "stop", s->stop);
            break;
        case TOK_DEC_METASPACE:
            j = json_pack("{s:s,s:s,s:s,s:b}", "type", "Metaspace", "replacement", s->a, "prepend_scheme",
                          s->prepend ? "always" : "never", "split", 1);
            break;
        }
        json_array_append_new(steps, j);
    }
    return sequence(steps, "decoders");
}

/* TemplateProcessing: the prefix ids, the text ($A), the suffix ids; pairs repeat it with type 1. */
static json_t *post_json(const lomo_tokenizer *t) {
    if (t->n_prefix + t->n_suffix == 0) return json_null();
    json_t *single = json_array(), *pair = json_array(), *specials = json_object();
    for (int part = 0; part < 2; part++) {
        for (int i = 0; i < t->n_prefix; i++)
            json_array_append_new(part ? pair : single, json_pack("{s:{s:s,s:i}}", "SpecialToken", "id",
                                                                   t->tokens[t->prefix[i]], "type_id", part));
        json_array_append_new(part ? pair : single,
                              json_pack("{s:{s:s,s:i}}", "Sequence", "id", part ? "B" : "A", "type_id", part));
        for (int i = 0; i < t->n_suffix; i++)
            json_array_append_new(part ? pair : single, json_pack("{s:{s:s,s:i}}", "SpecialToken", "id",
                                                                   t->tokens[t->suffix[i]], "type_id", part));
    }
    /* the pair: the first sequence's parts, then the second's */
    for (size_t i = 0; i < json_array_size(single); i++) json_array_insert(pair, i, json_array_get(single, i));
    for (int k = 0; k < t->n_prefix + t->n_suffix; k++) {
        int id = k < t->n_prefix ? t->prefix[k] : t->suffix[k - t->n_prefix];
        json_object_set_new(specials, t->tokens[id], json_pack("{s:s,s:[i],s:[s]}", "id", t->tokens[id], "ids", id,
                                                               "tokens", t->tokens[id]));
    }
    return json_pack("{s:s,s:o,s:o,s:o}", "type", "TemplateProcessing", "single", single, "pair", pair,
                     "special_tokens", specials);
}

static lomo_status model_json(const lomo_tokenizer *t, json_t **out) {
    *out = NULL;
    json_t *vocab = json_object(), *merges = json_array();
    int32_t *pairs = NULL;
    int n = tok_merges_by_rank(t, &pairs);
    lomo_status st = LOMO_OK;
    if (!vocab || !merges || n < 0)
        st = lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory writing the model", t->source);
    /* JSON holds UTF-8 only, and one id per text: a token that breaks either is refused, not dropped */
    for (int i = 0; !st && i < t->n_tokens; i++) {
        if (!t->tokens[i]) continue;
        const json_t *seen = json_object_get(vocab, t->tokens[i]);
        if (seen)
            st = lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: tokens %d and %d are both \"%.64s\", which tokenizer.json "
                           "cannot hold", t->source, (int)json_integer_value(seen), i, t->tokens[i]);
        else if (json_object_set_new(vocab, t->tokens[i], json_integer(i)) != 0)
            st = lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: token %d is not valid UTF-8, which tokenizer.json cannot "
                           "hold", t->source, i);
    }
    for (int r = 0; !st && r < n; r++) {
        const char *a = t->tokens[pairs[2 * r]], *b = t->tokens[pairs[2 * r + 1]];
        /* HF splits "left right" at its one space: a token with a space cannot be written */
        if (strchr(a, ' ') || strchr(b, ' ')) {
            st = lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: merge of \"%.64s\" and \"%.64s\": a token with a space "
                           "cannot be written as a tokenizer.json merge", t->source, a, b);
            break;
        }
        char *m = malloc(strlen(a) + strlen(b) + 2);
        if (!m) {
            st = lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory writing the merges", t->source);
            break;
        }
        sprintf(m, "%s %s", a, b);
        json_array_append_new(merges, json_string(m));
        free(m);
    }
    free(pairs);
    if (st) {
        json_decref(vocab);
        json_decref(merges);
        return st;
    }
    /* score mode leaves unknown characters one <unk> each */
    int fuse_unk = t->fuse_unk && !t->use_scores;
    *out = json_pack("{s:s,s:n,s:o,s:n,s:n,s:b,s:b,s:b,s:o,s:o}", "type", "BPE", "dropout", "unk_token",
                     t->unk_id >= 0 ? json_string(t->tokens[t->unk_id]) : json_null(), "continuing_subword_prefix",
                     "end_of_word_suffix", "fuse_unk", fuse_unk, "byte_fallback", t->byte_fallback, "ignore_merges",
                     t->ignore_merges, "vocab", vocab, "merges", merges);
    return *out ? LOMO_OK : lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory writing the model", t->source);
}

static int by_id(const void *x, const void *y) {
    const tok_added *a = *(const tok_added *const *)x, *b = *(const tok_added *const *)y;
    return (a->id > b->id) - (a->id < b->id);
}

static json_t *added_json(const lomo_tokenizer *t) {
    json_t *list = json_array();
    /* in id order, as HF writes them (the matcher keeps them longest first) */
    const tok_added **order = malloc((t->n_added ? t->n_added : 1) * sizeof *order);
    if (!list || !order) {
        json_decref(list);
        free(order);
        return NULL;
    }
    for (int i = 0; i < t->n_added; i++) order[i] = &t->added[i];
    qsort(order, (size_t)t->n_added, sizeof *order, by_id);
    for (int i = 0; i < t->n_added; i++) {
        const tok_added *a = order[i];
        json_array_append_new(list, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", a->id, "content",
                                              t->tokens[a->id], "single_word", 0, "lstrip", a->lstrip, "rstrip",
                                              a->rstrip, "normalized", 0, "special", a->special));
    }
    free(order);
    return list;
}

static json_t *name_or_null(const lomo_tokenizer *t, int id) {
    return id >= 0 && id < t->n_tokens && t->tokens[id] ? json_string(t->tokens[id]) : json_null();
}

static lomo_status write_json(const lomo_tokenizer *t, const char *dir, const char *name, json_t *j) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    if (!text) return lomo_fail(t->ctx, LOMO_ERR_OOM, "%s: out of memory encoding the JSON", path);
    lomo_status st = atomic_write_file(t->ctx, path, text, strlen(text));
    free(text);
    return st;
}

lomo_status lomo_tokenizer_save_hf(const lomo_tokenizer *t, const char *dir) {
    if (!t || !dir) return LOMO_ERR_INVALID_ARG;
    lomo_status st = atomic_make_dirs(t->ctx, dir, "lomo_tokenizer_save_hf");
    if (st) return st;
    json_t *model = NULL;
    if ((st = model_json(t, &model))) return st;
    json_t *root = json_pack("{s:s,s:n,s:n,s:o,s:o,s:o,s:o,s:o,s:o}", "version", "1.0", "truncation", "padding",
                             "added_tokens", added_json(t), "normalizer", normalizer_json(t), "pre_tokenizer",
                             pretok_json(t), "post_processor", post_json(t), "decoder", decoder_json(t), "model",
                             model);
    if ((st = write_json(t, dir, "tokenizer.json", root))) return st;
    /* the class that runs tokenizer.json as it is: transformers keeps the post-processor */
    json_t *cfg = json_pack("{s:s,s:o,s:o,s:o,s:b}", "tokenizer_class", "PreTrainedTokenizerFast", "bos_token",
                            name_or_null(t, t->bos_id), "eos_token", name_or_null(t, t->eos_id), "unk_token",
                            name_or_null(t, t->unk_id), "clean_up_tokenization_spaces", 0);
    /* the model's chat template goes with it: transformers' apply_chat_template reads it from here */
    if (cfg && t->chat_template && json_object_set_new(cfg, "chat_template", json_string(t->chat_template))) {
        json_decref(cfg);
        cfg = NULL;
    }
    return write_json(t, dir, "tokenizer_config.json", cfg);
}
