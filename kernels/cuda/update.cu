/*
 * update.cu: optimizer element math on the GPU: conversions to and from the
 * storage dtypes, norms, finiteness, rounding (nearest or stochastic), the
 * SGD/LOMO, AdaLomo and AdamW updates, and the benchmark weight fill.
 *
 * Everything here must agree with kernels/cpu bit for bit where the CPU's
 * result is defined by its order of operations. The CPU is compiled as ISO C
 * (-std=c17), so GCC never contracts a*b+c into an FMA there; nvcc does by
 * default, hence the explicit __fmul_rn/__fadd_rn/... intrinsics, which are
 * never contracted. Division and sqrt go through __fdiv_rn/__fsqrt_rn so a
 * -use_fast_math build cannot change them either.
 */
#include <math.h>
#include <stdint.h>
#include "cuda_ops.h"
#include "../../runtime/dtype.h"

#define THREADS 256
/* must equal cpu_sumsq's chunk: the per-chunk partials are then the very same doubles */
#define SUM_CHUNK 4096
#define SUM_BLOCK 32                      /* chunks (threads, one warp) per block: many blocks even for mid-size tensors */
#define SUM_TILE 32                       /* floats of each chunk staged through shared memory per step */
#define STAGE_FLOATS ((size_t)4 << 20)    /* upload/download staging: 16 MiB of f32 */
#define SCRATCH_SLOT 2

