/*
 * attention_tc.cu: causal grouped-query flash attention on tensor cores with
 * register-resident score tiles (FlashAttention-2 style), for 16-bit models.
 * The contract is attention.cu's (the f32 version, which f32 models and other
 * head sizes use), so the two are interchangeable: q [B, T, NH, hd], k and v
 * [B, T, NKV, hd], out [B, T, NH, hd], lse [B, NH, T] the natural log-sum-exp of
 * each row's scaled scores, scratch [B, NH, T] = D in backward; dq, dk, dv
 * overwritten; scale 1/sqrt(hd); query head h reads kv head h / (NH / NKV).
 * A first WMMA version, which staged scores through shared memory, was 4x slower
 * on an H200 (tests/gpu/results/2026-11-28-H200/bench_wmma.md) and is gone.
 *
 * Every product is mma.sync.m16n8k16 (bf16 or f16 operands, f32 accumulation)
 * fed by ldmatrix from padded shared memory (rows of hd + 8 elements: the 8
 * row addresses of one 8x8 ldmatrix land in distinct 16-byte bank groups).
 * The f32 inputs are rounded to the model's dtype while they are staged
 * (float4 loads, 8-byte shared stores). Score, probability and dS tiles never
 * leave registers: an m16n8 accumulator pair is exactly the A fragment of the
 * next m16n8k16 (the FlashAttention-2 register reuse), and each thread owns
 * rows groupID and groupID + 8 of its warp's 16, so row statistics need only
 * two shuffles inside a quad. Blocks of T2_WARPS = 4 warps, tiles of 64:
 *   forward: a block owns 64 query rows of one (b, h), a warp 16 of them; it
 *            walks the key tiles up to the diagonal with an online softmax in
 *            the exp2 domain, O accumulated in registers.
 *   D:       rowsum(dout * out) into scratch, one warp per row.
 *   dk/dv:   a block owns 64 keys of one (b, kv head), a warp 16 of them; it
 *            walks the query tiles from the diagonal on, for every query head
 *            of the group, 32 queries at a time, recomputing S^T and dP^T;
 *            dK, dV accumulate in registers.
 *   dq:      a block owns 64 query rows of one (b, h) and walks the key tiles
 *            up to the diagonal, 32 keys at a time; dQ accumulates in registers.
 * Tiles entirely above the diagonal are skipped (per warp), only tiles that
 * straddle the diagonal or T are masked. Every output element is written once
 * by one thread: no atomics, deterministic.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include "attention_block.cuh"
#include "cuda_ops.h"

#define T2_WARPS 4
#define T2_THREADS (T2_WARPS * 32)
#define T2_TILE 64   /* rows and keys per staged tile: 16 per warp */
#define T2_FULL 0xffffffffu
#define T2_LOG2E 1.4426950408889634f
#define T2_LN2 0.6931471805599453f

/* shared-memory layout: 16-bit [64][HD + 8] tiles, every one 16-byte aligned */
template <int HD>
struct T2Dims {
    static constexpr int LD = HD + 8;
    static constexpr size_t tile = (size_t)T2_TILE * LD * 2;
    static constexpr size_t fwd = 3 * tile;                          /* Q, K, V */
    static constexpr size_t dkdv = 4 * tile + 2 * T2_TILE * 4;       /* K, V, Q, dO, lse, D */
    static constexpr size_t dq = 4 * tile;                           /* Q, dO, K, V */
    static constexpr size_t max_smem = fwd > dkdv ? (fwd > dq ? fwd : dq) : (dkdv > dq ? dkdv : dq);
};

/* ---- PTX wrappers ---- */
__device__ __forceinline__ uint32_t t2_smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* four 8x8 16-bit matrices; lanes 8i .. 8i+7 give the row addresses of matrix i */
__device__ __forceinline__ void t2_ldsm_x4(uint32_t (&r)[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(t2_smem_addr(p)));
}

/* the same, each matrix transposed */
__device__ __forceinline__ void t2_ldsm_x4_t(uint32_t (&r)[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(t2_smem_addr(p)));
}

