/*
 * test_tokenizer.c: tokenizers against Hugging Face tokenizers, id for id.
 *
 * Fixtures (tests/fixtures/gen_tokenizers.py): four kinds of BPE as
 * tokenizer.json (GPT-2 and Llama-3 regex byte-level, Llama-2 SentencePiece
 * in its classic and Metaspace forms, SmolLM2's real tokenizer) with HF's ids
 * and decodes for every line of tests/fixtures/tok/corpus.txt and for the
 * whole file; small edits of them (variants.ref.json); the same vocabularies
 * built through tokenizer_create from plain arrays, as the GGUF loader does;
 * score-mode SentencePiece against a transcription of llama.cpp's; every
 * tokenizer and variant written back as tokenizer.json (lomo_tokenizer_save_hf)
 * and read again, against the same ids; tokenizer_config.json's BOS and EOS;
 * and every error path naming the file and the field.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "fixture.h"
#include "runtime/lomo.h"
#include "runtime/tokenizer.h"

static lomo_ctx *ctx;

static json_t *load_json(const char *file) {
    json_error_t err;
    json_t *j = json_load_file(fx_path(file), 0, &err);
    if (!j) fprintf(stderr, "%s: %s (line %d)\n", file, err.text, err.line);
    return j;
}


/* ids (a JSON list) == got? Prints the first difference under `what`. */
static int same_ids(const char *what, const json_t *want, const int32_t *got, size_t n) {
    size_t m = json_array_size(want);
    for (size_t i = 0; i < m && i < n; i++) {
        int w = (int)json_integer_value(json_array_get(want, i));
        if (w != got[i]) {
            fprintf(stderr, "%s: first difference at %zu of %zu/%zu: want %d, got %d\n", what, i, m, n, w, got[i]);
            return 0;
        }
    }
    if (m != n) fprintf(stderr, "%s: want %zu ids, got %zu\n", what, m, n);
    return m == n;
}

/* Encodes text and compares with want; if decoded is given, decodes HF's ids and compares too. */
static void check_case(lomo_tokenizer *t, const char *what, const char *text, size_t len, const json_t *want,
                       const json_t *want_special, const json_t *decoded, const json_t *decoded_skip,
                       int *roundtrips) {
    int32_t *ids = NULL;
    size_t n = 0;
    lomo_status st = lomo_tokenizer_encode(t, text, len, 0, &ids, &n);
    CHECK(st == LOMO_OK, "%s: encode: %s", what, lomo_last_error(ctx));
    if (st == LOMO_OK) CHECK(same_ids(what, want, ids, n), "%s: ids differ from HF", what);
    free(ids);
    if (want_special) {
        st = lomo_tokenizer_encode(t, text, len, 1, &ids, &n);
        CHECK(st == LOMO_OK && same_ids(what, want_special, ids, n), "%s: ids with add_special differ from HF", what);
        free(ids);
    }
    /* decode HF's ids, so a decode check does not depend on the encode one */
    size_t m = json_array_size(want);
    int32_t *hf = malloc((m ? m : 1) * sizeof *hf);
    for (size_t i = 0; i < m; i++) hf[i] = (int32_t)json_integer_value(json_array_get(want, i));
    for (int skip = 0; skip < 2; skip++) {
        const json_t *d = skip ? (decoded_skip ? decoded_skip : decoded) : decoded;
        if (!json_is_string(d)) continue;
        char *out = NULL;
        size_t olen = 0;
        st = lomo_tokenizer_decode(t, hf, m, skip, &out, &olen);
        CHECK(st == LOMO_OK && olen == json_string_length(d) && memcmp(out, json_string_value(d), olen) == 0,
              "%s: decode(skip_special=%d) = \"%s\", HF: \"%s\"", what, skip, out ? out : "(error)",
              json_string_value(d));
        if (!skip && roundtrips && olen == len && memcmp(out, text, len) == 0) (*roundtrips)++;
        free(out);
    }
    free(hf);
}

/* Every corpus line and the whole corpus against <name>.ref.json. */
static void check_refs(lomo_tokenizer *t, const char *name) {
    char file[128];
    snprintf(file, sizeof file, "tok/%s.ref.json", name);
    json_t *ref = load_json(file);
    CHECK(ref != NULL, "%s", file);
    if (!ref) return;
    const json_t *lines = json_object_get(ref, "lines");
    int roundtrips = 0, hf_roundtrips = 0;
    for (size_t i = 0; i < json_array_size(lines); i++) {
        const json_t *l = json_array_get(lines, i);
        const json_t *text = json_object_get(l, "text"), *dec = json_object_get(l, "decoded");
        char what[160];
        snprintf(what, sizeof what, "%s line %zu", name, i + 1);
        if (json_is_string(dec) && json_equal(dec, text)) hf_roundtrips++;
        check_case(t, what, json_string_value(text), json_string_length(text), json_object_get(l, "ids"),
                   json_object_get(l, "ids_special"), dec, json_object_get(l, "decoded_skip"), &roundtrips);
    }
    /* decode(encode(x)) == x wherever HF round-trips (the decode checks above imply it; count it too) */
    CHECK(roundtrips == hf_roundtrips, "%s: %d lines round-trip, HF: %d", name, roundtrips, hf_roundtrips);
    CHECK(json_array_size(lines) > 90, "%s: only %zu lines", name, json_array_size(lines));
    size_t len = 0;
    char *corpus = fx_read_file(fx_path("tok/corpus.txt"), &len);
    CHECK(corpus != NULL, "corpus.txt");
    const json_t *f = json_object_get(ref, "file");
    char what[160];
    snprintf(what, sizeof what, "%s whole corpus", name);
    if (corpus)
        check_case(t, what, corpus, len, json_object_get(f, "ids"), json_object_get(f, "ids_special"),
                   json_object_get(f, "decoded"), json_object_get(f, "decoded_skip"), NULL);
    free(corpus);
    json_decref(ref);
}

