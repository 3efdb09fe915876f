/*
 * attention_tc.cu: causal grouped-query flash attention on tensor cores, for
 * 16-bit models. Same contract as attention.cu (q [B, T, NH, hd], k and v
 * [B, T, NKV, hd], out [B, T, NH, hd], lse [B, NH, T] of the scaled scores,
 * scratch [B, NH, T] = D in backward), so the two are interchangeable.
 *
 * The f32 operands are rounded to the model's dtype (bf16 or f16) as they are
 * staged into shared memory; every product runs on WMMA 16x16x16 fragments with
 * f32 accumulation, while softmax, lse, D and the online rescaling stay in f32.
 * FlashAttention-2 structure, blocks of TC_WARPS = 4 warps and tiles of 64:
 *   forward: a block owns 64 query rows of one (b, h), a warp 16 of them; it
 *            walks the key tiles up to the diagonal with an online softmax, O
 *            kept in f32 shared memory (its rows are rescaled by each warp).
 *   D:       rowsum(dout * out) into scratch, one warp per row.
 *   dk/dv:   a block owns 64 keys of one (b, kv head), a warp 16 of them; it
 *            walks the query tiles from the diagonal on, for every query head
 *            of the group, recomputing P^T and dS^T; dK, dV stay in fragments.
 *   dq:      a block owns 64 query rows of one (b, h) and walks key tiles
 *            up to the diagonal; dQ stays in fragments.
 * Every output element is written once by one warp: no atomics, deterministic.
 * Score, P and dS tiles are private to the warp that owns their rows, so only
 * the staging of the shared Q/K/V/dO tiles needs block barriers.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <mma.h>
#include <stdio.h>
#include "cuda_ops.h"

using namespace nvcuda;

#define TC_WARPS 4
#define TC_THREADS (TC_WARPS * 32)
#define TC_TILE 64                  /* query rows and keys per tile: 16 per warp */
#define TC_SLD (TC_TILE + 4)        /* f32 [64][64] score tile stride (floats) */
#define TC_PLD (TC_TILE + 8)        /* 16-bit [64][64] P / dS tile stride (elements) */
#define TC_FULL 0xffffffffu

/*
 * Shared-memory strides: +8 elements on 16-bit rows and +4 on f32 rows shift
 * consecutive rows by 16 bytes (fewer bank conflicts) while keeping WMMA's
 * ldm rules (multiple of 8, resp. 4) and 32-byte alignment of every 16-row,
 * 16-column fragment origin. Every array starts at a multiple of 128 bytes.
 */
template <int HD>
struct TcDims {
    static constexpr int LD = HD + 8;    /* 16-bit [64][HD] tiles */
    static constexpr int ND = HD / 16;   /* fragments across a head */
    static constexpr size_t tile16 = (size_t)TC_TILE * LD * 2;
    static constexpr size_t score = (size_t)TC_TILE * TC_SLD * 4;
    static constexpr size_t p16 = (size_t)TC_TILE * TC_PLD * 2;
    static constexpr size_t ofs = (size_t)TC_TILE * (HD + 4) * 4;
    static constexpr size_t rowvec = (size_t)TC_TILE * 4;
    /* forward: Q, K, V, S, P, O */
    static constexpr size_t fwd = 3 * tile16 + score + p16 + ofs;
    /* dk/dv: K, V, Q, dO, S (then dP), P, dS, lse, D */
    static constexpr size_t dkdv = 4 * tile16 + score + 2 * p16 + 2 * rowvec;
    /* dq: Q, dO, K, V, S (then dP), P (then dS), lse, D */
    static constexpr size_t dq = 4 * tile16 + score + p16 + 2 * rowvec;
    static constexpr size_t max_smem = fwd > dkdv ? (fwd > dq ? fwd : dq) : (dkdv > dq ? dkdv : dq);
};

template <typename E>
__device__ __forceinline__ E to16(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 to16<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half to16<__half>(float x) { return __float2half_rn(x); }

__device__ __forceinline__ float from16(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float from16(__half x) { return __half2float(x); }

__device__ __forceinline__ float tc_warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(TC_FULL, x, o);
    return x;   /* the butterfly leaves the same bits in every lane */
}

__device__ __forceinline__ float tc_warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(TC_FULL, x, o));
    return x;
}

