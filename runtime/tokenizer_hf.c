/*
 * tokenizer_hf.c: Hugging Face tokenizer.json -> lomo_tokenizer.
 *
 * model (BPE: vocab, merges as "a b" or [a, b], unk_token, byte_fallback,
 * fuse_unk, ignore_merges) and added_tokens become a tokenizer_spec built by
 * tokenizer_create; normalizer, pre_tokenizer, post_processor and decoder
 * then replace the default pipeline. Whatever we do not implement is an
 * error naming the file and the field, never a silent difference.
 * tokenizer.json carries no bos/eos: they come from tokenizer_config.json beside
 * it, else from the post-processor's template, else from the usual token names.
 */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "tokenizer.h"

#define HF_MAX_BYTES ((size_t)1 << 30)

typedef struct hf_loader {
    lomo_ctx *ctx;
    const char *src;
    lomo_tokenizer *t;
    int has_prefix, has_suffix;   /* the post-processor named bos / eos */
} hf_loader;

/* "<src>: <field>: <message>" */
__attribute__((format(printf, 4, 5))) static lomo_status bad(hf_loader *L, lomo_status st, const char *field,
                                                             const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lomo_fail(L->ctx, st, "%s: %s: %s", L->src, field, msg);
}

static char *hf_dup(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

/* Optional boolean: absent or null keeps *out. */
static lomo_status get_bool(hf_loader *L, const json_t *obj, const char *key, const char *where, int *out) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return LOMO_OK;
    if (!json_is_boolean(v)) {
        char f[160];
        snprintf(f, sizeof f, "%s.%s", where, key);
        return bad(L, LOMO_ERR_FORMAT, f, "expected true or false");
    }
    *out = json_is_true(v);
    return LOMO_OK;
}

static lomo_status get_str(hf_loader *L, const json_t *obj, const char *key, const char *where, const char **out) {
    *out = "";
    const json_t *v = json_object_get(obj, key);
    char f[160];
    snprintf(f, sizeof f, "%s.%s", where, key);
    if (!v) return bad(L, LOMO_ERR_FORMAT, f, "missing");
    if (!json_is_string(v)) return bad(L, LOMO_ERR_FORMAT, f, "expected a string");
    *out = json_string_value(v);
    return LOMO_OK;
}

