/*
 * attention_pipe_support.h: whether this GPU runs the pipe attention kernels,
 * for test_cuda and bench_cuda. They run where a block's opt-in shared memory
 * holds the largest of them (attention_tc.cu's T2Dims<hd, true>::max_smem:
 * six [64][hd + 8] 16-bit tiles and four rows of 64 floats); elsewhere
 * LOMO_ATTENTION=pipe runs the mma family, and a comparison of the two would
 * compare one with itself.
 */
#ifndef LOMO_ATTENTION_PIPE_SUPPORT_H
#define LOMO_ATTENTION_PIPE_SUPPORT_H

#include <cuda_runtime_api.h>
#include <stddef.h>

static inline int attention_pipe_runs_here(int hd) {
    int dev = 0, optin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
        return 0;
    return (size_t)optin >= 6 * 64 * (size_t)(hd + 8) * 2 + 4 * 64 * 4;
}

#endif