/* c[16x8] += a[16x16] . b[16x8], f32 accumulation */
template <typename E>
__device__ __forceinline__ void t2_mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void t2_mma<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                      uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void t2_mma<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* two floats rounded to E, lo in the low half (the lower-index element) */
template <typename E>
__device__ __forceinline__ uint32_t t2_pack(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t t2_pack<__nv_bfloat16>(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
}
template <>
__device__ __forceinline__ uint32_t t2_pack<__half>(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
}

/* c[2 i] += A B0 and c[2 i + 1] += A B1: the two 8-column B fragments one ldmatrix.x4 loaded (bb) */
template <typename E, int N>
__device__ __forceinline__ void t2_mma2(float (&c)[N][4], int i, const uint32_t (&a)[4], const uint32_t (&bb)[4]) {
    t2_mma<E>(c[2 * i], a, bb[0], bb[1]);
    t2_mma<E>(c[2 * i + 1], a, bb[2], bb[3]);
}

/*
 * Columns [16 kk, 16 kk + 16) of a 16-row accumulator tile c as an A fragment: the C fragments of
 * two 8-column products are, rounded to E and packed in pairs, the A fragment of the next product
 * (FlashAttention-2 keeps P in registers this way).
 */
template <typename E, int N>
__device__ __forceinline__ void t2_acc_a(uint32_t (&a)[4], const float (&c)[N][4], int kk) {
    a[0] = t2_pack<E>(c[2 * kk][0], c[2 * kk][1]);
    a[1] = t2_pack<E>(c[2 * kk][2], c[2 * kk][3]);
    a[2] = t2_pack<E>(c[2 * kk + 1][0], c[2 * kk + 1][1]);
    a[3] = t2_pack<E>(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}

__device__ __forceinline__ float4 t2_ld4(const float *p) { return __ldg(reinterpret_cast<const float4 *>(p)); }

__device__ __forceinline__ void t2_st2(float *p, float a, float b) {
    *reinterpret_cast<float2 *>(p) = make_float2(a, b);
}

__device__ __forceinline__ void t2_sts8(void *p, uint32_t a, uint32_t b) {
    *reinterpret_cast<uint2 *>(p) = make_uint2(a, b);
}
/* ---- end PTX wrappers ---- */

/*
 * Rows r0 .. r0+63 of a strided [T, *] f32 matrix (row i at src + i * stride)
 * into a 16-bit [64][HD + 8] tile, rounded to E; rows past T are zero. Loads go
 * out in batches of 8 float4 per thread before their conversions and stores.
 */
template <typename E, int HD>
__device__ __forceinline__ void t2_stage(E *dst, const float *src, size_t stride, int r0, int T) {
    constexpr int LD = HD + 8, C4 = HD / 4, N = T2_TILE * C4 / T2_THREADS, BATCH = 8;
    constexpr int RSTEP = T2_THREADS / C4;   /* rows between a thread's consecutive float4 */
    static_assert(N % BATCH == 0 && T2_THREADS % C4 == 0, "staging batches");
    int row = (int)threadIdx.x / C4, c = ((int)threadIdx.x % C4) * 4;
    /* one running pointer (not N hoisted 64-bit addresses: those cost registers) */
    const float *p = src + (size_t)(r0 + row) * stride + c;
    size_t step = (size_t)RSTEP * stride;
    E *d = dst + row * LD + c;
    int left = T - r0 - row;   /* rows of this thread still below T: u * RSTEP < left */
#pragma unroll
    for (int b0 = 0; b0 < N; b0 += BATCH) {
        float4 x[BATCH];
#pragma unroll
        for (int u = 0; u < BATCH; u++) {
            x[u] = (b0 + u) * RSTEP < left ? t2_ld4(p) : make_float4(0.f, 0.f, 0.f, 0.f);
            p += step;
        }
#pragma unroll
        for (int u = 0; u < BATCH; u++)
            t2_sts8(d + (b0 + u) * RSTEP * LD, t2_pack<E>(x[u].x, x[u].y), t2_pack<E>(x[u].z, x[u].w));
    }
}

/*
 * ldmatrix lane offsets (elements) into a [rows][LD] tile:
 *   A (16 rows x 16 cols at row 0, col 0): matrices (rows 0-7, cols 0-7),
 *     (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (rows 8-15, cols 8-15) = a0..a3.
 *   B from X[n][k] (non-transposed, B = X^T, X rows are the n index): matrices
 *     (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) =
 *     b0, b1 of n-tile 0 and b0, b1 of n-tile 1.
 *   B from Y[k][n] (.trans, Y rows are the k index): matrices (k 0-7, n 0-7),
 *     (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15) = the same four.
 */
template <int LD>
__device__ __forceinline__ int t2_off_a(int lane) { return (lane % 16) * LD + (lane / 16) * 8; }
template <int LD>
__device__ __forceinline__ int t2_off_bn(int lane) { return (lane % 8 + (lane / 16) * 8) * LD + ((lane / 8) % 2) * 8; }
template <int LD>
__device__ __forceinline__ int t2_off_bt(int lane) { return (lane % 8 + ((lane / 8) % 2) * 8) * LD + (lane / 16) * 8; }

/*
 * The backward kernels' pair of products over hd for 16 rows x 32 columns:
 * s = A1 B1^T and t = A2 B2^T, where a1, a2 are this warp's A-fragment
 * pointers (16 rows) and b1, b2 the first of 32 rows staged in shared memory
 * (B fragments at obn). dk/dv takes S^T = K Q^T with dP^T = V dO^T; dq takes
 * S = Q K^T with dP = dO V^T.
 */
template <typename E, int HD>
__device__ __forceinline__ void t2_two_products(float (&s)[4][4], float (&t)[4][4], const E *a1, const E *a2,
                                                const E *b1, const E *b2, int obn) {
    constexpr int LD = HD + 8, NK = HD / 16;
#pragma unroll
    for (int n = 0; n < 4; n++) {
        s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
        t[n][0] = t[n][1] = t[n][2] = t[n][3] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < NK; kk++) {
        uint32_t a[4], a2f[4];
        t2_ldsm_x4(a, a1 + kk * 16);
        t2_ldsm_x4(a2f, a2 + kk * 16);
#pragma unroll
        for (int np = 0; np < 2; np++) {
            uint32_t bb[4];
            t2_ldsm_x4(bb, b1 + np * 16 * LD + obn + kk * 16);
            t2_mma2<E>(s, np, a, bb);
            t2_ldsm_x4(bb, b2 + np * 16 * LD + obn + kk * 16);
            t2_mma2<E>(t, np, a2f, bb);
        }
    }
}

__device__ __forceinline__ float t2_quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(T2_FULL, x, 1));
    return fmaxf(x, __shfl_xor_sync(T2_FULL, x, 2));
}