static const char *type_of(const json_t *obj) {
    const json_t *v = json_object_get(obj, "type");
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* {"String": s} only (a literal); Regex patterns are unsupported where this is used. */
static lomo_status get_string_pattern(hf_loader *L, const json_t *obj, const char *where, const char **out) {
    *out = "";
    char f[160];
    snprintf(f, sizeof f, "%s.pattern", where);
    const json_t *p = json_object_get(obj, "pattern");
    if (!json_is_object(p)) return bad(L, LOMO_ERR_FORMAT, f, "missing (expected {\"String\": ...})");
    const json_t *s = json_object_get(p, "String");
    if (!json_is_string(s)) return bad(L, LOMO_ERR_FORMAT, f, "only {\"String\": ...} patterns are supported here");
    *out = json_string_value(s);
    return LOMO_OK;
}

/* A Metaspace replacement: exactly one character. */
static lomo_status get_replacement(hf_loader *L, const json_t *obj, const char *where, char out[8]) {
    const char *r;
    lomo_status st = get_str(L, obj, "replacement", where, &r);
    if (st) return st;
    uint32_t cp;
    size_t n = strlen(r);
    if (n == 0 || n > 4 || tok_utf8_len((const unsigned char *)r, n, &cp) != n) {
        char f[160];
        snprintf(f, sizeof f, "%s.replacement", where);
        return bad(L, LOMO_ERR_FORMAT, f, "expected one character, found \"%s\"", r);
    }
    memcpy(out, r, n + 1);
    return LOMO_OK;
}

/* prepend_scheme, or the legacy add_prefix_space */
static lomo_status get_prepend(hf_loader *L, const json_t *obj, const char *where, tok_prepend *out) {
    const json_t *v = json_object_get(obj, "prepend_scheme");
    *out = TOK_PREPEND_ALWAYS;
    if (v && !json_is_null(v)) {
        const char *s = json_is_string(v) ? json_string_value(v) : "";
        if (strcmp(s, "always") == 0) *out = TOK_PREPEND_ALWAYS;
        else if (strcmp(s, "first") == 0) *out = TOK_PREPEND_FIRST;
        else if (strcmp(s, "never") == 0) *out = TOK_PREPEND_NEVER;
        else {
            char f[160];
            snprintf(f, sizeof f, "%s.prepend_scheme", where);
            return bad(L, LOMO_ERR_FORMAT, f, "expected \"always\", \"first\" or \"never\"");
        }
        return LOMO_OK;
    }
    int aps = 1;
    lomo_status st = get_bool(L, obj, "add_prefix_space", where, &aps);
    if (!st) *out = aps ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER;
    return st;
}

static lomo_status unsupported(hf_loader *L, const char *where, const json_t *obj, const char *supported) {
    char f[160];
    snprintf(f, sizeof f, "%s.type", where);
    const char *ty = type_of(obj);
    if (!ty) return bad(L, LOMO_ERR_FORMAT, f, "missing");
    return bad(L, LOMO_ERR_FORMAT, f, "\"%s\" is not supported (supported: %s)", ty, supported);
}

static lomo_status check_object(hf_loader *L, const json_t *obj, const char *where) {
    if (!json_is_object(obj)) return bad(L, LOMO_ERR_FORMAT, where, "expected an object or null");
    return LOMO_OK;
}

/* ------------------------------------------------------------ normalizer */

static lomo_status parse_normalizer(hf_loader *L, const json_t *n, const char *where) {
    if (!n || json_is_null(n)) return LOMO_OK;
    lomo_status st = check_object(L, n, where);
    if (st) return st;
    const char *ty = type_of(n);
    char f[200];
    if (ty && strcmp(ty, "Sequence") == 0) {
        const json_t *list = json_object_get(n, "normalizers");
        snprintf(f, sizeof f, "%s.normalizers", where);
        if (!json_is_array(list)) return bad(L, LOMO_ERR_FORMAT, f, "missing or not a list");
        for (size_t i = 0; i < json_array_size(list); i++) {
            snprintf(f, sizeof f, "%s.normalizers[%zu]", where, i);
            if ((st = parse_normalizer(L, json_array_get(list, i), f))) return st;
        }
        return LOMO_OK;
    }
    if (ty && strcmp(ty, "Prepend") == 0) {
        const char *p;
        if ((st = get_str(L, n, "prepend", where, &p))) return st;
        return tok_norm_add(L->t, (tok_norm_step){TOK_NORM_PREPEND, hf_dup(p), NULL});
    }
    if (ty && strcmp(ty, "Replace") == 0) {
        const char *p, *c;
        if ((st = get_string_pattern(L, n, where, &p)) || (st = get_str(L, n, "content", where, &c))) return st;
        if (!*p) return bad(L, LOMO_ERR_FORMAT, where, "Replace with an empty pattern");
        return tok_norm_add(L->t, (tok_norm_step){TOK_NORM_REPLACE, hf_dup(p), hf_dup(c)});
    }
    return unsupported(L, where, n, "Sequence, Prepend, Replace");
}

/* --------------------------------------------------------- pre-tokenizer */

static lomo_status compile_step(hf_loader *L, const char *where, const char *pattern, size_t len,
                                tok_pre_step *step) {
    char err[256];
    step->re = tok_regex_compile(pattern, len, err, sizeof err);
    if (!step->re) return bad(L, LOMO_ERR_FORMAT, where, "regex does not compile: %s", err);
    return LOMO_OK;
}

/* A literal as a regex: every ASCII punctuation character escaped. */
static char *escape_literal(const char *s) {
    size_t n = strlen(s);
    char *r = malloc(2 * n + 1), *o = r;
    if (!r) return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == ' '))
            *o++ = '\\';
        *o++ = (char)c;
    }
    *o = 0;
    return r;
}

static lomo_status parse_split(hf_loader *L, const json_t *p, const char *where) {
    char f[200];
    lomo_status st;
    int invert = 0;
    if ((st = get_bool(L, p, "invert", where, &invert))) return st;
    if (invert) {
        snprintf(f, sizeof f, "%s.invert", where);
        return bad(L, LOMO_ERR_FORMAT, f, "inverted splits are not supported");
    }
    const char *beh;
    if ((st = get_str(L, p, "behavior", where, &beh))) return st;
    tok_pre_step step = {.kind = TOK_PRE_SPLIT};
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    int found = 0;
    for (int i = 0; i < 5; i++)
        if (strcmp(beh, names[i]) == 0) step.behavior = (tok_split_behavior)i, found = 1;
    if (!found) {
        snprintf(f, sizeof f, "%s.behavior", where);
        return bad(L, LOMO_ERR_FORMAT, f, "\"%s\" is not a split behavior", beh);
    }
    snprintf(f, sizeof f, "%s.pattern", where);
    const json_t *pat = json_object_get(p, "pattern");
    if (!json_is_object(pat)) return bad(L, LOMO_ERR_FORMAT, f, "missing (expected {\"Regex\": ...} or {\"String\": ...})");
    const json_t *re = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
    if (json_is_string(re)) {
        if ((st = compile_step(L, f, json_string_value(re), json_string_length(re), &step))) return st;
    } else if (json_is_string(lit)) {
        char *esc = escape_literal(json_string_value(lit));
        if (!esc) return bad(L, LOMO_ERR_OOM, f, "out of memory");
        st = compile_step(L, f, esc, strlen(esc), &step);
        free(esc);
        if (st) return st;
    } else {
        return bad(L, LOMO_ERR_FORMAT, f, "expected {\"Regex\": ...} or {\"String\": ...}");
    }
    return tok_pre_add(L->t, step);
}

