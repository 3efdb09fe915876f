/*
 * lomo_io.h: models in and out (part of the public API; lomo.h includes it).
 *
 * Hugging Face folders (config.json + model.safetensors, or shards listed in
 * model.safetensors.index.json) and GGUF files (v2, v3). Every error names
 * the file and the tensor or field. Loading converts tensor by tensor into
 * the model's storage dtype, so it never needs twice the model's memory.
 * Saving writes each file to a temporary name, fsyncs and renames it, so a
 * crash never leaves a half-written checkpoint behind.
 */
#ifndef LOMO_IO_H
#define LOMO_IO_H

#include "lomo.h"

#ifdef __cplusplus
extern "C" {
#endif

/* HF config.json of a llama-architecture model (llama, mistral-style, SmolLM). */
lomo_status lomo_config_load_hf(lomo_ctx *ctx, const char *config_json_path, lomo_llama_config *out);
lomo_status lomo_config_save_hf(lomo_ctx *ctx, const lomo_llama_config *cfg, const char *config_json_path);

/* A folder with config.json and safetensors weights: creates the model and loads it. */
lomo_status lomo_model_load_hf(lomo_model **out, lomo_ctx *ctx, const char *dir, const lomo_model_options *opts);
/* Loads weights from one .safetensors file, or a folder (index or single file), into m. */
lomo_status lomo_model_load_safetensors(lomo_model *m, const char *path);
/*
 * Writes config.json and model.safetensors (or shards of at most
 * max_shard_bytes plus model.safetensors.index.json; 0 means one file) in the
 * model's storage dtype, loadable by transformers unchanged.
 */
lomo_status lomo_model_save_hf(lomo_model *m, const char *dir, size_t max_shard_bytes);

/* GGUF: the llama-architecture config from its metadata, or the whole model. */
lomo_status lomo_config_load_gguf(lomo_ctx *ctx, const char *gguf_path, lomo_llama_config *out);
lomo_status lomo_model_load_gguf(lomo_model **out, lomo_ctx *ctx, const char *gguf_path,
                                 const lomo_model_options *opts);

#ifdef __cplusplus
}
#endif
#endif