/*
 * Rows r0 .. r0+63 of a strided [T, *] f32 matrix (HD floats per row) into a
 * 16-bit tile [64][HD + 8], rounded to E; rows past T are zero so no product
 * ever reads garbage (their scores are masked anyway).
 */
template <typename E, int HD>
__device__ __forceinline__ void stage16(E *dst, const float *src, size_t stride, int r0, int T) {
    constexpr int LD = TcDims<HD>::LD;
    for (int idx = threadIdx.x; idx < TC_TILE * HD; idx += TC_THREADS) {
        int row = idx / HD, d = idx % HD;
        int r = r0 + row;
        dst[row * LD + d] = to16<E>(r < T ? src[(size_t)r * stride + d] : 0.0f);
    }
}

/* 64 entries of a per-row vector ([T] contiguous) from r0, zero past T */
__device__ __forceinline__ void stage_vec(float *dst, const float *src, int r0, int T) {
    for (int idx = threadIdx.x; idx < TC_TILE; idx += TC_THREADS) dst[idx] = r0 + idx < T ? src[r0 + idx] : 0.0f;
}

/* Heavy blocks (long causal rows) first, so the tail of the grid is short. */
__device__ __forceinline__ void tc_query_block(int BH, int nqb, int *bh, int *qb) {
    *bh = (int)(blockIdx.x % (unsigned)BH);
    *qb = nqb - 1 - (int)(blockIdx.x / (unsigned)BH);
}

typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> FragC;
template <typename E>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, E, wmma::row_major>;
template <typename E>
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, E, wmma::row_major>;
template <typename E>
using FragBt = wmma::fragment<wmma::matrix_b, 16, 16, 16, E, wmma::col_major>;   /* B = X^T for X row-major */

/*
 * dst [16][64] f32 (stride TC_SLD) = A[16 rows from a] . X^T, X the 64 rows of
 * a 16-bit [64][HD] tile: scores of the warp's 16 rows against 64 others
 * (Q K^T in forward and dq, K Q^T in dk/dv: the recomputed scores agree with
 * forward's to f32 rounding, which exp(s - lse) does not amplify).
 */
template <typename E, int HD>
__device__ __forceinline__ void warp_scores(float *dst, const E *a, const E *x) {
    constexpr int LD = TcDims<HD>::LD, ND = TcDims<HD>::ND;
#pragma unroll
    for (int n = 0; n < TC_TILE / 16; n++) {
        FragC acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int kk = 0; kk < ND; kk++) {
            FragA<E> fa;
            FragBt<E> fb;
            wmma::load_matrix_sync(fa, a + kk * 16, LD);
            wmma::load_matrix_sync(fb, x + n * 16 * LD + kk * 16, LD);
            wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(dst + n * 16, acc, TC_SLD, wmma::mem_row_major);
    }
}

/* acc[n] += P[16 rows][64] . Y[64][HD], P 16-bit (stride TC_PLD), Y a 16-bit [64][HD] tile */
template <typename E, int HD>
__device__ __forceinline__ void warp_pv(FragC *acc, const E *p, const E *y) {
    constexpr int LD = TcDims<HD>::LD, ND = TcDims<HD>::ND;
#pragma unroll
    for (int kk = 0; kk < TC_TILE / 16; kk++) {
        FragA<E> fa;
        wmma::load_matrix_sync(fa, p + kk * 16, TC_PLD);
#pragma unroll
        for (int n = 0; n < ND; n++) {
            FragB<E> fb;
            wmma::load_matrix_sync(fb, y + kk * 16 * LD + n * 16, LD);
            wmma::mma_sync(acc[n], fa, fb, acc[n]);
        }
    }
}

/*
 * Writes the warp's 16 rows of acc[ND] (times mul) to global rows row0.. of a
 * [T, *] matrix (stride floats per row, offset col0), skipping rows >= T.
 * Fragments go through the warp's own 16 rows of the score tile (stage).
 */
template <int HD>
__device__ __forceinline__ void warp_store_rows(float *dst, size_t stride, int row0, int T, const FragC *acc,
                                                float mul, float *stage) {
    int lane = threadIdx.x % 32;
#pragma unroll
    for (int n = 0; n < TcDims<HD>::ND; n++) {
        __syncwarp();   /* previous fragment (or the score tile) fully read */
        wmma::store_matrix_sync(stage, acc[n], TC_SLD, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) {
            int r = e / 16, c = e % 16;
            if (row0 + r < T) dst[(size_t)(row0 + r) * stride + n * 16 + c] = stage[r * TC_SLD + c] * mul;
        }
    }
}