__device__ __forceinline__ float t2_quad_sum(float x) {
    x += __shfl_xor_sync(T2_FULL, x, 1);
    return x + __shfl_xor_sync(T2_FULL, x, 2);
}

/* ---- forward ---- */

template <typename E, int HD>
__global__ void __launch_bounds__(T2_THREADS)
attention_tc_forward_kernel(float *out, float *lse, const float *q, const float *k, const float *v, int T, int NH,
                             int NKV, int nqb, float sl2) {
    constexpr int LD = HD + 8, NK = HD / 16, NO = HD / 8;
    extern __shared__ __align__(128) unsigned char t2_smem[];
    E *Qs = reinterpret_cast<E *>(t2_smem);
    E *Ks = Qs + T2_TILE * LD;
    E *Vs = Ks + T2_TILE * LD;
    int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, g = lane / 4, tq = lane % 4;

    int bh, qb;
    query_block((int)gridDim.x / nqb, nqb, &bh, &qb);
    int b = bh / NH, h = bh % NH, kh = h / (NH / NKV);
    size_t qs = (size_t)NH * HD, ks = (size_t)NKV * HD;
    int q0 = qb * T2_TILE;
    const float *kb = k + (size_t)b * T * ks + (size_t)kh * HD;
    const float *vb = v + (size_t)b * T * ks + (size_t)kh * HD;
    t2_stage<E, HD>(Qs, q + (size_t)b * T * qs + (size_t)h * HD, qs, q0, T);

    float o[NO][4];
#pragma unroll
    for (int n = 0; n < NO; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;   /* running max (log2 units), partial sums */
    int wfirst = q0 + warp * 16, wlast = wfirst + 15;
    int row0 = wfirst + g, row1 = row0 + 8;
    const E *qa = Qs + warp * 16 * LD + t2_off_a<LD>(lane);
    int obn = t2_off_bn<LD>(lane), obt = t2_off_bt<LD>(lane);
    int last = min(q0 + T2_TILE, T) - 1;

    for (int kt = 0; kt <= last; kt += T2_TILE) {
        __syncthreads();   /* previous K/V fully read (and Q staged on the first pass) */
        t2_stage<E, HD>(Ks, kb, ks, kt, T);
        t2_stage<E, HD>(Vs, vb, ks, kt, T);
        __syncthreads();
        if (kt > wlast) continue;   /* warp-uniform: every key above this warp's rows */

        /* S = Q K^T, 16 rows x 64 keys; on the diagonal only the 16-key groups
         * that reach this warp's rows (the rest stay 0, are masked, and add nothing to O) */
        int ng = min(4, (wlast - kt) / 16 + 1);   /* warp-uniform */
        float s[8][4];
#pragma unroll
        for (int n = 0; n < 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < NK; kk++) {
            uint32_t a[4];
            t2_ldsm_x4(a, qa + kk * 16);
#pragma unroll
            for (int np = 0; np < 4; np++) {
                if (np >= ng) break;
                uint32_t bb[4];
                t2_ldsm_x4(bb, Ks + np * 16 * LD + obn + kk * 16);
                t2_mma2<E>(s, np, a, bb);
            }
        }

        /* scale into the log2 domain, mask, online softmax */
        bool need = kt + T2_TILE - 1 > wfirst || kt + T2_TILE > T;   /* warp-uniform */
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int n = 0; n < 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int j = kt + 8 * n + 2 * tq + (e & 1), row = e < 2 ? row0 : row1;
                float x = s[n][e] * sl2;
                if (need && (j > row || j >= T)) x = -INFINITY;
                s[n][e] = x;
            }
            mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
            mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
        }
        mx0 = t2_quad_max(mx0);
        mx1 = t2_quad_max(mx1);
        float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        float base0 = mn0 == -INFINITY ? 0.0f : mn0, base1 = mn1 == -INFINITY ? 0.0f : mn1;
        float al0 = exp2f(m0 - base0), al1 = exp2f(m1 - base1);
        m0 = mn0;
        m1 = mn1;
        float ls0 = 0.0f, ls1 = 0.0f;
#pragma unroll
        for (int n = 0; n < 8; n++) {
            s[n][0] = exp2f(s[n][0] - base0);
            s[n][1] = exp2f(s[n][1] - base0);
            s[n][2] = exp2f(s[n][2] - base1);
            s[n][3] = exp2f(s[n][3] - base1);
            ls0 += s[n][0] + s[n][1];
            ls1 += s[n][2] + s[n][3];
        }
        l0 = l0 * al0 + ls0;
        l1 = l1 * al1 + ls1;
#pragma unroll
        for (int n = 0; n < NO; n++) {
            o[n][0] *= al0;
            o[n][1] *= al0;
            o[n][2] *= al1;
            o[n][3] *= al1;
        }

        /* O += P V: P's accumulator pairs are the A fragments, V through ldmatrix.trans */
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            if (kk >= ng) break;
            uint32_t a[4];
            t2_acc_a<E>(a, s, kk);
#pragma unroll
            for (int dp = 0; dp < NO / 2; dp++) {
                uint32_t bb[4];
                t2_ldsm_x4_t(bb, Vs + kk * 16 * LD + obt + dp * 16);
                t2_mma2<E>(o, dp, a, bb);
            }
        }
    }

    l0 = t2_quad_sum(l0);
    l1 = t2_quad_sum(l1);
    float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
    float *ob = out + (size_t)b * T * qs + (size_t)h * HD + 2 * tq;
    if (row0 < T) {
        float *orow = ob + (size_t)row0 * qs;
#pragma unroll
        for (int n = 0; n < NO; n++) t2_st2(orow + 8 * n, o[n][0] * inv0, o[n][1] * inv0);
        if (tq == 0) lse[(size_t)bh * T + row0] = (m0 + log2f(l0)) * T2_LN2;
    }
    if (row1 < T) {
        float *orow = ob + (size_t)row1 * qs;
#pragma unroll
        for (int n = 0; n < NO; n++) t2_st2(orow + 8 * n, o[n][2] * inv1, o[n][3] * inv1);
        if (tq == 0) lse[(size_t)bh * T + row1] = (m1 + log2f(l1)) * T2_LN2;
    }
}

