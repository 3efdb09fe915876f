/*
 * attention_tc.cu: causal grouped-query flash attention on tensor cores with
 * register-resident score tiles (FlashAttention-2 style), for 16-bit models.
 * The contract is attention.cu's (the f32 version, which f32 models and other
 * head sizes use), so they are interchangeable: q [B, T, NH, hd], k and v
 * [B, T, NKV, hd], out [B, T, NH, hd], lse [B, NH, T] the natural log-sum-exp
 * of each row's scaled scores, scratch [B, NH, T] = D in backward; dq, dk, dv
 * overwritten; scale 1/sqrt(hd); query head h reads kv head h / (NH / NKV).
 * A first WMMA version, which staged scores through shared memory, was 4x slower
 * on an H200 (tests/gpu/results/2026-11-28-H200/bench_wmma.md) and is gone.
 *
 * The products, softmax and stores are attention_mma.cuh's; the kernels here
 * walk the tiles. Blocks of 4 warps, tiles of 64 rows or keys, 16 per warp:
 *   forward: a block owns 64 query rows of one (b, h); it walks the key tiles
 *            up to the diagonal with an online softmax in the exp2 domain, O
 *            accumulated in registers.
 *   D:       rowsum(dout * out) into scratch, one warp per row.
 *   dk/dv:   a block owns 64 keys of one (b, kv head); it walks the query
 *            tiles from the diagonal on, for every query head of the group,
 *            32 queries at a time, recomputing S^T and dP^T; dK, dV accumulate
 *            in registers.
 *   dq:      a block owns 64 query rows of one (b, h) and walks the key tiles
 *            up to the diagonal, 32 keys at a time; dQ accumulates in registers.
 * Tiles entirely above the diagonal are skipped (per warp), only tiles that
 * straddle the diagonal or T are masked. Every output element is written once
 * by one thread: no atomics, deterministic.
 *
 * Two families, which differ only in how a tile reaches shared memory, and so
 * give the same bits:
 *   mma (the default, LOMO_ATTENTION=mma; ASYNC false): the f32 inputs are
 *       rounded to the model's dtype while a tile is staged (float4 loads,
 *       8-byte shared stores), between two barriers. Every warp waits for the
 *       tile's loads, and the next tile's loads wait for the last product: the
 *       7B profile on an H200 (tests/gpu/results/2026-11-28-H200-b) has its
 *       forward at 108 and backward at 73 TFLOP/s beside 617 for the GEMMs.
 *   pipe (LOMO_ATTENTION=pipe; ASYNC true): the inputs are first rounded once
 *       into 16-bit copies (a scratch slot: q, k, v forward; q, dout, k, v
 *       backward, where the D pass rounds dout as it reads it), and tiles of
 *       those are copied with cp.async into two buffers: tile n + 1's copy is
 *       in flight while tile n is multiplied (forward and dq: the K/V tiles;
 *       dk/dv: the Q, dO, lse and D of each step). 87 KB of shared memory a
 *       forward block and 103 KB a backward one at hd 128, so two blocks an
 *       SM on sm_80 and sm_90; elsewhere (sm_86, sm_89: 99 KB) it is not run.
 *       Written in a session without a GPU: test_cuda checks it against the
 *       CPU and, bit for bit, against mma; bench_cuda times both.
 */
#include <type_traits>
#include "attention_block.cuh"
#include "attention_mma.cuh"

/* shared-memory layout: 16-bit [64][HD + 8] tiles, every one 16-byte aligned; BUFS (1, or 2 with
 * ASYNC) buffers of what a block walks */
template <int HD, bool ASYNC>
struct T2Dims {
    static constexpr int LD = HD + 8, BUFS = ASYNC ? 2 : 1;
    static constexpr int tile_elems = T2_TILE * LD;
    static constexpr size_t tile = (size_t)tile_elems * 2;
    static constexpr size_t fwd = (1 + 2 * BUFS) * tile;                        /* Q, BUFS x (K, V) */
    static constexpr size_t dkdv = (2 + 2 * BUFS) * tile + 2 * BUFS * T2_TILE * 4;  /* K, V, BUFS x (Q, dO, lse, D) */
    static constexpr size_t dq = (2 + 2 * BUFS) * tile;                         /* Q, dO, BUFS x (K, V) */
    static constexpr size_t max_smem = fwd > dkdv ? (fwd > dq ? fwd : dq) : (dkdv > dq ? dkdv : dq);
};