/* internal linkage: the other .cu files of the backend may use the same kernel names */
namespace {

/* ---- scalar conversions and stochastic rounding: runtime/dtype.h, shared with the CPU ---- */

__device__ __forceinline__ int finite_f32(float f) { return (__float_as_uint(f) & 0x7f800000u) != 0x7f800000u; }

__device__ __forceinline__ float load(const void *w, lomo_dtype dt, size_t i) {
    if (dt == LOMO_F32) return ((const float *)w)[i];
    if (dt == LOMO_BF16) return lomo_bf16_to_f32(((const uint16_t *)w)[i]);
    return lomo_f16_to_f32(((const uint16_t *)w)[i]);
}

/* seed 0: nearest even; else stochastic, the bits drawn from (seed, i) with i the tensor-wide index */
__device__ __forceinline__ void store(void *w, lomo_dtype dt, size_t i, float v, uint64_t seed) {
    if (dt == LOMO_F32) ((float *)w)[i] = v;
    else if (dt == LOMO_BF16) ((uint16_t *)w)[i] = seed ? lomo_sr_bf16(v, seed, i) : lomo_f32_to_bf16(v);
    else ((uint16_t *)w)[i] = seed ? lomo_sr_f16(v, seed, i) : lomo_f32_to_f16(v);
}

/* g' = clamp(g * gscale, +-clip) * coef, as update.c's prepare (NaN passes through the clamp) */
__device__ __forceinline__ float prepare(float g, float gscale, float clip_value, float coef) {
    g = __fmul_rn(g, gscale);
    if (clip_value > 0.0f) g = g > clip_value ? clip_value : g < -clip_value ? -clip_value : g;
    return __fmul_rn(g, coef);
}

/* w * (1 - lr*wd) - lr * g'; decay is computed here so no host compiler can contract it */
__device__ __forceinline__ float sgd_value(float w, float g, float lr, float wd, float gscale, float clip_value,
                                           float coef) {
    float decay = __fsub_rn(1.0f, __fmul_rn(lr, wd));
    return __fsub_rn(__fmul_rn(w, decay), __fmul_rn(lr, prepare(g, gscale, clip_value, coef)));
}

/* ---- kernels ---- */

__global__ void to_f32_kernel(float *out, const void *src, lomo_dtype dt, size_t n) {
    CUDA_GRID_STRIDE(i, n) out[i] = load(src, dt, i);
}

/* gate: NULL, or skip the whole rounding while it is raised */
__global__ void round_kernel(void *out, lomo_dtype dt, const float *src, size_t n, uint64_t seed, const int *gate) {
    if (cuda_gate_raised(gate)) return;
    CUDA_GRID_STRIDE(i, n) store(out, dt, i, src[i], seed);
}

/*
 * cpu_sumsq's partials exactly: thread t of block b sums chunk b*SUM_BLOCK+t
 * (SUM_CHUNK elements) sequentially in double, in index order. Tiles of
 * SUM_TILE floats per chunk go through shared memory so the global reads stay
 * coalesced although each thread walks its own contiguous chunk.
 * (double)x * x is exact, so the sum is the only rounding, as on the CPU.
 */
__global__ void sumsq_chunks_kernel(double *part, const void *x, lomo_dtype dt, size_t n, size_t nchunks) {
    __shared__ float tile[SUM_BLOCK][SUM_TILE + 1];   /* +1: conflict-free row reads */
    size_t nblocks = (nchunks + SUM_BLOCK - 1) / SUM_BLOCK;
    for (size_t b = blockIdx.x; b < nblocks; b += gridDim.x) {
        size_t c0 = b * SUM_BLOCK;
        double s = 0.0;
        for (int k0 = 0; k0 < SUM_CHUNK; k0 += SUM_TILE) {
            if (c0 * SUM_CHUNK + k0 >= n) break;   /* uniform over the block; the rest would add only zeros */
            for (int e = threadIdx.x; e < SUM_BLOCK * SUM_TILE; e += blockDim.x) {
                int r = e / SUM_TILE, c = e % SUM_TILE;
                size_t i = (c0 + r) * SUM_CHUNK + (size_t)k0 + c;
                tile[r][c] = i < n ? load(x, dt, i) : 0.0f;   /* s >= +0, so adding +0 changes nothing */
            }
            __syncthreads();
            for (int c = 0; c < SUM_TILE; c++) {
                double v = (double)tile[threadIdx.x][c];
                s = __dadd_rn(s, __dmul_rn(v, v));
            }
            __syncthreads();
        }
        if (c0 + threadIdx.x < nchunks) part[c0 + threadIdx.x] = s;
    }
}

/* out = sum of x[0..n) in double, strictly in index order (one block; thread 0 adds, the rest load) */
template <typename T>
__global__ void serial_sum_kernel(double *out, const T *x, size_t n) {
    __shared__ double tile[THREADS];
    double s = 0.0;
    for (size_t i0 = 0; i0 < n; i0 += THREADS) {
        size_t i = i0 + threadIdx.x;
        if (i < n) tile[threadIdx.x] = (double)x[i];
        __syncthreads();
        if (threadIdx.x == 0) {
            int m = n - i0 < THREADS ? (int)(n - i0) : THREADS;
            for (int k = 0; k < m; k++) s = __dadd_rn(s, tile[k]);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = s;
}

/*
 * Raises gate to tag + 1 if x [n] holds a NaN or inf and the gate is not raised
 * yet. Earlier checks are finished when this kernel starts (stream order), so
 * the gate keeps the first tag; within one kernel every writer offers the same.
 */
__global__ void check_finite_kernel(int *gate, const float *x, size_t n, int tag) {
    if (*gate) return;
    int bad = 0;
    if ((uintptr_t)x % 16 == 0) {
        size_t n4 = n / 4;
        const float4 *x4 = (const float4 *)x;
        CUDA_GRID_STRIDE(i, n4) {
            float4 v = x4[i];
            bad |= !finite_f32(v.x) | !finite_f32(v.y) | !finite_f32(v.z) | !finite_f32(v.w);
        }
        for (size_t i = 4 * n4 + (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
             i += (size_t)gridDim.x * blockDim.x)
            bad |= !finite_f32(x[i]);
    } else {
        CUDA_GRID_STRIDE(i, n) bad |= !finite_f32(x[i]);
    }
    if (bad) atomicCAS(gate, 0, tag + 1);
}

__global__ void raise_gate_kernel(int *gate, int tag) { atomicCAS(gate, 0, tag + 1); }

__global__ void sgd_kernel(void *w, lomo_dtype dt, const float *g, size_t n, float lr, float wd, float gscale,
                           float clip_value, float coef, uint64_t seed, const int *gate) {
    if (cuda_gate_raised(gate)) return;
    CUDA_GRID_STRIDE(i, n) store(w, dt, i, sgd_value(load(w, dt, i), g[i], lr, wd, gscale, clip_value, coef), seed);
}

/* one block per row of w [V, C]; rows not in `rows` see a zero gradient, as on the CPU */
__global__ void sgd_rows_all_kernel(void *w, lomo_dtype dt, const float *g, const int32_t *rows, int nrows, int V,
                                    int C, float lr, float wd, float gscale, float clip_value, float coef,
                                    uint64_t seed) {
    for (int r = blockIdx.x; r < V; r += gridDim.x) {
        int lo = 0, hi = nrows - 1, hit = -1;
        while (lo <= hi) {
            int mid = lo + (hi - lo) / 2, v = rows[mid];
            if (v == r) { hit = mid; break; }
            if (v < r) lo = mid + 1;
            else hi = mid - 1;
        }
        size_t base = (size_t)r * C;
        const float *gr = hit >= 0 ? g + (size_t)hit * C : NULL;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            float gv = gr ? gr[c] : 0.0f;
            store(w, dt, base + c, sgd_value(load(w, dt, base + c), gv, lr, wd, gscale, clip_value, coef), seed);
        }
    }
}

/* wd == 0: the CPU leaves unlisted rows untouched, so only the listed rows are visited */
__global__ void sgd_rows_listed_kernel(void *w, lomo_dtype dt, const float *g, const int32_t *rows, int nrows,
                                       int C, float lr, float wd, float gscale, float clip_value, float coef,
                                       uint64_t seed) {
    for (int k = blockIdx.x; k < nrows; k += gridDim.x) {
        size_t base = (size_t)rows[k] * C;
        const float *gr = g + (size_t)k * C;
        for (int c = threadIdx.x; c < C; c += blockDim.x)
            store(w, dt, base + c, sgd_value(load(w, dt, base + c), gr[c], lr, wd, gscale, clip_value, coef), seed);
    }
}

__global__ void rows_add_kernel(float *dst, const float *src, const int32_t *rows, size_t n, int C) {
    CUDA_GRID_STRIDE(e, n) {
        size_t i = e / (size_t)C, c = e % (size_t)C;
        size_t d = (size_t)rows[i] * C + c;
        dst[d] = __fadd_rn(dst[d], src[e]);
    }
}

__global__ void grad_prepare_kernel(float *g, size_t n, float gscale, float clip_value, float coef) {
    CUDA_GRID_STRIDE(i, n) g[i] = prepare(g[i], gscale, clip_value, coef);
}

__global__ void adamw_kernel(void *w, lomo_dtype dt, const float *g, float *m, float *v, size_t n, float lr, float wd,
                             float b1, float b2, float eps, float bc1, float bc2, uint64_t seed) {
    float decay = __fsub_rn(1.0f, __fmul_rn(lr, wd)), step = __fdiv_rn(lr, bc1), sbc2 = __fsqrt_rn(bc2);
    float ob1 = __fsub_rn(1.0f, b1), ob2 = __fsub_rn(1.0f, b2);
    CUDA_GRID_STRIDE(i, n) {
        float gi = g[i];
        float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(ob1, gi));
        float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(__fmul_rn(ob2, gi), gi));   /* ((1-b2)*g)*g, as C parses it */
        m[i] = mi;
        v[i] = vi;
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), sbc2), eps);
        store(w, dt, i, __fsub_rn(__fmul_rn(load(w, dt, i), decay), __fdiv_rn(__fmul_rn(step, mi), denom)), seed);
    }
}

