/*
 * fuzz_tokenizer_json.c: libFuzzer target for the tokenizer.json loader.
 *
 * Each input is a whole tokenizer.json, parsed from memory
 * (tokenizer_load_hf_json). When it loads, a fixed text that touches every
 * pre-tokenizer path (spaces, digits, CJK, emoji, special-looking strings,
 * "▁", <0xXX>) is encoded with and without special tokens, and the ids are
 * decoded with and without skipping specials, so the whole pipeline a file
 * can configure runs under ASan and UBSan.
 *
 * The tokenizer sources are compiled into this file rather than linked from
 * liblomo: the library is built without coverage instrumentation, and
 * libFuzzer needs it on the code under test. (Their external symbols then
 * come from here, so the linker never pulls the library's copies.)
 *
 * Seeds: tests/fuzz/corpus/tokenizer_json (written by tests/fixtures/gen_tokenizers.py).
 *   CC=clang cmake -S . -B build-fuzz -DLOMO_FUZZ=ON && cmake --build build-fuzz --target fuzz_tokenizer_json
 *   mkdir -p /tmp/tokjson && build-fuzz/tests/fuzz_tokenizer_json -max_total_time=60 /tmp/tokjson \
 *       tests/fuzz/corpus/tokenizer_json
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include "runtime/tokenizer.c"
#include "runtime/tokenizer_hf.c"
#include "runtime/tokenizer_pretok.c"

static const char TEXT[] =
    "Hello, world!  It's 1234567 and 3.14\t\r\n  caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 "
    "<s>x</s> <|endoftext|> <unk> \xE2\x96\x81\xE2\x96\x81 <0x41> ab  ";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lomo_ctx *ctx = NULL;
    if (lomo_ctx_create(&ctx, NULL) != LOMO_OK) return 0;
    lomo_tokenizer *t = NULL;
    if (tokenizer_load_hf_json(&t, ctx, (const char *)data, size, "fuzz/tokenizer.json") == LOMO_OK) {
        for (int special = 0; special < 2; special++) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (lomo_tokenizer_encode(t, TEXT, sizeof TEXT - 1, special, &ids, &n) != LOMO_OK) continue;
            for (int skip = 0; skip < 2; skip++) {
                char *out = NULL;
                size_t len = 0;
                if (lomo_tokenizer_decode(t, ids, n, skip, &out, &len) == LOMO_OK) free(out);
            }
            free(ids);
        }
        /* every id, one at a time: decoders must cope with any single token */
        int v = lomo_tokenizer_vocab_size(t);
        for (int32_t id = 0; id < v && id < 4096; id++) {
            char *out = NULL;
            if (lomo_tokenizer_decode(t, &id, 1, 0, &out, NULL) == LOMO_OK) free(out);
        }
        lomo_tokenizer_destroy(t);
    }
    lomo_ctx_destroy(ctx);
    return 0;
}
