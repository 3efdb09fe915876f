/*
 * attention_pipe.cu: the tensor-core flash attention for 16-bit models with
 * its tiles staged asynchronously (LOMO_ATTENTION=pipe). Same contract, same
 * products and the same bits as attention_tc.cu (both take them from
 * attention_mma.cuh); what differs is how a tile reaches shared memory.
 *
 * attention_tc.cu rounds the f32 inputs while it stages a tile, between two
 * barriers: every warp of the block waits for the tile's loads before it can
 * multiply, and the loads of the next tile wait for the last product. Its
 * 7B profile on an H200 (tests/gpu/results/2026-11-28-H200-b) has the
 * forward at 108 and the backward at 73 TFLOP/s against 617 for the GEMMs:
 * the tiles' load latency, not the tensor cores, sets the pace.
 *
 * Here the inputs are first rounded once into 16-bit copies (a scratch slot:
 * q, k, v for the forward; q, dout, k, v for the backward, where the D pass
 * rounds dout as it reads it), and the kernels copy tiles of those with
 * cp.async into two buffers: the copy of tile n + 1 is in flight while tile n
 * is multiplied.
 *   forward: Q once; K/V tiles double-buffered.
 *   dk/dv:   K, V once; the (query head, query tile) sequence of Q, dO, lse
 *            and D double-buffered.
 *   dq:      Q, dO once; K/V tiles double-buffered.
 * Shared memory (hd 128): 87 KB forward, 103 KB dk/dv and dq, so two blocks an
 * SM on sm_80 and sm_90; parts with less opt-in shared memory (sm_86, sm_89:
 * 99 KB) use attention_tc.cu.
 *
 * Written in a session without a GPU: test_cuda checks it against the CPU
 * and, bit for bit, against attention_tc.cu; bench_cuda times both.
 */
#include "attention_block.cuh"
#include "attention_mma.cuh"

/* shared-memory layout: 16-bit [64][HD + 8] tiles, every one 16-byte aligned */
template <int HD>
struct T3Dims {
    static constexpr int LD = HD + 8;
    static constexpr int tile_elems = T2_TILE * LD;
    static constexpr size_t tile = (size_t)tile_elems * 2;
    static constexpr size_t fwd = 5 * tile;                          /* Q, 2 x (K, V) */
    static constexpr size_t dkdv = 6 * tile + 4 * T2_TILE * 4;       /* K, V, 2 x (Q, dO), 2 x (lse, D) */
    static constexpr size_t dq = 6 * tile;                           /* Q, dO, 2 x (K, V) */
    static constexpr size_t max_smem = dkdv > dq ? (dkdv > fwd ? dkdv : fwd) : (dq > fwd ? dq : fwd);
};

/* ---- cp.async (sm_80+): src_bytes 0 fills the destination with zeros and reads nothing ---- */
__device__ __forceinline__ void t3_cp16(void *dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(t2_smem_addr(dst)), "l"(src),
                 "r"(src_bytes)
                 : "memory");
}

__device__ __forceinline__ void t3_cp4(void *dst, const void *src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(t2_smem_addr(dst)), "l"(src),
                 "r"(src_bytes)
                 : "memory");
}