/* a warp's mean of gi[j]^2 + eps1 over j < cols, in double (fixed lane split and butterfly): every lane has it */
__device__ __forceinline__ float warp_row_mean(const float *gi, int cols, double e1, int lane) {
    double s = 0.0;
    for (int j = lane; j < cols; j += 32) {
        double v = (double)gi[j];
        s = __dadd_rn(s, __dadd_rn(__dmul_rn(v, v), e1));
    }
    for (int off = 16; off > 0; off >>= 1) s = __dadd_rn(s, __shfl_xor_sync(0xffffffffu, s, off));
    return __double2float_rn(__ddiv_rn(s, (double)cols));
}

/* AdaLomo 2-D, rows: one warp per row; ema: row := beta*row + (1-beta)*mean, else row := mean (the parts' rmean) */
__global__ void adalomo_row_kernel(float *row, const float *g, int rows, int cols, float beta, float eps1, bool ema) {
    const int wpb = blockDim.x / 32, lane = threadIdx.x % 32;
    float ob = __fsub_rn(1.0f, beta);
    for (size_t i = (size_t)blockIdx.x * wpb + threadIdx.x / 32; i < (size_t)rows; i += (size_t)gridDim.x * wpb) {
        float mean = warp_row_mean(g + i * cols, cols, (double)eps1, lane);
        if (lane == 0) row[i] = ema ? __fadd_rn(__fmul_rn(beta, row[i]), __fmul_rn(ob, mean)) : mean;
    }
}