/* ---- backward: D = rowsum(dout * out), one warp per (b, t, h) row ---- */

template <int HD>
__global__ void attention_tc_rowdot_kernel(float *D, const float *dout, const float *out, int T, int NH,
                                            size_t rows) {
    int lane = (int)threadIdx.x % 32;
    size_t w = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    size_t nw = (size_t)gridDim.x * blockDim.x / 32;
    for (; w < rows; w += nw) {   /* warp-uniform */
        const float *gr = dout + w * HD, *orow = out + w * HD;
        float part = 0.0f;
#pragma unroll
        for (int c = lane * 4; c < HD; c += 128) {
            float4 x = t2_ld4(gr + c), y = t2_ld4(orow + c);
            part += x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
        }
        for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(T2_FULL, part, o);
        size_t bt = w / NH;
        int h = (int)(w % NH), t = (int)(bt % T);
        size_t b = bt / T;
        if (lane == 0) D[(b * NH + h) * T + t] = part;
    }
}

/* ---- backward: dk, dv ---- */

template <typename E, int HD>
__global__ void __launch_bounds__(T2_THREADS)
attention_tc_dkdv_kernel(float *dk, float *dv, const float *D, const float *dout, const float *lse, const float *q,
                          const float *k, const float *v, int T, int NH, int NKV, int BKV, float sl2, float scale) {
    constexpr int LD = HD + 8, NO = HD / 8;
    extern __shared__ __align__(128) unsigned char t2_smem[];
    E *Ks = reinterpret_cast<E *>(t2_smem);
    E *Vs = Ks + T2_TILE * LD;
    E *Qs = Vs + T2_TILE * LD;
    E *Gs = Qs + T2_TILE * LD;   /* dout */
    float *Ls = reinterpret_cast<float *>(Gs + T2_TILE * LD);   /* lse * log2(e) */
    float *Ds = Ls + T2_TILE;
    int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, g = lane / 4, tq = lane % 4;

    /* ascending key blocks: small j has the most query rows, so heavy first */
    int bkv = (int)(blockIdx.x % (unsigned)BKV), jb = (int)(blockIdx.x / (unsigned)BKV);
    int b = bkv / NKV, kh = bkv % NKV, group = NH / NKV;
    size_t qs = (size_t)NH * HD, ks = (size_t)NKV * HD;
    int j0 = jb * T2_TILE;
    size_t koff = (size_t)b * T * ks + (size_t)kh * HD;
    t2_stage<E, HD>(Ks, k + koff, ks, j0, T);
    t2_stage<E, HD>(Vs, v + koff, ks, j0, T);

    float dka[NO][4], dva[NO][4];
#pragma unroll
    for (int n = 0; n < NO; n++) {
        dka[n][0] = dka[n][1] = dka[n][2] = dka[n][3] = 0.0f;
        dva[n][0] = dva[n][1] = dva[n][2] = dva[n][3] = 0.0f;
    }
    int wfirst = j0 + warp * 16;
    int key0 = wfirst + g, key1 = key0 + 8;
    const E *ka = Ks + warp * 16 * LD + t2_off_a<LD>(lane);
    const E *va = Vs + warp * 16 * LD + t2_off_a<LD>(lane);
    int obn = t2_off_bn<LD>(lane), obt = t2_off_bt<LD>(lane);

    for (int h = kh * group; h < (kh + 1) * group; h++) {
        const float *qb = q + (size_t)b * T * qs + (size_t)h * HD;
        const float *gb = dout + (size_t)b * T * qs + (size_t)h * HD;
        const float *lb = lse + ((size_t)b * NH + h) * T;
        const float *db = D + ((size_t)b * NH + h) * T;
        for (int i0 = j0; i0 < T; i0 += T2_TILE) {   /* query tiles from the diagonal on */
            __syncthreads();   /* previous Q/dO fully read (and K, V staged on the first pass) */
            t2_stage<E, HD>(Qs, qb, qs, i0, T);
            t2_stage<E, HD>(Gs, gb, qs, i0, T);
            if (threadIdx.x < T2_TILE) {
                int i = i0 + (int)threadIdx.x;
                Ls[threadIdx.x] = i < T ? lb[i] * T2_LOG2E : 0.0f;
                Ds[threadIdx.x] = i < T ? db[i] : 0.0f;
            }
            __syncthreads();
#pragma unroll 1
            for (int qc = 0; qc < 2; qc++) {
                int c0 = i0 + 32 * qc;   /* first query of the chunk */
                if (c0 >= T || c0 + 31 < wfirst) continue;   /* warp-uniform: past T or all above the keys */
                const E *qt = Qs + 32 * qc * LD, *gt = Gs + 32 * qc * LD;

                /* S^T = K Q^T and dP^T = V dO^T, 16 keys x 32 queries */
                float s[4][4], dp[4][4];
                t2_two_products<E, HD>(s, dp, ka, va, qt, gt, obn);

                /* P^T = exp(scale S^T - lse), dS^T = P^T (dP^T - D); masked where query < key or >= T */
                bool need = c0 < wfirst + 15 || c0 + 32 > T;   /* warp-uniform */
#pragma unroll
                for (int n = 0; n < 4; n++) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int ic = 32 * qc + 8 * n + 2 * tq + (e & 1);   /* query within the tile */
                        int i = i0 + ic, j = e < 2 ? key0 : key1;
                        float p = exp2f(s[n][e] * sl2 - Ls[ic]);
                        if (need && (i < j || i >= T)) p = 0.0f;
                        s[n][e] = p;
                        dp[n][e] = p * (dp[n][e] - Ds[ic]);
                    }
                }

                /* dV += P^T dO, dK += dS^T Q: register A fragments, dO and Q through ldmatrix.trans */
#pragma unroll
                for (int kk = 0; kk < 2; kk++) {
                    uint32_t ap[4], ad[4];
                    t2_acc_a<E>(ap, s, kk);
                    t2_acc_a<E>(ad, dp, kk);
#pragma unroll
                    for (int dd = 0; dd < NO / 2; dd++) {
                        uint32_t bb[4];
                        t2_ldsm_x4_t(bb, gt + kk * 16 * LD + obt + dd * 16);
                        t2_mma2<E>(dva, dd, ap, bb);
                        t2_ldsm_x4_t(bb, qt + kk * 16 * LD + obt + dd * 16);
                        t2_mma2<E>(dka, dd, ad, bb);
                    }
                }
            }
        }
    }

    float *dkb = dk + koff + 2 * tq, *dvb = dv + koff + 2 * tq;
    if (key0 < T) {
#pragma unroll
        for (int n = 0; n < NO; n++) {
            t2_st2(dkb + (size_t)key0 * ks + 8 * n, dka[n][0] * scale, dka[n][1] * scale);
            t2_st2(dvb + (size_t)key0 * ks + 8 * n, dva[n][0], dva[n][1]);
        }
    }
    if (key1 < T) {
#pragma unroll
        for (int n = 0; n < NO; n++) {
            t2_st2(dkb + (size_t)key1 * ks + 8 * n, dka[n][2] * scale, dka[n][3] * scale);
            t2_st2(dvb + (size_t)key1 * ks + 8 * n, dva[n][2], dva[n][3]);
        }
    }
}

