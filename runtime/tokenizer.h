/*
 * tokenizer.h: tokenizer internals shared by the core (tokenizer.c), the
 * pre-tokenizers (tokenizer_pretok.c) and the loaders (tokenizer_hf.c for
 * tokenizer.json, gguf_tokenizer.c for GGUF metadata).
 *
 * Encoding runs the stages of Hugging Face tokenizers, in order:
 *   added/special tokens split out of the raw text (longest match first)
 *   -> normalizer steps on each remaining segment
 *   -> pre-tokenizer steps (regex splits, byte-level mapping, metaspace)
 *   -> BPE on each piece (merge ranks, or token scores as GGUF "llama" does)
 *   -> the post-processor's prefix/suffix ids when add_special is set.
 * Decoding maps ids to token texts and runs the decoder steps over the list.
 *
 * Both loaders describe the vocabulary as a tokenizer_spec (plain arrays, as
 * GGUF stores them) and build through tokenizer_create, which also installs
 * the default pipeline for spec->kind; the HF loader then replaces the
 * pipeline with what tokenizer.json says (tok_pipeline_clear + tok_*_add).
 */
#ifndef LOMO_TOKENIZER_INTERNAL_H
#define LOMO_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "lomo.h"
#include "lomo_tokenizer.h"

typedef enum tok_kind { TOK_BPE_BYTELEVEL = 0, TOK_BPE_SENTENCEPIECE = 1 } tok_kind;
typedef struct tokenizer_spec {
    tok_kind kind;
    const char *pretokenizer;   /* byte-level: "gpt2", "llama3" or "smollm" (regex preset); NULL = gpt2 */
    int n_tokens;
    const char *const *tokens;  /* id -> token text as stored in the vocab */
    const float *scores;        /* NULL if none */
    const int32_t *token_types; /* GGUF token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte), NULL if none */
    int n_merges;
    const char *const *merges;  /* "left right", rank = index; NULL/0 if none */
    int bos_id, eos_id, unk_id; /* -1 if none */
    int add_bos, add_eos;
} tokenizer_spec;
/*
 * Builds a tokenizer from plain arrays (copied; the caller keeps ownership).
 * Control (3) and user-defined (4) tokens are matched literally in the raw
 * text before pre-tokenization; control tokens are "special" (skipped by
 * decode with skip_special). With merges, BPE merges by rank; without, by
 * the score of the merged token (SentencePiece kind only). A NULL entry in
 * tokens marks an id that no token uses (HF vocabularies may have holes).
 * source_name prefixes every error message (e.g. the file path).
 */
lomo_status tokenizer_create(lomo_tokenizer **out, lomo_ctx *ctx, const tokenizer_spec *spec, const char *source_name);

/* tokenizer.json from memory (the fuzz target's entry); source_name names it in errors. */
lomo_status tokenizer_load_hf_json(lomo_tokenizer **out, lomo_ctx *ctx, const char *json, size_t len,
                                   const char *source_name);

/* ---- pre-tokenizer regexes and the byte-level alphabet (tokenizer_pretok.c) ---- */

typedef struct tok_regex tok_regex;   /* a compiled PCRE2 pattern (UTF + UCP) */
typedef struct tok_match_ctx tok_match_ctx;   /* per-encode match scratch (keeps encode reentrant) */

extern const char TOK_RE_GPT2[];      /* GPT-2 / ByteLevel(use_regex) split */
extern const char TOK_RE_LLAMA3[];    /* Llama-3 (cl100k-style) split */

/* NULL on failure with the PCRE2 message in err. */
tok_regex *tok_regex_compile(const char *pattern, size_t len, char *err, size_t err_size);
void tok_regex_free(tok_regex *re);
const char *tok_regex_pattern(const tok_regex *re);   /* the source it was compiled from */
tok_match_ctx *tok_match_ctx_create(void);
void tok_match_ctx_free(tok_match_ctx *m);
/* First match at or after `from` in s[0, n) (valid UTF-8): 1 and [*ms, *me), 0 if none, -1 on a match error. */
int tok_regex_find(const tok_regex *re, tok_match_ctx *m, const char *s, size_t n, size_t from, size_t *ms,
                   size_t *me);

/* GPT-2's byte <-> unicode table: byte b is written as code point tok_byte_to_cp(b). */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp);      /* -1 if cp is not in the table */

/* UTF-8 helpers: length of the valid sequence at s (1..4), or 0 if invalid. */
size_t tok_utf8_len(const unsigned char *s, size_t n, uint32_t *cp);
size_t tok_utf8_put(char *out, uint32_t cp);   /* out needs 4 bytes */
int tok_is_whitespace(uint32_t cp);            /* Unicode White_Space, as Rust's char::is_whitespace */

/* ---- the pipeline ---- */

typedef enum tok_split_behavior {
    TOK_SPLIT_REMOVED = 0,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_PREV,
    TOK_SPLIT_MERGED_NEXT,
    TOK_SPLIT_CONTIGUOUS,
} tok_split_behavior;

typedef enum tok_prepend { TOK_PREPEND_ALWAYS = 0, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER } tok_prepend;

