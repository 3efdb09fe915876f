/*
 * ops.cu: the elementwise and row-wise ops of the CUDA backend: embedding,
 * RMSNorm, RoPE, SwiGLU, residual add, cross-entropy. Each follows its CPU
 * counterpart in kernels/cpu/ (the reference) operation for operation; sums
 * that the CPU takes in double are taken in double here too, and every
 * reduction has a fixed order, so results are the same from run to run.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include "cuda_ops.h"

#define IGNORE_INDEX (-100)

__device__ __forceinline__ float load_w(const void *w, lomo_dtype dt, size_t i) {
    if (dt == LOMO_F32) return ((const float *)w)[i];
    if (dt == LOMO_BF16) return __uint_as_float((uint32_t)((const uint16_t *)w)[i] << 16);
    return __half2float(((const __half *)w)[i]);
}

/* Block-wide sum in double; every thread gets the result. blockDim.x is a multiple of 32, <= 1024. */
__device__ double block_sum(double v) {
    __shared__ double part[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();   /* part[] may still be read from a previous call */
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = lane < nw ? part[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ float block_max(float v) {
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = lane < nw ? part[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* The vectorized kernels below read and write float4: n (a row, or a tensor) a multiple of 4 floats, on
 * 16-byte boundaries. */
static bool vec4_ok(size_t n, const void *a, const void *b, const void *c) {
    return n % 4 == 0 && (uintptr_t)a % 16 == 0 && (uintptr_t)b % 16 == 0 && (uintptr_t)c % 16 == 0;
}

/* ---- embedding ---- */

__global__ void embedding_forward_kernel(float *out, const int32_t *tokens, const void *wte, lomo_dtype dt, int BT,
                                         int C) {
    size_t n = (size_t)BT * C;
    CUDA_GRID_STRIDE(i, n) {
        size_t row = i / C, c = i % C;
        out[i] = load_w(wte, dt, (size_t)tokens[row] * C + c);
    }
}

void cuda_embedding_forward(float *out, const int32_t *tokens, const void *wte, lomo_dtype dt, int BT, int C) {
    size_t n = (size_t)BT * C;
    if (!n) return;
    embedding_forward_kernel<<<cuda_blocks(n, 256), 256, 0, cuda_stream()>>>(out, tokens, wte, dt, BT, C);
    CUDA_LAUNCHED("embedding forward");
}

/* One thread per column walks the rows in order: repeated tokens sum deterministically, no atomics. */
__global__ void embedding_backward_kernel(float *dwte, const float *dout, const int32_t *tokens, int BT, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (int i = 0; i < BT; i++) dwte[(size_t)tokens[i] * C + c] += dout[(size_t)i * C + c];
}

void cuda_embedding_backward(float *dwte, const float *dout, const int32_t *tokens, int BT, int C) {
    if (!BT || !C) return;
    embedding_backward_kernel<<<(C + 127) / 128, 128, 0, cuda_stream()>>>(dwte, dout, tokens, BT, C);
    CUDA_LAUNCHED("embedding backward");
}

/* out [N, n] = in [N, V] at columns cols: a thread per output element, consecutive threads along a row */
__global__ void gather_cols_kernel(float *out, const float *in, const int32_t *cols, int V, int n, size_t total) {
    CUDA_GRID_STRIDE(e, total) {
        size_t i = e / (size_t)n, j = e % (size_t)n;
        out[e] = in[i * V + cols[j]];
    }
}

void cuda_gather_cols(float *out, const float *in, const int32_t *cols, int N, int V, int n) {
    size_t total = (size_t)N * n;
    if (!total) return;
    gather_cols_kernel<<<cuda_blocks(total, 256), 256, 0, cuda_stream()>>>(out, in, cols, V, n, total);
    CUDA_LAUNCHED("gather columns");
}

/* ---- RMSNorm: one block per row ---- */

__global__ void rmsnorm_forward_kernel(float *out, float *rstd, const float *inp, const float *w, int C, float eps) {
    const float *x = inp + (size_t)blockIdx.x * C;
    float *o = out + (size_t)blockIdx.x * C;
    double ss = 0.0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) ss += (double)x[c] * x[c];
    ss = block_sum(ss);
    float r = (float)(1.0 / sqrt(ss / C + (double)eps));
    for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = x[c] * r * w[c];
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
}

/* the same, four columns a thread (C % 4 == 0, rows 16-byte aligned): the same products, per element */
__global__ void rmsnorm_forward4_kernel(float *out, float *rstd, const float *inp, const float *w, int C, float eps) {
    const float4 *x = (const float4 *)(inp + (size_t)blockIdx.x * C), *w4 = (const float4 *)w;
    float4 *o = (float4 *)(out + (size_t)blockIdx.x * C);
    int C4 = C / 4;
    double ss = 0.0;
    for (int c = threadIdx.x; c < C4; c += blockDim.x) {
        float4 v = x[c];
        ss += (double)v.x * v.x + (double)v.y * v.y + (double)v.z * v.z + (double)v.w * v.w;
    }
    ss = block_sum(ss);
    float r = (float)(1.0 / sqrt(ss / C + (double)eps));
    for (int c = threadIdx.x; c < C4; c += blockDim.x) {
        float4 v = x[c], g = w4[c];
        o[c] = make_float4(v.x * r * g.x, v.y * r * g.y, v.z * r * g.z, v.w * r * g.w);
    }
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
}

void cuda_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int BT, int C, float eps) {
    if (!BT) return;
    if (vec4_ok(C, out, inp, w))
        rmsnorm_forward4_kernel<<<BT, 256, 0, cuda_stream()>>>(out, rstd, inp, w, C, eps);
    else
        rmsnorm_forward_kernel<<<BT, 256, 0, cuda_stream()>>>(out, rstd, inp, w, C, eps);
    CUDA_LAUNCHED("rmsnorm forward");
}

__global__ void rmsnorm_backward_dx_kernel(float *dinp, const float *dout, const float *inp, const float *w,
                                           const float *rstd, int C) {
    size_t base = (size_t)blockIdx.x * C;
    const float *x = inp + base, *g = dout + base;
    float *dx = dinp + base;
    float r = rstd[blockIdx.x];
    double dot = 0.0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dot += (double)(g[c] * w[c]) * (x[c] * r);
    dot = block_sum(dot);
    float m = (float)(dot / C);
    for (int c = threadIdx.x; c < C; c += blockDim.x) dx[c] += r * (g[c] * w[c] - x[c] * r * m);
}

__device__ __forceinline__ double rms_dot(float g, float w, float x, float r) { return (double)(g * w) * (x * r); }
__device__ __forceinline__ float rms_dx(float g, float w, float x, float r, float m) { return r * (g * w - x * r * m); }

/* four columns a thread, as rmsnorm_forward4_kernel */
__global__ void rmsnorm_backward_dx4_kernel(float *dinp, const float *dout, const float *inp, const float *w,
                                            const float *rstd, int C) {
    size_t base = (size_t)blockIdx.x * C;
    const float4 *x = (const float4 *)(inp + base), *g = (const float4 *)(dout + base), *w4 = (const float4 *)w;
    float4 *dx = (float4 *)(dinp + base);
    float r = rstd[blockIdx.x];
    int C4 = C / 4;
    double dot = 0.0;
    for (int c = threadIdx.x; c < C4; c += blockDim.x) {
        float4 a = g[c], b = w4[c], v = x[c];
        dot += rms_dot(a.x, b.x, v.x, r) + rms_dot(a.y, b.y, v.y, r) + rms_dot(a.z, b.z, v.z, r) +
               rms_dot(a.w, b.w, v.w, r);
    }
    dot = block_sum(dot);
    float m = (float)(dot / C);
    for (int c = threadIdx.x; c < C4; c += blockDim.x) {
        float4 a = g[c], b = w4[c], v = x[c], d = dx[c];
        d.x += rms_dx(a.x, b.x, v.x, r, m), d.y += rms_dx(a.y, b.y, v.y, r, m);
        d.z += rms_dx(a.z, b.z, v.z, r, m), d.w += rms_dx(a.w, b.w, v.w, r, m);
        dx[c] = d;
    }
}

/*
 * dw in two fixed-order stages, deterministic: partial sums of column c over
 * chunks of DW_ROWS rows (blockIdx.y picks the chunk), then each column adds
 * its chunks in order. One pass over all rows per column would leave the GPU
 * nearly idle for large batches.
 */
#define DW_ROWS 64
__global__ void rmsnorm_dw_partial_kernel(float *part, const float *dout, const float *inp, const float *rstd, int BT,
                                          int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int i0 = blockIdx.y * DW_ROWS, i1 = i0 + DW_ROWS < BT ? i0 + DW_ROWS : BT;
    float acc = 0.0f;
    for (int i = i0; i < i1; i++) acc += dout[(size_t)i * C + c] * inp[(size_t)i * C + c] * rstd[i];
    part[(size_t)blockIdx.y * C + c] = acc;
}

__global__ void rmsnorm_dw_sum_kernel(float *dw, const float *part, int nchunks, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = 0.0f;
    for (int k = 0; k < nchunks; k++) acc += part[(size_t)k * C + c];
    dw[c] += acc;
}

void cuda_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                           const float *rstd, int BT, int C) {
    if (!BT) return;
    if (vec4_ok(C, dinp, dout, inp) && (uintptr_t)w % 16 == 0)
        rmsnorm_backward_dx4_kernel<<<BT, 256, 0, cuda_stream()>>>(dinp, dout, inp, w, rstd, C);
    else
        rmsnorm_backward_dx_kernel<<<BT, 256, 0, cuda_stream()>>>(dinp, dout, inp, w, rstd, C);
    CUDA_LAUNCHED("rmsnorm backward (input)");
    int nchunks = (BT + DW_ROWS - 1) / DW_ROWS;
    float *part = (float *)cuda_scratch(1, (size_t)nchunks * C * sizeof(float));
    if (!part) return;
    rmsnorm_dw_partial_kernel<<<dim3((C + 127) / 128, nchunks), 128, 0, cuda_stream()>>>(part, dout, inp, rstd, BT, C);
    CUDA_LAUNCHED("rmsnorm backward (weight, partial sums)");
    rmsnorm_dw_sum_kernel<<<(C + 127) / 128, 128, 0, cuda_stream()>>>(dw, part, nchunks, C);
    CUDA_LAUNCHED("rmsnorm backward (weight, sum)");
}

/* ---- RoPE, rotate-half pairs (j, j + hd/2), in place ---- */

__global__ void rope_kernel(float *x, const float *cosv, const float *sinv, int B, int T, int H, int hd,
                            int pos_offset, float sgn) {
    int half = hd / 2;
    size_t n = (size_t)B * T * H * half;
    CUDA_GRID_STRIDE(i, n) {
        int j = (int)(i % half);
        size_t vec = i / half;                  /* (b, t, h) */
        int t = (int)((vec / H) % T);
        float *v = x + vec * hd;
        size_t tab = (size_t)(pos_offset + t) * half + j;
        float c = cosv[tab], sn = sgn * sinv[tab];
        float a = v[j], bb = v[j + half];
        v[j] = a * c - bb * sn;
        v[j + half] = bb * c + a * sn;
    }
}

/*
 * Four pairs a thread (half % 4 == 0, tables and x 16-byte aligned), indices in
 * 32 bits (n4 < 2^32): 64-bit divisions cost more than the rotation itself.
 */
__global__ void rope4_kernel(float *x, const float *cosv, const float *sinv, unsigned n4, unsigned half4, unsigned H,
                             unsigned T, int pos_offset, float sgn) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += gridDim.x * blockDim.x) {
        unsigned j = (i % half4) * 4, vec = i / half4, t = (vec / H) % T, half = half4 * 4;
        float *v = x + (size_t)vec * 2 * half;
        size_t tab = (size_t)(pos_offset + (int)t) * half + j;
        float4 c = *(const float4 *)(cosv + tab), sn = *(const float4 *)(sinv + tab);
        float4 a = *(float4 *)(v + j), b = *(float4 *)(v + j + half);
        sn.x *= sgn, sn.y *= sgn, sn.z *= sgn, sn.w *= sgn;
        *(float4 *)(v + j) = make_float4(a.x * c.x - b.x * sn.x, a.y * c.y - b.y * sn.y, a.z * c.z - b.z * sn.z,
                                         a.w * c.w - b.w * sn.w);
        *(float4 *)(v + j + half) = make_float4(b.x * c.x + a.x * sn.x, b.y * c.y + a.y * sn.y,
                                                b.z * c.z + a.z * sn.z, b.w * c.w + a.w * sn.w);
    }
}