/* ---- backward: dq ---- */

template <typename E, int HD>
__global__ void __launch_bounds__(T2_THREADS)
attention_tc_dq_kernel(float *dq, const float *D, const float *dout, const float *lse, const float *q, const float *k,
                        const float *v, int T, int NH, int NKV, int nqb, float sl2, float scale) {
    constexpr int LD = HD + 8, NO = HD / 8;
    extern __shared__ __align__(128) unsigned char t2_smem[];
    E *Qs = reinterpret_cast<E *>(t2_smem);
    E *Gs = Qs + T2_TILE * LD;   /* dout */
    E *Ks = Gs + T2_TILE * LD;
    E *Vs = Ks + T2_TILE * LD;
    int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, g = lane / 4, tq = lane % 4;

    int bh, qb;
    query_block((int)gridDim.x / nqb, nqb, &bh, &qb);
    int b = bh / NH, h = bh % NH, kh = h / (NH / NKV);
    size_t qs = (size_t)NH * HD, ks = (size_t)NKV * HD;
    const float *kb = k + (size_t)b * T * ks + (size_t)kh * HD;
    const float *vb = v + (size_t)b * T * ks + (size_t)kh * HD;
    int q0 = qb * T2_TILE;
    size_t off = (size_t)b * T * qs + (size_t)h * HD;
    t2_stage<E, HD>(Qs, q + off, qs, q0, T);
    t2_stage<E, HD>(Gs, dout + off, qs, q0, T);

    int wfirst = q0 + warp * 16, wlast = wfirst + 15;
    int row0 = wfirst + g, row1 = row0 + 8;
    float L0 = row0 < T ? lse[(size_t)bh * T + row0] * T2_LOG2E : 0.0f;
    float L1 = row1 < T ? lse[(size_t)bh * T + row1] * T2_LOG2E : 0.0f;
    float D0 = row0 < T ? D[(size_t)bh * T + row0] : 0.0f;
    float D1 = row1 < T ? D[(size_t)bh * T + row1] : 0.0f;

    float dqa[NO][4];
#pragma unroll
    for (int n = 0; n < NO; n++) dqa[n][0] = dqa[n][1] = dqa[n][2] = dqa[n][3] = 0.0f;
    const E *qa = Qs + warp * 16 * LD + t2_off_a<LD>(lane);
    const E *ga = Gs + warp * 16 * LD + t2_off_a<LD>(lane);
    int obn = t2_off_bn<LD>(lane), obt = t2_off_bt<LD>(lane);

    int last = min(q0 + T2_TILE, T) - 1;
    for (int kt = 0; kt <= last; kt += T2_TILE) {
        __syncthreads();   /* previous K/V fully read (and Q, dO staged on the first pass) */
        t2_stage<E, HD>(Ks, kb, ks, kt, T);
        t2_stage<E, HD>(Vs, vb, ks, kt, T);
        __syncthreads();
#pragma unroll 1
        for (int kc = 0; kc < 2; kc++) {
            int c0 = kt + 32 * kc;   /* first key of the chunk */
            if (c0 > wlast || c0 >= T) continue;   /* warp-uniform */
            const E *kt_s = Ks + 32 * kc * LD, *vt_s = Vs + 32 * kc * LD;

            /* S = Q K^T and dP = dO V^T, 16 rows x 32 keys */
            float s[4][4], dp[4][4];
            t2_two_products<E, HD>(s, dp, qa, ga, kt_s, vt_s, obn);

            /* P = exp(scale S - lse), dS = P (dP - D); masked where key > row or key >= T */
            bool need = c0 + 31 > wfirst || c0 + 32 > T;   /* warp-uniform */
#pragma unroll
            for (int n = 0; n < 4; n++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int j = c0 + 8 * n + 2 * tq + (e & 1), i = e < 2 ? row0 : row1;
                    float p = exp2f(s[n][e] * sl2 - (e < 2 ? L0 : L1));
                    if (need && (j > i || j >= T)) p = 0.0f;
                    dp[n][e] = p * (dp[n][e] - (e < 2 ? D0 : D1));
                }
            }

            /* dQ += dS K, K through ldmatrix.trans */
#pragma unroll
            for (int kk = 0; kk < 2; kk++) {
                uint32_t ad[4];
                t2_acc_a<E>(ad, dp, kk);
#pragma unroll
                for (int dd = 0; dd < NO / 2; dd++) {
                    uint32_t bb[4];
                    t2_ldsm_x4_t(bb, kt_s + kk * 16 * LD + obt + dd * 16);
                    t2_mma2<E>(dqa, dd, ad, bb);
                }
            }
        }
    }

    float *dqb = dq + off + 2 * tq;
    if (row0 < T) {
#pragma unroll
        for (int n = 0; n < NO; n++) t2_st2(dqb + (size_t)row0 * qs + 8 * n, dqa[n][0] * scale, dqa[n][1] * scale);
    }
    if (row1 < T) {
#pragma unroll
        for (int n = 0; n < NO; n++) t2_st2(dqb + (size_t)row1 * qs + 8 * n, dqa[n][2] * scale, dqa[n][3] * scale);
    }
}