/* ---- forward ---- */

template <typename E, int HD>
__global__ void __launch_bounds__(TC_THREADS)
attention_tc_forward_kernel(float *out, float *lse, const float *q, const float *k, const float *v, int T, int NH,
                            int NKV, int nqb, float scale) {
    typedef TcDims<HD> Dm;
    constexpr int LD = Dm::LD, ND = Dm::ND, OLD = HD + 4;
    extern __shared__ __align__(128) unsigned char tc_smem[];
    E *Qs = reinterpret_cast<E *>(tc_smem);
    E *Ks = reinterpret_cast<E *>(tc_smem + Dm::tile16);
    E *Vs = reinterpret_cast<E *>(tc_smem + 2 * Dm::tile16);
    float *Ss = reinterpret_cast<float *>(tc_smem + 3 * Dm::tile16);
    E *Ps = reinterpret_cast<E *>(tc_smem + 3 * Dm::tile16 + Dm::score);
    float *Os = reinterpret_cast<float *>(tc_smem + 3 * Dm::tile16 + Dm::score + Dm::p16);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int r0 = warp * 16;   /* this warp's rows within the tile */

    int bh, qb;
    tc_query_block(gridDim.x / nqb, nqb, &bh, &qb);
    int b = bh / NH, h = bh % NH, kh = h / (NH / NKV);
    size_t qs = (size_t)NH * HD, ks = (size_t)NKV * HD;
    const float *kb = k + (size_t)b * T * ks + (size_t)kh * HD;
    const float *vb = v + (size_t)b * T * ks + (size_t)kh * HD;
    int q0 = qb * TC_TILE;

    stage16<E, HD>(Qs, q + (size_t)b * T * qs + (size_t)h * HD, qs, q0, T);
    for (int idx = threadIdx.x; idx < TC_TILE * OLD; idx += TC_THREADS) Os[idx] = 0.0f;

    /* running max and sum of the warp's 16 rows, the same in every lane */
    float m[16], l[16];
#pragma unroll
    for (int r = 0; r < 16; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }

    int last = min(q0 + TC_TILE, T) - 1;   /* the block's last row sees keys 0..last */
    for (int kt = 0; kt <= last; kt += TC_TILE) {
        __syncthreads();   /* previous K/V fully read (and Q, O ready on the first pass) */
        stage16<E, HD>(Ks, kb, ks, kt, T);
        stage16<E, HD>(Vs, vb, ks, kt, T);
        __syncthreads();
        warp_scores<E, HD>(Ss + r0 * TC_SLD, Qs + r0 * LD, Ks);
        __syncwarp();
        /* online softmax, one row at a time, lanes over keys kt + lane and kt + lane + 32 */
#pragma unroll
        for (int r = 0; r < 16; r++) {
            int row = r0 + r, i = q0 + row;
            int j0 = kt + lane, j1 = kt + lane + 32;
            /* rows past T still see key 0, so every row's max is finite after the first tile */
            float s0 = (j0 <= i && j0 < T) ? Ss[row * TC_SLD + lane] * scale : -INFINITY;
            float s1 = (j1 <= i && j1 < T) ? Ss[row * TC_SLD + lane + 32] * scale : -INFINITY;
            float mnew = fmaxf(m[r], tc_warp_max(fmaxf(s0, s1)));
            float corr = expf(m[r] - mnew);   /* 0 on the first tile (m = -inf) */
            float p0 = expf(s0 - mnew), p1 = expf(s1 - mnew);
            l[r] = l[r] * corr + tc_warp_sum(p0 + p1);
            m[r] = mnew;
            Ps[row * TC_PLD + lane] = to16<E>(p0);
            Ps[row * TC_PLD + lane + 32] = to16<E>(p1);
#pragma unroll
            for (int d = lane; d < HD; d += 32) Os[row * OLD + d] *= corr;
        }
        __syncwarp();
        /* O += P V on the warp's rows, the accumulators round-tripping through shared memory */
        FragC acc[ND];
#pragma unroll
        for (int n = 0; n < ND; n++) wmma::load_matrix_sync(acc[n], Os + r0 * OLD + n * 16, OLD, wmma::mem_row_major);
        warp_pv<E, HD>(acc, Ps + r0 * TC_PLD, Vs);
        __syncwarp();   /* every lane's loads of O done before any store (no fragment layout assumed) */
#pragma unroll
        for (int n = 0; n < ND; n++) wmma::store_matrix_sync(Os + r0 * OLD + n * 16, acc[n], OLD, wmma::mem_row_major);
    }
    __syncwarp();

#pragma unroll
    for (int r = 0; r < 16; r++) {
        int row = r0 + r, i = q0 + row;
        if (i < T) {   /* warp-uniform */
            float inv = 1.0f / l[r];
            float *orow = out + ((size_t)b * T + i) * qs + (size_t)h * HD;
#pragma unroll
            for (int d = lane; d < HD; d += 32) orow[d] = Os[row * OLD + d] * inv;
            if (lane == 0) lse[(size_t)bh * T + i] = m[r] + logf(l[r]);
        }
    }
}