static lomo_status parse_pretok(hf_loader *L, const json_t *p, const char *where) {
    if (!p || json_is_null(p)) return LOMO_OK;
    lomo_status st = check_object(L, p, where);
    if (st) return st;
    const char *ty = type_of(p);
    char f[200];
    if (ty && strcmp(ty, "Sequence") == 0) {
        const json_t *list = json_object_get(p, "pretokenizers");
        snprintf(f, sizeof f, "%s.pretokenizers", where);
        if (!json_is_array(list)) return bad(L, LOMO_ERR_FORMAT, f, "missing or not a list");
        for (size_t i = 0; i < json_array_size(list); i++) {
            snprintf(f, sizeof f, "%s.pretokenizers[%zu]", where, i);
            if ((st = parse_pretok(L, json_array_get(list, i), f))) return st;
        }
        return LOMO_OK;
    }
    if (ty && strcmp(ty, "ByteLevel") == 0) {
        int aps = 1, use_regex = 1;
        if ((st = get_bool(L, p, "add_prefix_space", where, &aps)) ||
            (st = get_bool(L, p, "use_regex", where, &use_regex)))
            return st;
        tok_pre_step step = {.kind = TOK_PRE_BYTELEVEL, .add_prefix_space = aps};
        if (use_regex && (st = compile_step(L, where, TOK_RE_GPT2, strlen(TOK_RE_GPT2), &step))) return st;
        return tok_pre_add(L->t, step);
    }
    if (ty && strcmp(ty, "Split") == 0) return parse_split(L, p, where);
    if (ty && strcmp(ty, "Digits") == 0) {
        int individual = 0;
        if ((st = get_bool(L, p, "individual_digits", where, &individual))) return st;
        /* HF tests char::is_numeric, i.e. \p{N} (13 rare code points aside) */
        const char *re = individual ? "\\p{N}" : "\\p{N}+";
        tok_pre_step step = {.kind = TOK_PRE_SPLIT, .behavior = TOK_SPLIT_ISOLATED};
        if ((st = compile_step(L, where, re, strlen(re), &step))) return st;
        return tok_pre_add(L->t, step);
    }
    if (ty && strcmp(ty, "Metaspace") == 0) {
        tok_pre_step step = {.kind = TOK_PRE_METASPACE, .split = 1};
        if ((st = get_replacement(L, p, where, step.replacement)) || (st = get_prepend(L, p, where, &step.prepend)) ||
            (st = get_bool(L, p, "split", where, &step.split)))
            return st;
        return tok_pre_add(L->t, step);
    }
    return unsupported(L, where, p, "Sequence, ByteLevel, Split, Digits, Metaspace");
}

/* -------------------------------------------------------- post-processor */

static lomo_status add_post_id(hf_loader *L, const char *where, int prefix, const json_t *idv) {
    if (!json_is_integer(idv)) return bad(L, LOMO_ERR_FORMAT, where, "expected a token id");
    json_int_t id = json_integer_value(idv);
    if (id < 0 || id >= L->t->n_tokens)
        return bad(L, LOMO_ERR_FORMAT, where, "token id %lld is out of range [0, %d)", (long long)id, L->t->n_tokens);
    if (prefix) L->has_prefix = 1;
    else L->has_suffix = 1;
    return tok_post_add(L->t, prefix, (int32_t)id);
}