/* ---- launchers ---- */

/* dynamic shared memory past 48 KiB must be opted into, per kernel */
template <typename K>
static int t2_allow_smem(K kernel, size_t bytes, const char *what) {
    if (bytes <= 48 * 1024) return 1;
    return cuda_ok(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), what);
}

/* blocks of 64 rows for every (batch, head); 0 (error recorded) if the grid is too large */
static unsigned t2_grid(int rows, int heads, const char *what) {
    size_t n = (size_t)((rows + T2_TILE - 1) / T2_TILE) * (size_t)heads;
    if (n > 0x7fffffffu) {
        cuda_ok(cudaErrorInvalidConfiguration, what);
        return 0;
    }
    return (unsigned)n;
}

template <typename E, int HD>
static void t2_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                       int NKV) {
    size_t smem = T2Dims<HD>::fwd;
    unsigned grid = t2_grid(T, B * NH, "attention tc forward grid");
    if (!grid || !t2_allow_smem(attention_tc_forward_kernel<E, HD>, smem, "attention tc forward smem")) return;
    int nqb = (T + T2_TILE - 1) / T2_TILE;
    attention_tc_forward_kernel<E, HD><<<grid, T2_THREADS, smem, cuda_stream()>>>(
        out, lse, q, k, v, T, NH, NKV, nqb, T2_LOG2E / sqrtf((float)HD));
    CUDA_LAUNCHED("attention tc forward");
}