/* ---- staging: mma's (f32 rounded, synchronous) ---- */

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

/* lse * log2(e) and D of query rows i0 .. i0 + 63 (zeros past T) */
__device__ __forceinline__ void t2_stage_stats(float *Ls, float *Ds, const float *lb, const float *db, int i0, int T) {
    if (threadIdx.x < T2_TILE) {
        int i = i0 + (int)threadIdx.x;
        Ls[threadIdx.x] = i < T ? lb[i] * T2_LOG2E : 0.0f;
        Ds[threadIdx.x] = i < T ? db[i] : 0.0f;
    }
}

/* ---- staging: pipe's (16-bit copies, asynchronous) ---- */
/* cp.async (sm_80+): src_bytes 0 fills the destination with zeros and reads nothing */
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

/* lse and D of query rows i0 .. i0 + 63 (zeros past T), as they are: threads 0-63 copy the lse, 64-127 D */
__device__ __forceinline__ void t3_stage_stats(float *Ls, float *Ds, const float *lb, const float *db, int i0, int T) {
    static_assert(T2_THREADS == 2 * T2_TILE, "one statistic a thread");
    int t = (int)threadIdx.x % T2_TILE, i = i0 + t;
    bool in = i < T;
    if ((int)threadIdx.x < T2_TILE) t3_cp4(Ls + t, lb + (in ? i : 0), in ? 4 : 0);
    else t3_cp4(Ds + t, db + (in ? i : 0), in ? 4 : 0);
}

/* a tile of rows r0 .. r0 + 63 into dst, by the family's staging (In: float for mma, E for pipe) */
template <typename E, int HD, bool ASYNC, typename In>
__device__ __forceinline__ void t2_tile(E *dst, const In *src, size_t stride, int r0, int T) {
    if constexpr (ASYNC) t3_stage<E, HD>(dst, src, stride, r0, T);
    else t2_stage<E, HD>(dst, src, stride, r0, T);
}

/*
 * The walk over tiles both families share. mma: each step's tile staged between two barriers into
 * the one buffer. pipe: before step n is used, step n + 1's copy is issued into the other buffer
 * (stage(n + 1, buffer)); then step n's copies are waited for and published by a barrier, and a
 * barrier after the step lets the next copy reuse its buffer. use(n, buffer) runs the step.
 * pipe's caller has issued and committed step 0's copies into buffer 0.
 */
template <bool ASYNC, typename Stage, typename Use>
__device__ __forceinline__ void t2_walk(int steps, Stage stage, Use use) {
    for (int n = 0, u = 0; n < steps; n++, u ^= ASYNC ? 1 : 0) {
        if constexpr (ASYNC) {
            if (n + 1 < steps) {
                stage(n + 1, u ^ 1);
                t3_commit();
                t3_wait<1>();
            } else {
                t3_wait<0>();
            }
            __syncthreads();   /* step n (and what came before the walk) in shared memory for every warp */
            use(n, u);
            __syncthreads();   /* buffer u fully read before the next copy into it */
        } else {
            __syncthreads();   /* the previous step fully read (and what came before the walk staged) */
            stage(n, 0);
            __syncthreads();
            use(n, 0);
        }
    }
}

/* ---- forward ---- */