static lomo_tokenizer *load_hf(const char *name) {
    char file[128];
    snprintf(file, sizeof file, "tok/%s.tokenizer.json", name);
    lomo_tokenizer *t = NULL;
    lomo_status st = lomo_tokenizer_load_hf(&t, ctx, fx_path(file));
    CHECK(st == LOMO_OK && t, "load %s: %s", file, lomo_last_error(ctx));
    return t;
}

static char save_root[] = "/tmp/lomo_tok_save_XXXXXX";

/* t written with lomo_tokenizer_save_hf and read back from the folder (NULL on failure, checked);
 * the BOS and EOS must survive, through tokenizer_config.json. */
static lomo_tokenizer *saved_and_loaded(const lomo_tokenizer *t, const char *what) {
    static int n;
    char dir[256], file[300];
    snprintf(dir, sizeof dir, "%s/%d", save_root, n++);
    snprintf(file, sizeof file, "%s/tokenizer.json", dir);
    lomo_tokenizer *r = NULL;
    lomo_status st = lomo_tokenizer_save_hf(t, dir);
    CHECK(st == LOMO_OK, "%s: save: %s", what, lomo_last_error(ctx));
    if (!st) {
        st = lomo_tokenizer_load_hf(&r, ctx, file);
        CHECK(st == LOMO_OK, "%s: load what was saved: %s", what, lomo_last_error(ctx));
    }
    if (r)
        CHECK(lomo_tokenizer_bos_id(r) == lomo_tokenizer_bos_id(t) && lomo_tokenizer_eos_id(r) == lomo_tokenizer_eos_id(t) &&
                  lomo_tokenizer_vocab_size(r) == lomo_tokenizer_vocab_size(t),
              "%s saved: bos %d eos %d, was %d %d", what, lomo_tokenizer_bos_id(r), lomo_tokenizer_eos_id(r),
              lomo_tokenizer_bos_id(t), lomo_tokenizer_eos_id(t));
    unlink(file);
    snprintf(file, sizeof file, "%s/tokenizer_config.json", dir);
    unlink(file);
    rmdir(dir);
    return r;
}

/* each tokenizer, and each written back and read again, against HF's ids */
static void test_hf_parity(void) {
    static const char *const names[] = {"gpt2", "llama3", "llama2", "llama2_meta", "smollm2"};
    for (int i = 0; i < 5; i++) {
        lomo_tokenizer *t = load_hf(names[i]);
        if (t) check_refs(t, names[i]);
        lomo_tokenizer *r = t ? saved_and_loaded(t, names[i]) : NULL;
        if (r) check_refs(r, names[i]);
        lomo_tokenizer_destroy(r);
        lomo_tokenizer_destroy(t);
    }
}

/* variants.ref.json: edits of a committed tokenizer.json, applied here as the script applied them. */
static void test_variants(void) {
    json_t *ref = load_json("tok/variants.ref.json");
    CHECK(ref != NULL, "variants.ref.json");
    if (!ref) return;
    const json_t *vars = json_object_get(ref, "variants");
    CHECK(json_array_size(vars) >= 14, "variants: %zu", json_array_size(vars));
    for (size_t v = 0; v < json_array_size(vars); v++) {
        const json_t *var = json_array_get(vars, v);
        const char *name = json_string_value(json_object_get(var, "name"));
        char file[128];
        snprintf(file, sizeof file, "tok/%s.tokenizer.json", json_string_value(json_object_get(var, "base")));
        json_t *base = load_json(file);
        if (!base) continue;
        json_object_update(base, json_object_get(var, "set"));
        json_object_update(json_object_get(base, "model"), json_object_get(var, "set_model"));
        char *text = json_dumps(base, JSON_COMPACT);
        lomo_tokenizer *t = NULL;
        lomo_status st = tokenizer_load_hf_json(&t, ctx, text, strlen(text), name);
        CHECK(st == LOMO_OK, "variant %s: %s", name, lomo_last_error(ctx));
        const json_t *cases = json_object_get(var, "cases");
        /* as loaded, then written back and read again */
        lomo_tokenizer *r = t ? saved_and_loaded(t, name) : NULL;
        for (int again = 0; again < 2; again++) {
            lomo_tokenizer *u = again ? r : t;
            for (size_t c = 0; u && c < json_array_size(cases); c++) {
                const json_t *cs = json_array_get(cases, c);
                const json_t *tx = json_object_get(cs, "text");
                char what[160];
                snprintf(what, sizeof what, "variant %s%s case %zu", name, again ? " saved" : "", c);
                check_case(u, what, json_string_value(tx), json_string_length(tx), json_object_get(cs, "ids"),
                           json_object_get(cs, "ids_special"), json_object_get(cs, "decoded"),
                           json_object_get(cs, "decoded_skip"), NULL);
            }
        }
        lomo_tokenizer_destroy(r);
        lomo_tokenizer_destroy(t);
        free(text);
        json_decref(base);
    }
    json_decref(ref);
}

/* ---- built from arrays, as the GGUF loader builds them ---- */

typedef struct arrays {
    int n;
    const char **tokens;
    int32_t *types;
    int n_merges;
    const char **merges;
    json_t *root;
} arrays;

