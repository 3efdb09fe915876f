/*
 * attention.cu: causal grouped-query flash attention, f32 on CUDA cores.
 * q [B, T, NH, hd], k and v [B, T, NKV, hd], out [B, T, NH, hd]; query head h
 * reads kv head h / (NH / NKV); scale 1/sqrt(hd). Only the log-sum-exp of each
 * query row, lse [B, NH, T], is saved: the [T, T] scores are never stored,
 * forward (online softmax) and backward (flash-attention-2 recomputation).
 *
 * Three kernels, each with ATT_WARPS warps per block and one warp per row:
 *   forward: a warp owns one query row; 32 keys at a time are staged in shared
 *            memory, each lane scores one key (full dot product), the warp
 *            keeps a running max/sum, and the output is accumulated with lane
 *            owning dims d = lane + 32 r.
 *   dq:      the same walk over keys for one query row; also writes
 *            D_i = <dout_i, out_i> for the dk/dv kernel.
 *   dk/dv:   a warp owns one key row j and walks the query rows i >= j of every
 *            query head of its group, 32 at a time, lane-parallel over rows.
 * Every output element is written by exactly one thread with a fixed order of
 * summation: no atomics, deterministic run to run.
 *
 * The score s_ij = <q_i, k_j> * scale is computed by the same function with the
 * same operand order in all three kernels (and __fmul_rn, so it is never fused
 * into the exponent's subtraction): backward recomputes forward's scores bit for bit.
 *
 * Head sizes: the kernels are templates on HD, a multiple of 32 (R = HD / 32
 * dims per lane). A head size hd that is not a multiple of 32 (1 .. 255) runs
 * the instance for HD = hd rounded up to 32 with PAD = true: hd (runtime) sets
 * the global strides and bounds, columns d in [hd, HD) are zero in shared memory
 * and in the per-lane loads (a zero q/k column adds 0 to a dot product, a zero
 * v/dout column contributes 0) and are never written back; scale is 1/sqrt(hd).
 * With PAD = false, hd is the constant HD and the code is the unpadded kernel.
 */
#include <math.h>
#include <stdio.h>
#include "attention_block.cuh"
#include "cuda_ops.h"

#define ATT_WARPS 8                    /* rows per block */
#define ATT_THREADS (ATT_WARPS * 32)
#define ATT_TILE 32                    /* keys (or queries) staged per step: one per lane */
#define FULL_MASK 0xffffffffu

/* ---- warp helpers ---- */

__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(FULL_MASK, x, o);
    return x;   /* the butterfly leaves the same bits in every lane */
}

__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, o));
    return x;
}

/* <a, b> over HD floats in shared memory, both 16-byte aligned. Call sites pass
 * (query-side, key-side) so forward and backward round identically. */
template <int HD>
__device__ __forceinline__ float dot_smem(const float *a, const float *b) {
    const float4 *a4 = reinterpret_cast<const float4 *>(a);
    const float4 *b4 = reinterpret_cast<const float4 *>(b);
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int i = 0; i < HD / 4; i++) {
        float4 x = a4[i], y = b4[i];
        acc.x = fmaf(x.x, y.x, acc.x);
        acc.y = fmaf(x.y, y.y, acc.y);
        acc.z = fmaf(x.z, y.z, acc.z);
        acc.w = fmaf(x.w, y.w, acc.w);
    }
    return (acc.x + acc.y) + (acc.z + acc.w);
}

/* acc[r] += sum over j < n of c_j * rows[j][lane + 32 r], c_j being lane j's c: the
 * probability- (or dS-) weighted sum of staged rows that forward and dq accumulate */
template <int R>
__device__ __forceinline__ void accumulate_rows(float (&acc)[R], float c, const float *rows, int stride, int n,
                                                int lane) {
#pragma unroll 4
    for (int j = 0; j < n; j++) {
        float cj = __shfl_sync(FULL_MASK, c, j);
#pragma unroll
        for (int r = 0; r < R; r++) acc[r] = fmaf(cj, rows[j * stride + lane + 32 * r], acc[r]);
    }
}

/*
 * Stages rows r0 .. r0+31 of a [T, *] strided matrix (row stride `stride`
 * floats, hd floats per row) into dst [32][HD + 4], zero past T (and, with PAD,
 * in columns hd .. HD-1) so no lane ever reads uninitialized shared memory. The
 * +4 padding keeps the per-lane row reads (float4, lane = row) free of bank
 * conflicts and rows 16-byte aligned.
 */