static lomo_status parse_template(hf_loader *L, const json_t *p, const char *where) {
    char f[200];
    const json_t *single = json_object_get(p, "single"), *specials = json_object_get(p, "special_tokens");
    snprintf(f, sizeof f, "%s.single", where);
    if (!json_is_array(single)) return bad(L, LOMO_ERR_FORMAT, f, "missing or not a list");
    int before = 1;
    for (size_t i = 0; i < json_array_size(single); i++) {
        const json_t *item = json_array_get(single, i);
        snprintf(f, sizeof f, "%s.single[%zu]", where, i);
        if (json_object_get(item, "Sequence")) {
            before = 0;
            continue;
        }
        const json_t *sp = json_object_get(item, "SpecialToken");
        const json_t *name = json_object_get(sp, "id");
        if (!json_is_string(name)) return bad(L, LOMO_ERR_FORMAT, f, "expected {\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": ...}");
        const json_t *entry = json_object_get(specials, json_string_value(name));
        const json_t *ids = json_object_get(entry, "ids");
        snprintf(f, sizeof f, "%s.special_tokens[\"%.64s\"].ids", where, json_string_value(name));
        if (!json_is_array(ids)) return bad(L, LOMO_ERR_FORMAT, f, "missing");
        for (size_t k = 0; k < json_array_size(ids); k++) {
            lomo_status st = add_post_id(L, f, before, json_array_get(ids, k));
            if (st) return st;
        }
    }
    return LOMO_OK;
}

static lomo_status parse_post(hf_loader *L, const json_t *p, const char *where) {
    if (!p || json_is_null(p)) return LOMO_OK;
    lomo_status st = check_object(L, p, where);
    if (st) return st;
    const char *ty = type_of(p);
    char f[200];
    if (ty && strcmp(ty, "ByteLevel") == 0) return LOMO_OK;   /* offsets only */
    if (ty && strcmp(ty, "TemplateProcessing") == 0) return parse_template(L, p, where);
    if (ty && strcmp(ty, "Sequence") == 0) {
        const json_t *list = json_object_get(p, "processors");
        snprintf(f, sizeof f, "%s.processors", where);
        if (!json_is_array(list)) return bad(L, LOMO_ERR_FORMAT, f, "missing or not a list");
        for (size_t i = 0; i < json_array_size(list); i++) {
            snprintf(f, sizeof f, "%s.processors[%zu]", where, i);
            if ((st = parse_post(L, json_array_get(list, i), f))) return st;
        }
        return LOMO_OK;
    }
    if (ty && (strcmp(ty, "BertProcessing") == 0 || strcmp(ty, "RobertaProcessing") == 0)) {
        /* single sequence: cls A sep */
        const json_t *cls = json_object_get(p, "cls"), *sep = json_object_get(p, "sep");
        snprintf(f, sizeof f, "%s.cls", where);
        if ((st = add_post_id(L, f, 1, json_array_get(cls, 1)))) return st;
        snprintf(f, sizeof f, "%s.sep", where);
        return add_post_id(L, f, 0, json_array_get(sep, 1));
    }
    return unsupported(L, where, p, "ByteLevel, TemplateProcessing, Sequence, BertProcessing, RobertaProcessing");
}

/* ----------------------------------------------------------------- decoder */

static lomo_status parse_decoder(hf_loader *L, const json_t *d, const char *where) {
    if (!d || json_is_null(d)) return LOMO_OK;
    lomo_status st = check_object(L, d, where);
    if (st) return st;
    L->t->has_decoder = 1;
    const char *ty = type_of(d);
    char f[200];
    if (ty && strcmp(ty, "Sequence") == 0) {
        const json_t *list = json_object_get(d, "decoders");
        snprintf(f, sizeof f, "%s.decoders", where);
        if (!json_is_array(list)) return bad(L, LOMO_ERR_FORMAT, f, "missing or not a list");
        for (size_t i = 0; i < json_array_size(list); i++) {
            snprintf(f, sizeof f, "%s.decoders[%zu]", where, i);
            if ((st = parse_decoder(L, json_array_get(list, i), f))) return st;
        }
        return LOMO_OK;
    }
    if (ty && strcmp(ty, "ByteLevel") == 0) return tok_dec_add(L->t, (tok_dec_step){.kind = TOK_DEC_BYTELEVEL});
    if (ty && strcmp(ty, "ByteFallback") == 0) return tok_dec_add(L->t, (tok_dec_step){.kind = TOK_DEC_BYTEFALLBACK});
    if (ty && strcmp(ty, "Fuse") == 0) return tok_dec_add(L->t, (tok_dec_step){.kind = TOK_DEC_FUSE});
    if (ty && strcmp(ty, "Replace") == 0) {
        const char *p, *c;
        if ((st = get_string_pattern(L, d, where, &p)) || (st = get_str(L, d, "content", where, &c))) return st;
        return tok_dec_add(L->t, (tok_dec_step){.kind = TOK_DEC_REPLACE, .a = hf_dup(p), .b = hf_dup(c)});
    }
    if (ty && strcmp(ty, "Strip") == 0) {
        const char *c;
        if ((st = get_str(L, d, "content", where, &c))) return st;
        const json_t *a = json_object_get(d, "start"), *b = json_object_get(d, "stop");
        if (!json_is_integer(a) || !json_is_integer(b) || json_integer_value(a) < 0 || json_integer_value(b) < 0 ||
            json_integer_value(a) > 1000000 || json_integer_value(b) > 1000000)
            return bad(L, LOMO_ERR_FORMAT, where, "Strip needs non-negative integers start and stop");
        return tok_dec_add(L->t, (tok_dec_step){.kind = TOK_DEC_STRIP, .a = hf_dup(c),
                                                 .start = (int)json_integer_value(a), .stop = (int)json_integer_value(b)});
    }
    if (ty && strcmp(ty, "Metaspace") == 0) {
        tok_dec_step step = {.kind = TOK_DEC_METASPACE};
        char rep[8];
        tok_prepend pre;
        if ((st = get_replacement(L, d, where, rep)) || (st = get_prepend(L, d, where, &pre))) return st;
        step.a = hf_dup(rep);
        step.prepend = pre != TOK_PREPEND_NEVER;
        return tok_dec_add(L->t, step);
    }
    return unsupported(L, where, d, "Sequence, ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace");
}

