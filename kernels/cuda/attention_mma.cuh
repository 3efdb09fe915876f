/*
 * attention_mma.cuh: the tensor-core pieces of the causal flash attention for
 * 16-bit models, shared by its two kernel families: attention_tc.cu (f32
 * inputs rounded while they are staged, one tile at a time) and
 * the pipe family (16-bit copies of the inputs staged with cp.async, the
 * next tile's copy in flight while the current one is used). The families
 * differ only in how tiles reach shared memory; the products, the softmax
 * and the stores below are the same code, so they give the same bits.
 *
 * Every product is mma.sync.m16n8k16 (bf16 or f16 operands, f32 accumulation)
 * fed by ldmatrix from padded shared memory (rows of hd + 8 elements: the 8
 * row addresses of one 8x8 ldmatrix land in distinct 16-byte bank groups).
 * Score, probability and dS tiles never leave registers: an m16n8 accumulator
 * pair is exactly the A fragment of the next m16n8k16 (the FlashAttention-2
 * register reuse), and each thread owns rows groupID and groupID + 8 of its
 * warp's 16, so row statistics need only two shuffles inside a quad. Blocks of
 * T2_WARPS = 4 warps, tiles of 64 rows or keys, 16 per warp.
 */
#ifndef LOMO_ATTENTION_MMA_CUH
#define LOMO_ATTENTION_MMA_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include "cuda_ops.h"

#define T2_WARPS 4
#define T2_THREADS (T2_WARPS * 32)
#define T2_TILE 64   /* rows and keys per staged tile: 16 per warp */
#define T2_FULL 0xffffffffu
#define T2_LOG2E 1.4426950408889634f
#define T2_LN2 0.6931471805599453f

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

/* ---- forward: one key tile, and the stores ---- */

/*
 * One 64-key tile (keys kt .. kt + 63, staged [64][HD + 8] in Ks and Vs) for
 * this warp's 16 query rows wfirst .. wfirst + 15 (a thread's are row0 =
 * wfirst + groupID and row0 + 8): S = Q K^T, scaled into the log2 domain and
 * masked, the online softmax (running max m, partial sums l), O += P V. qa is
 * this warp's Q A-fragment pointer. Only for kt <= wfirst + 15: some key at or
 * below one of the rows. On the diagonal only the 16-key groups that reach
 * the warp's rows are multiplied (the rest stay 0, are masked, add nothing).
 */
template <typename E, int HD>
__device__ __forceinline__ void t2_forward_tile(float (&o)[HD / 8][4], float &m0, float &m1, float &l0, float &l1,
                                                const E *qa, const E *Ks, const E *Vs, int kt, int wfirst, int row0,
                                                int T, float sl2, int obn, int obt, int tq) {
    constexpr int LD = HD + 8, NK = HD / 16, NO = HD / 8;
    int wlast = wfirst + 15, row1 = row0 + 8;
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

/* out [B, T, NH, HD] rows row0 and row0 + 8 of (b, h) (ob: out at (b, 0, h, 2 tq)), normalized, and
 * their natural log-sum-exp into lse_bh [T] */
template <int HD>
__device__ __forceinline__ void t2_forward_store(float *ob, float *lse_bh, const float (&o)[HD / 8][4], float m0,
                                                 float m1, float l0, float l1, int row0, int T, size_t qs, int tq) {
    constexpr int NO = HD / 8;
    int row1 = row0 + 8;
    l0 = t2_quad_sum(l0);
    l1 = t2_quad_sum(l1);
    float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
    if (row0 < T) {
        float *orow = ob + (size_t)row0 * qs;
#pragma unroll
        for (int n = 0; n < NO; n++) t2_st2(orow + 8 * n, o[n][0] * inv0, o[n][1] * inv0);
        if (tq == 0) lse_bh[row0] = (m0 + log2f(l0)) * T2_LN2;
    }
    if (row1 < T) {
        float *orow = ob + (size_t)row1 * qs;
#pragma unroll
        for (int n = 0; n < NO; n++) t2_st2(orow + 8 * n, o[n][2] * inv1, o[n][3] * inv1);
        if (tq == 0) lse_bh[row1] = (m1 + log2f(l1)) * T2_LN2;
    }
}

/* ---- backward: D = rowsum(dout * out), one warp per (b, t, h) row ---- */

/* D [B, NH, T]; with g16 (not NULL), dout rounded to E into it as well ([B, T, NH, HD] like dout) */
template <typename E, int HD>
__global__ void attention_mma_rowdot_kernel(float *D, E *g16, const float *dout, const float *out, int T, int NH,
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
            if (g16)
                *reinterpret_cast<uint2 *>(g16 + w * HD + c) = make_uint2(t2_pack<E>(x.x, x.y), t2_pack<E>(x.z, x.w));
        }
        for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(T2_FULL, part, o);
        size_t bt = w / NH;
        int h = (int)(w % NH), t = (int)(bt % T);
        size_t b = bt / T;
        if (lane == 0) D[(b * NH + h) * T + t] = part;
    }
}

/* ---- backward: one query tile of dk/dv, one key tile of dq, and the stores ---- */

