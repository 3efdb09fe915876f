/*
 * vector_math.h: lets `omp simd` loops call glibc's vector exp and expf
 * (libmvec, 4 to 16 lanes, errors within 4 ulp). math.h declares those
 * variants only under -ffast-math, which this backend cannot use: its update
 * math is bit-exact against the CUDA kernels. Elsewhere (another libc, clang)
 * the loops stay scalar and give the same results to within those ulps.
 */
#ifndef LOMO_CPU_VECTOR_MATH_H
#define LOMO_CPU_VECTOR_MATH_H

#include <math.h>

/* 1 where the loops below get vector exp; they ask for `omp simd` only then (clang would warn that
 * it cannot vectorize a call, an error under -Werror) */
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__) && !defined(__clang__) && !defined(__FAST_MATH__)
#define LOMO_VECTOR_EXP 1
__attribute__((__simd__("notinbranch"))) float expf(float);
__attribute__((__simd__("notinbranch"))) double exp(double);
#else
#define LOMO_VECTOR_EXP 0
#endif

#endif /* LOMO_CPU_VECTOR_MATH_H */