/* The vocabulary and merges of a committed tokenizer.json as GGUF would store them. */
static int arrays_from_json(arrays *a, const char *name) {
    char file[128];
    snprintf(file, sizeof file, "tok/%s.tokenizer.json", name);
    memset(a, 0, sizeof *a);
    a->root = load_json(file);
    if (!a->root) return -1;
    const json_t *model = json_object_get(a->root, "model"), *vocab = json_object_get(model, "vocab");
    const json_t *added = json_object_get(a->root, "added_tokens");
    a->n = (int)json_object_size(vocab);
    for (size_t i = 0; i < json_array_size(added); i++) {
        int id = (int)json_integer_value(json_object_get(json_array_get(added, i), "id"));
        if (id >= a->n) a->n = id + 1;
    }
    a->tokens = calloc((size_t)a->n, sizeof *a->tokens);
    a->types = calloc((size_t)a->n, sizeof *a->types);
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)vocab, k, v) {
        int id = (int)json_integer_value(v);
        if (id >= 0 && id < a->n) a->tokens[id] = k, a->types[id] = 1;
    }
    for (int b = 0; b < 256; b++) {   /* GGUF marks <0xXX> as byte tokens */
        char nm[8];
        snprintf(nm, sizeof nm, "<0x%02X>", b);
        const json_t *id = json_object_get(vocab, nm);
        if (id) a->types[json_integer_value(id)] = 6;
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *t = json_array_get(added, i);
        int id = (int)json_integer_value(json_object_get(t, "id"));
        a->tokens[id] = json_string_value(json_object_get(t, "content"));
        a->types[id] = json_is_true(json_object_get(t, "special")) ? 3 : 4;
    }
    const json_t *merges = json_object_get(model, "merges");
    a->n_merges = (int)json_array_size(merges);
    a->merges = calloc((size_t)a->n_merges + 1, sizeof *a->merges);
    for (int i = 0; i < a->n_merges; i++) {
        const json_t *m = json_array_get(merges, (size_t)i);
        if (json_is_string(m)) {
            a->merges[i] = json_string_value(m);
        } else {   /* [a, b]: join with a space (kept alive in the JSON tree) */
            char buf[512];
            snprintf(buf, sizeof buf, "%s %s", json_string_value(json_array_get(m, 0)),
                     json_string_value(json_array_get(m, 1)));
            json_array_set_new((json_t *)merges, (size_t)i, json_string(buf));
            a->merges[i] = json_string_value(json_array_get(merges, (size_t)i));
        }
    }
    return 0;
}

static void arrays_free(arrays *a) {
    free(a->tokens), free(a->types), free(a->merges);
    json_decref(a->root);
}

static void test_spec_parity(void) {
    arrays a;
    /* SmolLM2 as its GGUF describes it (gpt2 model, "smollm" pre-tokenizer, 17 control tokens);
     * unk -1 because HF's tokenizer.json has none (GGUF says 0; only bytes absent from the vocab differ) */
    if (arrays_from_json(&a, "smollm2") == 0) {
        tokenizer_spec s = {.kind = TOK_BPE_BYTELEVEL, .pretokenizer = "smollm", .n_tokens = a.n,
                            .tokens = a.tokens, .token_types = a.types, .n_merges = a.n_merges,
                            .merges = a.merges, .bos_id = 1, .eos_id = 2, .unk_id = -1};
        lomo_tokenizer *t = NULL;
        CHECK(tokenizer_create(&t, ctx, &s, "smollm2 (arrays)") == LOMO_OK, "%s", lomo_last_error(ctx));
        if (t) {
            check_refs(t, "smollm2");
            CHECK(lomo_tokenizer_bos_id(t) == 1 && lomo_tokenizer_eos_id(t) == 2, "smollm2 spec bos/eos");
            /* a GGUF's tokenizer as tokenizer.json: its preset as Split + ByteLevel, bos/eos by name */
            lomo_tokenizer *r = saved_and_loaded(t, "smollm2 (arrays)");
            if (r) check_refs(r, "smollm2");
            lomo_tokenizer_destroy(r);
        }
        lomo_tokenizer_destroy(t);
        arrays_free(&a);
    }
    /* Llama-3 preset: its regex, ignore_merges, BOS added */
    if (arrays_from_json(&a, "llama3") == 0) {
        int bos = -1, eos = -1;
        for (int i = 0; i < a.n; i++) {
            if (a.tokens[i] && strcmp(a.tokens[i], "<|begin_of_text|>") == 0) bos = i;
            if (a.tokens[i] && strcmp(a.tokens[i], "<|end_of_text|>") == 0) eos = i;
        }
        tokenizer_spec s = {.kind = TOK_BPE_BYTELEVEL, .pretokenizer = "llama3", .n_tokens = a.n,
                            .tokens = a.tokens, .token_types = a.types, .n_merges = a.n_merges,
                            .merges = a.merges, .bos_id = bos, .eos_id = eos, .unk_id = -1, .add_bos = 1};
        lomo_tokenizer *t = NULL;
        CHECK(tokenizer_create(&t, ctx, &s, "llama3 (arrays)") == LOMO_OK, "%s", lomo_last_error(ctx));
        if (t) check_refs(t, "llama3");
        lomo_tokenizer_destroy(t);
        arrays_free(&a);
    }
    /* GPT-2 preset: the gpt2 fixture without its [MARK]/<mask> extras, whose lines are skipped */
    if (arrays_from_json(&a, "gpt2") == 0) {
        tokenizer_spec s = {.kind = TOK_BPE_BYTELEVEL, .pretokenizer = NULL, .n_tokens = a.n, .tokens = a.tokens,
                            .token_types = a.types, .n_merges = a.n_merges, .merges = a.merges, .bos_id = -1,
                            .eos_id = 0, .unk_id = -1};
        lomo_tokenizer *t = NULL;
        CHECK(tokenizer_create(&t, ctx, &s, "gpt2 (arrays)") == LOMO_OK, "%s", lomo_last_error(ctx));
        json_t *ref = load_json("tok/gpt2.ref.json");
        const json_t *lines = json_object_get(ref, "lines");
        int checked = 0;
        for (size_t i = 0; t && i < json_array_size(lines); i++) {
            const json_t *l = json_array_get(lines, i), *tx = json_object_get(l, "text");
            if (strstr(json_string_value(tx), "mask>")) continue;   /* lstrip/rstrip: HF-only flags */
            char what[64];
            snprintf(what, sizeof what, "gpt2 (arrays) line %zu", i + 1);
            check_case(t, what, json_string_value(tx), json_string_length(tx), json_object_get(l, "ids"), NULL,
                       json_object_get(l, "decoded"), json_object_get(l, "decoded_skip"), NULL);
            checked++;
        }
        CHECK(checked > 90, "gpt2 arrays: %d lines", checked);
        json_decref(ref);
        lomo_tokenizer_destroy(t);
        arrays_free(&a);
    }
    /* SentencePiece with merges: the default pipeline is the classic Llama-2 tokenizer.json */
    if (arrays_from_json(&a, "llama2") == 0) {
        tokenizer_spec s = {.kind = TOK_BPE_SENTENCEPIECE, .n_tokens = a.n, .tokens = a.tokens,
                            .token_types = a.types, .n_merges = a.n_merges, .merges = a.merges, .bos_id = 1,
                            .eos_id = 2, .unk_id = 0, .add_bos = 1};
        lomo_tokenizer *t = NULL;
        CHECK(tokenizer_create(&t, ctx, &s, "llama2 (arrays)") == LOMO_OK, "%s", lomo_last_error(ctx));
        if (t) check_refs(t, "llama2");
        lomo_tokenizer_destroy(t);

        /* no merges, scores: llama.cpp's SentencePiece (score = -id, as the script used) */
        float *scores = malloc((size_t)a.n * sizeof *scores);
        for (int i = 0; i < a.n; i++) scores[i] = -(float)i;
        s.n_merges = 0, s.merges = NULL, s.scores = scores;
        CHECK(tokenizer_create(&t, ctx, &s, "llama2 (scores)") == LOMO_OK, "%s", lomo_last_error(ctx));
        json_t *ref = load_json("tok/llama2_spm.ref.json");
        const json_t *lines = json_object_get(ref, "lines");
        CHECK(json_array_size(lines) > 80, "llama2_spm lines: %zu", json_array_size(lines));
        /* and written as tokenizer.json (merges ranked by score), read back in rank mode */
        lomo_tokenizer *r = t ? saved_and_loaded(t, "llama2 (scores)") : NULL;
        for (int again = 0; again < 2; again++) {
            lomo_tokenizer *u = again ? r : t;
            for (size_t i = 0; u && i < json_array_size(lines); i++) {
                const json_t *l = json_array_get(lines, i), *tx = json_object_get(l, "text");
                char what[64];
                snprintf(what, sizeof what, "llama2 (scores%s) line %zu", again ? ", saved" : "", i + 1);
                check_case(u, what, json_string_value(tx), json_string_length(tx), json_object_get(l, "ids"), NULL,
                           NULL, NULL, NULL);
            }
        }
        lomo_tokenizer_destroy(r);
        json_decref(ref);
        lomo_tokenizer_destroy(t);
        free(scores);
        arrays_free(&a);
    }
}