/* ------------------------------------------------------------------ model */

typedef struct hf_arrays {
    const char **tokens;    /* [n_tokens], pointers into the JSON */
    int32_t *types;         /* [n_tokens] */
    const char **merges;    /* [n_merges] */
    char **owned;           /* merges built from [a, b] pairs */
    int n_owned;
} hf_arrays;

static void hf_arrays_free(hf_arrays *a) {
    for (int i = 0; i < a->n_owned; i++) free(a->owned[i]);
    free(a->tokens), free(a->types), free(a->merges), free(a->owned);
}

static lomo_status check_model_options(hf_loader *L, const json_t *model) {
    const json_t *d = json_object_get(model, "dropout");
    if (d && !json_is_null(d) && !(json_is_number(d) && json_number_value(d) == 0.0))
        return bad(L, LOMO_ERR_FORMAT, "model.dropout", "BPE dropout is not supported");
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const json_t *v = json_object_get(model, affixes[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0)) {
            char f[80];
            snprintf(f, sizeof f, "model.%s", affixes[i]);
            return bad(L, LOMO_ERR_FORMAT, f, "not supported");
        }
    }
    return LOMO_OK;
}

/* Fills spec's tokens/types/merges from model.vocab, added_tokens and model.merges. */
static lomo_status read_vocab(hf_loader *L, const json_t *root, const json_t *model, hf_arrays *A, tokenizer_spec *spec) {
    const json_t *vocab = json_object_get(model, "vocab");
    if (!vocab) return bad(L, LOMO_ERR_FORMAT, "model.vocab", "missing");
    if (!json_is_object(vocab)) return bad(L, LOMO_ERR_FORMAT, "model.vocab", "expected an object {token: id}");
    const json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added))
        return bad(L, LOMO_ERR_FORMAT, "added_tokens", "expected a list");
    size_t n_vocab = json_object_size(vocab), n_added = json_is_array(added) ? json_array_size(added) : 0;
    if (n_vocab == 0) return bad(L, LOMO_ERR_FORMAT, "model.vocab", "empty");
    if (n_vocab + n_added > (1u << 26)) return bad(L, LOMO_ERR_FORMAT, "model.vocab", "too many tokens");
    /* ids must be dense-ish: below the number of entries (real vocabularies are 0..n-1) */
    json_int_t limit = (json_int_t)(n_vocab + n_added), max_id = -1;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= limit)
            return bad(L, LOMO_ERR_FORMAT, "model.vocab", "token \"%.64s\": id must be an integer in [0, %lld)", key,
                       (long long)limit);
        if (json_integer_value(v) > max_id) max_id = json_integer_value(v);
    }
    for (size_t i = 0; i < n_added; i++) {
        const json_t *a = json_array_get(added, i), *id = json_object_get(a, "id");
        char f[64];
        snprintf(f, sizeof f, "added_tokens[%zu]", i);
        if (!json_is_object(a)) return bad(L, LOMO_ERR_FORMAT, f, "expected an object");
        if (!json_is_string(json_object_get(a, "content"))) return bad(L, LOMO_ERR_FORMAT, f, "content: missing or not a string");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= limit)
            return bad(L, LOMO_ERR_FORMAT, f, "id: missing or not an integer in [0, %lld)", (long long)limit);
        if (json_integer_value(id) > max_id) max_id = json_integer_value(id);
    }
    int n = (int)max_id + 1;
    A->tokens = calloc((size_t)n, sizeof *A->tokens);
    A->types = calloc((size_t)n, sizeof *A->types);
    if (!A->tokens || !A->types) return bad(L, LOMO_ERR_OOM, "model.vocab", "out of memory");
    json_object_foreach((json_t *)vocab, key, v) {
        int id = (int)json_integer_value(v);
        if (A->tokens[id])
            return bad(L, LOMO_ERR_FORMAT, "model.vocab", "id %d is given to both \"%.64s\" and \"%.64s\"", id,
                       A->tokens[id], key);
        A->tokens[id] = key;
        A->types[id] = 1;
    }
    for (size_t i = 0; i < n_added; i++) {
        const json_t *a = json_array_get(added, i);
        const char *content = json_string_value(json_object_get(a, "content"));
        int id = (int)json_integer_value(json_object_get(a, "id"));
        char f[64];
        snprintf(f, sizeof f, "added_tokens[%zu]", i);
        int special = 0, single_word = 0;
        lomo_status st;
        if ((st = get_bool(L, a, "special", f, &special)) || (st = get_bool(L, a, "single_word", f, &single_word)))
            return st;
        if (single_word) return bad(L, LOMO_ERR_FORMAT, f, "single_word is not supported");
        if (A->tokens[id] && strcmp(A->tokens[id], content) != 0)
            return bad(L, LOMO_ERR_FORMAT, f, "\"%.64s\" has id %d, which model.vocab gives to \"%.64s\"", content, id,
                       A->tokens[id]);
        A->tokens[id] = content;
        A->types[id] = special ? 3 : 4;
    }
    spec->n_tokens = n;
    spec->tokens = A->tokens;
    spec->token_types = A->types;

    const json_t *merges = json_object_get(model, "merges");
    if (!merges) return bad(L, LOMO_ERR_FORMAT, "model.merges", "missing");
    if (!json_is_array(merges)) return bad(L, LOMO_ERR_FORMAT, "model.merges", "expected a list");
    size_t nm = json_array_size(merges);
    if (nm > (1u << 26)) return bad(L, LOMO_ERR_FORMAT, "model.merges", "too many merges");
    A->merges = calloc(nm ? nm : 1, sizeof *A->merges);
    A->owned = calloc(nm ? nm : 1, sizeof *A->owned);
    if (!A->merges || !A->owned) return bad(L, LOMO_ERR_OOM, "model.merges", "out of memory");
    for (size_t i = 0; i < nm; i++) {
        const json_t *m = json_array_get(merges, i);
        char f[64];
        snprintf(f, sizeof f, "model.merges[%zu]", i);
        if (json_is_string(m)) {
            A->merges[i] = json_string_value(m);
            continue;
        }
        const json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
        if (!json_is_array(m) || json_array_size(m) != 2 || !json_is_string(a) || !json_is_string(b))
            return bad(L, LOMO_ERR_FORMAT, f, "expected \"left right\" or [left, right]");
        const char *as = json_string_value(a), *bs = json_string_value(b);
        if (!*as || !*bs || strchr(as, ' ') || strchr(bs, ' '))
            return bad(L, LOMO_ERR_FORMAT, f, "tokens that are empty or contain spaces are not supported in merges");
        size_t an = strlen(as), bn = strlen(bs);
        char *s = malloc(an + bn + 2);
        if (!s) return bad(L, LOMO_ERR_OOM, f, "out of memory");
        memcpy(s, as, an);
        s[an] = ' ';
        memcpy(s + an + 1, bs, bn + 1);
        A->owned[A->n_owned++] = s;
        A->merges[i] = s;
    }
    spec->n_merges = (int)nm;
    spec->merges = A->merges;
    return LOMO_OK;
}