/* AdaLomo 2-D, columns: part[p, j] = sum over rows [p*rchunk, (p+1)*rchunk) of g^2 + eps1 (coalesced over j) */
__global__ void adalomo_colpart_kernel(double *part, const float *g, int rows, int cols, int rchunk, float eps1) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    int i0 = blockIdx.y * rchunk, i1 = i0 + rchunk < rows ? i0 + rchunk : rows;
    double e1 = (double)eps1, s = 0.0;
    for (int i = i0; i < i1; i++) {
        double v = (double)g[(size_t)i * cols + j];
        s = __dadd_rn(s, __dadd_rn(__dmul_rn(v, v), e1));
    }
    part[(size_t)blockIdx.y * cols + j] = s;
}

/* the partials summed in order of p, then the column EMA */
__global__ void adalomo_col_kernel(float *col, const double *part, int nparts, int rows, int cols, float beta) {
    float ob = __fsub_rn(1.0f, beta);
    CUDA_GRID_STRIDE(j, (size_t)cols) {
        double s = 0.0;
        for (int p = 0; p < nparts; p++) s = __dadd_rn(s, part[(size_t)p * cols + j]);
        col[j] = __fadd_rn(__fmul_rn(beta, col[j]), __fmul_rn(ob, __double2float_rn(__ddiv_rn(s, (double)rows))));
    }
}

/* the parts: colsum[j] carries on with a block's partials, in order of p */
__global__ void adalomo_colsum_kernel(double *colsum, const double *part, int nparts, int cols) {
    CUDA_GRID_STRIDE(j, (size_t)cols) {
        double s = colsum[j];
        for (int p = 0; p < nparts; p++) s = __dadd_rn(s, part[(size_t)p * cols + j]);
        colsum[j] = s;
    }
}

/* the parts' factors: the row EMA from rmean, the column EMA from colsum */
__global__ void adalomo_factors_kernel(float *row, float *col, const float *rmean, const double *colsum, int rows,
                                       int cols, float beta) {
    float ob = __fsub_rn(1.0f, beta);
    CUDA_GRID_STRIDE(i, (size_t)rows) row[i] = __fadd_rn(__fmul_rn(beta, row[i]), __fmul_rn(ob, rmean[i]));
    CUDA_GRID_STRIDE(j, (size_t)cols)
        col[j] = __fadd_rn(__fmul_rn(beta, col[j]), __fmul_rn(ob, __double2float_rn(__ddiv_rn(colsum[j], (double)rows))));
}

/* mean_row [1] = rs / rows as f32 */
__global__ void adalomo_mean_kernel(float *mean_row, const double *rs, int rows) {
    *mean_row = __double2float_rn(__ddiv_rn(*rs, (double)rows));
}

/* g[i, j] = g * (1 / sqrt(row[i] / mean_row)) / sqrt(col[j]) over the rows of g */
__device__ __forceinline__ void scale_rows(float *g, const float *row, const float *col, float mean_row, int rows,
                                           int cols) {
    for (size_t i = blockIdx.x; i < (size_t)rows; i += gridDim.x) {
        float ri = __fdiv_rn(1.0f, __fsqrt_rn(__fdiv_rn(row[i], mean_row)));
        float *gi = g + i * cols;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) gi[j] = __fdiv_rn(__fmul_rn(gi[j], ri), __fsqrt_rn(col[j]));
    }
}

/* the whole tensor: rs = sum of row (double), mean_row = rs / rows */
__global__ void adalomo_scale_kernel(float *g, const float *row, const float *col, const double *rs, int rows,
                                     int cols) {
    scale_rows(g, row, col, __double2float_rn(__ddiv_rn(*rs, (double)rows)), rows, cols);
}

/* the parts: a block of rows, mean_row [1] from adalomo_factors */
__global__ void adalomo_scale_part_kernel(float *g, const float *row, const float *col, const float *mean_row, int n,
                                          int cols) {
    scale_rows(g, row, col, *mean_row, n, cols);
}

/* AdaLomo 1-D: row is the full second moment */
__global__ void adalomo_1d_kernel(float *g, float *row, size_t n, float beta, float eps1) {
    float ob = __fsub_rn(1.0f, beta);
    CUDA_GRID_STRIDE(i, n) {
        float gi = g[i];
        float ri = __fadd_rn(__fmul_rn(beta, row[i]), __fmul_rn(ob, __fadd_rn(__fmul_rn(gi, gi), eps1)));
        row[i] = ri;
        g[i] = __fdiv_rn(gi, __fsqrt_rn(ri));
    }
}

