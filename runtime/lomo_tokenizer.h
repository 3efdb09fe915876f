/*
 * lomo_tokenizer.h: tokenizers (part of the public API; lomo.h includes it).
 *
 * BPE as Hugging Face tokenizer.json describes it, or as GGUF metadata does:
 * byte-level BPE (GPT-2, Llama-3, SmolLM pre-tokenizer regexes, through PCRE2)
 * and SentencePiece-style BPE (Llama-2: metaspace, scores or merges, <0xXX>
 * byte fallback); special and added tokens; BOS/EOS.
 */
#ifndef LOMO_TOKENIZER_H
#define LOMO_TOKENIZER_H

#include "lomo.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lomo_tokenizer lomo_tokenizer;

/* tokenizer.json; when the file is named tokenizer.json, a tokenizer_config.json beside it names
 * the BOS and EOS (bos_token, eos_token), as transformers reads them, and gives the chat template. */
lomo_status lomo_tokenizer_load_hf(lomo_tokenizer **out, lomo_ctx *ctx, const char *tokenizer_json_path);
lomo_status lomo_tokenizer_load_gguf(lomo_tokenizer **out, lomo_ctx *ctx, const char *gguf_path);
/*
 * Writes dir/tokenizer.json and dir/tokenizer_config.json (BOS and EOS by name, the chat template),
 * creating dir if needed, each file whole or not at all: a GGUF's tokenizer saved
 * beside a fine-tune makes the folder complete for lomo and for transformers.
 * lomo_tokenizer_load_hf of dir/tokenizer.json gives the same ids, BOS and EOS.
 */
lomo_status lomo_tokenizer_save_hf(const lomo_tokenizer *t, const char *dir);
void lomo_tokenizer_destroy(lomo_tokenizer *t);

/* ids_out is malloc'd (caller frees). add_special: BOS etc. as the tokenizer's post-processor says. */
lomo_status lomo_tokenizer_encode(lomo_tokenizer *t, const char *text, size_t len, int add_special,
                                  int32_t **ids_out, size_t *n_out);
/* text_out is malloc'd and NUL-terminated (caller frees). */
lomo_status lomo_tokenizer_decode(lomo_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                                  char **text_out, size_t *len_out);
int lomo_tokenizer_vocab_size(const lomo_tokenizer *t);
int lomo_tokenizer_bos_id(const lomo_tokenizer *t);   /* -1 if none */
/* 1 when encoding with add_special puts the BOS first (Llama's rule; SmolLM2 has a BOS it never
 * adds): what a text should start with to be read as the tokenizer's own users read it */
int lomo_tokenizer_adds_bos(const lomo_tokenizer *t);
int lomo_tokenizer_eos_id(const lomo_tokenizer *t);   /* -1 if none */
int lomo_tokenizer_token_to_id(const lomo_tokenizer *t, const char *token);   /* -1 if absent */
/*
 * The model's chat template as its files give it, NUL-terminated, or NULL if they give none:
 * tokenizer_config.json's chat_template (a string, or the one named "default" of a list of
 * {"name", "template"}), a GGUF's tokenizer.chat_template. It is Jinja source: lomo does not run
 * it (lomo.prompts recognizes the formats it has). Saved back by lomo_tokenizer_save_hf.
 */
const char *lomo_tokenizer_chat_template(const lomo_tokenizer *t);
const char *lomo_tokenizer_id_to_token(const lomo_tokenizer *t, int id);       /* NULL if out of range */

#ifdef __cplusplus
}
#endif
#endif