void cuda_rope(float *x, const float *cos, const float *sin, int B, int T, int H, int hd, int pos_offset,
               int inverse) {
    size_t n = (size_t)B * T * H * (hd / 2);
    if (!n) return;
    float sgn = inverse ? -1.0f : 1.0f;
    if (n / 4 < 0xffffffffu && vec4_ok((size_t)hd / 2, x, cos, sin)) {
        unsigned n4 = (unsigned)(n / 4);
        rope4_kernel<<<cuda_blocks(n4, 256), 256, 0, cuda_stream()>>>(x, cos, sin, n4, (unsigned)(hd / 8),
                                                                      (unsigned)H, (unsigned)T, pos_offset, sgn);
    } else {
        rope_kernel<<<cuda_blocks(n, 256), 256, 0, cuda_stream()>>>(x, cos, sin, B, T, H, hd, pos_offset, sgn);
    }
    CUDA_LAUNCHED("rope");
}

/* ---- SwiGLU and the residual add ---- */

__device__ __forceinline__ float swiglu(float g, float u) { return g / (1.0f + expf(-g)) * u; }

__global__ void swiglu_forward_kernel(float *out, const float *gate, const float *up, size_t n) {
    CUDA_GRID_STRIDE(i, n)
        out[i] = swiglu(gate[i], up[i]);
}