__device__ __forceinline__ void t3_commit(void) { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

/* this thread's copies done but for its N most recent groups (a barrier then publishes them) */
template <int N>
__device__ __forceinline__ void t3_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/*
 * Rows r0 .. r0+63 of a strided [T, *] 16-bit matrix (row i at src + i * stride,
 * 16-byte aligned) into a [64][HD + 8] tile, 16 bytes a copy; rows past T are
 * zero (their copies read nothing, and name row 0's address, always valid).
 */
template <typename E, int HD>
__device__ __forceinline__ void t3_stage(E *dst, const E *src, size_t stride, int r0, int T) {
    constexpr int LD = HD + 8, CH = HD / 8, N = T2_TILE * CH / T2_THREADS;
    constexpr int RSTEP = T2_THREADS / CH;   /* rows between a thread's consecutive copies */
    static_assert(T2_TILE * CH % T2_THREADS == 0 && T2_THREADS % CH == 0, "staging copies");
    int row = (int)threadIdx.x / CH, c = ((int)threadIdx.x % CH) * 8;
    /* one running pointer (not N 64-bit addresses: those cost registers) */
    const E *p = src + (size_t)(r0 + row) * stride + c, *p0 = src + c;
    size_t step = (size_t)RSTEP * stride;
    E *d = dst + row * LD + c;
    int left = T - r0 - row;   /* rows of this thread still below T: u * RSTEP < left */
#pragma unroll
    for (int u = 0; u < N; u++) {
        bool in = u * RSTEP < left;
        t3_cp16(d + u * RSTEP * LD, in ? p : p0, in ? 16 : 0);
        p += step;
    }
}

/* lse and D of query rows i0 .. i0 + 63 (zeros past T): threads 0-63 copy the lse, 64-127 D */
__device__ __forceinline__ void t3_stage_stats(float *Ls, float *Ds, const float *lb, const float *db, int i0, int T) {
    static_assert(T2_THREADS == 2 * T2_TILE, "one statistic a thread");
    int t = (int)threadIdx.x % T2_TILE, i = i0 + t;
    bool in = i < T;
    if ((int)threadIdx.x < T2_TILE) t3_cp4(Ls + t, lb + (in ? i : 0), in ? 4 : 0);
    else t3_cp4(Ds + t, db + (in ? i : 0), in ? 4 : 0);
}

/* ---- forward ---- */

template <typename E, int HD>
__global__ void __launch_bounds__(T2_THREADS)
attention_pipe_forward_kernel(float *out, float *lse, const E *q, const E *k, const E *v, int T, int NH, int NKV,
                              int nqb, float sl2) {
    constexpr int LD = HD + 8, NO = HD / 8, TE = T3Dims<HD>::tile_elems;
    extern __shared__ __align__(128) unsigned char t2_smem[];
    E *Qs = reinterpret_cast<E *>(t2_smem);
    E *KV = Qs + TE;   /* buffer u: K at KV + 2 u TE, V at KV + (2 u + 1) TE */
    int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, g = lane / 4, tq = lane % 4;

    int bh, qb;
    query_block((int)gridDim.x / nqb, nqb, &bh, &qb);
    int b = bh / NH, h = bh % NH, kh = h / (NH / NKV);
    size_t qs = (size_t)NH * HD, ks = (size_t)NKV * HD;
    int q0 = qb * T2_TILE;
    const E *kb = k + (size_t)b * T * ks + (size_t)kh * HD;
    const E *vb = v + (size_t)b * T * ks + (size_t)kh * HD;
    t3_stage<E, HD>(Qs, q + (size_t)b * T * qs + (size_t)h * HD, qs, q0, T);
    t3_stage<E, HD>(KV, kb, ks, 0, T);
    t3_stage<E, HD>(KV + TE, vb, ks, 0, T);
    t3_commit();

    float o[NO][4];
#pragma unroll
    for (int n = 0; n < NO; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;   /* running max (log2 units), partial sums */
    int wfirst = q0 + warp * 16, row0 = wfirst + g;
    const E *qa = Qs + warp * 16 * LD + t2_off_a<LD>(lane);
    int obn = t2_off_bn<LD>(lane), obt = t2_off_bt<LD>(lane);
    int last = min(q0 + T2_TILE, T) - 1;

    for (int kt = 0, u = 0; kt <= last; kt += T2_TILE, u ^= 1) {
        if (kt + T2_TILE <= last) {   /* the next tile into the other buffer, read last iteration */
            E *nx = KV + 2 * (u ^ 1) * TE;
            t3_stage<E, HD>(nx, kb, ks, kt + T2_TILE, T);
            t3_stage<E, HD>(nx + TE, vb, ks, kt + T2_TILE, T);
            t3_commit();
            t3_wait<1>();
        } else {
            t3_wait<0>();
        }
        __syncthreads();   /* tile kt (and Q) in shared memory for every warp */
        if (kt <= wfirst + 15)   /* warp-uniform: some key at or below this warp's rows */
            t2_forward_tile<E, HD>(o, m0, m1, l0, l1, qa, KV + 2 * u * TE, KV + (2 * u + 1) * TE, kt, wfirst, row0,
                                   T, sl2, obn, obt, tq);
        __syncthreads();   /* buffer u fully read before the next iteration copies into it */
    }
    t2_forward_store<HD>(out + (size_t)b * T * qs + (size_t)h * HD + 2 * tq, lse + (size_t)bh * T, o, m0, m1, l0,
                         l1, row0, T, qs, tq);
}

/* ---- backward: dk, dv ---- */

template <typename E, int HD>
__global__ void __launch_bounds__(T2_THREADS)
attention_pipe_dkdv_kernel(float *dk, float *dv, const float *D, const E *dout, const float *lse, const E *q,
                           const E *k, const E *v, int T, int NH, int NKV, int BKV, float sl2, float scale) {
    constexpr int LD = HD + 8, NO = HD / 8, TE = T3Dims<HD>::tile_elems;
    extern __shared__ __align__(128) unsigned char t2_smem[];
    E *Ks = reinterpret_cast<E *>(t2_smem);
    E *Vs = Ks + TE;
    E *QG = Vs + TE;   /* buffer u: Q at QG + 2 u TE, dO at QG + (2 u + 1) TE */
    float *LDs = reinterpret_cast<float *>(QG + 4 * TE);   /* buffer u: lse at LDs + 2 u 64, D at LDs + (2 u + 1) 64 */
    int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, g = lane / 4, tq = lane % 4;

    /* ascending key blocks: small j has the most query rows, so heavy first */
    int bkv = (int)(blockIdx.x % (unsigned)BKV), jb = (int)(blockIdx.x / (unsigned)BKV);
    int b = bkv / NKV, kh = bkv % NKV, group = NH / NKV;
    size_t qs = (size_t)NH * HD, ks = (size_t)NKV * HD;
    int j0 = jb * T2_TILE;
    size_t koff = (size_t)b * T * ks + (size_t)kh * HD;
    /* the query tiles from the diagonal on, for every query head of the group: step s is head
     * kh * group + s / nt, tile j0 + (s % nt) * 64 */
    int nt = (T - j0 + T2_TILE - 1) / T2_TILE, steps = group * nt;
    auto stage = [&](int s, int u) {
        int h = kh * group + s / nt, i0 = j0 + (s % nt) * T2_TILE;
        size_t off = (size_t)b * T * qs + (size_t)h * HD, soff = ((size_t)b * NH + h) * T;
        t3_stage<E, HD>(QG + 2 * u * TE, q + off, qs, i0, T);
        t3_stage<E, HD>(QG + (2 * u + 1) * TE, dout + off, qs, i0, T);
        t3_stage_stats(LDs + 2 * u * T2_TILE, LDs + (2 * u + 1) * T2_TILE, lse + soff, D + soff, i0, T);
    };
    t3_stage<E, HD>(Ks, k + koff, ks, j0, T);
    t3_stage<E, HD>(Vs, v + koff, ks, j0, T);
    stage(0, 0);
    t3_commit();

    float dka[NO][4], dva[NO][4];
#pragma unroll
    for (int n = 0; n < NO; n++) {
        dka[n][0] = dka[n][1] = dka[n][2] = dka[n][3] = 0.0f;
        dva[n][0] = dva[n][1] = dva[n][2] = dva[n][3] = 0.0f;
    }
    int wfirst = j0 + warp * 16, key0 = wfirst + g;
    const E *ka = Ks + warp * 16 * LD + t2_off_a<LD>(lane);
    const E *va = Vs + warp * 16 * LD + t2_off_a<LD>(lane);
    int obn = t2_off_bn<LD>(lane), obt = t2_off_bt<LD>(lane);

    for (int s = 0, u = 0; s < steps; s++, u ^= 1) {
        if (s + 1 < steps) {   /* the next step into the other buffer, read last iteration */
            stage(s + 1, u ^ 1);
            t3_commit();
            t3_wait<1>();
        } else {
            t3_wait<0>();
        }
        __syncthreads();   /* step s (and K, V) in shared memory for every warp */
        int i0 = j0 + (s % nt) * T2_TILE;
        t2_dkdv_tile<E, HD, true>(dka, dva, ka, va, QG + 2 * u * TE, QG + (2 * u + 1) * TE, LDs + 2 * u * T2_TILE,
                                  LDs + (2 * u + 1) * T2_TILE, i0, wfirst, key0, T, sl2, obn, obt, tq);
        __syncthreads();   /* buffer u fully read before the next iteration copies into it */
    }
    t2_dkdv_store<HD>(dk + koff + 2 * tq, dv + koff + 2 * tq, dka, dva, key0, T, ks, scale);
}

/* ---- backward: dq ---- */

template <typename E, int HD>
__global__ void __launch_bounds__(T2_THREADS)
attention_pipe_dq_kernel(float *dq, const float *D, const E *dout, const float *lse, const E *q, const E *k,
                         const E *v, int T, int NH, int NKV, int nqb, float sl2, float scale) {
    constexpr int LD = HD + 8, NO = HD / 8, TE = T3Dims<HD>::tile_elems;
    extern __shared__ __align__(128) unsigned char t2_smem[];
    E *Qs = reinterpret_cast<E *>(t2_smem);
    E *Gs = Qs + TE;   /* dout */
    E *KV = Gs + TE;   /* buffer u: K at KV + 2 u TE, V at KV + (2 u + 1) TE */
    int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, g = lane / 4, tq = lane % 4;

    int bh, qb;
    query_block((int)gridDim.x / nqb, nqb, &bh, &qb);
    int b = bh / NH, h = bh % NH, kh = h / (NH / NKV);
    size_t qs = (size_t)NH * HD, ks = (size_t)NKV * HD;
    const E *kb = k + (size_t)b * T * ks + (size_t)kh * HD;
    const E *vb = v + (size_t)b * T * ks + (size_t)kh * HD;
    int q0 = qb * T2_TILE;
    size_t off = (size_t)b * T * qs + (size_t)h * HD;
    t3_stage<E, HD>(Qs, q + off, qs, q0, T);
    t3_stage<E, HD>(Gs, dout + off, qs, q0, T);
    t3_stage<E, HD>(KV, kb, ks, 0, T);
    t3_stage<E, HD>(KV + TE, vb, ks, 0, T);
    t3_commit();

    /* while the first copies fly: this thread's rows' statistics, as attention_tc.cu forms them */
    int wfirst = q0 + warp * 16, row0 = wfirst + g, row1 = row0 + 8;
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
    for (int kt = 0, u = 0; kt <= last; kt += T2_TILE, u ^= 1) {
        if (kt + T2_TILE <= last) {   /* the next tile into the other buffer, read last iteration */
            E *nx = KV + 2 * (u ^ 1) * TE;
            t3_stage<E, HD>(nx, kb, ks, kt + T2_TILE, T);
            t3_stage<E, HD>(nx + TE, vb, ks, kt + T2_TILE, T);
            t3_commit();
            t3_wait<1>();
        } else {
            t3_wait<0>();
        }
        __syncthreads();   /* tile kt (and Q, dO) in shared memory for every warp */
        t2_dq_tile<E, HD>(dqa, qa, ga, KV + 2 * u * TE, KV + (2 * u + 1) * TE, kt, wfirst, row0, T, L0, L1, D0, D1,
                          sl2, obn, obt, tq);
        __syncthreads();   /* buffer u fully read before the next iteration copies into it */
    }
    t2_dq_store<HD>(dq + off + 2 * tq, dqa, row0, T, qs, scale);
}

/* ---- launchers ---- */

/* 16-bit copies of the inputs: a scratch slot of n elements of E; NULL (error recorded) if it does not fit */
template <typename E>
static E *t3_copies(size_t n) {
    return (E *)cuda_scratch(CUDA_SCRATCH_ATTENTION16, n * sizeof(E));
}

template <typename E, int HD>
static void t3_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                       int NKV, lomo_dtype dt) {
    size_t smem = T3Dims<HD>::fwd, nq = (size_t)B * T * NH * HD, nk = (size_t)B * T * NKV * HD;
    unsigned grid = t2_grid(T, B * NH, "attention pipe forward grid");
    if (!grid || !t2_allow_smem(attention_pipe_forward_kernel<E, HD>, smem, "attention pipe forward smem")) return;
    E *q16 = t3_copies<E>(nq + 2 * nk), *k16 = q16 + nq, *v16 = k16 + nk;
    if (!q16) return;
    if (!cuda_round16(q16, q, nq, dt) || !cuda_round16(k16, k, nk, dt) ||
        !cuda_round16(v16, v, nk, dt))
        return;
    int nqb = (T + T2_TILE - 1) / T2_TILE;
    attention_pipe_forward_kernel<E, HD><<<grid, T2_THREADS, smem, cuda_stream()>>>(
        out, lse, q16, k16, v16, T, NH, NKV, nqb, T2_LOG2E / sqrtf((float)HD));
    CUDA_LAUNCHED("attention pipe forward");
}

template <typename E, int HD>
static void t3_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *out,
                        const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                        int NKV, lomo_dtype dt) {
    float scale = 1.0f / sqrtf((float)HD), sl2 = T2_LOG2E / sqrtf((float)HD);
    size_t smem_kv = T3Dims<HD>::dkdv, smem_q = T3Dims<HD>::dq;
    size_t nq = (size_t)B * T * NH * HD, nk = (size_t)B * T * NKV * HD;
    unsigned grid_q = t2_grid(T, B * NH, "attention pipe backward grid");
    unsigned grid_kv = t2_grid(T, B * NKV, "attention pipe backward grid");
    if (!grid_q || !grid_kv) return;
    if (!t2_allow_smem(attention_pipe_dkdv_kernel<E, HD>, smem_kv, "attention pipe backward dkdv smem")) return;
    if (!t2_allow_smem(attention_pipe_dq_kernel<E, HD>, smem_q, "attention pipe backward dq smem")) return;
    E *q16 = t3_copies<E>(2 * nq + 2 * nk), *g16 = q16 + nq, *k16 = g16 + nq, *v16 = k16 + nk;
    if (!q16) return;
    if (!cuda_round16(q16, q, nq, dt) || !cuda_round16(k16, k, nk, dt) ||
        !cuda_round16(v16, v, nk, dt))
        return;
    size_t rows = (size_t)B * T * NH;
    attention_mma_rowdot_kernel<E, HD><<<cuda_blocks(rows * 32, 256), 256, 0, cuda_stream()>>>(scratch, g16, dout,
                                                                                               out, T, NH, rows);
    if (!CUDA_LAUNCHED("attention pipe backward D")) return;
    attention_pipe_dkdv_kernel<E, HD><<<grid_kv, T2_THREADS, smem_kv, cuda_stream()>>>(
        dk, dv, scratch, g16, lse, q16, k16, v16, T, NH, NKV, B * NKV, sl2, scale);
    if (!CUDA_LAUNCHED("attention pipe backward dkdv")) return;
    int nqb = (T + T2_TILE - 1) / T2_TILE;
    attention_pipe_dq_kernel<E, HD><<<grid_q, T2_THREADS, smem_q, cuda_stream()>>>(
        dq, scratch, g16, lse, q16, k16, v16, T, NH, NKV, nqb, sl2, scale);
    CUDA_LAUNCHED("attention pipe backward dq");
}