template <typename E, int HD, bool ASYNC, typename In = std::conditional_t<ASYNC, E, float>>
__global__ void __launch_bounds__(T2_THREADS)
attention_tc_forward_kernel(float *out, float *lse, const In *q, const In *k, const In *v, int T, int NH, int NKV,
                            int nqb, float sl2) {
    constexpr int LD = HD + 8, NO = HD / 8, TE = T2Dims<HD, ASYNC>::tile_elems;
    extern __shared__ __align__(128) unsigned char t2_smem[];
    E *Qs = reinterpret_cast<E *>(t2_smem);
    E *KV = Qs + TE;   /* buffer u: K at KV + 2 u TE, V at KV + (2 u + 1) TE */
    int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, g = lane / 4, tq = lane % 4;

    int bh, qb;
    query_block((int)gridDim.x / nqb, nqb, &bh, &qb);
    int b = bh / NH, h = bh % NH, kh = h / (NH / NKV);
    size_t qs = (size_t)NH * HD, ks = (size_t)NKV * HD;
    int q0 = qb * T2_TILE;
    const In *kb = k + (size_t)b * T * ks + (size_t)kh * HD;
    const In *vb = v + (size_t)b * T * ks + (size_t)kh * HD;
    auto stage = [&](int n, int u) {   /* the K/V tile of step n */
        t2_tile<E, HD, ASYNC>(KV + 2 * u * TE, kb, ks, n * T2_TILE, T);
        t2_tile<E, HD, ASYNC>(KV + (2 * u + 1) * TE, vb, ks, n * T2_TILE, T);
    };
    t2_tile<E, HD, ASYNC>(Qs, q + (size_t)b * T * qs + (size_t)h * HD, qs, q0, T);
    if constexpr (ASYNC) {
        stage(0, 0);
        t3_commit();
    }

    float o[NO][4];
#pragma unroll
    for (int n = 0; n < NO; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;   /* running max (log2 units), partial sums */
    int wfirst = q0 + warp * 16, row0 = wfirst + g;
    const E *qa = Qs + warp * 16 * LD + t2_off_a<LD>(lane);
    int obn = t2_off_bn<LD>(lane), obt = t2_off_bt<LD>(lane);
    int steps = (min(q0 + T2_TILE, T) - 1) / T2_TILE + 1;   /* key tiles up to the block's last row */
    t2_walk<ASYNC>(steps, stage, [&](int n, int u) {
        int kt = n * T2_TILE;
        if (kt <= wfirst + 15)   /* warp-uniform: some key at or below this warp's rows */
            t2_forward_tile<E, HD>(o, m0, m1, l0, l1, qa, KV + 2 * u * TE, KV + (2 * u + 1) * TE, kt, wfirst, row0,
                                   T, sl2, obn, obt, tq);
    });
    t2_forward_store<HD>(out + (size_t)b * T * qs + (size_t)h * HD + 2 * tq, lse + (size_t)bh * T, o, m0, m1, l0,
                         l1, row0, T, qs, tq);
}

/* ---- backward: dk, dv ---- */

template <typename E, int HD, bool ASYNC, typename In = std::conditional_t<ASYNC, E, float>>
__global__ void __launch_bounds__(T2_THREADS)
attention_tc_dkdv_kernel(float *dk, float *dv, const float *D, const In *dout, const float *lse, const In *q,
                         const In *k, const In *v, int T, int NH, int NKV, int BKV, float sl2, float scale) {
    constexpr int LD = HD + 8, NO = HD / 8, TE = T2Dims<HD, ASYNC>::tile_elems;
    extern __shared__ __align__(128) unsigned char t2_smem[];
    E *Ks = reinterpret_cast<E *>(t2_smem);
    E *Vs = Ks + TE;
    E *QG = Vs + TE;   /* buffer u: Q at QG + 2 u TE, dO at QG + (2 u + 1) TE */
    /* buffer u: lse at LDs + 2 u 64 (mma: times log2(e); pipe: as it is), D at LDs + (2 u + 1) 64 */
    float *LDs = reinterpret_cast<float *>(QG + 2 * T2Dims<HD, ASYNC>::BUFS * TE);
    int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, g = lane / 4, tq = lane % 4;

    /* ascending key blocks: small j has the most query rows, so heavy first */
    int bkv = (int)(blockIdx.x % (unsigned)BKV), jb = (int)(blockIdx.x / (unsigned)BKV);
    int b = bkv / NKV, kh = bkv % NKV, group = NH / NKV;
    size_t qs = (size_t)NH * HD, ks = (size_t)NKV * HD;
    int j0 = jb * T2_TILE;
    size_t koff = (size_t)b * T * ks + (size_t)kh * HD;
    /* the query tiles from the diagonal on, for every query head of the group: step n is head
     * kh * group + n / nt, tile j0 + (n % nt) * 64 */
    int nt = (T - j0 + T2_TILE - 1) / T2_TILE;
    auto stage = [&](int n, int u) {
        int h = kh * group + n / nt, i0 = j0 + (n % nt) * T2_TILE;
        size_t off = (size_t)b * T * qs + (size_t)h * HD, soff = ((size_t)b * NH + h) * T;
        t2_tile<E, HD, ASYNC>(QG + 2 * u * TE, q + off, qs, i0, T);
        t2_tile<E, HD, ASYNC>(QG + (2 * u + 1) * TE, dout + off, qs, i0, T);
        float *Ls = LDs + 2 * u * T2_TILE, *Ds = LDs + (2 * u + 1) * T2_TILE;
        if constexpr (ASYNC) t3_stage_stats(Ls, Ds, lse + soff, D + soff, i0, T);
        else t2_stage_stats(Ls, Ds, lse + soff, D + soff, i0, T);
    };
    t2_tile<E, HD, ASYNC>(Ks, k + koff, ks, j0, T);
    t2_tile<E, HD, ASYNC>(Vs, v + koff, ks, j0, T);
    if constexpr (ASYNC) {
        stage(0, 0);
        t3_commit();
    }

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
    t2_walk<ASYNC>(group * nt, stage, [&](int n, int u) {
        t2_dkdv_tile<E, HD, ASYNC>(dka, dva, ka, va, QG + 2 * u * TE, QG + (2 * u + 1) * TE, LDs + 2 * u * T2_TILE,
                                   LDs + (2 * u + 1) * T2_TILE, j0 + (n % nt) * T2_TILE, wfirst, key0, T, sl2, obn,
                                   obt, tq);
    });
    t2_dkdv_store<HD>(dk + koff + 2 * tq, dv + koff + 2 * tq, dka, dva, key0, T, ks, scale);
}

/* ---- backward: dq ---- */

template <typename E, int HD, bool ASYNC, typename In = std::conditional_t<ASYNC, E, float>>
__global__ void __launch_bounds__(T2_THREADS)
attention_tc_dq_kernel(float *dq, const float *D, const In *dout, const float *lse, const In *q, const In *k,
                       const In *v, int T, int NH, int NKV, int nqb, float sl2, float scale) {
    constexpr int LD = HD + 8, NO = HD / 8, TE = T2Dims<HD, ASYNC>::tile_elems;
    extern __shared__ __align__(128) unsigned char t2_smem[];
    E *Qs = reinterpret_cast<E *>(t2_smem);
    E *Gs = Qs + TE;   /* dout */
    E *KV = Gs + TE;   /* buffer u: K at KV + 2 u TE, V at KV + (2 u + 1) TE */
    int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, g = lane / 4, tq = lane % 4;

    int bh, qb;
    query_block((int)gridDim.x / nqb, nqb, &bh, &qb);
    int b = bh / NH, h = bh % NH, kh = h / (NH / NKV);
    size_t qs = (size_t)NH * HD, ks = (size_t)NKV * HD;
    const In *kb = k + (size_t)b * T * ks + (size_t)kh * HD;
    const In *vb = v + (size_t)b * T * ks + (size_t)kh * HD;
    int q0 = qb * T2_TILE;
    size_t off = (size_t)b * T * qs + (size_t)h * HD;
    auto stage = [&](int n, int u) {   /* the K/V tile of step n */
        t2_tile<E, HD, ASYNC>(KV + 2 * u * TE, kb, ks, n * T2_TILE, T);
        t2_tile<E, HD, ASYNC>(KV + (2 * u + 1) * TE, vb, ks, n * T2_TILE, T);
    };
    t2_tile<E, HD, ASYNC>(Qs, q + off, qs, q0, T);
    t2_tile<E, HD, ASYNC>(Gs, dout + off, qs, q0, T);
    if constexpr (ASYNC) {
        stage(0, 0);
        t3_commit();
    }

    /* (pipe: while the first copies fly) this thread's rows' statistics */
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
    int steps = (min(q0 + T2_TILE, T) - 1) / T2_TILE + 1;   /* key tiles up to the block's last row */
    t2_walk<ASYNC>(steps, stage, [&](int n, int u) {
        t2_dq_tile<E, HD>(dqa, qa, ga, KV + 2 * u * TE, KV + (2 * u + 1) * TE, n * T2_TILE, wfirst, row0, T, L0, L1,
                          D0, D1, sl2, obn, obt, tq);
    });
    t2_dq_store<HD>(dq + off + 2 * tq, dqa, row0, T, qs, scale);
}

/* ---- launchers ---- */

/* pipe's 16-bit copies: n elements of E in a scratch slot; NULL (error recorded) if they do not fit */
template <typename E>
static E *t2_copies(size_t n) {
    return (E *)cuda_scratch(CUDA_SCRATCH_ATTENTION16, n * sizeof(E));
}

template <typename E, int HD, bool ASYNC>
static void t2_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                       int NKV, lomo_dtype dt) {
    const char *fam = ASYNC ? "attention pipe forward" : "attention tc forward";
    auto kernel = attention_tc_forward_kernel<E, HD, ASYNC>;
    size_t smem = T2Dims<HD, ASYNC>::fwd, nq = (size_t)B * T * NH * HD, nk = (size_t)B * T * NKV * HD;
    unsigned grid = t2_grid(T, B * NH, fam);
    if (!grid || !t2_allow_smem(kernel, smem, fam)) return;
    int nqb = (T + T2_TILE - 1) / T2_TILE;
    float sl2 = T2_LOG2E / sqrtf((float)HD);
    if constexpr (ASYNC) {
        E *q16 = t2_copies<E>(nq + 2 * nk), *k16 = q16 + nq, *v16 = k16 + nk;
        if (!q16 || !cuda_round16(q16, q, nq, dt) || !cuda_round16(k16, k, nk, dt) || !cuda_round16(v16, v, nk, dt))
            return;
        kernel<<<grid, T2_THREADS, smem, cuda_stream()>>>(out, lse, q16, k16, v16, T, NH, NKV, nqb, sl2);
    } else {
        kernel<<<grid, T2_THREADS, smem, cuda_stream()>>>(out, lse, q, k, v, T, NH, NKV, nqb, sl2);
    }
    CUDA_LAUNCHED(fam);
}