__global__ void fill_uniform_kernel(void *w, lomo_dtype dt, size_t n, uint64_t seed, float scale) {
    CUDA_GRID_STRIDE(i, n) {
        uint64_t r = lomo_mix64(seed ^ ((uint64_t)i * 0x9e3779b97f4a7c15ull) ^ 0x5851f42d4c957f2dull);
        float u = __fmul_rn(__ull2float_rn(r >> 40), 1.0f / 16777216.0f);   /* [0, 1) with 24 bits, exact */
        store(w, dt, i, __fmul_rn(__fsub_rn(__fmul_rn(2.0f, u), 1.0f), scale), 0);
    }
}

}  /* namespace */

/* ---- host side ---- */

static unsigned grid_for(size_t n) { return cuda_blocks(n, THREADS); }
static unsigned grid_rows(size_t rows) { return (unsigned)(rows < 65536 ? rows : 65536); }

/* cpu_sumsq (dt f32) or adalomo.c's weights_sumsq (16-bit): the same double, bit for bit */
static double sumsq_dt(const void *x, lomo_dtype dt, size_t n) {
    if (n == 0) return 0.0;
    size_t nchunks = (n + SUM_CHUNK - 1) / SUM_CHUNK;
    double *scr = (double *)cuda_scratch(SCRATCH_SLOT, (nchunks + 1) * sizeof(double));
    if (!scr) return NAN;
    double *total = scr, *part = scr + 1;
    cudaStream_t st = cuda_stream();
    size_t nb = (nchunks + SUM_BLOCK - 1) / SUM_BLOCK;
    unsigned grid = (unsigned)(nb < 1048576 ? nb : 1048576);
    sumsq_chunks_kernel<<<grid, SUM_BLOCK, 0, st>>>(part, x, dt, n, nchunks);
    if (!CUDA_LAUNCHED("sumsq_chunks_kernel")) return NAN;
    serial_sum_kernel<double><<<1, THREADS, 0, st>>>(total, part, nchunks);
    if (!CUDA_LAUNCHED("sumsq serial_sum_kernel")) return NAN;
    double h = NAN;
    if (!cuda_ok(cudaMemcpyAsync(&h, total, sizeof h, cudaMemcpyDeviceToHost, st), "sumsq: copy to host")) return NAN;
    if (!cuda_ok(cudaStreamSynchronize(st), "sumsq: synchronize")) return NAN;
    return h;
}