/* ---- backward: D = rowsum(dout * out), one warp per (b, t, h) row ---- */

template <int HD>
__global__ void attention_tc_rowdot_kernel(float *D, const float *dout, const float *out, int T, int NH,
                                           size_t rows) {
    int lane = threadIdx.x % 32;
    size_t w = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    size_t nw = (size_t)gridDim.x * blockDim.x / 32;
    for (; w < rows; w += nw) {   /* warp-uniform */
        const float *g = dout + w * HD, *o = out + w * HD;
        float part = 0.0f;
#pragma unroll
        for (int d = lane; d < HD; d += 32) part = fmaf(g[d], o[d], part);
        part = tc_warp_sum(part);
        size_t bt = w / NH;
        int h = (int)(w % NH), t = (int)(bt % T);
        size_t b = bt / T;
        if (lane == 0) D[(b * NH + h) * T + t] = part;
    }
}

/* ---- backward: dk, dv ---- */

template <typename E, int HD>
__global__ void __launch_bounds__(TC_THREADS)
attention_tc_dkdv_kernel(float *dk, float *dv, const float *D, const float *dout, const float *lse, const float *q,
                         const float *k, const float *v, int T, int NH, int NKV, int BKV, float scale) {
    typedef TcDims<HD> Dm;
    constexpr int LD = Dm::LD, ND = Dm::ND;
    extern __shared__ __align__(128) unsigned char tc_smem[];
    E *Ks = reinterpret_cast<E *>(tc_smem);
    E *Vs = reinterpret_cast<E *>(tc_smem + Dm::tile16);
    E *Qs = reinterpret_cast<E *>(tc_smem + 2 * Dm::tile16);
    E *Gs = reinterpret_cast<E *>(tc_smem + 3 * Dm::tile16);   /* dout */
    float *Ss = reinterpret_cast<float *>(tc_smem + 4 * Dm::tile16);
    E *Pt = reinterpret_cast<E *>(tc_smem + 4 * Dm::tile16 + Dm::score);
    E *dSt = reinterpret_cast<E *>(tc_smem + 4 * Dm::tile16 + Dm::score + Dm::p16);
    float *Ls = reinterpret_cast<float *>(tc_smem + 4 * Dm::tile16 + Dm::score + 2 * Dm::p16);
    float *Ds = Ls + TC_TILE;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int r0 = warp * 16;   /* this warp's keys within the tile */

    /* ascending key blocks: small j has the most query rows, so heavy first */
    int bkv = (int)(blockIdx.x % (unsigned)BKV);
    int jb = (int)(blockIdx.x / (unsigned)BKV);
    int b = bkv / NKV, kh = bkv % NKV, group = NH / NKV;
    size_t qs = (size_t)NH * HD, ks = (size_t)NKV * HD;
    int j0 = jb * TC_TILE;
    stage16<E, HD>(Ks, k + (size_t)b * T * ks + (size_t)kh * HD, ks, j0, T);
    stage16<E, HD>(Vs, v + (size_t)b * T * ks + (size_t)kh * HD, ks, j0, T);

    FragC dka[ND], dva[ND];
#pragma unroll
    for (int n = 0; n < ND; n++) {
        wmma::fill_fragment(dka[n], 0.0f);
        wmma::fill_fragment(dva[n], 0.0f);
    }

    for (int h = kh * group; h < (kh + 1) * group; h++) {
        const float *qb = q + (size_t)b * T * qs + (size_t)h * HD;
        const float *gb = dout + (size_t)b * T * qs + (size_t)h * HD;
        const float *lb = lse + ((size_t)b * NH + h) * T;
        const float *db = D + ((size_t)b * NH + h) * T;
        for (int i0 = j0; i0 < T; i0 += TC_TILE) {   /* query tiles from the diagonal on */
            __syncthreads();   /* previous Q/dO fully read (and K, V ready on the first pass) */
            stage16<E, HD>(Qs, qb, qs, i0, T);
            stage16<E, HD>(Gs, gb, qs, i0, T);
            stage_vec(Ls, lb, i0, T);
            stage_vec(Ds, db, i0, T);
            __syncthreads();
            /* P^T [keys][queries] = exp(scale K Q^T - lse), lanes over queries i0 + lane (+ 32) */
            warp_scores<E, HD>(Ss + r0 * TC_SLD, Ks + r0 * LD, Qs);
            __syncwarp();
            float lse0 = Ls[lane], lse1 = Ls[lane + 32], D0 = Ds[lane], D1 = Ds[lane + 32];
            int i_0 = i0 + lane, i_1 = i0 + lane + 32;
#pragma unroll 4
            for (int r = 0; r < 16; r++) {
                int row = r0 + r, j = j0 + row;
                float p0 = (i_0 >= j && i_0 < T) ? expf(Ss[row * TC_SLD + lane] * scale - lse0) : 0.0f;
                float p1 = (i_1 >= j && i_1 < T) ? expf(Ss[row * TC_SLD + lane + 32] * scale - lse1) : 0.0f;
                Pt[row * TC_PLD + lane] = to16<E>(p0);
                Pt[row * TC_PLD + lane + 32] = to16<E>(p1);
            }
            __syncwarp();   /* scores read: the tile now takes dP^T = V dO^T */
            warp_scores<E, HD>(Ss + r0 * TC_SLD, Vs + r0 * LD, Gs);
            __syncwarp();
            /* dS^T = P^T (dP^T - D), from the rounded P that dV also uses */
#pragma unroll 4
            for (int r = 0; r < 16; r++) {
                int row = r0 + r;
                float p0 = from16(Pt[row * TC_PLD + lane]), p1 = from16(Pt[row * TC_PLD + lane + 32]);
                dSt[row * TC_PLD + lane] = to16<E>(p0 * (Ss[row * TC_SLD + lane] - D0));
                dSt[row * TC_PLD + lane + 32] = to16<E>(p1 * (Ss[row * TC_SLD + lane + 32] - D1));
            }
            __syncwarp();
            warp_pv<E, HD>(dva, Pt + r0 * TC_PLD, Gs);    /* dV += P^T dO */
            warp_pv<E, HD>(dka, dSt + r0 * TC_PLD, Qs);   /* dK += dS^T Q */
        }
    }

    size_t off = (size_t)b * T * ks + (size_t)kh * HD;
    warp_store_rows<HD>(dv + off, ks, j0 + r0, T, dva, 1.0f, Ss + r0 * TC_SLD);
    warp_store_rows<HD>(dk + off, ks, j0 + r0, T, dka, scale, Ss + r0 * TC_SLD);
}