template <int HD, bool PAD>
__device__ __forceinline__ void stage_rows(float *dst, const float *src, size_t stride, int r0, int T, int hd) {
    constexpr int KP = HD + 4;
    for (int idx = threadIdx.x; idx < ATT_TILE * HD; idx += ATT_THREADS) {
        int row = idx / HD, d = idx % HD;
        int r = r0 + row;
        dst[row * KP + d] = (r < T && (!PAD || d < hd)) ? src[(size_t)r * stride + d] : 0.0f;
    }
}

/* ---- forward ---- */

template <int HD, bool PAD>
__global__ void __launch_bounds__(ATT_THREADS)
attention_forward_kernel(float *out, float *lse, const float *q, const float *k, const float *v, int T, int NH,
                         int NKV, int nqb, float scale, int hd_arg) {
    constexpr int R = HD / 32, KP = HD + 4;
    const int hd = PAD ? hd_arg : HD;   /* the true head size: global strides and bounds */
    extern __shared__ float4 smem4[];
    float *Ks = reinterpret_cast<float *>(smem4);   /* [32][KP] */
    float *Vs = Ks + ATT_TILE * KP;                 /* [32][KP] */
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *qw = Vs + ATT_TILE * KP + warp * HD;     /* this warp's query row */

    int bh, qb;
    query_block(gridDim.x / nqb, nqb, &bh, &qb);
    int b = bh / NH, h = bh % NH, kh = h / (NH / NKV);
    size_t qs = (size_t)NH * hd, ks = (size_t)NKV * hd;
    const float *kb = k + (size_t)b * T * ks + (size_t)kh * hd;
    const float *vb = v + (size_t)b * T * ks + (size_t)kh * hd;

    int t0 = qb * ATT_WARPS, t = t0 + warp;
    bool active = t < T;
    const float *qrow = q + ((size_t)b * T + t) * qs + (size_t)h * hd;
    if (active) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            int d = lane + 32 * r;
            qw[d] = (!PAD || d < hd) ? qrow[d] : 0.0f;   /* padded columns are 0 */
        }
    }

    float m = -INFINITY, l = 0.0f, o[R];
#pragma unroll
    for (int r = 0; r < R; r++) o[r] = 0.0f;

    int last = min(t0 + ATT_WARPS, T) - 1;   /* the block's last row sees keys 0..last */
    for (int kt = 0; kt <= last; kt += ATT_TILE) {
        __syncthreads();   /* previous tile fully read (and qw written on the first pass) */
        stage_rows<HD, PAD>(Ks, kb, ks, kt, T, hd);
        stage_rows<HD, PAD>(Vs, vb, ks, kt, T, hd);
        __syncthreads();
        if (active && kt <= t) {   /* warp-uniform */
            float s = __fmul_rn(dot_smem<HD>(qw, Ks + lane * KP), scale);
            if (kt + lane > t) s = -INFINITY;   /* causal mask; also covers keys >= T */
            float mnew = fmaxf(m, warp_max(s));  /* finite: key kt <= t is in this tile */
            float corr = expf(m - mnew);         /* 0 on the first tile (m = -inf) */
            float p = expf(s - mnew);            /* 0 where masked */
            l = l * corr + warp_sum(p);
            m = mnew;
#pragma unroll
            for (int r = 0; r < R; r++) o[r] *= corr;
            int jn = min(ATT_TILE, t - kt + 1);   /* keys past t have p = 0: skip them */
            accumulate_rows<R>(o, p, Vs, KP, jn, lane);
        }
    }

    if (active) {
        float inv = 1.0f / l;
        float *orow = out + ((size_t)b * T + t) * qs + (size_t)h * hd;
#pragma unroll
        for (int r = 0; r < R; r++) {
            int d = lane + 32 * r;
            if (!PAD || d < hd) orow[d] = o[r] * inv;
        }
        if (lane == 0) lse[(size_t)bh * T + t] = m + logf(l);
    }
}

/* ---- backward: dq (and D) ---- */