template <typename E, int HD, bool ASYNC>
static void t2_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *out,
                        const float *lse, const float *q, const float *k, const float *v, int B, int T, int NH,
                        int NKV, lomo_dtype dt) {
    const char *fam = ASYNC ? "attention pipe backward" : "attention tc backward";
    auto kernel_kv = attention_tc_dkdv_kernel<E, HD, ASYNC>;
    auto kernel_q = attention_tc_dq_kernel<E, HD, ASYNC>;
    float scale = 1.0f / sqrtf((float)HD), sl2 = T2_LOG2E / sqrtf((float)HD);
    size_t smem_kv = T2Dims<HD, ASYNC>::dkdv, smem_q = T2Dims<HD, ASYNC>::dq;
    size_t nq = (size_t)B * T * NH * HD, nk = (size_t)B * T * NKV * HD, rows = (size_t)B * T * NH;
    unsigned grid_q = t2_grid(T, B * NH, fam), grid_kv = t2_grid(T, B * NKV, fam);
    if (!grid_q || !grid_kv || !t2_allow_smem(kernel_kv, smem_kv, fam) || !t2_allow_smem(kernel_q, smem_q, fam))
        return;
    int nqb = (T + T2_TILE - 1) / T2_TILE;
    unsigned rgrid = cuda_blocks(rows * 32, 256);
    if constexpr (ASYNC) {
        E *q16 = t2_copies<E>(2 * nq + 2 * nk), *g16 = q16 + nq, *k16 = g16 + nq, *v16 = k16 + nk;
        if (!q16 || !cuda_round16(q16, q, nq, dt) || !cuda_round16(k16, k, nk, dt) || !cuda_round16(v16, v, nk, dt))
            return;
        attention_mma_rowdot_kernel<E, HD><<<rgrid, 256, 0, cuda_stream()>>>(scratch, g16, dout, out, T, NH, rows);
        if (!CUDA_LAUNCHED(fam)) return;
        kernel_kv<<<grid_kv, T2_THREADS, smem_kv, cuda_stream()>>>(dk, dv, scratch, g16, lse, q16, k16, v16, T, NH,
                                                                   NKV, B * NKV, sl2, scale);
        if (!CUDA_LAUNCHED(fam)) return;
        kernel_q<<<grid_q, T2_THREADS, smem_q, cuda_stream()>>>(dq, scratch, g16, lse, q16, k16, v16, T, NH, NKV,
                                                                nqb, sl2, scale);
    } else {
        attention_mma_rowdot_kernel<E, HD><<<rgrid, 256, 0, cuda_stream()>>>(scratch, (E *)NULL, dout, out, T, NH,
                                                                              rows);
        if (!CUDA_LAUNCHED(fam)) return;
        kernel_kv<<<grid_kv, T2_THREADS, smem_kv, cuda_stream()>>>(dk, dv, scratch, dout, lse, q, k, v, T, NH, NKV,
                                                                   B * NKV, sl2, scale);
        if (!CUDA_LAUNCHED(fam)) return;
        kernel_q<<<grid_q, T2_THREADS, smem_q, cuda_stream()>>>(dq, scratch, dout, lse, q, k, v, T, NH, NKV, nqb,
                                                                sl2, scale);
    }
    CUDA_LAUNCHED(fam);
}