/* Score mode and unknown characters on a hand-made vocabulary, worked out by hand. */
static void test_spec_by_hand(void) {
    const char *tokens[] = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "c", "ab", "bc", "abc", "\xE2\x96\x81" "a"};
    float scores[] = {0, 0, 0, -1, -1, -1, -1, -3, -2, -0.5f, -4};
    int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1};
    tokenizer_spec s = {.kind = TOK_BPE_SENTENCEPIECE, .n_tokens = 11, .tokens = tokens, .scores = scores,
                        .token_types = types, .bos_id = 1, .eos_id = 2, .unk_id = 0, .add_bos = 1, .add_eos = 1};
    lomo_tokenizer *t = NULL;
    CHECK(tokenizer_create(&t, ctx, &s, "by hand") == LOMO_OK, "%s", lomo_last_error(ctx));
    if (!t) return;
    int32_t *ids = NULL;
    size_t n = 0;
    /* written as merges ranked by score, read back in rank mode: the same ids, the same <unk>s */
    lomo_tokenizer *saved = saved_and_loaded(t, "by hand (scores)");
    for (int again = 0; again < 2; again++) {
        lomo_tokenizer *u = again ? saved : t;
        const char *which = again ? "saved " : "";
        if (!u) continue;   /* saved_and_loaded has failed the check */
        /* "▁abc": bc (-2) beats ab (-3) and ▁a (-4); then a+bc = abc (-0.5); "▁abc" is no token */
        CHECK(lomo_tokenizer_encode(u, "abc", 3, 1, &ids, &n) == LOMO_OK && n == 4 && ids[0] == 1 && ids[1] == 3 &&
                  ids[2] == 9 && ids[3] == 2,
              "%sscore merge: n=%zu", which, n);
        free(ids);
        /* no byte tokens: an unknown character is <unk>, one per character in score mode */
        CHECK(lomo_tokenizer_encode(u, "a\xE2\x98\x83\xE2\x98\x83" "b", 8, 0, &ids, &n) == LOMO_OK && n == 4 &&
                  ids[0] == 10 && ids[1] == 0 && ids[2] == 0 && ids[3] == 5,
              "%sscore unk: n=%zu", which, n);
        free(ids);
    }
    lomo_tokenizer_destroy(saved);
    char *out = NULL;
    int32_t dec[] = {1, 10, 8, 2};
    CHECK(lomo_tokenizer_decode(t, dec, 4, 1, &out, NULL) == LOMO_OK && strcmp(out, "abc") == 0, "decode: %s", out);
    free(out);
    CHECK(lomo_tokenizer_decode(t, dec, 4, 0, &out, NULL) == LOMO_OK && strcmp(out, "<s> abc</s>") == 0,
          "decode with specials: %s", out);
    free(out);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/scores", save_root);
    {
        /* a token JSON cannot hold (a GGUF may have one) is refused, not dropped */
        const char *bad[] = {"a", "b", "\xff\xfe"};
        tokenizer_spec bs = {.kind = TOK_BPE_BYTELEVEL, .n_tokens = 3, .tokens = bad, .bos_id = -1, .eos_id = -1,
                             .unk_id = -1};
        lomo_tokenizer *u = NULL;
        CHECK(tokenizer_create(&u, ctx, &bs, "bad utf-8") == LOMO_OK, "%s", lomo_last_error(ctx));
        if (u)
            CHECK(lomo_tokenizer_save_hf(u, dir) == LOMO_ERR_FORMAT &&
                      strstr(lomo_last_error(ctx), "bad utf-8: token 2 is not valid UTF-8"),
                  "an invalid token: %s", lomo_last_error(ctx));
        lomo_tokenizer_destroy(u);
        /* one text at two ids: JSON's vocabulary keeps one id a text */
        const char *twice[] = {"a", "b", "a"};
        bs.tokens = twice;
        CHECK(tokenizer_create(&u, ctx, &bs, "twice") == LOMO_OK, "%s", lomo_last_error(ctx));
        if (u)
            CHECK(lomo_tokenizer_save_hf(u, dir) == LOMO_ERR_FORMAT &&
                      strstr(lomo_last_error(ctx), "twice: tokens 0 and 2 are both \"a\""),
                  "a repeated text: %s", lomo_last_error(ctx));
        lomo_tokenizer_destroy(u);
        /* a merge whose token holds a space: HF's "left right" cannot say it */
        const char *spaced[] = {"a", " b", "a b"}, *merge[] = {"a  b"};
        bs.tokens = spaced;
        bs.merges = merge;
        bs.n_merges = 1;
        CHECK(tokenizer_create(&u, ctx, &bs, "spaced") == LOMO_OK, "%s", lomo_last_error(ctx));
        if (u)
            CHECK(lomo_tokenizer_save_hf(u, dir) == LOMO_ERR_FORMAT &&
                      strstr(lomo_last_error(ctx), "a token with a space cannot be written"),
                  "a spaced merge: %s", lomo_last_error(ctx));
        lomo_tokenizer_destroy(u);
        rmdir(dir);
    }
    /* control tokens match in raw text, longest first */
    CHECK(lomo_tokenizer_encode(t, "<s>a</s>", 8, 0, &ids, &n) == LOMO_OK && n == 3 && ids[0] == 1 && ids[1] == 10 &&
              ids[2] == 2,
          "specials in text: n=%zu", n);
    free(ids);
    lomo_tokenizer_destroy(t);

    /* rank mode without merges: unknown characters fuse into one <unk> */
    s.scores = NULL;
    CHECK(tokenizer_create(&t, ctx, &s, "by hand") == LOMO_OK, "%s", lomo_last_error(ctx));
    if (!t) return;
    CHECK(lomo_tokenizer_encode(t, "a\xE2\x98\x83\xE2\x98\x83" "b", 8, 0, &ids, &n) == LOMO_OK && n == 4 &&
              ids[0] == 3 && ids[1] == 4 && ids[2] == 0 && ids[3] == 5,
          "fused unk: n=%zu", n);
    free(ids);
    CHECK(lomo_tokenizer_token_to_id(t, "abc") == 9 && lomo_tokenizer_token_to_id(t, "zz") == -1 &&
              strcmp(lomo_tokenizer_id_to_token(t, 7), "ab") == 0 && lomo_tokenizer_id_to_token(t, 11) == NULL &&
              lomo_tokenizer_id_to_token(t, -1) == NULL && lomo_tokenizer_vocab_size(t) == 11,
          "token <-> id");
    lomo_tokenizer_destroy(t);
}