static int find_token(const hf_arrays *A, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (A->tokens[i] && strcmp(A->tokens[i], s) == 0) return i;
    return -1;
}

/* tokenizer.json does not name bos/eos; these are the usual spellings. */
static int guess_id(const lomo_tokenizer *t, const char *const *names) {
    for (int i = 0; names[i]; i++) {
        int id = lomo_tokenizer_token_to_id(t, names[i]);
        if (id >= 0) return id;
    }
    return -1;
}

static lomo_status load_root(hf_loader *L, const json_t *root, lomo_tokenizer **out) {
    if (!json_is_object(root)) return bad(L, LOMO_ERR_FORMAT, "(top level)", "expected an object");
    const json_t *model = json_object_get(root, "model");
    if (!model) return bad(L, LOMO_ERR_FORMAT, "model", "missing");
    if (!json_is_object(model)) return bad(L, LOMO_ERR_FORMAT, "model", "expected an object");
    const char *ty = type_of(model);
    if (json_object_get(model, "type") && !ty) return bad(L, LOMO_ERR_FORMAT, "model.type", "expected a string");
    if (ty && strcmp(ty, "BPE") != 0)
        return bad(L, LOMO_ERR_FORMAT, "model.type", "\"%s\" is not supported (only BPE)", ty);
    if (!ty && !json_object_get(model, "merges"))
        return bad(L, LOMO_ERR_FORMAT, "model.type", "missing (and no merges: not a BPE model)");
    lomo_status st = check_model_options(L, model);
    if (st) return st;

    hf_arrays A = {0};
    tokenizer_spec spec = {.kind = TOK_BPE_BYTELEVEL, .bos_id = -1, .eos_id = -1, .unk_id = -1};
    if ((st = read_vocab(L, root, model, &A, &spec))) goto done;
    const json_t *unk = json_object_get(model, "unk_token");
    if (unk && !json_is_null(unk)) {
        if (!json_is_string(unk)) {
            st = bad(L, LOMO_ERR_FORMAT, "model.unk_token", "expected a string or null");
            goto done;
        }
        spec.unk_id = find_token(&A, spec.n_tokens, json_string_value(unk));
        if (spec.unk_id < 0) {
            st = bad(L, LOMO_ERR_FORMAT, "model.unk_token", "\"%.64s\" is not in model.vocab", json_string_value(unk));
            goto done;
        }
    }
    /* errors from the core name the merge; prefix them with the field */
    char src[300];
    snprintf(src, sizeof src, "%s: model", L->src);
    if ((st = tokenizer_create(&L->t, L->ctx, &spec, src))) goto done;
    snprintf(L->t->source, sizeof L->t->source, "%s", L->src);
    lomo_tokenizer *t = L->t;
    int bf = 0, fu = 0, im = 0;
    if ((st = get_bool(L, model, "byte_fallback", "model", &bf)) || (st = get_bool(L, model, "fuse_unk", "model", &fu)) ||
        (st = get_bool(L, model, "ignore_merges", "model", &im)))
        goto done;
    t->byte_fallback = bf, t->fuse_unk = fu, t->ignore_merges = im;

    const json_t *added = json_object_get(root, "added_tokens");
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *a = json_array_get(added, i);
        int ls = 0, rs = 0;
        char f[64];
        snprintf(f, sizeof f, "added_tokens[%zu]", i);
        if ((st = get_bool(L, a, "lstrip", f, &ls)) || (st = get_bool(L, a, "rstrip", f, &rs))) goto done;
        if (ls || rs) tok_added_set_strip(t, (int)json_integer_value(json_object_get(a, "id")), ls, rs);
    }

    tok_pipeline_clear(t);
    if ((st = parse_normalizer(L, json_object_get(root, "normalizer"), "normalizer")) ||
        (st = parse_pretok(L, json_object_get(root, "pre_tokenizer"), "pre_tokenizer")) ||
        (st = parse_post(L, json_object_get(root, "post_processor"), "post_processor")) ||
        (st = parse_decoder(L, json_object_get(root, "decoder"), "decoder")))
        goto done;

    static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>", NULL};
    static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", NULL};
    t->bos_id = L->has_prefix ? t->prefix[0] : guess_id(t, bos_names);
    t->eos_id = L->has_suffix ? t->suffix[t->n_suffix - 1] : guess_id(t, eos_names);
    *out = t;
    L->t = NULL;
