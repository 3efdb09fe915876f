/*
 * attention_cached.cu: attention of new queries against a key/value cache, for
 * incremental decoding (f32, CUDA cores). q [B, n, NH, hd] at positions
 * pos..pos+n-1; kc, vc [B, cap, NKV, hd]; query i sees keys 0..pos+i;
 * out [B, n, NH, hd]. hd <= 256.
 *
 * One block of CACHED_WARPS warps per (query, head, row): warp w walks keys
 * w, w + CACHED_WARPS, ... with its own running max and sum (online softmax);
 * lane l owns dims l + 32 r, so a score is a warp-wide sum. The warps'
 * partial results are merged in shared memory in a fixed order: no atomics,
 * the same result run to run. Decoding is one query per row at a time, a few
 * hundred blocks at most: the GEMV-shaped linear layers dominate it anyway.
 */
#include <math.h>
#include "cuda_ops.h"

#define CACHED_WARPS 4
#define CACHED_MAX_R 8   /* dims per lane: hd <= 256 */

__device__ __forceinline__ float cached_warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

__global__ void attention_cached_kernel(float *out, const float *q, const float *kc, const float *vc, int n, int pos,
                                        int cap, int NH, int NKV, int hd, float scale) {
    int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int ks = NKV * hd, kvh = h / (NH / NKV);
    const float *qv = q + (((size_t)b * n + i) * NH + h) * hd;
    const float *kk = kc + (size_t)b * cap * ks + (size_t)kvh * hd;
    const float *vv = vc + (size_t)b * cap * ks + (size_t)kvh * hd;

    float qr[CACHED_MAX_R], acc[CACHED_MAX_R];
#pragma unroll
    for (int r = 0; r < CACHED_MAX_R; r++) {
        int d = lane + 32 * r;
        qr[r] = d < hd ? qv[d] : 0.0f;
        acc[r] = 0.0f;
    }
    float mx = -INFINITY, sum = 0.0f;
    for (int j = warp; j <= pos + i; j += CACHED_WARPS) {
        const float *kj = kk + (size_t)j * ks, *vj = vv + (size_t)j * ks;
        float s = 0.0f;
#pragma unroll
        for (int r = 0; r < CACHED_MAX_R; r++) {
            int d = lane + 32 * r;
            if (d < hd) s += qr[r] * kj[d];
        }
        s = cached_warp_sum(s) * scale;
        float m2 = fmaxf(mx, s), c = expf(mx - m2), p = expf(s - m2);
        sum = sum * c + p;
#pragma unroll
        for (int r = 0; r < CACHED_MAX_R; r++) {
            int d = lane + 32 * r;
            if (d < hd) acc[r] = acc[r] * c + p * vj[d];
        }
        mx = m2;
    }

    __shared__ float s_max[CACHED_WARPS], s_sum[CACHED_WARPS], s_acc[CACHED_WARPS][32 * CACHED_MAX_R];
    if (lane == 0) {
        s_max[warp] = mx;
        s_sum[warp] = sum;
    }
#pragma unroll
    for (int r = 0; r < CACHED_MAX_R; r++) s_acc[warp][lane + 32 * r] = acc[r];
    __syncthreads();
    float *o = out + (((size_t)b * n + i) * NH + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float m = -INFINITY;
        for (int w = 0; w < CACHED_WARPS; w++) m = fmaxf(m, s_max[w]);
        float tot = 0.0f, a = 0.0f;
        for (int w = 0; w < CACHED_WARPS; w++) {
            if (s_max[w] == -INFINITY) continue;   /* a warp that met no key */
            float c = expf(s_max[w] - m);
            tot += s_sum[w] * c;
            a += s_acc[w][d] * c;
        }
        o[d] = a / tot;
    }
}

void cuda_attention_cached(float *out, const float *q, const float *kc, const float *vc, int B, int n, int pos,
                           int cap, int NH, int NKV, int hd) {
    if (!B || !n || !NH) return;
    if (hd > 32 * CACHED_MAX_R) {
        cuda_ok(cudaErrorInvalidValue, "attention_cached: head size over 256");
        return;
    }
    dim3 grid((unsigned)n, (unsigned)NH, (unsigned)B);
    attention_cached_kernel<<<grid, CACHED_WARPS * 32, 0, cuda_stream()>>>(out, q, kc, vc, n, pos, cap, NH, NKV, hd,
                                                                         1.0f / sqrtf((float)hd));
    CUDA_LAUNCHED("attention_cached");
}
