/*
 * attention_tc.cu: causal grouped-query flash attention on tensor cores with
 * register-resident score tiles (FlashAttention-2 style), for 16-bit models;
 * the "mma" family (LOMO_ATTENTION=mma, the default). The contract is
 * attention.cu's (the f32 version, which f32 models and other head sizes
 * use), so the two are interchangeable: q [B, T, NH, hd], k and v
 * [B, T, NKV, hd], out [B, T, NH, hd], lse [B, NH, T] the natural log-sum-exp
 * of each row's scaled scores, scratch [B, NH, T] = D in backward; dq, dk, dv
 * overwritten; scale 1/sqrt(hd); query head h reads kv head h / (NH / NKV).
 * A first WMMA version, which staged scores through shared memory, was 4x slower
 * on an H200 (tests/gpu/results/2026-11-28-H200/bench_wmma.md) and is gone.
 *
 * The products, softmax and stores are attention_mma.cuh's. Here the f32
 * inputs are rounded to the model's dtype while they are staged (float4
 * loads, 8-byte shared stores), one tile at a time between two barriers;
 * attention_pipe.cu stages 16-bit copies asynchronously instead.
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
#include "attention_block.cuh"
#include "attention_mma.cuh"

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

/* ---- forward ---- */

template <typename E, int HD>
__global__ void __launch_bounds__(T2_THREADS)
attention_tc_forward_kernel(float *out, float *lse, const float *q, const float *k, const float *v, int T, int NH,
                             int NKV, int nqb, float sl2) {
    constexpr int LD = HD + 8, NO = HD / 8;
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
    int wfirst = q0 + warp * 16, row0 = wfirst + g;
    const E *qa = Qs + warp * 16 * LD + t2_off_a<LD>(lane);
    int obn = t2_off_bn<LD>(lane), obt = t2_off_bt<LD>(lane);
    int last = min(q0 + T2_TILE, T) - 1;

    for (int kt = 0; kt <= last; kt += T2_TILE) {
        __syncthreads();   /* previous K/V fully read (and Q staged on the first pass) */
        t2_stage<E, HD>(Ks, kb, ks, kt, T);
        t2_stage<E, HD>(Vs, vb, ks, kt, T);
        __syncthreads();
        if (kt > wfirst + 15) continue;   /* warp-uniform: every key above this warp's rows */
        t2_forward_tile<E, HD>(o, m0, m1, l0, l1, qa, Ks, Vs, kt, wfirst, row0, T, sl2, obn, obt, tq);
    }
    t2_forward_store<HD>(out + (size_t)b * T * qs + (size_t)h * HD + 2 * tq, lse + (size_t)bh * T, o, m0, m1, l0,
                         l1, row0, T, qs, tq);
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
    int wfirst = j0 + warp * 16, key0 = wfirst + g;
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
            t2_dkdv_tile<E, HD, false>(dka, dva, ka, va, Qs, Gs, Ls, Ds, i0, wfirst, key0, T, sl2, obn, obt, tq);
        }
    }
    t2_dkdv_store<HD>(dk + koff + 2 * tq, dv + koff + 2 * tq, dka, dva, key0, T, ks, scale);
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
    for (int kt = 0; kt <= last; kt += T2_TILE) {
        __syncthreads();   /* previous K/V fully read (and Q, dO staged on the first pass) */
        t2_stage<E, HD>(Ks, kb, ks, kt, T);
        t2_stage<E, HD>(Vs, vb, ks, kt, T);
        __syncthreads();
        t2_dq_tile<E, HD>(dqa, qa, ga, Ks, Vs, kt, wfirst, row0, T, L0, L1, D0, D1, sl2, obn, obt, tq);
    }
    t2_dq_store<HD>(dq + off + 2 * tq, dqa, row0, T, qs, scale);
}

/* ---- launchers ---- */

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
    attention_mma_rowdot_kernel<E, HD><<<cuda_blocks(rows * 32, 256), 256, 0, cuda_stream()>>>(
        scratch, (E *)NULL, dout, out, T, NH, rows);
    if (!CUDA_LAUNCHED("attention tc backward D")) return;
    attention_tc_dkdv_kernel<E, HD><<<grid_kv, T2_THREADS, smem_kv, cuda_stream()>>>(
        dk, dv, scratch, dout, lse, q, k, v, T, NH, NKV, B * NKV, sl2, scale);
    if (!CUDA_LAUNCHED("attention tc backward dkdv")) return;
    int nqb = (T + T2_TILE - 1) / T2_TILE;
    attention_tc_dq_kernel<E, HD><<<grid_q, T2_THREADS, smem_q, cuda_stream()>>>(dq, scratch, dout, lse, q, k, v, T,
                                                                                  NH, NKV, nqb, sl2, scale);
    CUDA_LAUNCHED("attention tc backward dq");
}

extern "C" {

/* hd 64 and 128, where the device's opt-in shared memory holds the largest
 * kernel (hd 128: ~69 KB for dk/dv, so every sm_80+ part; hd 64: ~37 KB) */
int cuda_attention_tc_supported(int hd) {
    size_t need;
    if (hd == 64) need = T2Dims<64>::max_smem;
    else if (hd == 128) need = T2Dims<128>::max_smem;
    else return 0;
    return t2_smem_optin() >= need;
}

void cuda_attention_tc_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                                int NH, int NKV, int hd, lomo_dtype dt) {
    if (B <= 0 || T <= 0) return;
    if (!t2_check(NH, NKV, hd, dt, "tc")) return;
#define FWD(E, HD) t2_forward<E, HD>(out, lse, q, k, v, B, T, NH, NKV)
    T2_DISPATCH(hd, dt, FWD);
#undef FWD
}

void cuda_attention_tc_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                 const float *out, const float *lse, const float *q, const float *k, const float *v,
                                 int B, int T, int NH, int NKV, int hd, lomo_dtype dt) {
    if (B <= 0 || T <= 0) return;
    if (!t2_check(NH, NKV, hd, dt, "tc")) return;
#define BWD(E, HD) t2_backward<E, HD>(dq, dk, dv, scratch, dout, out, lse, q, k, v, B, T, NH, NKV)
    T2_DISPATCH(hd, dt, BWD);
#undef BWD
}

}   /* extern "C" */