template <int HD, bool PAD>
__global__ void __launch_bounds__(ATT_THREADS)
attention_backward_dq_kernel(float *dq, float *Dsave, const float *dout, const float *out, const float *lse,
                             const float *q, const float *k, const float *v, int T, int NH, int NKV, int nqb,
                             float scale, int hd_arg) {
    constexpr int R = HD / 32, KP = HD + 4;
    const int hd = PAD ? hd_arg : HD;
    extern __shared__ float4 smem4[];
    float *Ks = reinterpret_cast<float *>(smem4);   /* [32][KP] */
    float *Vs = Ks + ATT_TILE * KP;                 /* [32][KP] */
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *qw = Vs + ATT_TILE * KP + warp * 2 * HD;   /* this warp's q row */
    float *gw = qw + HD;                              /* and its dout row */

    int bh, qb;
    query_block(gridDim.x / nqb, nqb, &bh, &qb);
    int b = bh / NH, h = bh % NH, kh = h / (NH / NKV);
    size_t qs = (size_t)NH * hd, ks = (size_t)NKV * hd;
    const float *kb = k + (size_t)b * T * ks + (size_t)kh * hd;
    const float *vb = v + (size_t)b * T * ks + (size_t)kh * hd;

    int t0 = qb * ATT_WARPS, t = t0 + warp;
    bool active = t < T;
    size_t row = ((size_t)b * T + t) * qs + (size_t)h * hd;
    float Di = 0.0f, lsei = 0.0f;
    if (active) {
        float part = 0.0f;
#pragma unroll
        for (int r = 0; r < R; r++) {
            int d = lane + 32 * r;
            if (!PAD || d < hd) {
                float g = dout[row + d];
                qw[d] = q[row + d];
                gw[d] = g;
                part = fmaf(g, out[row + d], part);
            } else {
                qw[d] = gw[d] = 0.0f;   /* padded columns */
            }
        }
        Di = warp_sum(part);
        lsei = lse[(size_t)bh * T + t];
        if (lane == 0) Dsave[(size_t)bh * T + t] = Di;
    }

    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;

    int last = min(t0 + ATT_WARPS, T) - 1;
    for (int kt = 0; kt <= last; kt += ATT_TILE) {
        __syncthreads();
        stage_rows<HD, PAD>(Ks, kb, ks, kt, T, hd);
        stage_rows<HD, PAD>(Vs, vb, ks, kt, T, hd);
        __syncthreads();
        if (active && kt <= t) {
            float s = __fmul_rn(dot_smem<HD>(qw, Ks + lane * KP), scale);
            float dp = dot_smem<HD>(gw, Vs + lane * KP);
            float p = kt + lane <= t ? expf(s - lsei) : 0.0f;
            float ds = p * (dp - Di);
            int jn = min(ATT_TILE, t - kt + 1);
            accumulate_rows<R>(acc, ds, Ks, KP, jn, lane);
        }
    }

    if (active) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            int d = lane + 32 * r;
            if (!PAD || d < hd) dq[row + d] = acc[r] * scale;
        }
    }
}

/* ---- backward: dk, dv (needs D from the dq kernel) ---- */

template <int HD, bool PAD>
__global__ void __launch_bounds__(ATT_THREADS)
attention_backward_dkdv_kernel(float *dk, float *dv, const float *D, const float *dout, const float *lse,
                               const float *q, const float *k, const float *v, int T, int NH, int NKV, int BKV,
                               float scale, int hd_arg) {
    constexpr int R = HD / 32, KP = HD + 4;
    const int hd = PAD ? hd_arg : HD;
    extern __shared__ float4 smem4[];
    float *Qs = reinterpret_cast<float *>(smem4);   /* [32][KP] query rows */
    float *Gs = Qs + ATT_TILE * KP;                 /* [32][KP] their dout rows */
    float *Ls = Gs + ATT_TILE * KP;                 /* [32] their lse */
    float *Ds = Ls + ATT_TILE;                      /* [32] their D */
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *kw = Ds + ATT_TILE + warp * 2 * HD;      /* this warp's k row */
    float *vw = kw + HD;                            /* and its v row */

    /* ascending key blocks: small j has the most query rows, so heavy first */
    int bkv = (int)(blockIdx.x % (unsigned)BKV);
    int jb = (int)(blockIdx.x / (unsigned)BKV);
    int b = bkv / NKV, kh = bkv % NKV, group = NH / NKV;
    size_t qs = (size_t)NH * hd, ks = (size_t)NKV * hd;

    int j0 = jb * ATT_WARPS, j = j0 + warp;
    bool active = j < T;
    size_t krow = ((size_t)b * T + j) * ks + (size_t)kh * hd;
    if (active) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            int d = lane + 32 * r;
            bool in = !PAD || d < hd;   /* padded columns are 0 */
            kw[d] = in ? k[krow + d] : 0.0f;
            vw[d] = in ? v[krow + d] : 0.0f;
        }
    }

    float dka[R], dva[R];
