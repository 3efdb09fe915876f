/*
 * cuda_shape.h: what the CUDA backend's memory plan depends on, in plain C, so
 * that a machine without the GPU (or a build without nvcc) plans for one
 * (`lomo plan --device cuda`, lomo_plan_memory_for). The backend's table and
 * the planner both take these; nothing here touches a device.
 */
#ifndef LOMO_CUDA_SHAPE_H
#define LOMO_CUDA_SHAPE_H

#include <stddef.h>

/* attention.cu's kernels are instantiated for head sizes up to this */
#define CUDA_MAX_HEAD_DIM 256

/* the flash attention keeps a log-sum-exp per row and head [B, NH, T] for backward */
static inline size_t cuda_attention_saved_floats(int B, int T, int NH) { return (size_t)B * NH * T; }
/* and its backward a rowsum(dout * out) of the same shape */
static inline size_t cuda_attention_scratch_floats(int B, int T, int NH) { return (size_t)B * NH * T; }

#endif