/* ---- backward: dq ---- */

template <typename E, int HD>
__global__ void __launch_bounds__(TC_THREADS)
attention_tc_dq_kernel(float *dq, const float *D, const float *dout, const float *lse, const float *q, const float *k,
                       const float *v, int T, int NH, int NKV, int nqb, float scale) {
    typedef TcDims<HD> Dm;
    constexpr int LD = Dm::LD, ND = Dm::ND;
    extern __shared__ __align__(128) unsigned char tc_smem[];
    E *Qs = reinterpret_cast<E *>(tc_smem);
    E *Gs = reinterpret_cast<E *>(tc_smem + Dm::tile16);   /* dout */
    E *Ks = reinterpret_cast<E *>(tc_smem + 2 * Dm::tile16);
    E *Vs = reinterpret_cast<E *>(tc_smem + 3 * Dm::tile16);
    float *Ss = reinterpret_cast<float *>(tc_smem + 4 * Dm::tile16);
    E *dSs = reinterpret_cast<E *>(tc_smem + 4 * Dm::tile16 + Dm::score);
    float *Ls = reinterpret_cast<float *>(tc_smem + 4 * Dm::tile16 + Dm::score + Dm::p16);
    float *Ds = Ls + TC_TILE;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int r0 = warp * 16;

    int bh, qb;
    tc_query_block(gridDim.x / nqb, nqb, &bh, &qb);
    int b = bh / NH, h = bh % NH, kh = h / (NH / NKV);
    size_t qs = (size_t)NH * HD, ks = (size_t)NKV * HD;
    const float *kb = k + (size_t)b * T * ks + (size_t)kh * HD;
    const float *vb = v + (size_t)b * T * ks + (size_t)kh * HD;
    int q0 = qb * TC_TILE;
    size_t off = (size_t)b * T * qs + (size_t)h * HD;
    stage16<E, HD>(Qs, q + off, qs, q0, T);
    stage16<E, HD>(Gs, dout + off, qs, q0, T);
    stage_vec(Ls, lse + (size_t)bh * T, q0, T);
    stage_vec(Ds, D + (size_t)bh * T, q0, T);

    FragC dqa[ND];
#pragma unroll
    for (int n = 0; n < ND; n++) wmma::fill_fragment(dqa[n], 0.0f);

    int last = min(q0 + TC_TILE, T) - 1;
    for (int kt = 0; kt <= last; kt += TC_TILE) {
        __syncthreads();   /* previous K/V fully read (and Q, dO, lse, D ready on the first pass) */
        stage16<E, HD>(Ks, kb, ks, kt, T);
        stage16<E, HD>(Vs, vb, ks, kt, T);
        __syncthreads();
        /* P = exp(scale Q K^T - lse), kept (rounded) in the dS tile until dP is known */
        warp_scores<E, HD>(Ss + r0 * TC_SLD, Qs + r0 * LD, Ks);
        __syncwarp();
        int j_0 = kt + lane, j_1 = kt + lane + 32;
#pragma unroll 4
        for (int r = 0; r < 16; r++) {
            int row = r0 + r, i = q0 + row;
            float li = Ls[row];
            float p0 = (j_0 <= i && j_0 < T && i < T) ? expf(Ss[row * TC_SLD + lane] * scale - li) : 0.0f;
            float p1 = (j_1 <= i && j_1 < T && i < T) ? expf(Ss[row * TC_SLD + lane + 32] * scale - li) : 0.0f;
            dSs[row * TC_PLD + lane] = to16<E>(p0);
            dSs[row * TC_PLD + lane + 32] = to16<E>(p1);
        }
        __syncwarp();
        warp_scores<E, HD>(Ss + r0 * TC_SLD, Gs + r0 * LD, Vs);   /* dP = dO V^T */
        __syncwarp();
#pragma unroll 4
        for (int r = 0; r < 16; r++) {
            int row = r0 + r;
            float Di = Ds[row];
            float p0 = from16(dSs[row * TC_PLD + lane]), p1 = from16(dSs[row * TC_PLD + lane + 32]);
            dSs[row * TC_PLD + lane] = to16<E>(p0 * (Ss[row * TC_SLD + lane] - Di));
            dSs[row * TC_PLD + lane + 32] = to16<E>(p1 * (Ss[row * TC_SLD + lane + 32] - Di));
        }
        __syncwarp();
        warp_pv<E, HD>(dqa, dSs + r0 * TC_PLD, Ks);   /* dQ += dS K */
    }

    warp_store_rows<HD>(dq + off, qs, q0 + r0, T, dqa, scale, Ss + r0 * TC_SLD);
}

