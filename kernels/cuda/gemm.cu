/*
 * gemm.cu: the CUDA backend's matrix products, all through cuBLAS.
 *
 * Activations are f32 [rows, cols] row-major; cuBLAS is column-major, so a
 * row-major X [R, C] is passed as the column-major X^T [C, R] (ld = C) and
 * each product is written for the transposes. f32 weights use true f32
 * products (CUBLAS_COMPUTE_32F, no TF32) so the backend can be checked against
 * the CPU. 16-bit weights run on the tensor cores: the f32 activation operand
 * is rounded to the weight's dtype in a scratch buffer and the product
 * accumulates in f32 (what mixed-precision training does), so no f32 copy of
 * any weight is ever made. The LOMO update of a 16-bit weight is one GEMM whose
 * C is the weight itself: w = beta*w + alpha*dout^T inp, computed in f32 and
 * rounded once to storage by cuBLAS.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "cuda_ops.h"

static cudaDataType_t cuda_type(lomo_dtype dt) {
    return dt == LOMO_F32 ? CUDA_R_32F : dt == LOMO_BF16 ? CUDA_R_16BF : CUDA_R_16F;
}

/* alpha, beta of a gated update: (-0, 1) while the gate is raised, so C = 1*C + (-0)*0 keeps every bit of C */
__global__ void gate_scalars_kernel(float *ab, const int *gate, float alpha, float beta) {
    bool z = cuda_gate_raised(gate);
    ab[0] = z ? -0.0f : alpha;
    ab[1] = z ? 1.0f : beta;
}

/* column-major C [m, n] = alpha * op(A) op(B) + beta * C, types per operand, f32 accumulation */
static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const void *A,
                 cudaDataType_t at, int lda, const void *B, cudaDataType_t bt, int ldb, float beta, void *C,
                 cudaDataType_t ct, int ldc, const char *what) {
    if (!m || !n) return;
    cublas_ok(cublasGemmEx(cuda_blas(), ta, tb, m, n, k, &alpha, A, at, lda, B, bt, ldb, &beta, C, ct, ldc,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              what);
}

/* gemm with alpha, beta read from device memory ab[0], ab[1] */
static void gemm_dev_scalars(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *ab,
                             const void *A, cudaDataType_t at, int lda, const void *B, cudaDataType_t bt, int ldb,
                             void *C, cudaDataType_t ct, int ldc, const char *what) {
    if (!m || !n) return;
    cublasHandle_t h = cuda_blas();
    if (!cublas_ok(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_DEVICE), what)) return;
    cublas_ok(cublasGemmEx(h, ta, tb, m, n, k, ab, A, at, lda, B, bt, ldb, ab + 1, C, ct, ldc, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT),
              what);
    cublas_ok(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST), what);
}

/* out [BT, OC] = inp [BT, IC] @ w^T: out^T = w^T^T inp^T, w stored as col-major [IC, OC] */
void cuda_matmul_forward(float *out, const float *inp, const void *w, lomo_dtype dt, float *wbuf, int BT, int IC,
                         int OC) {
    (void)wbuf;
    const void *x = cuda_gemm_operand(dt, inp, (size_t)BT * IC, NULL, NULL);
    if (!x) return;
    cuda_operands_forget_range(out, (size_t)BT * OC * sizeof(float));
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, OC, BT, IC, 1.0f, w, cuda_type(dt), IC, x, cuda_type(dt), IC, 0.0f, out,
         CUDA_R_32F, OC, "matmul forward (cublasGemmEx)");
}

/* dinp [BT, IC] = beta*dinp + dout [BT, OC] @ w [OC, IC]: dinp^T = w^T dout^T */
void cuda_matmul_backward_input(float *dinp, const float *dout, const void *w, lomo_dtype dt, float *wbuf,
                                float beta, int BT, int IC, int OC) {
    (void)wbuf;
    const void *g = cuda_gemm_operand(dt, dout, (size_t)BT * OC, NULL, NULL);
    if (!g) return;
    cuda_operands_forget_range(dinp, (size_t)BT * IC * sizeof(float));
    gemm(CUBLAS_OP_N, CUBLAS_OP_N, IC, BT, OC, 1.0f, w, cuda_type(dt), IC, g, cuda_type(dt), OC, beta, dinp,
         CUDA_R_32F, IC, "matmul backward input (cublasGemmEx)");
}

/* dw [OC, IC] = beta*dw + alpha * dout^T inp: dw^T [IC, OC] = inp^T [IC, BT] @ dout [BT, OC] */
void cuda_matmul_backward_weight(float *dw, const float *dout, const float *inp, float alpha, float beta, int BT,
                                 int IC, int OC) {
    gemm(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, BT, alpha, inp, CUDA_R_32F, IC, dout, CUDA_R_32F, OC, beta, dw,
         CUDA_R_32F, IC, "matmul backward weight (cublasGemmEx)");
}

/* Rows of w per f32 chunk in the stochastic-rounding path: about 64 MiB of scratch. */
static int chunk_rows(int IC, int OC) {
    long r = (64L << 20) / 4 / (IC > 0 ? IC : 1);
    return (int)(r < 1 ? 1 : r > OC ? OC : r);
}