__global__ void swiglu_forward4_kernel(float4 *out, const float4 *gate, const float4 *up, size_t n4) {
    CUDA_GRID_STRIDE(i, n4) {
        float4 g = gate[i], u = up[i];
        out[i] = make_float4(swiglu(g.x, u.x), swiglu(g.y, u.y), swiglu(g.z, u.z), swiglu(g.w, u.w));
    }
}

void cuda_swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    if (!n) return;
    if (vec4_ok(n, out, gate, up))
        swiglu_forward4_kernel<<<cuda_blocks(n / 4, 256), 256, 0, cuda_stream()>>>(
            (float4 *)out, (const float4 *)gate, (const float4 *)up, n / 4);
    else
        swiglu_forward_kernel<<<cuda_blocks(n, 256), 256, 0, cuda_stream()>>>(out, gate, up, n);
    CUDA_LAUNCHED("swiglu forward");
}

/* d(silu(g) u) for one element: writes dgate, dup after reading d */
__device__ __forceinline__ void swiglu_grad(float *dg, float *du, float d, float g, float u) {
    float s = 1.0f / (1.0f + expf(-g));
    *dg = d * u * s * (1.0f + g * (1.0f - s));
    *du = d * g * s;
}

/* dgate may alias dout: each element's dout is read before dgate is written */
__global__ void swiglu_backward_kernel(float *dgate, float *dup, const float *dout, const float *gate,
                                       const float *up, size_t n) {
    CUDA_GRID_STRIDE(i, n) {
        float dg, du;
        swiglu_grad(&dg, &du, dout[i], gate[i], up[i]);
        dgate[i] = dg, dup[i] = du;
    }
}