/* ---- launchers ---- */

/* dynamic shared memory past 48 KiB must be opted into, per kernel */
template <typename K>
static int tc_allow_smem(K kernel, size_t bytes, const char *what) {
    if (bytes <= 48 * 1024) return 1;
    return cuda_ok(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), what);
}

/* blocks of 64 rows for every (batch, head); 0 (error recorded) if the grid is too large */
static unsigned tc_grid(int rows, int heads, const char *what) {
    size_t n = (size_t)((rows + TC_TILE - 1) / TC_TILE) * (size_t)heads;
    if (n > 0x7fffffffu) {
        cuda_ok(cudaErrorInvalidConfiguration, what);
        return 0;
    }
    return (unsigned)n;
}

template <typename E, int HD>
static void tc_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                       int NKV) {
    size_t smem = TcDims<HD>::fwd;
    unsigned grid = tc_grid(T, B * NH, "attention tc forward grid");
    if (!grid || !tc_allow_smem(attention_tc_forward_kernel<E, HD>, smem, "attention tc forward smem")) return;
    int nqb = (T + TC_TILE - 1) / TC_TILE;
    attention_tc_forward_kernel<E, HD><<<grid, TC_THREADS, smem, cuda_stream()>>>(out, lse, q, k, v, T, NH, NKV, nqb,
                                                                                  1.0f / sqrtf((float)HD));
    CUDA_LAUNCHED("attention tc forward");
}