done:
    lomo_tokenizer_destroy(L->t);
    hf_arrays_free(&A);
    return st;
}

lomo_status tokenizer_load_hf_json(lomo_tokenizer **out, lomo_ctx *ctx, const char *json, size_t len,
                                   const char *source_name) {
    if (!out) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "tokenizer_load_hf_json: out is NULL");
    *out = NULL;
    hf_loader L = {.ctx = ctx, .src = source_name ? source_name : "tokenizer.json"};
    if (!json && len) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "%s: no data", L.src);
    json_error_t err;
    json_t *root = json_loadb(json ? json : "", len, 0, &err);
    if (!root)
        return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: invalid JSON at line %d, column %d: %s", L.src, err.line,
                         err.column, err.text);
    lomo_status st = load_root(&L, root, out);
    json_decref(root);
    return st;
}

/* bos_token / eos_token of tokenizer_config.json: a string, {"content": string}, or null (keeps *id). */
static lomo_status config_token(lomo_tokenizer *t, const char *path, const json_t *root, const char *key, int *id) {
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return LOMO_OK;
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v))
        return lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: %s: expected a token (a string or {\"content\": string})",
                         path, key);
    int found = lomo_tokenizer_token_to_id(t, json_string_value(v));
    if (found < 0)
        return lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: %s: \"%.64s\" is not in the vocabulary", path, key,
                         json_string_value(v));
    *id = found;
    return LOMO_OK;
}