/* bos/eos and add_special through the HF loader */
static void test_bos_eos(void) {
    lomo_tokenizer *t = load_hf("llama2");
    if (t) {
        CHECK(lomo_tokenizer_bos_id(t) == 1 && lomo_tokenizer_eos_id(t) == 2, "llama2 bos %d eos %d",
              lomo_tokenizer_bos_id(t), lomo_tokenizer_eos_id(t));
        CHECK(lomo_tokenizer_adds_bos(t) == 1, "llama2 adds its BOS");
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(lomo_tokenizer_encode(t, "", 0, 1, &ids, &n) == LOMO_OK && n == 1 && ids[0] == 1, "empty + bos");
        free(ids);
        CHECK(lomo_tokenizer_encode(t, NULL, 0, 0, &ids, &n) == LOMO_OK && n == 0 && ids, "empty: no ids");
        free(ids);
    }
    lomo_tokenizer_destroy(t);
    t = load_hf("smollm2");
    if (t) {
        /* tokenizer.json names no bos; eos is <|endoftext|> by name */
        CHECK(lomo_tokenizer_bos_id(t) == -1 && lomo_tokenizer_eos_id(t) == 0, "smollm2 bos %d eos %d",
              lomo_tokenizer_bos_id(t), lomo_tokenizer_eos_id(t));
        CHECK(lomo_tokenizer_token_to_id(t, "<|im_start|>") == 1 && lomo_tokenizer_vocab_size(t) == 49152,
              "smollm2 vocab");
        CHECK(lomo_tokenizer_adds_bos(t) == 0, "smollm2 adds no BOS");
        int32_t *ids = NULL;
        size_t n = 0;
        const char *chat = "<|im_start|>user\nHi<|im_end|>";
        CHECK(lomo_tokenizer_encode(t, chat, strlen(chat), 1, &ids, &n) == LOMO_OK && n >= 4 && ids[0] == 1 &&
                  ids[n - 1] == 2,
              "chat specials");
        char *out = NULL;
        CHECK(lomo_tokenizer_decode(t, ids, n, 1, &out, NULL) == LOMO_OK && strcmp(out, "user\nHi") == 0,
              "skip_special: %s", out);
        free(out);
        free(ids);
    }
    lomo_tokenizer_destroy(t);
    t = load_hf("llama3");
    if (t) {
        int bot = lomo_tokenizer_token_to_id(t, "<|begin_of_text|>");
        CHECK(bot >= 0 && lomo_tokenizer_bos_id(t) == bot &&
                  lomo_tokenizer_eos_id(t) == lomo_tokenizer_token_to_id(t, "<|end_of_text|>"),
              "llama3 bos/eos");
    }
    lomo_tokenizer_destroy(t);
}

/* tokenizer_config.json beside tokenizer.json names the BOS and EOS and gives the chat template; bad
 * ones are errors naming it and the key */
