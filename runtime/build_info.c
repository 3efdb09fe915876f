/* build_info.c: which BLAS the process loaded, and whether CUDA was built (lomo --version). */
#include <stdio.h>
#include "lomo.h"

/* OpenBLAS's own queries (declared here: cblas.h is not on this file's include path) */
extern char *openblas_get_config(void);
extern int openblas_get_parallel(void);

void lomo_build_info(char *out, size_t n) {
    if (!out || !n) return;
    int par = openblas_get_parallel();
    const char *threads = par == 2 ? "OpenMP threads" : par == 1 ? "pthreads, beside OpenMP: slower" : "single-threaded";
#ifdef LOMO_HAVE_CUDA
    const char *cuda = "built (" LOMO_CUDA_MODULE_NAME ", opened when a context asks for the GPU)";
#else
    const char *cuda = "not built";
#endif
    snprintf(out, n, "BLAS: %s (%s); CUDA backend: %s", openblas_get_config(), threads, cuda);
}