/* chat_template of tokenizer_config.json: a string, a list of {"name", "template"} (the "default"
 * one), or null; anything else is an error naming the file and key. */
static lomo_status config_chat_template(lomo_tokenizer *t, const char *path, const json_t *root) {
    const json_t *v = json_object_get(root, "chat_template");
    if (!v || json_is_null(v)) return LOMO_OK;
    if (json_is_array(v)) {
        const json_t *found = NULL;
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) {
            const json_t *name = json_object_get(e, "name"), *src = json_object_get(e, "template");
            if (!json_is_object(e) || !json_is_string(name) || !json_is_string(src))
                return lomo_fail(t->ctx, LOMO_ERR_FORMAT,
                                 "%s: chat_template[%zu]: expected {\"name\": string, \"template\": string}", path, i);
            if (!strcmp(json_string_value(name), "default")) found = src;
        }
        if (!found) return LOMO_OK;   /* named templates only (tool use, RAG): no chat template */
        v = found;
    }
    if (!json_is_string(v))
        return lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: chat_template: expected a string or a list of named templates",
                         path);
    return tok_set_chat_template(t, json_string_value(v), path);
}

/* tokenizer_config.json beside .../tokenizer.json, when there is one: the BOS and EOS by name, the
 * chat template. */
static lomo_status read_tokenizer_config(lomo_tokenizer *t, const char *json_path) {
    const char *base = strrchr(json_path, '/');
    base = base ? base + 1 : json_path;
    if (strcmp(base, "tokenizer.json") != 0) return LOMO_OK;
    char path[4096];
    snprintf(path, sizeof path, "%.*stokenizer_config.json", (int)(base - json_path), json_path);
    FILE *f = fopen(path, "rb");
    if (!f) return LOMO_OK;
    json_error_t err;
    json_t *root = json_loadf(f, 0, &err);
    fclose(f);
    if (!root)
        return lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: invalid JSON at line %d, column %d: %s", path, err.line,
                         err.column, err.text);
    lomo_status st = json_is_object(root) ? LOMO_OK
                                          : lomo_fail(t->ctx, LOMO_ERR_FORMAT, "%s: expected a JSON object", path);
    if (!st && !(st = config_token(t, path, root, "bos_token", &t->bos_id)) &&
        !(st = config_token(t, path, root, "eos_token", &t->eos_id)))
        st = config_chat_template(t, path, root);
    json_decref(root);
    return st;
}

lomo_status lomo_tokenizer_load_hf(lomo_tokenizer **out, lomo_ctx *ctx, const char *tokenizer_json_path) {
    if (!out || !tokenizer_json_path)
        return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "lomo_tokenizer_load_hf: NULL argument");
    *out = NULL;
    const char *path = tokenizer_json_path;
    FILE *f = fopen(path, "rb");
    if (!f) return lomo_fail(ctx, LOMO_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *data = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return lomo_fail(ctx, LOMO_ERR_IO, "%s: cannot determine the file size", path);
    }
    if ((size_t)size > HF_MAX_BYTES) {
        fclose(f);
        return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: %ld bytes is larger than the 1 GiB limit", path, size);
    }
    data = malloc((size_t)size + 1);
    if (!data) {
        fclose(f);
        return lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory for %ld bytes", path, size);
    }
    size_t got = fread(data, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) {
        free(data);
        return lomo_fail(ctx, LOMO_ERR_IO, "%s: short read (%zu of %ld bytes)", path, got, size);
    }
    lomo_status st = tokenizer_load_hf_json(out, ctx, data, (size_t)size, path);
    free(data);
    if (!st && (st = read_tokenizer_config(*out, path))) {
        lomo_tokenizer_destroy(*out);
        *out = NULL;
    }
    return st;
}
