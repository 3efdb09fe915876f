/*
 * bench_gemm.cu: the ceiling under the 7B step's GEMMs. cuBLAS (cublasGemmEx,
 * the backend's call) on the LLaMA-7B linear shapes at 1024 and 8192 tokens,
 * each product the LOMO step makes: forward (f32 or bf16 output), dX (beta 0
 * or 1: the q/k/v and gate/up input gradients accumulate) and the fused update
 * (C the bf16 weight itself, beta != 0; or f32 C as the stochastic-rounding
 * path does), with cuBLAS's own workspace and with 64 MiB set; then the f32 to
 * bf16 rounding of a GEMM operand, scalar and four at a time; then a host round
 * trip (what a check that waits for the device costs). bench_cuda's profile
 * reads against these numbers.
 *
 *   bench_gemm
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* a CUDA or cuBLAS status, named by its to-string function, ends the run with the line */
#define CHECK_STATUS(x, name)                                                                      \
    do {                                                                                           \
        auto s_ = (x);                                                                             \
        if (s_) {                                                                                  \
            printf("bench_gemm: %s (line %d)\n", name(s_), __LINE__);                              \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define CK(x) CHECK_STATUS(x, cudaGetErrorString)
#define CB(x) CHECK_STATUS(x, cublasGetStatusString)

static cublasHandle_t H;
static cudaStream_t S;
static cudaEvent_t E0, E1;

__global__ void fill(__nv_bfloat16 *p, size_t n, float s) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = __float2bfloat16(s * ((float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f));
}

__global__ void round1(__nv_bfloat16 *o, const float *s, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        o[i] = __float2bfloat16_rn(s[i]);
}

__global__ void round4(__nv_bfloat162 *o, const float4 *s, size_t n4) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4; i += (size_t)gridDim.x * blockDim.x) {
        float4 v = s[i];
        o[2 * i] = __floats2bfloat162_rn(v.x, v.y);
        o[2 * i + 1] = __floats2bfloat162_rn(v.z, v.w);
    }
}

/* one product: column-major C [m, n] = alpha op(A) op(B) + beta C, bf16 operands, f32 accumulation */
typedef struct gemm {
    cublasOperation_t ta, tb;
    int m, n, k, lda, ldb, ldc;
    const void *A, *B;
    void *C;
    cudaDataType_t ct;
    float alpha, beta;
} gemm;