#pragma unroll
    for (int r = 0; r < R; r++) dka[r] = dva[r] = 0.0f;

    for (int h = kh * group; h < (kh + 1) * group; h++) {
        const float *qb = q + (size_t)b * T * qs + (size_t)h * hd;
        const float *gb = dout + (size_t)b * T * qs + (size_t)h * hd;
        const float *lb = lse + ((size_t)b * NH + h) * T;
        const float *db = D + ((size_t)b * NH + h) * T;
        for (int it = j0; it < T; it += ATT_TILE) {   /* query rows i >= j0 */
            __syncthreads();
            stage_rows<HD, PAD>(Qs, qb, qs, it, T, hd);
            stage_rows<HD, PAD>(Gs, gb, qs, it, T, hd);
            if (threadIdx.x < ATT_TILE) {
                int i = it + threadIdx.x;
                Ls[threadIdx.x] = i < T ? lb[i] : 0.0f;
                Ds[threadIdx.x] = i < T ? db[i] : 0.0f;
            }
            __syncthreads();
            if (active) {   /* warp-uniform; every tile has some i >= j since it + 31 >= j0 + 31 >= j */
                int i = it + lane;
                float s = __fmul_rn(dot_smem<HD>(Qs + lane * KP, kw), scale);
                float dp = dot_smem<HD>(Gs + lane * KP, vw);
                float p = (i >= j && i < T) ? expf(s - Ls[lane]) : 0.0f;
                float ds = p * (dp - Ds[lane]);
                int in = min(ATT_TILE, T - it);   /* rows past T are zero and have p = 0 */
#pragma unroll 4
                for (int ii = 0; ii < in; ii++) {
                    float pi = __shfl_sync(FULL_MASK, p, ii);
                    float dsi = __shfl_sync(FULL_MASK, ds, ii);
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        dva[r] = fmaf(pi, Gs[ii * KP + lane + 32 * r], dva[r]);
                        dka[r] = fmaf(dsi, Qs[ii * KP + lane + 32 * r], dka[r]);
                    }
                }
            }
        }
    }

    if (active) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            int d = lane + 32 * r;
            if (!PAD || d < hd) {
                dk[krow + d] = dka[r] * scale;
                dv[krow + d] = dva[r];
            }
        }
    }
}

/* ---- launchers ---- */

static size_t fwd_smem(int hd) { return ((size_t)2 * ATT_TILE * (hd + 4) + (size_t)ATT_WARPS * hd) * sizeof(float); }
static size_t dq_smem(int hd) { return ((size_t)2 * ATT_TILE * (hd + 4) + (size_t)ATT_WARPS * 2 * hd) * sizeof(float); }
static size_t dkdv_smem(int hd) {
    return ((size_t)2 * ATT_TILE * (hd + 4) + 2 * ATT_TILE + (size_t)ATT_WARPS * 2 * hd) * sizeof(float);
}

/* dynamic shared memory past 48 KiB must be opted into, per kernel */
template <typename K>
static int allow_smem(K kernel, size_t bytes, const char *what) {
    if (bytes <= 48 * 1024) return 1;
    return cuda_ok(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), what);
}

/* blocks of ATT_WARPS rows for every (batch, head); 0 (error recorded) if the grid is too large */
static unsigned att_grid(int rows, int heads, const char *what) {
    size_t n = (size_t)((rows + ATT_WARPS - 1) / ATT_WARPS) * (size_t)heads;
    if (n > 0x7fffffffu) {
        cuda_ok(cudaErrorInvalidConfiguration, what);
        return 0;
    }
    return (unsigned)n;
}