__global__ void swiglu_backward4_kernel(float4 *dgate, float4 *dup, const float4 *dout, const float4 *gate,
                                        const float4 *up, size_t n4) {
    CUDA_GRID_STRIDE(i, n4) {
        float4 d = dout[i], g = gate[i], u = up[i], a, b;
        swiglu_grad(&a.x, &b.x, d.x, g.x, u.x), swiglu_grad(&a.y, &b.y, d.y, g.y, u.y);
        swiglu_grad(&a.z, &b.z, d.z, g.z, u.z), swiglu_grad(&a.w, &b.w, d.w, g.w, u.w);
        dgate[i] = a, dup[i] = b;
    }
}

void cuda_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                          size_t n) {
    if (!n) return;
    if (vec4_ok(n, dgate, dup, dout) && vec4_ok(n, gate, up, up))
        swiglu_backward4_kernel<<<cuda_blocks(n / 4, 256), 256, 0, cuda_stream()>>>(
            (float4 *)dgate, (float4 *)dup, (const float4 *)dout, (const float4 *)gate, (const float4 *)up, n / 4);
    else
        swiglu_backward_kernel<<<cuda_blocks(n, 256), 256, 0, cuda_stream()>>>(dgate, dup, dout, gate, up, n);
    CUDA_LAUNCHED("swiglu backward");
}

