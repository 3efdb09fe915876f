/*
 * cuda_loader.c: the CUDA backend, opened from its module (liblomo_cuda.so)
 * the first time a context asks for the GPU. A program that stays on the CPU
 * never maps cuBLAS and the CUDA runtime (220 MiB resident, 0.1 s at start),
 * and a lomo built with nvcc still runs where they are missing.
 *
 * Where the module is looked for: LOMO_CUDA_MODULE, a path, and only there
 * when it is set; else beside the file this code was loaded from (the
 * installed liblomo.so, or a program that linked liblomo.a) and in the
 * libdir beside its bin (an install moved elsewhere), then the configured
 * install libdir, then the build tree. The first that is lomo's module, of
 * this backend.h, answers (a GPU or why not); one that does not open, is not
 * lomo's or was built against another backend.h is passed over for the next.
 * The GPU driver (libcuda.so.1) is looked for before any module is opened:
 * without it there is no GPU, and the CUDA libraries stay unloaded.
 */
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "backend.h"

#ifdef LOMO_HAVE_CUDA

enum { MAX_CANDIDATES = 4 };

/* the backend once a module gave one; failures are not kept (the next context looks again) */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static const lomo_backend *loaded;

/* paths[] := where to look, in order; returns how many; *from_env := 1 when LOMO_CUDA_MODULE named the one */
static int candidates(char paths[MAX_CANDIDATES][PATH_MAX], int *from_env) {
    const char *env = getenv("LOMO_CUDA_MODULE");
    *from_env = env && *env;
    if (*from_env) {
        snprintf(paths[0], PATH_MAX, "%s", env);
        return 1;
    }
    int n = 0;
    Dl_info self;
    if (dladdr((void *)candidates, &self) && self.dli_fname && strchr(self.dli_fname, '/')) {
        int dir = (int)(strrchr(self.dli_fname, '/') - self.dli_fname);
        snprintf(paths[n++], PATH_MAX, "%.*s/%s", dir, self.dli_fname, LOMO_CUDA_MODULE_NAME);
        snprintf(paths[n++], PATH_MAX, "%.*s/../%s/%s", dir, self.dli_fname, LOMO_CUDA_MODULE_LIBDIR,
                 LOMO_CUDA_MODULE_NAME);
    }
    snprintf(paths[n++], PATH_MAX, "%s", LOMO_CUDA_MODULE_INSTALLED);
    snprintf(paths[n++], PATH_MAX, "%s", LOMO_CUDA_MODULE_BUILT);
    return n;
}

/* the module at path's backend, or NULL with the reason in why[]; *opened := 1 when it is lomo's
 * module, of this backend.h, and only the GPU is not usable */
static const lomo_backend *open_module(const char *path, char *why, size_t why_len, int *opened) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(why, why_len, "%s", dlerror()); /* names the file and what it lacks */
        return NULL;
    }
    lomo_cuda_module_open_fn open_fn;
    *(void **)&open_fn = dlsym(h, LOMO_CUDA_MODULE_ENTRY); /* POSIX's way from object to function pointer */
    if (!open_fn) {
        snprintf(why, why_len, "%s is not lomo's CUDA module (no %s)", path, LOMO_CUDA_MODULE_ENTRY);
        dlclose(h);
        return NULL;
    }
    char r[256] = "";
    int abi_ok = 0;
    const lomo_backend *be = open_fn(LOMO_BACKEND_ABI, r, sizeof r, &abi_ok);
    /* kept open either way: the CUDA runtime does not expect to be unloaded under a live process */
    if (!be) snprintf(why, why_len, "%s: %s", path, r);
    *opened = abi_ok;
    return be;
}

/* *unloadable := 1 when the driver is here and no module opened */
static const lomo_backend *find_backend(char *why, size_t why_len, int *unloadable) {
    char paths[MAX_CANDIDATES][PATH_MAX];
    int from_env, n = candidates(paths, &from_env), found[MAX_CANDIDATES], any = 0;
    for (int i = 0; i < n; i++) any |= found[i] = access(paths[i], F_OK) == 0;
    void *driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (driver) dlclose(driver);
    *unloadable = driver != NULL; /* until a module opens */
    if (!any) {
        if (from_env)
            snprintf(why, why_len, "LOMO_CUDA_MODULE=%s: no such file", paths[0]);
        else {
            int k = snprintf(why, why_len, "its module is in none of");
            for (int i = 0; i < n && k >= 0 && (size_t)k < why_len; i++)
                k += snprintf(why + k, why_len - (size_t)k, "%s %s", i ? "," : "", paths[i]);
            if (k >= 0 && (size_t)k < why_len) snprintf(why + k, why_len - (size_t)k, " (LOMO_CUDA_MODULE: its path)");
        }
        return NULL;
    }
    if (!driver) {
        snprintf(why, why_len, "no NVIDIA driver (%s)", dlerror());
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (!found[i]) continue;
        int opened_module = 0;
        const lomo_backend *be = open_module(paths[i], why, why_len, &opened_module);
        /* a module of this backend.h answers for all: one that finds no GPU is not retried elsewhere */
        if (opened_module) *unloadable = 0;
        if (be || opened_module) return be;
    }
    return NULL; /* why: the last candidate's reason */
}

const lomo_backend *lomo_backend_cuda(char *why, size_t why_len, int *unloadable) {
    char sink[8];
    int unl = 0;
    if (!why || !why_len) why = sink, why_len = sizeof sink;
    pthread_mutex_lock(&lock);
    if (!loaded) loaded = find_backend(why, why_len, &unl);
    if (unloadable) *unloadable = unl;
    const lomo_backend *be = loaded;
    pthread_mutex_unlock(&lock);
    return be;
}

#endif /* LOMO_HAVE_CUDA */
