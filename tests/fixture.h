/*
 * fixture.h: reader for the LOMOFIX1 files that tests/fixtures/gen_fixtures.py
 * writes (PyTorch float64 references), and the comparison the tests share.
 */
#ifndef LOMO_TEST_FIXTURE_H
#define LOMO_TEST_FIXTURE_H

#include <stdio.h>   /* CHECK prints with fprintf */
#include <stddef.h>
#include <stdint.h>

typedef struct fx_tensor {
    char *name;
    int dtype;              /* 0 = float64, 1 = int32 */
    int ndim;
    int64_t dims[8];
    size_t numel;
    void *data;
} fx_tensor;

typedef struct fixture {
    int count;
    fx_tensor *t;
} fixture;

/* Returns 0 on success; prints why and returns -1 otherwise. */
int fx_load(fixture *fx, const char *path);
void fx_free(fixture *fx);
/* NULL (with a message) if absent */
const fx_tensor *fx_get(const fixture *fx, const char *name);
const double *fx_f64(const fixture *fx, const char *name, size_t expect_numel);
const int32_t *fx_i32(const fixture *fx, const char *name, size_t expect_numel);
double fx_scalar(const fixture *fx, const char *name);
/* float64 -> freshly malloc'd float32 copy */
float *fx_f32(const fixture *fx, const char *name, size_t expect_numel);

/*
 * Counts elements violating |got - want| <= atol + rtol * |want|; prints the
 * worst one under `what`. Returns the number of violations (0 = pass).
 */
size_t fx_compare(const char *what, const float *got, const double *want, size_t n, double atol,
                  double rtol);
double fx_max_abs(const double *x, size_t n);

/* A whole file, malloc'd and NUL-terminated (for text); NULL if it cannot be read. */
void *fx_read_file(const char *path, size_t *len);

/* The config.* records of a model or training fixture. */
struct lomo_llama_config;
void fx_llama_config(const fixture *fx, struct lomo_llama_config *cfg);
/* Field by field (a memcmp would compare padding): 1 when a and b are the same config. */
int fx_same_config(const struct lomo_llama_config *a, const struct lomo_llama_config *b);

/* Every parameter of m as f32, in parameter order, in one malloc'd array of *n values. */
struct lomo_model;
float *fx_model_weights(const struct lomo_model *m, size_t *n);

/* A tiny test harness: CHECK records failures; test_summary prints the closing line. */
extern int test_failures, test_checks;
#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        test_checks++;                                                     \
        if (!(cond)) {                                                     \
            test_failures++;                                               \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);           \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
        }                                                                  \
    } while (0)
int test_summary(const char *name);
/* Uniform in [-1, 1), 24 bits, from an xorshift64 state (nonzero): test data without rand()'s global state. */
float fx_uniform(uint64_t *state);
/* Path of a fixture file under tests/fixtures (LOMO_FIXTURE_DIR is set by CMake). */
const char *fx_path(const char *file);

#endif
