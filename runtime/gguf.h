/*
 * gguf.h: a validating GGUF reader (versions 2 and 3), internal to lomo.
 *
 * Layout (little endian): "GGUF", u32 version, u64 tensor count, u64 kv
 * count, the key/values, the tensor infos, padding to general.alignment
 * (default 32), then the tensor data. A string is a u64 byte length and the
 * bytes (no NUL); an array is a u32 element type, a u64 count and the
 * elements (arrays may nest). A tensor info is a name, a u32 n_dims, u64
 * dims fastest-first (ne[0] = columns), a u32 ggml type and a u64 offset from
 * the start of the data section.
 *
 * gguf_open checks everything against the file size before it allocates or
 * reads: every length, count, offset and tensor size, overlaps, alignment.
 * The file is mapped read-only; values are decoded on demand from the
 * mapping. Every error names the file and the key or tensor.
 */
#ifndef LOMO_GGUF_H
#define LOMO_GGUF_H

#include <stddef.h>
#include <stdint.h>
#include "internal.h"

typedef enum gguf_vtype {
    GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3, GGUF_UINT32 = 4, GGUF_INT32 = 5,
    GGUF_FLOAT32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_UINT64 = 10, GGUF_INT64 = 11,
    GGUF_FLOAT64 = 12, GGUF_VTYPE_COUNT
} gguf_vtype;

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct gguf_kv {
    char *key;              /* NUL-terminated copy */
    gguf_vtype type;
    gguf_vtype elem_type;   /* arrays: the element type */
    uint64_t count;         /* arrays: the element count */
    size_t value;           /* file offset of the value (arrays: of the first element) */
} gguf_kv;

typedef struct gguf_tensor {
    char *name;             /* NUL-terminated copy */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];  /* fastest first; unused dims are 1 */
    uint32_t type;          /* ggml type id */
    uint64_t offset;        /* from the data section start */
    size_t nbytes;
    size_t nelem;
} gguf_tensor;

typedef struct gguf_file {
    lomo_ctx *ctx;
    char *name;             /* the path (or the name given to gguf_open_memory), for errors */
    const uint8_t *data;
    size_t size;
    void *map;              /* mmap'd region, or NULL for memory */
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;
    gguf_tensor *tensors;
    size_t alignment;
    size_t data_start;      /* file offset of the data section */
} gguf_file;

/* Maps and parses a file. On failure *out is NULL and ctx's error says why. */
lomo_status gguf_open(gguf_file **out, lomo_ctx *ctx, const char *path);
/* Parses bytes the caller keeps alive until gguf_close; name is used in errors. */
lomo_status gguf_open_memory(gguf_file **out, lomo_ctx *ctx, const void *data, size_t size, const char *name);
void gguf_close(gguf_file *f);

const char *gguf_vtype_name(gguf_vtype t);

/* ---- metadata: lookup and typed getters ----
 * A getter fails (naming the file and key) when the key is missing or its
 * value has another type; integer getters accept any integer type whose
 * value fits, float getters accept FLOAT32 and FLOAT64. */
const gguf_kv *gguf_find(const gguf_file *f, const char *key);   /* NULL if absent */
lomo_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
lomo_status gguf_get_i32(const gguf_file *f, const char *key, int32_t *out);
lomo_status gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out);
lomo_status gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
lomo_status gguf_get_f32(const gguf_file *f, const char *key, float *out);
lomo_status gguf_get_f64(const gguf_file *f, const char *key, double *out);
lomo_status gguf_get_bool(const gguf_file *f, const char *key, int *out);
/* A string value, copied NUL-terminated into *out (malloc'd; caller frees).
 * Fails if the string contains a NUL byte. */
lomo_status gguf_get_str(const gguf_file *f, const char *key, char **out);
/*
 * Arrays, copied into one malloc'd block the caller frees (NULL for n == 0):
 * strings as n pointers to NUL-terminated copies stored after the pointers;
 * floats from FLOAT32/FLOAT64 elements; int32 from any integer elements
 * that fit; float and int getters also reject nested arrays.
 */
lomo_status gguf_get_str_array(const gguf_file *f, const char *key, char ***out, uint64_t *n);
lomo_status gguf_get_f32_array(const gguf_file *f, const char *key, float **out, uint64_t *n);
lomo_status gguf_get_i32_array(const gguf_file *f, const char *key, int32_t **out, uint64_t *n);

/* Scalar or array element decoding at a file offset (validated by gguf_open). */
uint64_t gguf_read_u64(const gguf_file *f, size_t off);
/* The value at off of scalar type t, as integer (ints, bool) or double (floats). */
int gguf_scalar_as_i64(const gguf_file *f, size_t off, gguf_vtype t, int64_t *out);  /* 0 ok; -1 u64 > INT64_MAX */
double gguf_scalar_as_f64(const gguf_file *f, size_t off, gguf_vtype t);
/* Bytes a value of type t (with nested contents) takes at off; validated by gguf_open. */
size_t gguf_value_size(const gguf_file *f, size_t off, gguf_vtype t);

/* ---- tensors ---- */
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);   /* NULL if absent */
static inline const gguf_tensor *gguf_tensor_at(const gguf_file *f, uint64_t i) { return &f->tensors[i]; }
static inline const void *gguf_tensor_data(const gguf_file *f, const gguf_tensor *t) {
    return f->data + f->data_start + t->offset;
}
/* "[576, 1536]" (GGUF order, fastest first) into buf. */
const char *gguf_dims_str(const gguf_tensor *t, char *buf, size_t cap);

/* ---- llama mapping (gguf_model.c) ---- */
/* The llama-architecture config from an open file's metadata (and tensor table). */
lomo_status gguf_llama_config(const gguf_file *f, lomo_llama_config *out);
/* Llama 3.1's RoPE scaling from llama.cpp's rope_freqs.weight, the divisor of each of the
 * hd / 2 frequencies (gguf_rope.c); all ones is no scaling. */
lomo_status gguf_rope_freqs_scaling(const gguf_file *f, const gguf_tensor *t, int hd, double theta,
                                    lomo_rope_scaling *out);
/*
 * The GGUF tensor holding lomo parameter p of a model with config cfg:
 * "blk.3.ffn_up.weight" for "model.layers.3.mlp.up_proj.weight". *rope_heads
 * is the head count whose rows llama.cpp permuted (q: heads, k: kv heads),
 * 0 for tensors it did not touch.
 */
void gguf_llama_tensor_name(const lomo_llama_config *cfg, int p, char *buf, size_t cap, int *rope_heads);

#endif