/* HD: hd rounded up to a multiple of 32; PAD: hd != HD (the smem layout uses HD, strides and scale hd) */
template <int HD, bool PAD>
static void forward_hd(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                       int NKV, int hd) {
    size_t smem = fwd_smem(HD);
    unsigned grid = att_grid(T, B * NH, "attention forward grid");
    if (!grid || !allow_smem(attention_forward_kernel<HD, PAD>, smem, "attention forward smem")) return;
    int nqb = (T + ATT_WARPS - 1) / ATT_WARPS;
    attention_forward_kernel<HD, PAD><<<grid, ATT_THREADS, smem, cuda_stream()>>>(
        out, lse, q, k, v, T, NH, NKV, nqb, 1.0f / sqrtf((float)hd), hd);
    CUDA_LAUNCHED("attention forward");
}

template <int HD, bool PAD>
static void backward_hd(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *out,
                        const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                        int NKV, int hd) {
    float scale = 1.0f / sqrtf((float)hd);
    size_t smem_q = dq_smem(HD), smem_kv = dkdv_smem(HD);
    unsigned grid_q = att_grid(T, B * NH, "attention backward grid");
    unsigned grid_kv = att_grid(T, B * NKV, "attention backward grid");
    if (!grid_q || !grid_kv) return;
    if (!allow_smem(attention_backward_dq_kernel<HD, PAD>, smem_q, "attention backward dq smem")) return;
    if (!allow_smem(attention_backward_dkdv_kernel<HD, PAD>, smem_kv, "attention backward dkdv smem")) return;
    int nqb = (T + ATT_WARPS - 1) / ATT_WARPS;
    /* dq first: it writes D (scratch), which the dk/dv kernel reads */
    attention_backward_dq_kernel<HD, PAD><<<grid_q, ATT_THREADS, smem_q, cuda_stream()>>>(
        dq, scratch, dout, out, lse, q, k, v, T, NH, NKV, nqb, scale, hd);
    if (!CUDA_LAUNCHED("attention backward dq")) return;
    attention_backward_dkdv_kernel<HD, PAD><<<grid_kv, ATT_THREADS, smem_kv, cuda_stream()>>>(
        dk, dv, scratch, dout, lse, q, k, v, T, NH, NKV, B * NKV, scale, hd);
    CUDA_LAUNCHED("attention backward dkdv");
}

/* 1 if the shapes are usable; records the error otherwise */
static int att_check(int NH, int NKV, int hd) {
    if (NKV <= 0 || NH <= 0 || NH % NKV != 0) {
        cuda_ok(cudaErrorInvalidValue, "attention: NH must be a multiple of NKV");
        return 0;
    }
    if (hd < 1 || hd > CUDA_MAX_HEAD_DIM) {
        static char msg[64];   /* cuda_ok may keep the pointer */
        snprintf(msg, sizeof msg, "attention: head_dim %d unsupported", hd);
        cuda_ok(cudaErrorInvalidValue, msg);
        return 0;
    }
    return 1;
}

/* hd in 1 .. 256 (att_check): the instance for HD = hd rounded up to 32, padded unless hd == HD */
#define ATT_CASE(HD, hd, CALL)                                \
    case HD / 32:                                             \
        if ((hd) == HD) CALL(HD, false); else CALL(HD, true); \
        break;
#define ATT_DISPATCH(hd, CALL)                    \
    switch (((hd) + 31) / 32) {                   \
        ATT_CASE(32, hd, CALL)                    \
        ATT_CASE(64, hd, CALL)                    \
        ATT_CASE(96, hd, CALL)                    \
        ATT_CASE(128, hd, CALL)                   \
        ATT_CASE(160, hd, CALL)                   \
        ATT_CASE(192, hd, CALL)                   \
        ATT_CASE(224, hd, CALL)                   \
        ATT_CASE(256, hd, CALL)                   \
        default: break;                           \
    }

extern "C" {

void cuda_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                            int NH, int NKV, int hd) {
    if (B <= 0 || T <= 0) return;
    if (!att_check(NH, NKV, hd)) return;
#define FWD(HD, PAD) forward_hd<HD, PAD>(out, lse, q, k, v, B, T, NH, NKV, hd)
    ATT_DISPATCH(hd, FWD)
#undef FWD
}

void cuda_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *out,
                             const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                             int NKV, int hd) {
    if (B <= 0 || T <= 0) return;
    if (!att_check(NH, NKV, hd)) return;
#define BWD(HD, PAD) backward_hd<HD, PAD>(dq, dk, dv, scratch, dout, out, lse, q, k, v, B, T, NH, NKV, hd)
    ATT_DISPATCH(hd, BWD)
#undef BWD
}

}   /* extern "C" */