static void test_tokenizer_config(void) {
    char dir[256], json_path[300], cfg_path[300];
    snprintf(dir, sizeof dir, "%s/config", save_root);
    mkdir(dir, 0777);
    snprintf(json_path, sizeof json_path, "%s/tokenizer.json", dir);
    snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", dir);
    size_t len = 0;
    char *text = fx_read_file(fx_path("tok/smollm2.tokenizer.json"), &len);
    FILE *f = fopen(json_path, "wb");
    CHECK(text && f && fwrite(text, 1, len, f) == len, "copy smollm2's tokenizer.json");
    if (f) fclose(f);
    free(text);
    static const struct {
        const char *cfg;
        lomo_status want;
        int bos, eos;
        const char *needle, *tmpl;   /* the error's words; the chat template read (NULL: none) */
    } cases[] = {
        {"{\"bos_token\": \"<|im_start|>\", \"eos_token\": \"<|im_end|>\"}", LOMO_OK, 1, 2, NULL, NULL},
        {"{\"bos_token\": {\"content\": \"<|im_start|>\", \"lstrip\": false}, \"eos_token\": null}", LOMO_OK, 1, 0,
         NULL, NULL},
        {"{\"model_max_length\": 8192}", LOMO_OK, -1, 0, NULL, NULL},
        {"{\"bos_token\": 1}", LOMO_ERR_FORMAT, 0, 0, "tokenizer_config.json: bos_token: expected a token", NULL},
        {"{\"eos_token\": \"<|nope|>\"}", LOMO_ERR_FORMAT, 0, 0,
         "tokenizer_config.json: eos_token: \"<|nope|>\" is not in the vocabulary", NULL},
        {"{\"bos_token\": ", LOMO_ERR_FORMAT, 0, 0, "tokenizer_config.json: invalid JSON", NULL},
        {"[]", LOMO_ERR_FORMAT, 0, 0, "tokenizer_config.json: expected a JSON object", NULL},
        /* the chat template: a string; the "default" of named ones; none but named others; null */
        {"{\"chat_template\": \"{{ messages }}\"}", LOMO_OK, -1, 0, NULL, "{{ messages }}"},
        {"{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"default\", "
         "\"template\": \"D\"}]}",
         LOMO_OK, -1, 0, NULL, "D"},
        {"{\"chat_template\": [{\"name\": \"rag\", \"template\": \"R\"}]}", LOMO_OK, -1, 0, NULL, NULL},
        {"{\"chat_template\": null}", LOMO_OK, -1, 0, NULL, NULL},
        {"{\"chat_template\": 5}", LOMO_ERR_FORMAT, 0, 0,
         "tokenizer_config.json: chat_template: expected a string or a list of named templates", NULL},
        {"{\"chat_template\": [{\"name\": \"default\"}]}", LOMO_ERR_FORMAT, 0, 0,
         "tokenizer_config.json: chat_template[0]: expected {\"name\": string, \"template\": string}", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        f = fopen(cfg_path, "wb");
        if (f) fputs(cases[i].cfg, f), fclose(f);
        lomo_tokenizer *t = NULL;
        lomo_status st = lomo_tokenizer_load_hf(&t, ctx, json_path);
        CHECK(st == cases[i].want, "config %zu: %s", i, lomo_last_error(ctx));
        if (!st && t) {
            CHECK(lomo_tokenizer_bos_id(t) == cases[i].bos && lomo_tokenizer_eos_id(t) == cases[i].eos,
                  "config %zu: bos %d eos %d", i, lomo_tokenizer_bos_id(t), lomo_tokenizer_eos_id(t));
            const char *got = lomo_tokenizer_chat_template(t);
            CHECK(cases[i].tmpl ? got && !strcmp(got, cases[i].tmpl) : !got, "config %zu: chat template %s", i,
                  got ? got : "(none)");
        }
        if (cases[i].needle) CHECK(!t && strstr(lomo_last_error(ctx), cases[i].needle), "config %zu: %s", i, lomo_last_error(ctx));
        lomo_tokenizer_destroy(t);
    }
    /* the chat template goes with a saved tokenizer, whole (tmpl as JSON writes it: a newline escaped) */
    static const char tmpl[] = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}{% endfor %}";
    f = fopen(cfg_path, "wb");
    if (f) fprintf(f, "{\"chat_template\": \"%s\"}", tmpl), fclose(f);
    char saved[320], saved_json[360];
    snprintf(saved, sizeof saved, "%s/saved", dir);
    snprintf(saved_json, sizeof saved_json, "%s/tokenizer.json", saved);
    lomo_tokenizer *t = NULL, *t2 = NULL;
    CHECK(lomo_tokenizer_load_hf(&t, ctx, json_path) == LOMO_OK && lomo_tokenizer_save_hf(t, saved) == LOMO_OK &&
              lomo_tokenizer_load_hf(&t2, ctx, saved_json) == LOMO_OK,
          "save with a chat template: %s", lomo_last_error(ctx));
    const char *want = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}{% endfor %}";
    const char *got = t2 ? lomo_tokenizer_chat_template(t2) : NULL;
    CHECK(got && !strcmp(got, want), "the saved chat template: %s", got ? got : "(none)");
    lomo_tokenizer_destroy(t);
    lomo_tokenizer_destroy(t2);
    unlink(saved_json);
    snprintf(saved_json, sizeof saved_json, "%s/tokenizer_config.json", saved);
    unlink(saved_json);
    rmdir(saved);
    unlink(cfg_path);
    /* a tokenizer.json under another name takes no config from beside it */
    char other[300];
    snprintf(other, sizeof other, "%s/smollm2.tokenizer.json", dir);
    rename(json_path, other);
    f = fopen(cfg_path, "wb");
    if (f) fputs("{\"eos_token\": \"<|nope|>\"}", f), fclose(f);
    t = NULL;
    CHECK(lomo_tokenizer_load_hf(&t, ctx, other) == LOMO_OK && lomo_tokenizer_eos_id(t) == 0,
          "another file name: the config beside it is not read: %s", lomo_last_error(ctx));
    lomo_tokenizer_destroy(t);
    /* saving where a file stands in the way */
    char blocked[320];
    snprintf(blocked, sizeof blocked, "%s/sub", other);
    t = load_hf("gpt2");
    if (t)
        CHECK(lomo_tokenizer_save_hf(t, blocked) == LOMO_ERR_IO && strstr(lomo_last_error(ctx), other),
              "save under a file: %s", lomo_last_error(ctx));
    lomo_tokenizer_destroy(t);
    unlink(other);
    unlink(cfg_path);
    rmdir(dir);
}

/* ---- errors: each names the file and the field ---- */

static void expect_json_error(const char *what, const char *json, lomo_status want, const char *field) {
    lomo_tokenizer *t = NULL;
    lomo_status st = tokenizer_load_hf_json(&t, ctx, json, strlen(json), "dir/tokenizer.json");
    const char *msg = lomo_last_error(ctx);
    CHECK(st == want && t == NULL && strstr(msg, "dir/tokenizer.json") && strstr(msg, field),
          "%s: status %d, message '%s' should name dir/tokenizer.json and %s", what, st, msg, field);
    lomo_tokenizer_destroy(t);
}