/*
 * Gated (gate != NULL), the product's operands are zeroed and alpha, beta come
 * from the device as (-0, 1) while the gate is raised, so the GEMM leaves w bit
 * for bit as it was with no wait on the host; with stochastic rounding the
 * final rounding is skipped instead.
 */
void cuda_linear_update(void *w, lomo_dtype dt, float *wbuf, const float *dout, const float *inp, float alpha,
                        float beta, int BT, int IC, int OC, uint64_t sr_seed, const int *gate) {
    (void)wbuf;
    if (dt == LOMO_F32 && !gate) {
        cuda_matmul_backward_weight((float *)w, dout, inp, alpha, beta, BT, IC, OC);
        return;
    }
    const void *g = cuda_gemm_operand(dt, dout, (size_t)BT * OC, gate, NULL);
    const void *x = g ? cuda_gemm_operand(dt, inp, (size_t)BT * IC, gate, g) : NULL;
    if (!g || !x) return;
    cuda_operands_forget_range(w, (size_t)OC * IC * cuda_dtype_bytes(dt));
    cudaDataType_t t = cuda_type(dt);
    if (!sr_seed || dt == LOMO_F32) {
        /* C is the weight itself: f32 accumulation, one rounding to nearest */
        if (!gate) {
            gemm(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, BT, alpha, x, t, IC, g, t, OC, beta, w, t, IC,
                 "fused LOMO update (cublasGemmEx)");
            return;
        }
        float *ab = (float *)cuda_scratch(5, 2 * sizeof(float));
        if (!ab) return;
        gate_scalars_kernel<<<1, 1, 0, cuda_stream()>>>(ab, gate, alpha, beta);
        if (!CUDA_LAUNCHED("gated LOMO update: scalars")) return;
        gemm_dev_scalars(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, BT, ab, x, t, IC, g, t, OC, w, t, IC,
                         "fused LOMO update, gated (cublasGemmEx)");
        return;
    }
    /* stochastic rounding needs the f32 result: row blocks of w through an f32 chunk */
    int rows = chunk_rows(IC, OC);
    float *buf = (float *)cuda_scratch(4, (size_t)rows * IC * sizeof(float));
    if (!buf) return;
    size_t es = 2;
    for (int r0 = 0; r0 < OC; r0 += rows) {
        int nr = OC - r0 < rows ? OC - r0 : rows;
        char *wr = (char *)w + (size_t)r0 * IC * es;
        cuda_to_f32(buf, wr, dt, (size_t)nr * IC);
        gemm(CUBLAS_OP_N, CUBLAS_OP_T, IC, nr, BT, alpha, x, t, IC, (const char *)g + (size_t)r0 * es, t, OC, beta,
             buf, CUDA_R_32F, IC, "fused LOMO update, stochastic rounding (cublasGemmEx)");
        /* each block gets its own seed so blocks do not reuse one stream of random bits */
        cuda_round_from_f32_gated(wr, dt, buf, (size_t)nr * IC, sr_seed ^ ((uint64_t)r0 * 0x9e3779b97f4a7c15ull),
                                  gate);
    }
}

/* Deterministic dot product of two f32 arrays in double: fixed per-block partials, summed on the host in order. */
#define DOT_BLOCKS 1024
__global__ void dot_kernel(double *part, const float *a, const float *b, size_t n) {
    __shared__ double s[256];
    double acc = 0.0;
    CUDA_GRID_STRIDE(i, n)
        acc += (double)a[i] * b[i];
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o) s[threadIdx.x] += s[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = s[0];
}

/* ||dout^T inp||^2 = <inp inp^T, dout dout^T>, both [BT, BT] Grams formed in full */
double cuda_linear_grad_sumsq_gram(float *gram, int inp_gram_valid, const float *dout, const float *inp, int BT,
                                   int IC, int OC) {
    float *gx = gram, *gy = gram + (size_t)BT * BT;
    if (!inp_gram_valid)
        gemm(CUBLAS_OP_T, CUBLAS_OP_N, BT, BT, IC, 1.0f, inp, CUDA_R_32F, IC, inp, CUDA_R_32F, IC, 0.0f, gx,
             CUDA_R_32F, BT, "Gram of the input (cublasGemmEx)");
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, BT, BT, OC, 1.0f, dout, CUDA_R_32F, OC, dout, CUDA_R_32F, OC, 0.0f, gy,
         CUDA_R_32F, BT, "Gram of the output gradient (cublasGemmEx)");
    double *part = (double *)cuda_scratch(1, DOT_BLOCKS * sizeof(double)), host[DOT_BLOCKS];
    if (!part) return NAN;
    dot_kernel<<<DOT_BLOCKS, 256, 0, cuda_stream()>>>(part, gx, gy, (size_t)BT * BT);
    if (!CUDA_LAUNCHED("Gram dot product")) return NAN;
    if (!cuda_ok(cudaMemcpyAsync(host, part, sizeof host, cudaMemcpyDeviceToHost, cuda_stream()), "Gram readback") ||
        !cuda_ok(cudaStreamSynchronize(cuda_stream()), "Gram readback (sync)"))
        return NAN;
    double total = 0.0;
    for (int i = 0; i < DOT_BLOCKS; i++) total += host[i];
    return total;
}
