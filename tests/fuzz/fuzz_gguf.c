/*
 * fuzz_gguf.c: libFuzzer target for the GGUF reader.
 *
 * Every input goes through the in-memory parser; a file that parses then has
 * every key read through every typed getter, a prefix of every decodable
 * tensor dequantized, and the llama config and tokenizer metadata mapped, so
 * any read the parser failed to bounds-check shows up under ASan.
 *
 * The reader's sources are compiled into this file rather than linked from
 * liblomo: the library is built without coverage instrumentation, and
 * libFuzzer needs it on the code under test. (Their external symbols then
 * come from here, so the linker never pulls the library's copies.)
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DLOMO_FUZZ=ON && cmake --build build-fuzz --target fuzz_gguf
 * Run:   build-fuzz/tests/fuzz_gguf -max_total_time=60 tests/fuzz/corpus/gguf
 */
#include <stdint.h>
#include <stdlib.h>
#include "runtime/gguf.c"
#include "runtime/gguf_dequant.c"
#include "runtime/gguf_model.c"
#include "runtime/gguf_tokenizer.c"

static void read_every_key(const gguf_file *f) {
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const char *k = f->kv[i].key;
        uint32_t u32;
        int32_t i32;
        uint64_t u64, n;
        int64_t i64;
        float fv;
        double dv;
        int bv;
        char *s = NULL, **sa = NULL;
        float *fa = NULL;
        int32_t *ia = NULL;
        (void)gguf_get_u32(f, k, &u32);
        (void)gguf_get_i32(f, k, &i32);
        (void)gguf_get_u64(f, k, &u64);
        (void)gguf_get_i64(f, k, &i64);
        (void)gguf_get_f32(f, k, &fv);
        (void)gguf_get_f64(f, k, &dv);
        (void)gguf_get_bool(f, k, &bv);
        if (gguf_get_str(f, k, &s) == LOMO_OK) free(s);
        if (gguf_get_str_array(f, k, &sa, &n) == LOMO_OK) free(sa);
        if (gguf_get_f32_array(f, k, &fa, &n) == LOMO_OK) free(fa);
        if (gguf_get_i32_array(f, k, &ia, &n) == LOMO_OK) free(ia);
        (void)gguf_value_size(f, f->kv[i].type == GGUF_ARRAY ? f->kv[i].value - 12 : f->kv[i].value, f->kv[i].type);
    }
}

static void dequantize_prefixes(const gguf_file *f) {
    static float buf[4096];
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (!gguf_can_dequantize(t->type) || t->nelem == 0) continue;
        size_t block = ggml_type_get(t->type)->block_size;
        size_t n = t->nelem < 4096 ? t->nelem : 4096;
        n -= n % block;
        gguf_dequantize(buf, gguf_tensor_data(f, t), t->type, n);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static lomo_ctx *ctx;
    if (!ctx && lomo_ctx_create(&ctx, NULL) != LOMO_OK) return 0;
    gguf_file *f;
    if (gguf_open_memory(&f, ctx, data, size, "fuzz.gguf") != LOMO_OK) return 0;
    read_every_key(f);
    dequantize_prefixes(f);
    lomo_llama_config cfg;
    (void)gguf_llama_config(f, &cfg);
    tokenizer_spec spec;
    spec_buffers b = {0};
    (void)read_spec(f, &spec, &b);
    free_buffers(&b);
    gguf_close(f);
    return 0;
}
