/*
 * safetensors.h: the safetensors format, read and written (internal).
 *
 * A file is: u64 little-endian header length N, N bytes of JSON
 *   {"__metadata__": {str: str}?, name: {"dtype": "F32", "shape": [..],
 *    "data_offsets": [begin, end]}, ...}
 * then the data section, where each tensor's bytes lie at [begin, end).
 * The reader maps the file read-only and checks everything before anyone
 * looks at a tensor: header length against a cap and the file size, each
 * entry's fields and types, shape * dtype size (without overflow) against
 * its byte range, every range inside the data section, and no two ranges
 * overlapping. Every error names the file and the tensor and field.
 */
#ifndef LOMO_SAFETENSORS_H
#define LOMO_SAFETENSORS_H

#include <stdint.h>
#include <jansson.h>
#include "internal.h"

/* As HF's reference implementation: a larger header is refused unread. */
#define ST_MAX_HEADER_BYTES 100000000ull
#define ST_MAX_DIMS 8

/* Every dtype the format defines; only F32, F16 and BF16 load into a model. */
typedef enum st_dtype {
    ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3, ST_F8_E8M0, ST_F4, ST_F6_E2M3, ST_F6_E3M2,
    ST_I16, ST_U16, ST_F16, ST_BF16, ST_I32, ST_U32, ST_F32, ST_C64, ST_F64, ST_I64, ST_U64,
    ST_DTYPE_COUNT
} st_dtype;

typedef struct st_tensor {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end;        /* byte range inside the data section */
} st_tensor;

/* A parsed file. Closed state is all zero, so st_close on it is a no-op. */
typedef struct st_file {
    char *name;                 /* used in every error: the path as given */
    const uint8_t *base;        /* whole file (mapped or borrowed) */
    size_t size;
    int mapped;                 /* 1: base is our mmap */
    const uint8_t *data;        /* the data section: base + 8 + header length */
    uint64_t data_len;
    int ntensors;
    st_tensor *tensors;         /* sorted by name */
} st_file;

const char *st_dtype_name(st_dtype d);
/* Size of one element in bits (some float8/4/6 types are below a byte). */
unsigned st_dtype_bits(st_dtype d);

/* Maps path read-only and parses it; on failure *out is left closed. */
lomo_status st_open(lomo_ctx *ctx, const char *path, st_file *out);
/* Parses bytes [len] that the caller keeps alive while *out is used (the fuzzer's entry). */
lomo_status st_parse_memory(lomo_ctx *ctx, const char *name, const uint8_t *bytes, size_t len, st_file *out);
void st_close(st_file *f);

/* NULL if the file has no tensor of that name. */
const st_tensor *st_find(const st_file *f, const char *name);
/* "[a, b]" into buf[cap]. */
void st_format_shape(char *buf, size_t cap, const int64_t *shape, int ndim);
static inline const uint8_t *st_tensor_data(const st_file *f, const st_tensor *t) { return f->data + t->begin; }

/* ---- writing ---- */

typedef struct st_out_tensor {
    const char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
} st_out_tensor;

/* Bytes of data for dtype d and shape[ndim]; -1 when the size overflows 64 bits. */
int st_data_bytes(st_dtype d, const int64_t *shape, int ndim, uint64_t *bytes);

/*
 * The first bytes of a file holding tensors t[n], stored back to back in that
 * order: the u64 length and the JSON header with "__metadata__":
 * {"format": "pt"}, padded with spaces so the data starts 8-byte aligned as
 * HF's writer does. *out is malloc'd; the caller frees it.
 */
lomo_status st_build_header(lomo_ctx *ctx, const char *file, const st_out_tensor *t, int n, uint8_t **out,
                            size_t *out_len);

/*
 * Implemented in hf_model.c: one tensor of a checkpoint, by the name it loads
 * under. st_load_model checks that src[n] holds exactly the model's tensors
 * (names, shapes, dtypes; every mismatch named in one error) and only then
 * converts them into the model's storage, so a failed load changes no
 * weight. `where` names the checkpoint in errors about the whole set.
 */
typedef struct st_source {
    const char *name;
    const st_file *file;
    const st_tensor *t;
} st_source;
lomo_status st_load_model(lomo_model *m, const st_source *src, int n, const char *where);

/*
 * Implemented in hf_config.c: the config.json text transformers' LlamaConfig
 * loads, with torch_dtype for storage dtype `dtype` (a lomo_dtype; -1 leaves
 * it out). malloc'd; NULL when out of memory.
 */
char *hf_config_json(const lomo_llama_config *c, int dtype);

/* "an object", "an integer", ...: a JSON value's kind, for error messages. */
const char *st_json_kind(const json_t *v);

#endif