/*
 * dK, dV of this warp's 16 keys (a thread's: key0 = wfirst + groupID and key0 + 8; ka, va its K and V
 * A-fragment pointers) from the 64 queries i0 .. i0 + 63 staged in Qs, Gs (dout), Ls (lse), Ds (D),
 * 32 queries at a time: S^T = K Q^T, dP^T = V dO^T, P^T = exp(scale S^T - lse), dS^T = P^T (dP^T - D),
 * dV += P^T dO, dK += dS^T Q. Ls holds lse * log2(e) (LSE_RAW false) or lse itself (LSE_RAW true:
 * the product is formed here, rounded alone as the staged one is, so both give the same bits).
 */
template <typename E, int HD, bool LSE_RAW>
__device__ __forceinline__ void t2_dkdv_tile(float (&dka)[HD / 8][4], float (&dva)[HD / 8][4], const E *ka,
                                             const E *va, const E *Qs, const E *Gs, const float *Ls, const float *Ds,
                                             int i0, int wfirst, int key0, int T, float sl2, int obn, int obt,
                                             int tq) {
    constexpr int LD = HD + 8, NO = HD / 8;
    int key1 = key0 + 8;
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
                float lg = LSE_RAW ? __fmul_rn(Ls[ic], T2_LOG2E) : Ls[ic];
                float p = exp2f(s[n][e] * sl2 - lg);
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

/* dk, dv [B, T, NKV, HD] rows key0 and key0 + 8 (dkb, dvb: at (b, 0, kv head, 2 tq)); dK scaled */
template <int HD>
__device__ __forceinline__ void t2_dkdv_store(float *dkb, float *dvb, const float (&dka)[HD / 8][4],
                                              const float (&dva)[HD / 8][4], int key0, int T, size_t ks,
                                              float scale) {
    constexpr int NO = HD / 8;
    int key1 = key0 + 8;
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

/*
 * dQ of this warp's 16 query rows (a thread's: row0 = wfirst + groupID and row0 + 8, whose
 * lse * log2(e) are L0, L1 and D values D0, D1; qa, ga: its Q and dO A-fragment pointers) from the
 * keys kt .. kt + 63 staged in Ks, Vs, 32 keys at a time: S = Q K^T, dP = dO V^T,
 * dS = P (dP - D), dQ += dS K.
 */
template <typename E, int HD>
__device__ __forceinline__ void t2_dq_tile(float (&dqa)[HD / 8][4], const E *qa, const E *ga, const E *Ks,
                                           const E *Vs, int kt, int wfirst, int row0, int T, float L0, float L1,
                                           float D0, float D1, float sl2, int obn, int obt, int tq) {
    constexpr int LD = HD + 8, NO = HD / 8;
    int wlast = wfirst + 15, row1 = row0 + 8;
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

/* dq [B, T, NH, HD] rows row0 and row0 + 8 (dqb: at (b, 0, h, 2 tq)), scaled */
template <int HD>
__device__ __forceinline__ void t2_dq_store(float *dqb, const float (&dqa)[HD / 8][4], int row0, int T, size_t qs,
                                            float scale) {
    constexpr int NO = HD / 8;
    int row1 = row0 + 8;
    if (row0 < T) {
#pragma unroll
        for (int n = 0; n < NO; n++) t2_st2(dqb + (size_t)row0 * qs + 8 * n, dqa[n][0] * scale, dqa[n][1] * scale);
    }
    if (row1 < T) {
#pragma unroll
        for (int n = 0; n < NO; n++) t2_st2(dqb + (size_t)row1 * qs + 8 * n, dqa[n][2] * scale, dqa[n][3] * scale);
    }
}

/* ---- host side, for both families' launchers ---- */

/* dynamic shared memory past 48 KiB must be opted into, per kernel */
template <typename K>
static int t2_allow_smem(K kernel, size_t bytes, const char *what) {
    if (bytes <= 48 * 1024) return 1;
    return cuda_ok(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), what);
}

/* blocks of 64 rows for every (batch, head); 0 (error recorded) if the grid is too large */
static inline unsigned t2_grid(int rows, int heads, const char *what) {
    size_t n = (size_t)((rows + T2_TILE - 1) / T2_TILE) * (size_t)heads;
    if (n > 0x7fffffffu) {
        cuda_ok(cudaErrorInvalidConfiguration, what);
        return 0;
    }
    return (unsigned)n;
}

/* 1 if the call is usable; records the error (naming the family) otherwise */
static inline int t2_check(int NH, int NKV, int hd, lomo_dtype dt, const char *family) {
    if (NKV <= 0 || NH <= 0 || NH % NKV != 0) {
        static char msg[96];   /* cuda_ok may keep the pointer */
        snprintf(msg, sizeof msg, "attention %s: NH must be a multiple of NKV", family);
        cuda_ok(cudaErrorInvalidValue, msg);
        return 0;
    }
    if ((hd != 64 && hd != 128) || (dt != LOMO_BF16 && dt != LOMO_F16)) {
        static char msg[96];
        snprintf(msg, sizeof msg, "attention %s: head_dim %d / dtype %d unsupported", family, hd, (int)dt);
        cuda_ok(cudaErrorInvalidValue, msg);
        return 0;
    }
    return 1;
}

/* the device's opt-in shared memory a block (bytes), queried once; 0 if unknown */
static inline size_t t2_smem_optin(void) {
    static int optin = -1;
    if (optin < 0) {
        int dev = 0, v = 0;
        if (cudaGetDevice(&dev) != cudaSuccess) return 0;
        if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) return 0;
        optin = v;
    }
    return (size_t)optin;
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

#endif
