/*
 * test_cuda_loader.c: the CUDA backend is a module opened on first use
 * (runtime/cuda_loader.c). A context on the CPU must not map cuBLAS or the
 * CUDA runtime; a missing module, a file that is not one, and a module built
 * against another backend.h are refused by name; the built module opens
 * from a program that exports nothing (every symbol its own). Without a GPU
 * (or without the CUDA backend built) the GPU-only outcomes are the reasons
 * given, checked as such.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fixture.h"
#include "runtime/backend.h"
#include "runtime/lomo.h"

/* 1 when this process has a file whose name holds `lib` mapped */
static int mapped(const char *lib) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    char line[4096];
    int hit = 0;
    while (!hit && fgets(line, sizeof line, f)) hit = strstr(line, lib) != NULL;
    fclose(f);
    return hit;
}

/* status of a context on device (NULL: the default), its reason in why[]; the context is destroyed */
static lomo_status try_device(const char *device, char *why, size_t why_len, char *got, size_t got_len) {
    lomo_ctx *c = NULL;
    lomo_ctx_options o = {.device = device, .why = why, .why_len = why_len};
    why[0] = got[0] = 0;
    lomo_status st = lomo_ctx_create(&c, &o);
    if (st == LOMO_OK) snprintf(got, got_len, "%s", lomo_ctx_device(c));
    lomo_ctx_destroy(c);
    return st;
}

#ifdef LOMO_HAVE_CUDA
static int have_driver(void) {
    void *h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (h) dlclose(h);
    return h != NULL;
}

/* LOMO_CUDA_MODULE: a missing path and a file that is not lomo's module, refused by name; with a
 * driver here, either is a GPU this lomo cannot use (unloadable), which the default device notes */
static void module_from_env(void) {
    char why[1024], got[16];
    int driver = have_driver(), unloadable = -1;
    setenv("LOMO_CUDA_MODULE", "/nonexistent/liblomo_cuda.so", 1);
    lomo_status st = try_device("cuda", why, sizeof why, got, sizeof got);
    CHECK(st == LOMO_ERR_DEVICE && strstr(why, "LOMO_CUDA_MODULE=/nonexistent/liblomo_cuda.so: no such file"),
          "a missing LOMO_CUDA_MODULE: %s (%s)", lomo_status_name(st), why);
    CHECK(!lomo_backend_cuda(why, sizeof why, &unloadable) && unloadable == driver,
          "a missing module with%s a driver: unloadable %d", driver ? "" : "out", unloadable);
    /* a file, but no module (a fixture): the driver is looked for first, then the file is refused */
    const char *text = fx_path("model_gqa.bin");
    setenv("LOMO_CUDA_MODULE", text, 1);
    st = try_device("cuda", why, sizeof why, got, sizeof got);
    CHECK(st == LOMO_ERR_DEVICE && (driver ? strstr(why, text) != NULL : strstr(why, "no NVIDIA driver") != NULL),
          "LOMO_CUDA_MODULE=%s: %s (%s)", text, lomo_status_name(st), why);
    unloadable = -1;
    CHECK(!lomo_backend_cuda(why, sizeof why, &unloadable) && unloadable == driver,
          "not a module, with%s a driver: unloadable %d", driver ? "" : "out", unloadable);
    /* the default device: the CPU either way (the note on stderr when unloadable) */
    st = try_device(NULL, why, sizeof why, got, sizeof got);
    CHECK(st == LOMO_OK && strcmp(got, "cpu") == 0, "the default with an unusable module: %s", got);
    unsetenv("LOMO_CUDA_MODULE");
}

/* the built module itself: self-contained, refuses another backend.h, else opens or says why */
static void module_direct(void) {
    void *h = dlopen(LOMO_CUDA_MODULE_BUILT, RTLD_NOW | RTLD_LOCAL);
    CHECK(h != NULL, "dlopen %s: %s", LOMO_CUDA_MODULE_BUILT, dlerror());
    if (!h) return;
    lomo_cuda_module_open_fn open_fn;
    *(void **)&open_fn = dlsym(h, LOMO_CUDA_MODULE_ENTRY);
    CHECK(open_fn != NULL, "%s exports %s", LOMO_CUDA_MODULE_BUILT, LOMO_CUDA_MODULE_ENTRY);
    if (!open_fn) return;
    char why[256] = "";
    int abi_ok = -1;
    CHECK(open_fn("0123456789abcdef", why, sizeof why, &abi_ok) == NULL && abi_ok == 0 &&
              strstr(why, "another backend.h") && strstr(why, LOMO_BACKEND_ABI),
          "a runtime of another backend.h is refused: \"%s\"", why);
    why[0] = 0;
    const lomo_backend *be = open_fn(LOMO_BACKEND_ABI, why, sizeof why, &abi_ok);
    CHECK(abi_ok == 1, "this runtime's backend.h is the module's");
    CHECK((be && strcmp(be->name, "cuda") == 0) || (!be && strstr(why, "no CUDA device")),
          "the module's backend, or why not: \"%s\"", why);
    printf("the built module: %s\n", be ? "a cuda backend" : why);
}
#endif

int main(void) {
    char why[1024], got[16];
    unsetenv("LOMO_DEVICE");
    CHECK(try_device("cpu", why, sizeof why, got, sizeof got) == LOMO_OK && strcmp(got, "cpu") == 0, "cpu: %s", why);
    CHECK(mapped("libcublas") == 0 && mapped("libcudart") == 0, "a cpu context maps no CUDA library");

#ifdef LOMO_HAVE_CUDA
    module_from_env();
    CHECK(mapped("libcublas") == 0, "a refused module maps no cuBLAS");
    lomo_status st = try_device(NULL, why, sizeof why, got, sizeof got);
    CHECK(st == LOMO_OK, "the default device: %s", why);
    if (!have_driver()) {
        /* no GPU here: the default falls back to the CPU without loading the CUDA libraries */
        CHECK(strcmp(got, "cpu") == 0 && mapped("libcublas") == 0 && mapped("libcudart") == 0,
              "no driver: the default is %s, cuBLAS %s", got, mapped("libcublas") ? "mapped" : "not mapped");
        st = try_device("cuda", why, sizeof why, got, sizeof got);
        CHECK(st == LOMO_ERR_DEVICE && strstr(why, "device \"cuda\" is not usable: no NVIDIA driver (libcuda.so.1"),
              "no driver: %s (%s)", lomo_status_name(st), why);
        printf("no NVIDIA driver here: the default context is on the cpu, with no CUDA library mapped\n");
    } else {
        /* the module found where it was built opens (on a GPU, or saying why not): nothing unloadable */
        int unloadable = -1;
        const lomo_backend *be = lomo_backend_cuda(why, sizeof why, &unloadable);
        CHECK(unloadable == 0 && (be || strstr(why, "no CUDA device")), "the built module through the loader: %s",
              be ? "a backend" : why);
        CHECK(strcmp(got, be ? "cuda" : "cpu") == 0, "the default device with a driver: %s", got);
        printf("a driver is here: the default context is on %s%s%s\n", got, be ? "" : "; ", be ? "" : why);
    }
    module_direct();
#else
    lomo_status st = try_device("cuda", why, sizeof why, got, sizeof got);
    CHECK(st == LOMO_ERR_DEVICE && strstr(why, "no CUDA backend"), "a build without CUDA: %s", why);
    printf("this build has no CUDA backend: device \"cuda\" is refused as such\n");
#endif
    return test_summary("test_cuda_loader");
}
