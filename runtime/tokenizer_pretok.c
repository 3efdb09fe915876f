/*
 * tokenizer_pretok.c: what the pre-tokenizers split with and map through:
 * PCRE2 regexes (UTF-8 + Unicode properties, JIT when available), GPT-2's
 * byte <-> unicode table, and the UTF-8 / whitespace helpers the core shares.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tokenizer.h"

/* GPT-2's split, also what HF ByteLevel(use_regex=true) applies. */
const char TOK_RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* Llama-3's split (tiktoken cl100k): numbers in groups of up to three digits. */
const char TOK_RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

struct tok_regex {
    pcre2_code *code;
    char *pattern;   /* the source, for writing tokenizer.json back */
};

struct tok_match_ctx {
    pcre2_match_data *md;
};

tok_regex *tok_regex_compile(const char *pattern, size_t len, char *err, size_t err_size) {
    int code = 0;
    PCRE2_SIZE off = 0;
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
    if (!c) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        snprintf(err, err_size, "%s at offset %zu", (const char *)msg, (size_t)off);
        return NULL;
    }
    /* JIT is optional: without it pcre2_match interprets, just slower. */
    (void)pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);
    tok_regex *re = malloc(sizeof *re);
    char *src = malloc(len + 1);
    if (!re || !src) {
        pcre2_code_free(c);
        free(re);
        free(src);
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    memcpy(src, pattern, len);
    src[len] = 0;
    re->code = c;
    re->pattern = src;
    return re;
}

const char *tok_regex_pattern(const tok_regex *re) { return re->pattern; }

void tok_regex_free(tok_regex *re) {
    if (!re) return;
    pcre2_code_free(re->code);
    free(re->pattern);
    free(re);
}

tok_match_ctx *tok_match_ctx_create(void) {
    tok_match_ctx *m = malloc(sizeof *m);
    if (!m) return NULL;
    /* one pair is enough: only the whole match is read */
    m->md = pcre2_match_data_create(1, NULL);
    if (!m->md) {
        free(m);
        return NULL;
    }
    return m;
}

void tok_match_ctx_free(tok_match_ctx *m) {
    if (!m) return;
    pcre2_match_data_free(m->md);
    free(m);
}

int tok_regex_find(const tok_regex *re, tok_match_ctx *m, const char *s, size_t n, size_t from, size_t *ms,
                   size_t *me) {
    /* the caller validated the text once; checking again per match would be quadratic */
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, m->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) return -1;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->md);
    *ms = ov[0];
    *me = ov[1];
    if (*ms > *me || *me > n) return -1;   /* \K tricks can do this; treat as an error */
    return 1;
}

/*
 * GPT-2's table: printable Latin-1 bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF)
 * stand for themselves; the other 68 bytes, in order (0x00..0x20,
 * 0x7F..0xA0, 0xAD), become U+0100..U+0143, so every byte is a visible
 * character in the vocabulary.
 */
uint32_t tok_byte_to_cp(uint8_t b) {
    if (b <= 0x20) return 256u + b;
    if (b >= 0x7F && b <= 0xA0) return 256u + 33u + (b - 0x7Fu);
    if (b == 0xAD) return 256u + 67u;
    return b;
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 256) return (cp <= 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD) ? -1 : (int)cp;
    if (cp < 256 + 33) return (int)(cp - 256);
    if (cp < 256 + 67) return (int)(0x7F + (cp - 256 - 33));
    if (cp == 256 + 67) return 0xAD;
    return -1;
}

size_t tok_utf8_len(const unsigned char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

size_t tok_utf8_put(char *out, uint32_t cp) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

int tok_is_whitespace(uint32_t cp) {
    if (cp >= 0x09 && cp <= 0x0D) return 1;
    switch (cp) {
    case 0x20: case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F:
    case 0x3000:
        return 1;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}
