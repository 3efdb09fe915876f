/*
 * fuzz_safetensors.c: libFuzzer target for the safetensors reader and the
 * checkpoint-to-model loader. Each input is a whole .safetensors file, parsed
 * from memory (st_parse_memory: no file system). When it parses, every
 * tensor's first and last byte is read (ASan checks the ranges really lie in
 * the input) and the file is loaded into a micro LLaMA (hidden 4, 1 layer,
 * vocab 5), which exercises the name, shape and dtype checks and the
 * F32/F16/BF16 conversion. Seeds: tests/fuzz/corpus/safetensors (written by
 * tests/fixtures/gen_safetensors.py; the valid ones fit the micro model).
 *
 *   CC=clang cmake -S . -B build-fuzz -DLOMO_FUZZ=ON && cmake --build build-fuzz --target fuzz_safetensors
 *   ./build-fuzz/tests/fuzz_safetensors -max_total_time=60 tests/fuzz/corpus/safetensors
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include "runtime/lomo.h"
#include "runtime/safetensors.h"

static lomo_ctx *ctx;
static lomo_model *model;

static int setup(void) {
    lomo_llama_config c = {.hidden_size = 4, .intermediate_size = 6, .num_hidden_layers = 1,
                           .num_attention_heads = 2, .num_key_value_heads = 1, .vocab_size = 5,
                           .max_position_embeddings = 8, .tie_word_embeddings = 0, .rms_norm_eps = 1e-5,
                           .rope_theta = 10000.0};
    if (lomo_ctx_create(&ctx, NULL) != LOMO_OK) return -1;
    lomo_model_options o = {.dtype = LOMO_BF16};
    return lomo_model_create(&model, ctx, &c, &o) == LOMO_OK ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!model && setup() != 0) return 0;
    st_file f;
    if (st_parse_memory(ctx, "fuzz.safetensors", data, size, &f) != LOMO_OK) return 0;
    unsigned acc = 0;
    st_source *src = calloc((size_t)f.ntensors + 1, sizeof *src);
    for (int i = 0; i < f.ntensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (t->end > t->begin) acc += st_tensor_data(&f, t)[0] + st_tensor_data(&f, t)[t->end - t->begin - 1];
        if (src) src[i] = (st_source){t->name, &f, t};
    }
    if (src) st_load_model(model, src, f.ntensors, "fuzz.safetensors");
    free(src);
    st_close(&f);
    return (int)(acc & 0);
}