/* hd 64 and 128, where the device's opt-in shared memory holds the family's largest kernel (hd 128:
 * mma ~69 KB, so every sm_80+ part; pipe 103 KB) */
template <bool ASYNC>
static int t2_supported(int hd) {
    if (hd == 64) return t2_smem_optin() >= T2Dims<64, ASYNC>::max_smem;
    if (hd == 128) return t2_smem_optin() >= T2Dims<128, ASYNC>::max_smem;
    return 0;
}

#define T2_ENTRY(ASYNC, name)                                                                                     \
    void cuda_attention_##name##_forward(float *out, float *lse, const float *q, const float *k, const float *v, \
                                         int B, int T, int NH, int NKV, int hd, lomo_dtype dt) {                  \
        if (B <= 0 || T <= 0 || !t2_check(NH, NKV, hd, dt, #name)) return;                                       \
        T2_DISPATCH(hd, dt, FWD_##name);                                                                          \
    }                                                                                                             \
    void cuda_attention_##name##_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,    \
                                          const float *out, const float *lse, const float *q, const float *k,     \
                                          const float *v, int B, int T, int NH, int NKV, int hd, lomo_dtype dt) { \
        if (B <= 0 || T <= 0 || !t2_check(NH, NKV, hd, dt, #name)) return;                                       \
        T2_DISPATCH(hd, dt, BWD_##name);                                                                          \
    }                                                                                                             \
    int cuda_attention_##name##_supported(int hd) { return t2_supported<ASYNC>(hd); }

#define FWD_tc(E, HD) t2_forward<E, HD, false>(out, lse, q, k, v, B, T, NH, NKV, dt)
#define BWD_tc(E, HD) t2_backward<E, HD, false>(dq, dk, dv, scratch, dout, out, lse, q, k, v, B, T, NH, NKV, dt)
#define FWD_pipe(E, HD) t2_forward<E, HD, true>(out, lse, q, k, v, B, T, NH, NKV, dt)
#define BWD_pipe(E, HD) t2_backward<E, HD, true>(dq, dk, dv, scratch, dout, out, lse, q, k, v, B, T, NH, NKV, dt)

extern "C" {
T2_ENTRY(false, tc)
T2_ENTRY(true, pipe)
}