#define MODEL_OK "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}"

static void test_errors(void) {
    lomo_tokenizer *t = NULL;
    /* missing file */
    lomo_status st = lomo_tokenizer_load_hf(&t, ctx, "/nonexistent/dir/tokenizer.json");
    CHECK(st == LOMO_ERR_IO && !t && strstr(lomo_last_error(ctx), "/nonexistent/dir/tokenizer.json"),
          "missing file: %d %s", st, lomo_last_error(ctx));
    /* malformed JSON, from a real file */
    char dir[] = "/tmp/lomo_tok_XXXXXX";
    if (mkdtemp(dir)) {
        char path[256];
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        FILE *f = fopen(path, "wb");
        fputs("{\"model\": {\"vocab\": {\"a\": 0,}", f);
        fclose(f);
        st = lomo_tokenizer_load_hf(&t, ctx, path);
        CHECK(st == LOMO_ERR_FORMAT && !t && strstr(lomo_last_error(ctx), path) &&
                  strstr(lomo_last_error(ctx), "invalid JSON"),
              "malformed: %d %s", st, lomo_last_error(ctx));
        remove(path);
        rmdir(dir);
    }
    expect_json_error("not an object", "[1, 2]", LOMO_ERR_FORMAT, "top level");
    expect_json_error("no model", "{}", LOMO_ERR_FORMAT, "model");
    expect_json_error("no vocab", "{\"model\": {\"type\": \"BPE\", \"merges\": []}}", LOMO_ERR_FORMAT, "model.vocab");
    expect_json_error("no merges", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}", LOMO_ERR_FORMAT,
                      "model.merges");
    expect_json_error("merge of unknown token",
                      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\", \"a zz\"]}}",
                      LOMO_ERR_FORMAT, "merges[1] \"a zz\": token \"zz\" is not in the vocabulary");
    expect_json_error("merge result unknown",
                      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [[\"a\", \"b\"]]}}",
                      LOMO_ERR_FORMAT, "token \"ab\" is not in the vocabulary");
    expect_json_error("unsupported model", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}",
                      LOMO_ERR_FORMAT, "model.type: \"WordPiece\" is not supported");
    expect_json_error("unsupported pre_tokenizer", "{" MODEL_OK ", \"pre_tokenizer\": {\"type\": \"Whitespace\"}}",
                      LOMO_ERR_FORMAT, "pre_tokenizer.type: \"Whitespace\" is not supported");
    expect_json_error("nested unsupported pre_tokenizer",
                      "{" MODEL_OK ", \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": "
                      "[{\"type\": \"ByteLevel\"}, {\"type\": \"BertPreTokenizer\"}]}}",
                      LOMO_ERR_FORMAT, "pre_tokenizer.pretokenizers[1].type");
    expect_json_error("bad regex",
                      "{" MODEL_OK ", \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, "
                      "\"behavior\": \"Isolated\", \"invert\": false}}",
                      LOMO_ERR_FORMAT, "pre_tokenizer.pattern");
    expect_json_error("inverted split",
                      "{" MODEL_OK ", \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, "
                      "\"behavior\": \"Isolated\", \"invert\": true}}",
                      LOMO_ERR_FORMAT, "pre_tokenizer.invert");
    expect_json_error("unsupported normalizer", "{" MODEL_OK ", \"normalizer\": {\"type\": \"NFC\"}}", LOMO_ERR_FORMAT,
                      "normalizer.type: \"NFC\"");
    expect_json_error("unsupported decoder", "{" MODEL_OK ", \"decoder\": {\"type\": \"WordPiece\"}}", LOMO_ERR_FORMAT,
                      "decoder.type: \"WordPiece\"");
    expect_json_error("unsupported post_processor", "{" MODEL_OK ", \"post_processor\": {\"type\": \"Foo\"}}",
                      LOMO_ERR_FORMAT, "post_processor.type: \"Foo\"");
    expect_json_error("template without ids",
                      "{" MODEL_OK ", \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
                      "[{\"SpecialToken\": {\"id\": \"<s>\"}}], \"special_tokens\": {}}}",
                      LOMO_ERR_FORMAT, "post_processor.special_tokens[\"<s>\"].ids");
    expect_json_error("unk not in vocab",
                      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"unk_token\": \"<unk>\"}}",
                      LOMO_ERR_FORMAT, "model.unk_token");
    expect_json_error("dropout", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"dropout\": 0.1}}",
                      LOMO_ERR_FORMAT, "model.dropout");
    expect_json_error("vocab id not an integer", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}, \"merges\": []}}",
                      LOMO_ERR_FORMAT, "model.vocab");
    expect_json_error("duplicate vocab id", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}",
                      LOMO_ERR_FORMAT, "model.vocab: id 0");
    expect_json_error("added token clash",
                      "{" MODEL_OK ", \"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true}]}",
                      LOMO_ERR_FORMAT, "added_tokens[0]");
    expect_json_error("single_word",
                      "{" MODEL_OK ", \"added_tokens\": [{\"id\": 3, \"content\": \"<s>\", \"single_word\": true}]}",
                      LOMO_ERR_FORMAT, "added_tokens[0]");
    expect_json_error("merges not strings", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [7]}}",
                      LOMO_ERR_FORMAT, "model.merges[0]");
    expect_json_error("bool expected",
                      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"byte_fallback\": 1}}",
                      LOMO_ERR_FORMAT, "model.byte_fallback");

    /* encode / decode arguments */
    if (tokenizer_load_hf_json(&t, ctx, "{" MODEL_OK "}", strlen("{" MODEL_OK "}"), "mini/tokenizer.json") == LOMO_OK) {
        int32_t *ids = NULL;
        size_t n = 0;
        st = lomo_tokenizer_encode(t, "ab\xFF", 3, 0, &ids, &n);
        CHECK(st == LOMO_ERR_INVALID_ARG && !ids && strstr(lomo_last_error(ctx), "UTF-8 at byte 2"),
              "invalid UTF-8: %s", lomo_last_error(ctx));
        CHECK(lomo_tokenizer_encode(t, "abab", 4, 0, &ids, &n) == LOMO_OK && n == 2 && ids[0] == 2 && ids[1] == 2,
              "mini encode (no pre-tokenizer: one piece)");
        free(ids);
        int32_t bad[] = {0, 7};
        char *out = NULL;
        st = lomo_tokenizer_decode(t, bad, 2, 0, &out, NULL);
        CHECK(st == LOMO_ERR_INVALID_ARG && !out && strstr(lomo_last_error(ctx), "id 7"), "bad id: %s",
              lomo_last_error(ctx));
        int32_t good[] = {0, 2};
        CHECK(lomo_tokenizer_decode(t, good, 2, 0, &out, NULL) == LOMO_OK && strcmp(out, "a ab") == 0,
              "no decoder joins with spaces: %s", out);
        free(out);
        lomo_tokenizer_destroy(t);
    } else {
        CHECK(0, "mini tokenizer: %s", lomo_last_error(ctx));
    }

    /* ignore_merges: a piece that is a token skips BPE even when no merge reaches it (HF: [4] vs [3, 2]);
     * also "ab c": the space is no token and no unk exists, so HF drops it */
    for (int im = 0; im < 2; im++) {
        char js[256];
        snprintf(js, sizeof js,
                 "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, "
                 "\"abc\": 4}, \"merges\": [\"a b\"], \"ignore_merges\": %s}}",
                 im ? "true" : "false");
        if (tokenizer_load_hf_json(&t, ctx, js, strlen(js), "im/tokenizer.json") != LOMO_OK) {
            CHECK(0, "ignore_merges tokenizer: %s", lomo_last_error(ctx));
            continue;
        }
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(lomo_tokenizer_encode(t, "abc", 3, 0, &ids, &n) == LOMO_OK &&
                  (im ? (n == 1 && ids[0] == 4) : (n == 2 && ids[0] == 3 && ids[1] == 2)),
              "ignore_merges=%d: n=%zu", im, n);
        free(ids);
        CHECK(lomo_tokenizer_encode(t, "ab c", 4, 0, &ids, &n) == LOMO_OK && n == 2 && ids[0] == 3 && ids[1] == 2,
              "dropped space: n=%zu", n);
        free(ids);
        lomo_tokenizer_destroy(t);
    }

    /* tokenizer_create's own checks */
    const char *toks[] = {"a", "b", "ab"};
    const char *bad_merge[] = {"ab"};
    tokenizer_spec s = {.kind = TOK_BPE_BYTELEVEL, .n_tokens = 3, .tokens = toks, .n_merges = 1, .merges = bad_merge,
                        .bos_id = -1, .eos_id = -1, .unk_id = -1};
    st = tokenizer_create(&t, ctx, &s, "spec.gguf");
    CHECK(st == LOMO_ERR_FORMAT && !t && strstr(lomo_last_error(ctx), "spec.gguf: merges[0]"), "merge w/o space: %s",
          lomo_last_error(ctx));
    const char *ok_merge[] = {"a b"};
    s.merges = ok_merge;
    s.pretokenizer = "qwen2";
    st = tokenizer_create(&t, ctx, &s, "spec.gguf");
    CHECK(st == LOMO_ERR_FORMAT && strstr(lomo_last_error(ctx), "\"qwen2\" is not supported"), "preset: %s",
          lomo_last_error(ctx));
    s.pretokenizer = NULL;
    s.bos_id = 3;
    st = tokenizer_create(&t, ctx, &s, "spec.gguf");
    CHECK(st == LOMO_ERR_FORMAT && strstr(lomo_last_error(ctx), "bos id 3"), "bos range: %s", lomo_last_error(ctx));
    s.bos_id = -1;
    s.add_eos = 1;
    st = tokenizer_create(&t, ctx, &s, "spec.gguf");
    CHECK(st == LOMO_ERR_FORMAT && strstr(lomo_last_error(ctx), "no eos"), "add_eos: %s", lomo_last_error(ctx));
    s.add_eos = 0;
    s.n_tokens = 0;
    CHECK(tokenizer_create(&t, ctx, &s, "spec.gguf") == LOMO_ERR_INVALID_ARG, "no tokens");
}