template <typename E, int HD>
static void t2_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *out,
                        const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                        int NKV) {
    float scale = 1.0f / sqrtf((float)HD), sl2 = T2_LOG2E / sqrtf((float)HD);
    size_t smem_kv = T2Dims<HD>::dkdv, smem_q = T2Dims<HD>::dq;
    unsigned grid_q = t2_grid(T, B * NH, "attention tc backward grid");
    unsigned grid_kv = t2_grid(T, B * NKV, "attention tc backward grid");
    if (!grid_q || !grid_kv) return;
    if (!t2_allow_smem(attention_tc_dkdv_kernel<E, HD>, smem_kv, "attention tc backward dkdv smem")) return;
    if (!t2_allow_smem(attention_tc_dq_kernel<E, HD>, smem_q, "attention tc backward dq smem")) return;
    size_t rows = (size_t)B * T * NH;
    attention_tc_rowdot_kernel<HD><<<cuda_blocks(rows * 32, 256), 256, 0, cuda_stream()>>>(scratch, dout, out, T,
                                                                                            NH, rows);
    if (!CUDA_LAUNCHED("attention tc backward D")) return;
    attention_tc_dkdv_kernel<E, HD><<<grid_kv, T2_THREADS, smem_kv, cuda_stream()>>>(
        dk, dv, scratch, dout, lse, q, k, v, T, NH, NKV, B * NKV, sl2, scale);
    if (!CUDA_LAUNCHED("attention tc backward dkdv")) return;
    int nqb = (T + T2_TILE - 1) / T2_TILE;
    attention_tc_dq_kernel<E, HD><<<grid_q, T2_THREADS, smem_q, cuda_stream()>>>(dq, scratch, dout, lse, q, k, v, T,
                                                                                  NH, NKV, nqb, sl2, scale);
    CUDA_LAUNCHED("attention tc backward dq");
}