template <typename E, int HD>
static void tc_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *out,
                        const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                        int NKV) {
    float scale = 1.0f / sqrtf((float)HD);
    size_t smem_kv = TcDims<HD>::dkdv, smem_q = TcDims<HD>::dq;
    unsigned grid_q = tc_grid(T, B * NH, "attention tc backward grid");
    unsigned grid_kv = tc_grid(T, B * NKV, "attention tc backward grid");
    if (!grid_q || !grid_kv) return;
    if (!tc_allow_smem(attention_tc_dkdv_kernel<E, HD>, smem_kv, "attention tc backward dkdv smem")) return;
    if (!tc_allow_smem(attention_tc_dq_kernel<E, HD>, smem_q, "attention tc backward dq smem")) return;
    size_t rows = (size_t)B * T * NH;
    attention_tc_rowdot_kernel<HD><<<cuda_blocks(rows * 32, 256), 256, 0, cuda_stream()>>>(scratch, dout, out, T, NH,
                                                                                           rows);
    if (!CUDA_LAUNCHED("attention tc backward D")) return;
    attention_tc_dkdv_kernel<E, HD><<<grid_kv, TC_THREADS, smem_kv, cuda_stream()>>>(
        dk, dv, scratch, dout, lse, q, k, v, T, NH, NKV, B * NKV, scale);
    if (!CUDA_LAUNCHED("attention tc backward dkdv")) return;
    int nqb = (T + TC_TILE - 1) / TC_TILE;
    attention_tc_dq_kernel<E, HD><<<grid_q, TC_THREADS, smem_q, cuda_stream()>>>(dq, scratch, dout, lse, q, k, v, T,
                                                                                 NH, NKV, nqb, scale);
    CUDA_LAUNCHED("attention tc backward dq");
}

/* 1 if the call is usable; records the error otherwise */
static int tc_check(int NH, int NKV, int hd, lomo_dtype dt) {
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

#define TC_DISPATCH(hd, dt, CALL)                                   \
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

/* hd 64 and 128, where the device's shared memory holds the largest kernel's
 * tiles (hd 128 wants ~120 KB: sm_80/90 yes, sm_86/89 no; those fall back to f32) */
int cuda_attention_tc_supported(int hd) {
    size_t need;
    if (hd == 64) need = TcDims<64>::max_smem;
    else if (hd == 128) need = TcDims<128>::max_smem;
    else return 0;
    int dev = 0, optin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return 0;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) return 0;
    return (size_t)optin >= need;
}

void cuda_attention_tc_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                               int NH, int NKV, int hd, lomo_dtype dt) {
    if (B <= 0 || T <= 0) return;
    if (!tc_check(NH, NKV, hd, dt)) return;
#define FWD(E, HD) tc_forward<E, HD>(out, lse, q, k, v, B, T, NH, NKV)
    TC_DISPATCH(hd, dt, FWD);
#undef FWD
}

void cuda_attention_tc_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                const float *out, const float *lse, const float *q, const float *k, const float *v,
                                int B, int T, int NH, int NKV, int hd, lomo_dtype dt) {
    if (B <= 0 || T <= 0) return;
    if (!tc_check(NH, NKV, hd, dt)) return;
#define BWD(E, HD) tc_backward<E, HD>(dq, dk, dv, scratch, dout, out, lse, q, k, v, B, T, NH, NKV)
    TC_DISPATCH(hd, dt, BWD);
#undef BWD
}

}   /* extern "C" */