extern "C" {

void cuda_to_f32(float *out, const void *src, lomo_dtype dt, size_t n) {
    if (n == 0) return;
    if (dt == LOMO_F32) {
        if ((const void *)out != src)
            cuda_ok(cudaMemcpyAsync(out, src, n * sizeof(float), cudaMemcpyDeviceToDevice, cuda_stream()),
                    "to_f32: copy");
        return;
    }
    to_f32_kernel<<<grid_for(n), THREADS, 0, cuda_stream()>>>(out, src, dt, n);
    CUDA_LAUNCHED("to_f32_kernel");
}

void cuda_from_f32(void *out, lomo_dtype dt, const float *src, size_t n) {
    if (n == 0) return;
    if (dt == LOMO_F32) {
        if (out != (const void *)src)
            cuda_ok(cudaMemcpyAsync(out, src, n * sizeof(float), cudaMemcpyDeviceToDevice, cuda_stream()),
                    "from_f32: copy");
        return;
    }
    round_kernel<<<grid_for(n), THREADS, 0, cuda_stream()>>>(out, dt, src, n, 0, NULL);
    CUDA_LAUNCHED("round_kernel (nearest)");
}

void cuda_upload_f32(void *out, lomo_dtype dt, const float *src_host, size_t n) {
    if (n == 0) return;
    cudaStream_t st = cuda_stream();
    if (dt == LOMO_F32) {
        if (cuda_ok(cudaMemcpyAsync(out, src_host, n * sizeof(float), cudaMemcpyHostToDevice, st), "upload_f32: copy"))
            cuda_ok(cudaStreamSynchronize(st), "upload_f32: synchronize");
        return;
    }
    size_t chunk = n < STAGE_FLOATS ? n : STAGE_FLOATS;
    float *stage = (float *)cuda_scratch(SCRATCH_SLOT, chunk * sizeof(float));
    if (!stage) return;
    /* stream order keeps the staging buffer from being overwritten before the kernel has read it */
    for (size_t i0 = 0; i0 < n; i0 += chunk) {
        size_t m = n - i0 < chunk ? n - i0 : chunk;
        if (!cuda_ok(cudaMemcpyAsync(stage, src_host + i0, m * sizeof(float), cudaMemcpyHostToDevice, st),
                     "upload_f32: copy"))
            return;
        round_kernel<<<grid_for(m), THREADS, 0, st>>>((char *)out + i0 * cuda_dtype_bytes(dt), dt, stage, m, 0, NULL);
        if (!CUDA_LAUNCHED("upload_f32: round_kernel")) return;
    }
    cuda_ok(cudaStreamSynchronize(st), "upload_f32: synchronize");
}

void cuda_download_f32(float *out_host, const void *src, lomo_dtype dt, size_t n) {
    if (n == 0) return;
    cudaStream_t st = cuda_stream();
    if (dt == LOMO_F32) {
        if (cuda_ok(cudaMemcpyAsync(out_host, src, n * sizeof(float), cudaMemcpyDeviceToHost, st),
                    "download_f32: copy"))
            cuda_ok(cudaStreamSynchronize(st), "download_f32: synchronize");
        return;
    }
    size_t chunk = n < STAGE_FLOATS ? n : STAGE_FLOATS;
    float *stage = (float *)cuda_scratch(SCRATCH_SLOT, chunk * sizeof(float));
    if (!stage) return;
    for (size_t i0 = 0; i0 < n; i0 += chunk) {
        size_t m = n - i0 < chunk ? n - i0 : chunk;
        to_f32_kernel<<<grid_for(m), THREADS, 0, st>>>(stage, (const char *)src + i0 * cuda_dtype_bytes(dt), dt, m);
        if (!CUDA_LAUNCHED("download_f32: to_f32_kernel")) return;
        if (!cuda_ok(cudaMemcpyAsync(out_host + i0, stage, m * sizeof(float), cudaMemcpyDeviceToHost, st),
                     "download_f32: copy"))
            return;
    }
    cuda_ok(cudaStreamSynchronize(st), "download_f32: synchronize");
}

double cuda_sumsq(const float *x, size_t n) { return sumsq_dt(x, LOMO_F32, n); }

void cuda_check_finite(int *gate, const float *x, size_t n, int tag) {
    if (!x) {
        raise_gate_kernel<<<1, 1, 0, cuda_stream()>>>(gate, tag);
        CUDA_LAUNCHED("raise_gate_kernel");
        return;
    }
    if (n == 0 || cuda_operand_check(gate, x, n, tag)) return;
    check_finite_kernel<<<grid_for((n + 3) / 4), THREADS, 0, cuda_stream()>>>(gate, x, n, tag);
    CUDA_LAUNCHED("check_finite_kernel");
}

int cuda_gate_read(const int *gate) {
    int h = 0;
    cudaStream_t st = cuda_stream();
    /* a failed read says raised: updates stop rather than run unchecked; the error is recorded */
    if (!cuda_ok(cudaMemcpyAsync(&h, gate, sizeof h, cudaMemcpyDeviceToHost, st), "gate_read: copy to host") ||
        !cuda_ok(cudaStreamSynchronize(st), "gate_read: synchronize"))
        return 1;
    return h;
}

void cuda_round_from_f32(void *out, lomo_dtype dt, const float *src, size_t n, uint64_t sr_seed) {
    cuda_round_from_f32_gated(out, dt, src, n, sr_seed, NULL);
}

void cuda_round_from_f32_gated(void *out, lomo_dtype dt, const float *src, size_t n, uint64_t sr_seed,
                               const int *gate) {
    if (!gate && (!sr_seed || dt == LOMO_F32)) {
        cuda_from_f32(out, dt, src, n);
        return;
    }
    if (n == 0) return;
    round_kernel<<<grid_for(n), THREADS, 0, cuda_stream()>>>(out, dt, src, n, sr_seed, gate);
    CUDA_LAUNCHED("round_kernel (gated or stochastic)");
}

void cuda_sgd_update(void *w, lomo_dtype dt, const float *g, size_t n, float lr, float wd, float gscale,
                     float clip_value, float coef, uint64_t sr_seed, const int *gate) {
    if (n == 0) return;
    sgd_kernel<<<grid_for(n), THREADS, 0, cuda_stream()>>>(w, dt, g, n, lr, wd, gscale, clip_value, coef, sr_seed,
                                                           gate);
    CUDA_LAUNCHED("sgd_kernel");
}

void cuda_sgd_update_rows(void *w, lomo_dtype dt, const float *g, const int32_t *rows, int nrows, int V, int C,
                          float lr, float wd, float gscale, float clip_value, float coef, uint64_t sr_seed) {
    if (C <= 0) return;
    if (wd != 0.0f) {
        if (V <= 0) return;
        sgd_rows_all_kernel<<<grid_rows((size_t)V), THREADS, 0, cuda_stream()>>>(
            w, dt, g, rows, nrows > 0 ? nrows : 0, V, C, lr, wd, gscale, clip_value, coef, sr_seed);
        CUDA_LAUNCHED("sgd_rows_all_kernel");
    } else {
        if (nrows <= 0) return;
        sgd_rows_listed_kernel<<<grid_rows((size_t)nrows), THREADS, 0, cuda_stream()>>>(
            w, dt, g, rows, nrows, C, lr, wd, gscale, clip_value, coef, sr_seed);
        CUDA_LAUNCHED("sgd_rows_listed_kernel");
    }
}

void cuda_rows_add(float *dst, const float *src, const int32_t *rows, int nrows, int C) {
    if (nrows <= 0 || C <= 0) return;
    size_t n = (size_t)nrows * C;
    rows_add_kernel<<<grid_for(n), THREADS, 0, cuda_stream()>>>(dst, src, rows, n, C);
    CUDA_LAUNCHED("rows_add_kernel");
}

void cuda_grad_prepare(float *g, size_t n, float gscale, float clip_value, float coef) {
    if (n == 0) return;
    grad_prepare_kernel<<<grid_for(n), THREADS, 0, cuda_stream()>>>(g, n, gscale, clip_value, coef);
    CUDA_LAUNCHED("grad_prepare_kernel");
}

}  /* extern "C" */

