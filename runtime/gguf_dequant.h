/*
 * gguf_dequant.h: ggml tensor types (sizes of every known type, so any GGUF
 * file can be validated) and dequantization of the block formats lomo reads
 * into f32.
 *
 * A ggml type stores ne[0] values of a row as ne[0] / block_size blocks of
 * type_size bytes each; rows are never split inside a block.
 */
#ifndef LOMO_GGUF_DEQUANT_H
#define LOMO_GGUF_DEQUANT_H

#include <stddef.h>
#include <stdint.h>

/* ggml's type ids, as stored in a GGUF tensor info (only the ones named here are used by lomo). */
enum {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q2_K = 10,
    GGML_TYPE_Q3_K = 11,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_BF16 = 30,
};

typedef struct ggml_type_desc {
    const char *name;      /* "Q4_K"; NULL for an id ggml does not define */
    uint32_t block_size;   /* values per block */
    uint32_t type_size;    /* bytes per block */
} ggml_type_desc;

/* The layout of a ggml type, or NULL if the id is unknown. */
const ggml_type_desc *ggml_type_get(uint32_t type);
/* "Q4_K"; "unknown" for an id ggml does not define. */
const char *ggml_type_name(uint32_t type);

/* 1 if gguf_dequantize handles this type: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K. */
int gguf_can_dequantize(uint32_t type);

/*
 * out f32 [n] = the n values encoded in src (n a multiple of the type's block
 * size; src holds n / block_size blocks, any alignment). Exactly ggml's
 * dequantize_row_* arithmetic, in f32 and in the same order, so results are
 * bit-identical to ggml's reference.
 */
void gguf_dequantize(float *out, const void *src, uint32_t type, size_t n);

#endif