extern "C" {

/* hd 64 and 128 where the device's opt-in shared memory holds the largest kernel (hd 128: 103 KB) */
int cuda_attention_pipe_supported(int hd) {
    size_t need;
    if (hd == 64) need = T3Dims<64>::max_smem;
    else if (hd == 128) need = T3Dims<128>::max_smem;
    else return 0;
    return t2_smem_optin() >= need;
}

void cuda_attention_pipe_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B,
                                 int T, int NH, int NKV, int hd, lomo_dtype dt) {
    if (B <= 0 || T <= 0) return;
    if (!t2_check(NH, NKV, hd, dt, "pipe")) return;
#define FWD(E, HD) t3_forward<E, HD>(out, lse, q, k, v, B, T, NH, NKV, dt)
    T2_DISPATCH(hd, dt, FWD);
#undef FWD
}

void cuda_attention_pipe_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                  const float *out, const float *lse, const float *q, const float *k, const float *v,
                                  int B, int T, int NH, int NKV, int hd, lomo_dtype dt) {
    if (B <= 0 || T <= 0) return;
    if (!t2_check(NH, NKV, hd, dt, "pipe")) return;
#define BWD(E, HD) t3_backward<E, HD>(dq, dk, dv, scratch, dout, out, lse, q, k, v, B, T, NH, NKV, dt)
    T2_DISPATCH(hd, dt, BWD);
#undef BWD
}

}   /* extern "C" */