/* 1 if the call is usable; records the error otherwise */
static int t2_check(int NH, int NKV, int hd, lomo_dtype dt) {
    if (NKV <= 0 || NH <= 0 || NH % NKV != 0) {
        cuda_ok(cudaErrorInvalidValue, "attention tc: NH must be a multiple of NKV");
        return 0;
    }
    if ((hd != 64 && hd != 128) || (dt != LOMO_BF16 && dt != LOMO_F16)) {
        static char msg[80];   /* cuda_ok may keep the pointer */
        snprintf(msg, sizeof msg, "attention tc: head_dim %d / dtype %d unsupported", hd, (int)dt);
        cuda_ok(cudaErrorInvalidValue, msg);
        return 0;
    }
    return 1;
}

#define T2_DISPATCH(hd, dt, CALL)                                   \
    do {                                                            \
        if ((dt) == LOMO_BF16) {                                    \
            if ((hd) == 64) CALL(__nv_bfloat16, 64);                \
            else CALL(__nv_bfloat16, 128);                          \
        } else {                                                    \
            if ((hd) == 64) CALL(__half, 64);                       \
            else CALL(__half, 128);                                 \
        }                                                           \
    } while (0)

extern "C" {

/* hd 64 and 128, where the device's opt-in shared memory holds the largest
 * kernel (hd 128: ~69 KB for dk/dv, so every sm_80+ part; hd 64: ~37 KB) */
int cuda_attention_tc_supported(int hd) {
    static int optin = -1;   /* queried once */
    size_t need;
    if (hd == 64) need = T2Dims<64>::max_smem;
    else if (hd == 128) need = T2Dims<128>::max_smem;
    else return 0;
    if (optin < 0) {
        int dev = 0, v = 0;
        if (cudaGetDevice(&dev) != cudaSuccess) return 0;
        if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) return 0;
        optin = v;
    }
    return (size_t)optin >= need;
}

void cuda_attention_tc_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                                int NH, int NKV, int hd, lomo_dtype dt) {
    if (B <= 0 || T <= 0) return;
    if (!t2_check(NH, NKV, hd, dt)) return;
#define FWD(E, HD) t2_forward<E, HD>(out, lse, q, k, v, B, T, NH, NKV)
    T2_DISPATCH(hd, dt, FWD);
#undef FWD
}

void cuda_attention_tc_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                 const float *out, const float *lse, const float *q, const float *k, const float *v,
                                 int B, int T, int NH, int NKV, int hd, lomo_dtype dt) {
    if (B <= 0 || T <= 0) return;
    if (!t2_check(NH, NKV, hd, dt)) return;
#define BWD(E, HD) t2_backward<E, HD>(dq, dk, dv, scratch, dout, out, lse, q, k, v, B, T, NH, NKV)
    T2_DISPATCH(hd, dt, BWD);
#undef BWD
}

}   /* extern "C" */