/* column partials over row chunks of [rows, cols]: enough threads to fill the GPU, a bounded scratch */
static void col_parts(int rows, int cols, int *nparts, int *rchunk) {
    int np = (1 << 18) / cols;
    if (np < 1) np = 1;
    if (np > 4096) np = 4096;
    if (np > rows) np = rows;
    *rchunk = (rows + np - 1) / np;
    *nparts = (rows + *rchunk - 1) / *rchunk;
}

extern "C" {

void cuda_adalomo_update(void *w, lomo_dtype dt, float *g, float *row, float *col, int rows, int cols, float beta,
                         float lr, float wd, float eps1, float eps2, float clip_threshold, uint64_t sr_seed) {
    if (rows <= 0) return;
    size_t n = (size_t)rows * (cols > 0 ? cols : 1);
    cudaStream_t st = cuda_stream();
    int nparts = 0, rchunk = 0;
    if (cols > 0) col_parts(rows, cols, &nparts, &rchunk);
    /* one request big enough for the two sumsq's below too: the slot cannot fail or regrow mid-update,
     * so no half-done update is ever applied with a NaN scale from a failed allocation */
    size_t need = (1 + (size_t)nparts * (cols > 0 ? cols : 0)) * sizeof(double);
    size_t need_sum = ((n + SUM_CHUNK - 1) / SUM_CHUNK + 1) * sizeof(double);
    double *scr = (double *)cuda_scratch(SCRATCH_SLOT, need > need_sum ? need : need_sum);
    if (!scr) return;
    if (cols > 0) {
        double *rs = scr, *part = scr + 1;

        adalomo_row_kernel<<<grid_rows(((size_t)rows + THREADS / 32 - 1) / (THREADS / 32)), THREADS, 0, st>>>(
            row, g, rows, cols, beta, eps1, true);
        if (!CUDA_LAUNCHED("adalomo_row_kernel")) return;
        dim3 pgrid((unsigned)((cols + THREADS - 1) / THREADS), (unsigned)nparts);
        adalomo_colpart_kernel<<<pgrid, THREADS, 0, st>>>(part, g, rows, cols, rchunk, eps1);
        if (!CUDA_LAUNCHED("adalomo_colpart_kernel")) return;
        adalomo_col_kernel<<<grid_for((size_t)cols), THREADS, 0, st>>>(col, part, nparts, rows, cols, beta);
        if (!CUDA_LAUNCHED("adalomo_col_kernel")) return;
        /* mean of the updated row factor, summed in index order like the CPU */
        serial_sum_kernel<float><<<1, THREADS, 0, st>>>(rs, row, (size_t)rows);
        if (!CUDA_LAUNCHED("adalomo serial_sum_kernel")) return;
        adalomo_scale_kernel<<<grid_rows((size_t)rows), THREADS, 0, st>>>(g, row, col, rs, rows, cols);
        if (!CUDA_LAUNCHED("adalomo_scale_kernel")) return;
    } else {
        adalomo_1d_kernel<<<grid_for(n), THREADS, 0, st>>>(g, row, n, beta, eps1);
        if (!CUDA_LAUNCHED("adalomo_1d_kernel")) return;
    }
    /* the same host scalar math as adalomo.c, on the same doubles */
    double su = sumsq_dt(g, LOMO_F32, n);
    double sw = sumsq_dt(w, dt, n);
    float lr_t, inv_d;
    lomo_adalomo_scalars(&lr_t, &inv_d, su, sw, n, lr, eps2, clip_threshold);
    cuda_sgd_update(w, dt, g, n, lr_t, wd, inv_d, 0.0f, 1.0f, sr_seed, NULL);
}

void cuda_adalomo_rows(float *rmean, double *colsum, const float *g, int n, int cols, float eps1) {
    if (n <= 0 || cols <= 0) return;
    cudaStream_t st = cuda_stream();
    int nparts, rchunk;
    col_parts(n, cols, &nparts, &rchunk);
    double *part = (double *)cuda_scratch(SCRATCH_SLOT, (size_t)nparts * cols * sizeof(double));
    if (!part) return;
    adalomo_row_kernel<<<grid_rows(((size_t)n + THREADS / 32 - 1) / (THREADS / 32)), THREADS, 0, st>>>(
        rmean, g, n, cols, 0.0f, eps1, false);
    if (!CUDA_LAUNCHED("adalomo_row_kernel (parts)")) return;
    dim3 pgrid((unsigned)((cols + THREADS - 1) / THREADS), (unsigned)nparts);
    adalomo_colpart_kernel<<<pgrid, THREADS, 0, st>>>(part, g, n, cols, rchunk, eps1);
    if (!CUDA_LAUNCHED("adalomo_colpart_kernel (parts)")) return;
    adalomo_colsum_kernel<<<grid_for((size_t)cols), THREADS, 0, st>>>(colsum, part, nparts, cols);
    CUDA_LAUNCHED("adalomo_colsum_kernel");
}

void cuda_adalomo_factors(float *row, float *col, float *mean_row, const float *rmean, const double *colsum, int rows,
                          int cols, float beta) {
    if (rows <= 0) return;
    cudaStream_t st = cuda_stream();
    double *rs = (double *)cuda_scratch(SCRATCH_SLOT, sizeof(double));
    if (!rs) return;
    adalomo_factors_kernel<<<grid_for((size_t)(rows > cols ? rows : cols)), THREADS, 0, st>>>(row, col, rmean, colsum,
                                                                                              rows, cols, beta);
    if (!CUDA_LAUNCHED("adalomo_factors_kernel")) return;
    serial_sum_kernel<float><<<1, THREADS, 0, st>>>(rs, row, (size_t)rows);   /* in index order, like the CPU */
    if (!CUDA_LAUNCHED("adalomo factors serial_sum_kernel")) return;
    adalomo_mean_kernel<<<1, 1, 0, st>>>(mean_row, rs, rows);
    CUDA_LAUNCHED("adalomo_mean_kernel");
}

void cuda_adalomo_scale(float *g, const float *row, const float *col, const float *mean_row, int n, int cols) {
    if (n <= 0 || cols <= 0) return;
    adalomo_scale_part_kernel<<<grid_rows((size_t)n), THREADS, 0, cuda_stream()>>>(g, row, col, mean_row, n, cols);
    CUDA_LAUNCHED("adalomo_scale_part_kernel");
}

double cuda_weights_sumsq(const void *w, lomo_dtype dt, size_t n) { return sumsq_dt(w, dt, n); }

void cuda_adamw_update(void *w, lomo_dtype dt, const float *g, float *m, float *v, size_t n, float lr, float wd,
                       float b1, float b2, float eps, float bc1, float bc2, uint64_t sr_seed) {
    if (n == 0) return;
    adamw_kernel<<<grid_for(n), THREADS, 0, cuda_stream()>>>(w, dt, g, m, v, n, lr, wd, b1, b2, eps, bc1, bc2,
                                                              sr_seed);
    CUDA_LAUNCHED("adamw_kernel");
}

void cuda_fill_uniform(void *w, lomo_dtype dt, size_t n, uint64_t seed, float scale) {
    if (n == 0) return;
    fill_uniform_kernel<<<grid_for(n), THREADS, 0, cuda_stream()>>>(w, dt, n, seed, scale);
    CUDA_LAUNCHED("fill_uniform_kernel");
}

}  /* extern "C" */