/* About 100 KB in well under a second (skipped as a check under sanitizers). */
static void test_speed(void) {
    size_t len = 0;
    char *corpus = fx_read_file(fx_path("tok/corpus.txt"), &len);
    if (!corpus) return;
    size_t reps = 100000 / len + 1, big_len = reps * len;
    char *big = malloc(big_len);
    for (size_t i = 0; i < reps; i++) memcpy(big + i * len, corpus, len);
    static const char *const names[] = {"smollm2", "llama3", "llama2"};
    for (int k = 0; k < 3; k++) {
        lomo_tokenizer *t = load_hf(names[k]);
        if (!t) continue;
        int32_t *ids = NULL;
        size_t n = 0;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        lomo_status st = lomo_tokenizer_encode(t, big, big_len, 0, &ids, &n);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
        printf("encode %zu bytes with %s: %zu ids in %.3f s\n", big_len, names[k], n, s);
        CHECK(st == LOMO_OK && n > big_len / 10, "speed encode %s", names[k]);
#if !defined(__SANITIZE_ADDRESS__)
        CHECK(s < 1.0, "%s: encoding 100 KB took %.2f s", names[k], s);
#endif
        free(ids);
        lomo_tokenizer_destroy(t);
    }
    free(big);
    free(corpus);
}

int main(void) {
    CHECK(lomo_ctx_create(&ctx, NULL) == LOMO_OK, "ctx");
    CHECK(mkdtemp(save_root) != NULL, "temporary folder");
    test_hf_parity();
    test_variants();
    test_spec_parity();
    test_spec_by_hand();
    test_bos_eos();
    test_tokenizer_config();
    test_errors();
    test_speed();
    rmdir(save_root);
    lomo_ctx_destroy(ctx);
    return test_summary("test_tokenizer");
}