typedef enum tok_norm_kind { TOK_NORM_PREPEND = 0, TOK_NORM_REPLACE } tok_norm_kind;
typedef struct tok_norm_step {
    tok_norm_kind kind;
    char *a, *b;              /* PREPEND: a; REPLACE: every a becomes b */
} tok_norm_step;

typedef enum tok_pre_kind { TOK_PRE_SPLIT = 0, TOK_PRE_BYTELEVEL, TOK_PRE_METASPACE } tok_pre_kind;
typedef struct tok_pre_step {
    tok_pre_kind kind;
    tok_regex *re;                 /* SPLIT */
    tok_split_behavior behavior;   /* SPLIT */
    int add_prefix_space;          /* BYTELEVEL: prepend ' ' to a piece that lacks one */
    char replacement[8];           /* METASPACE: UTF-8 of the replacement char */
    tok_prepend prepend;           /* METASPACE */
    int split;                     /* METASPACE: split before each replacement char */
} tok_pre_step;

typedef enum tok_dec_kind {
    TOK_DEC_BYTELEVEL = 0,   /* map chars back to bytes, join, lossy UTF-8 */
    TOK_DEC_REPLACE,         /* per token: every a becomes b */
    TOK_DEC_BYTEFALLBACK,    /* runs of <0xXX> become the text they spell */
    TOK_DEC_FUSE,            /* join into one */
    TOK_DEC_STRIP,           /* per token: up to start/stop copies of a[0] off each end */
    TOK_DEC_METASPACE,       /* per token: replacement -> ' '; dropped in the first token if prepend */
} tok_dec_kind;
typedef struct tok_dec_step {
    tok_dec_kind kind;
    char *a, *b;
    int start, stop;
    int prepend;
} tok_dec_step;

typedef struct tok_added {
    char *text;
    size_t len;
    int id;
    int special;             /* skipped by decode(skip_special) */
    int lstrip, rstrip;      /* swallow whitespace on that side */
} tok_added;

typedef struct tok_strmap tok_strmap;     /* text -> id */
typedef struct tok_pairmap tok_pairmap;   /* (left id, right id) -> (rank, merged id) */

struct lomo_tokenizer {
    lomo_ctx *ctx;
    char source[256];        /* prefixes error messages */
    int n_tokens;
    char **tokens;           /* [n_tokens], NULL for unused ids */
    uint32_t *token_len;     /* [n_tokens] */
    float *scores;           /* [n_tokens] or NULL */
    uint8_t *special;        /* [n_tokens]: 1 for control/special tokens */
    tok_strmap *vocab;
    tok_pairmap *merges;     /* NULL in score mode */
    int use_scores;          /* merge by the merged token's score (GGUF "llama") */
    int bos_id, eos_id, unk_id;
    int byte_fallback;       /* unknown chars become <0xXX> tokens */
    int fuse_unk;            /* consecutive unknown chars become one unk */
    int ignore_merges;       /* a piece that is a whole token skips BPE (Llama-3) */
    int byte_ids[256];       /* ids of <0xXX>, -1 where absent */

    tok_added *added;        /* [n_added], sorted by length, longest first */
    int n_added;
    int added_first[257];    /* added tokens whose first byte is b: indices in by_first[added_first[b]..added_first[b+1]) */
    int *by_first;

    tok_norm_step *norm;
    int n_norm;
    tok_pre_step *pre;
    int n_pre;
    tok_dec_step *dec;
    int n_dec;
    int has_decoder;         /* 0: decode joins token texts with ' ' (HF's default) */
    int32_t *prefix, *suffix;   /* ids added around the text when add_special */
    int n_prefix, n_suffix;
    char *chat_template;     /* the model's chat template (Jinja source, not run), NULL if none */
};

/* Empties normalizer, pre-tokenizer, decoder and post-processor. */
void tok_pipeline_clear(lomo_tokenizer *t);
/* Each takes ownership of the step's strings and regex, also on failure. */
lomo_status tok_norm_add(lomo_tokenizer *t, tok_norm_step step);
lomo_status tok_pre_add(lomo_tokenizer *t, tok_pre_step step);
lomo_status tok_dec_add(lomo_tokenizer *t, tok_dec_step step);
lomo_status tok_post_add(lomo_tokenizer *t, int prefix, int32_t id);   /* prefix: 1 before, 0 after */
/* Pre-tokenizer presets: "gpt2", "llama3", "smollm" (regex splits + byte-level map). */
lomo_status tok_pre_add_preset(lomo_tokenizer *t, const char *name);
/* The merges in rank order: pairs[2 r], pairs[2 r + 1] are the left and right ids of rank r;
 * in score mode, the merges that rank the same way (each split of a token into two tokens,
 * by the token's score). Returns the count, or -1 when out of memory; *pairs is malloc'd. */
int tok_merges_by_rank(const lomo_tokenizer *t, int32_t **pairs);
/* Keeps a copy of src as the chat template (replacing any); what names it in an out-of-memory error. */
lomo_status tok_set_chat_template(lomo_tokenizer *t, const char *src, const char *what);
/* Sets the strip flags of the added token with this id (HF added_tokens lstrip/rstrip). */
void tok_added_set_strip(lomo_tokenizer *t, int id, int lstrip, int rstrip);

#endif