static void run(const gemm *g) {
    CB(cublasGemmEx(H, g->ta, g->tb, g->m, g->n, g->k, &g->alpha, g->A, CUDA_R_16BF, g->lda, g->B, CUDA_R_16BF,
                    g->ldb, &g->beta, g->C, g->ct, g->ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* milliseconds a call, after two warm-up calls */
static float time_gemm(const gemm *g, int reps) {
    run(g);
    run(g);
    CK(cudaEventRecord(E0, S));
    for (int i = 0; i < reps; i++) run(g);
    CK(cudaEventRecord(E1, S));
    CK(cudaEventSynchronize(E1));
    float ms;
    CK(cudaEventElapsedTime(&ms, E0, E1));
    return ms / reps;
}

static float time_round(void *out, const float *src, size_t n, int vec, int reps) {
    CK(cudaEventRecord(E0, S));
    for (int i = 0; i < reps; i++) {
        if (vec) round4<<<1056, 256, 0, S>>>((__nv_bfloat162 *)out, (const float4 *)src, n / 4);
        else round1<<<1056, 256, 0, S>>>((__nv_bfloat16 *)out, src, n);
    }
    CK(cudaGetLastError());
    CK(cudaEventRecord(E1, S));
    CK(cudaEventSynchronize(E1));
    float ms;
    CK(cudaEventElapsedTime(&ms, E0, E1));
    return ms / reps;
}

int main(void) {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("bench_gemm: skipped: no CUDA device\n");
        return 77;
    }
    CK(cudaStreamCreate(&S));
    CB(cublasCreate(&H));
    CB(cublasSetStream(H, S));
    CK(cudaEventCreate(&E0));
    CK(cudaEventCreate(&E1));
    const int shapes[5][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}, {32000, 4096}, {1024, 4096}}; /* OC, IC */
    const int bts[2] = {1024, 8192};
    size_t maxe = (size_t)8192 * 32000;   /* the largest operand or output, in elements */
    void *A, *B, *C, *ws;
    CK(cudaMalloc(&A, maxe * 2));
    CK(cudaMalloc(&B, maxe * 2));
    CK(cudaMalloc(&C, maxe * 4));
    CK(cudaMalloc(&ws, 64 << 20));
    fill<<<1024, 256, 0, S>>>((__nv_bfloat16 *)A, maxe, 1.0f);
    fill<<<1024, 256, 0, S>>>((__nv_bfloat16 *)B, maxe, 1.0f);
    fill<<<1024, 256, 0, S>>>((__nv_bfloat16 *)C, maxe * 2, 0.01f);
    CK(cudaGetLastError());
    for (int wsmode = 0; wsmode < 2; wsmode++) {
        if (wsmode) CB(cublasSetWorkspace(H, ws, 64 << 20));
        printf("== cuBLAS workspace: %s\n", wsmode ? "64 MiB set" : "cuBLAS's own");
        printf("tokens OC IC | forward f32 C | forward bf16 C | dX beta 0 | dX beta 1 | update, C the bf16 weight | "
               "update, f32 C   (TFLOP/s, ms)\n");
        for (int b = 0; b < 2; b++)
            for (int s = 0; s < 5; s++) {
                int BT = bts[b], OC = shapes[s][0], IC = shapes[s][1];
                double flops = 2.0 * BT * OC * IC;
                gemm fwd = {CUBLAS_OP_T, CUBLAS_OP_N, OC, BT, IC, IC, IC, OC, A, B, C, CUDA_R_32F, 1.0f, 0.0f};
                gemm fwd16 = fwd, dx1;
                fwd16.ct = CUDA_R_16BF;
                gemm dx = {CUBLAS_OP_N, CUBLAS_OP_N, IC, BT, OC, IC, OC, IC, A, B, C, CUDA_R_32F, 1.0f, 0.0f};
                dx1 = dx;
                dx1.beta = 1.0f;
                gemm upd = {CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, BT, IC, OC, IC, A, B, C, CUDA_R_16BF, -1e-6f, 0.9999f};
                gemm upd32 = upd;
                upd32.ct = CUDA_R_32F;
                const gemm *all[6] = {&fwd, &fwd16, &dx, &dx1, &upd, &upd32};
                printf("%d %d %d |", BT, OC, IC);
                for (int i = 0; i < 6; i++) {
                    float ms = time_gemm(all[i], 20);
                    printf(" %.0f (%.3f) |", flops / (ms * 1e-3) / 1e12, ms);
                }
                printf("\n");
            }
    }
    printf("== rounding a GEMM operand, f32 to bf16 (ms; GB/s of reads and writes)\n");
    const size_t ns[3] = {(size_t)1024 * 4096, (size_t)1024 * 11008, (size_t)8192 * 11008};
    for (int i = 0; i < 3; i++)
        for (int v = 0; v < 2; v++) {
            float ms = time_round(A, (const float *)C, ns[i], v, 20);
            printf("%zu elements, %s: %.4f ms, %.0f GB/s\n", ns[i], v ? "4 a thread" : "1 a thread", ms,
                   ns[i] * 6.0 / (ms * 1e-3) / 1e9);
        }
    int *d, h;
    CK(cudaMalloc(&d, sizeof(int)));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 1000; i++) {
        CK(cudaMemsetAsync(d, 0, sizeof(int), S));
        CK(cudaMemcpyAsync(&h, d, sizeof(int), cudaMemcpyDeviceToHost, S));
        CK(cudaStreamSynchronize(S));
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("== a host round trip (memset, 4-byte copy to the host, wait): %.1f us\n",
           ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e6);
    cudaFree(A), cudaFree(B), cudaFree(C), cudaFree(ws), cudaFree(d);
    cublasDestroy(H);
    return 0;
}