__global__ void add_kernel(float *a, const float *b, size_t n) {
    CUDA_GRID_STRIDE(i, n)
        a[i] += b[i];
}

__global__ void add4_kernel(float4 *a, const float4 *b, size_t n4) {
    CUDA_GRID_STRIDE(i, n4) {
        float4 x = a[i], y = b[i];
        a[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
    }
}

void cuda_add_inplace(float *a, const float *b, size_t n) {
    if (!n) return;
    if (vec4_ok(n, a, b, b))
        add4_kernel<<<cuda_blocks(n / 4, 256), 256, 0, cuda_stream()>>>((float4 *)a, (const float4 *)b, n / 4);
    else
        add_kernel<<<cuda_blocks(n, 256), 256, 0, cuda_stream()>>>(a, b, n);
    CUDA_LAUNCHED("residual add");
}

/* ---- cross-entropy: one block per row; only the log-sum-exp is kept, no probability tensor ---- */

/* log(exp(a) + exp(b)) in double, exact when either is -inf (kernels/cpu/crossentropy.c) */
__device__ float log_add_exp(float a, float b) {
    float mx = fmaxf(a, b);
    if (mx == -INFINITY) return mx;
    return mx + (float)log(exp((double)(a - mx)) + exp((double)(b - mx)));
}

/* one block a row; the chunk's columns v0..v0+n-1 of the vocabulary [0, V) (backend.h) */
__global__ void crossentropy_forward_kernel(float *losses, float *lse, const float *logits, const int32_t *targets,
                                            int n, int v0, int V) {
    const float *z = logits + (size_t)blockIdx.x * n;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < n; j += blockDim.x) mx = fmaxf(mx, z[j]);
    mx = block_max(mx);
    double s = 0.0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) s += exp((double)(z[j] - mx));
    s = block_sum(s);
    if (threadIdx.x == 0) {
        int i = blockIdx.x, target = targets[i], t = target - v0;
        float l = mx + (float)log(s);
        /* losses carries -z[target] until the last chunk adds the log-sum-exp */
        float picked = t >= 0 && t < n ? -z[t] : 0.0f;
        float all = v0 == 0 ? l : log_add_exp(lse[i], l), part = v0 == 0 ? picked : losses[i] + picked;
        lse[i] = all;
        losses[i] = v0 + n != V ? part : target == IGNORE_INDEX ? 0.0f : all + part;
    }
}

void cuda_crossentropy_forward(float *losses, float *lse, const float *logits, const int32_t *targets, int N,
                               int n, int v0, int V) {
    if (!N) return;
    crossentropy_forward_kernel<<<N, 512, 0, cuda_stream()>>>(losses, lse, logits, targets, n, v0, V);
    CUDA_LAUNCHED("cross-entropy forward");
}

/* in place allowed: each element reads its logit, then writes its gradient */
__global__ void crossentropy_backward_kernel(float *dlogits, const float *logits, const float *lse,
                                             const int32_t *targets, float dloss, int n, int v0) {
    size_t base = (size_t)blockIdx.x * n;
    int target = targets[blockIdx.x], t = target - v0;
    float l = lse[blockIdx.x];
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float d = target == IGNORE_INDEX ? 0.0f : dloss * expf(logits[base + j] - l);
        if (j == t) d -= dloss;
        dlogits[base + j] = d;
    }
}

void cuda_crossentropy_backward(float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                                float dloss, int N, int n, int v0) {
    if (!N) return;
    crossentropy_backward_kernel<<<N, 512, 0, cuda_stream()>>>(dlogits, logits, lse, targets, dloss, n, v0);
    CUDA_LAUNCHED("cross-entropy backward");
}
