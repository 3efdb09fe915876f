/*
 * test_hf_model.c: models in and out of Hugging Face folders.
 *
 * - Reference folders written by the `safetensors` package
 *   (fixtures/st/, gen_safetensors.py) in F32, F16, BF16 (+F32 norms),
 *   sharded and tied, load into F32/BF16/F16 models with exactly the values
 *   the generator's formula gives, rounded to nearest even as stored.
 * - Save then load (single file and shards, every storage dtype, tied and
 *   untied) gives the same weights bit for bit; saving is deterministic;
 *   a later save removes the other layout's files.
 * - Checkpoints that do not fit the model (missing, unexpected, wrong shape,
 *   unsupported dtype, bad index) fail with one error naming the file and
 *   tensors, and leave the model's weights as they were.
 * - A save that fails midway (a file size limit makes write() fail) leaves
 *   the folder's old files byte for byte, with no temporary files.
 */
#include <dirent.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include "fixture.h"
#include "runtime/atomic_file.h"
#include "runtime/dtype.h"
#include "runtime/lomo.h"
#include "runtime/safetensors.h"

static lomo_ctx *ctx;
static char tmp[] = "/tmp/lomo_hfmodel_XXXXXX";

static const lomo_llama_config TINY = {.hidden_size = 16, .intermediate_size = 24, .num_hidden_layers = 2,
                                       .num_attention_heads = 4, .num_key_value_heads = 2, .vocab_size = 37,
                                       .max_position_embeddings = 32, .tie_word_embeddings = 0,
                                       .rms_norm_eps = 1e-5, .rope_theta = 10000.0};

/* ---- files ---- */

static char *tpath(const char *rel) {
    static char buf[4][600];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmp, rel);
    return buf[k];
}


static void write_all(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(b, 1, n, f) == n, "write %s", path);
    if (f) fclose(f);
}

static void copy_file(const char *from, const char *to) {
    size_t n;
    uint8_t *b = fx_read_file(from, &n);
    CHECK(b != NULL, "read %s", from);
    if (b) write_all(to, b, n);
    free(b);
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) remove_tree(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int count_files(const char *dir, const char *containing) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && strstr(e->d_name, containing)) n++;
    closedir(d);
    return n;
}

static int exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* Copies fixture file `fixture_file` to `out` with its JSON header changed by edit(hdr). */
static void mutate(const char *fixture_file, const char *out, void (*edit)(json_t *hdr)) {
    size_t n;
    uint8_t *b = fx_read_file(fx_path(fixture_file), &n);
    uint64_t h;
    memcpy(&h, b, 8);
    json_t *hdr = json_loadb((const char *)b + 8, (size_t)h, 0, NULL);
    edit(hdr);
    char *s = json_dumps(hdr, JSON_COMPACT);
    uint64_t hl = strlen(s);
    FILE *f = fopen(out, "wb");
    fwrite(&hl, 8, 1, f);
    fwrite(s, 1, hl, f);
    fwrite(b + 8 + h, 1, n - 8 - h, f);
    fclose(f);
    free(s);
    json_decref(hdr);
    free(b);
}

/* ---- expected values ---- */

/* gen_safetensors.py's formula for weight i of parameter p. */
static float st_value(int p, size_t i, int is_norm) {
    static const float specials[] = {70000.0f, -0.0f, 3e-6f, 1e-40f, 65504.0f, -1e-8f};
    if (p == 0 && i < 6) return specials[i];
    uint32_t h = (uint32_t)((uint64_t)i * 2654435761u + (uint64_t)p * 40503u + 12345u);
    h ^= h >> 16;
    h *= 0x45d9f3bu;
    h ^= h >> 16;
    double v = (double)((int64_t)h - 2147483648LL) / 8589934592.0;
    return (float)(is_norm ? 1.0 + v : v);
}

static float round_to(lomo_dtype d, float v) {
    if (d == LOMO_BF16) return lomo_bf16_to_f32(lomo_f32_to_bf16(v));
    if (d == LOMO_F16) return lomo_f16_to_f32(lomo_f32_to_f16(v));
    return v;
}

/* Weights equal the formula rounded to file_dt (norms to norm_dt), then to the model's dtype, bit for bit. */
static void check_values(lomo_model *m, lomo_dtype model_dt, lomo_dtype file_dt, lomo_dtype norm_dt,
                         const char *what) {
    for (int p = 0; p < lomo_model_num_params(m); p++) {
        lomo_param_info info;
        lomo_model_param(m, p, &info);
        float *got = malloc(info.numel * sizeof(float));
        lomo_model_get_param_f32(m, p, got, info.numel);
        int norm = info.kind == LOMO_PARAM_NORM;
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < info.numel; i++) {
            float want = round_to(model_dt, round_to(norm ? norm_dt : file_dt, st_value(p, i, norm)));
            if (lomo_f32_bits(want) != lomo_f32_bits(got[i]) && !bad++) first = i;
        }
        CHECK(bad == 0, "%s: %s: %zu values differ, first [%zu] = %g", what, info.name, bad, first,
              (double)got[first]);
        free(got);
    }
}

/* Every weight of a and b, as f32 bits. */
static int same_weights(lomo_model *a, lomo_model *b) {
    if (lomo_model_num_params(a) != lomo_model_num_params(b)) return 0;
    int same = 1;
    for (int p = 0; p < lomo_model_num_params(a); p++) {
        lomo_param_info ia, ib;
        lomo_model_param(a, p, &ia);
        lomo_model_param(b, p, &ib);
        if (ia.numel != ib.numel || strcmp(ia.name, ib.name)) return 0;
        float *x = malloc(ia.numel * sizeof(float)), *y = malloc(ia.numel * sizeof(float));
        lomo_model_get_param_f32(a, p, x, ia.numel);
        lomo_model_get_param_f32(b, p, y, ib.numel);
        same &= memcmp(x, y, ia.numel * sizeof(float)) == 0;
        free(x);
        free(y);
    }
    return same;
}

static lomo_model *load_dir(const char *dir, lomo_dtype dt) {
    lomo_model *m = NULL;
    lomo_model_options o = {.dtype = dt};
    lomo_status st = lomo_model_load_hf(&m, ctx, dir, &o);
    CHECK(st == LOMO_OK && m, "load %s as %s: %s", dir, lomo_dtype_name(dt), lomo_last_error(ctx));
    return m;
}

static lomo_model *new_model(const lomo_llama_config *c, lomo_dtype dt, uint64_t seed) {
    lomo_model *m = NULL;
    lomo_model_options o = {.dtype = dt, .seed = seed};
    CHECK(lomo_model_create(&m, ctx, c, &o) == LOMO_OK, "create: %s", lomo_last_error(ctx));
    return m;
}

/* ---- reference folders ---- */

static void test_reference_folders(void) {
    static const lomo_dtype dts[3] = {LOMO_F32, LOMO_BF16, LOMO_F16};
    char what[128];
    for (int k = 0; k < 3; k++) {
        lomo_dtype d = dts[k];
        lomo_model *m;
        if ((m = load_dir(fx_path("st/tiny"), d))) {
            snprintf(what, sizeof what, "tiny (F32) as %s", lomo_dtype_name(d));
            check_values(m, d, LOMO_F32, LOMO_F32, what);
            lomo_model_destroy(m);
        }
        if ((m = load_dir(fx_path("st/tiny_f16"), d))) {
            snprintf(what, sizeof what, "tiny_f16 as %s", lomo_dtype_name(d));
            check_values(m, d, LOMO_F16, LOMO_F16, what);
            lomo_model_destroy(m);
        }
        if ((m = load_dir(fx_path("st/tiny_bf16"), d))) {
            snprintf(what, sizeof what, "tiny_bf16 as %s", lomo_dtype_name(d));
            check_values(m, d, LOMO_BF16, LOMO_F32, what);
            lomo_model_destroy(m);
        }
        if ((m = load_dir(fx_path("st/tiny_sharded"), d))) {
            snprintf(what, sizeof what, "tiny_sharded as %s", lomo_dtype_name(d));
            check_values(m, d, LOMO_F32, LOMO_F32, what);
            lomo_model_destroy(m);
        }
    }
    /* the special values really went through the 16-bit rounding */
    lomo_model *m = load_dir(fx_path("st/tiny"), LOMO_F16);
    if (m) {
        float e[6];
        lomo_param_info info;
        lomo_model_param(m, 0, &info);
        float *all = malloc(info.numel * sizeof(float));
        lomo_model_get_param_f32(m, 0, all, info.numel);
        memcpy(e, all, sizeof e);
        free(all);
        CHECK(e[0] == 1.0f / 0.0f && e[4] == 65504.0f && e[5] == 0.0f && e[3] == 0.0f, "f16 overflow/underflow");
        lomo_model_destroy(m);
    }

    /* one file, or the index, named directly */
    m = new_model(&TINY, LOMO_F32, 7);
    if (m) {
        lomo_status st = lomo_model_load_safetensors(m, fx_path("st/tiny/model.safetensors"));
        CHECK(st == LOMO_OK, "file path: %s", lomo_last_error(ctx));
        check_values(m, LOMO_F32, LOMO_F32, LOMO_F32, "tiny/model.safetensors");
        lomo_model *m2 = new_model(&TINY, LOMO_F32, 8);
        st = lomo_model_load_safetensors(m2, fx_path("st/tiny_sharded/model.safetensors.index.json"));
        CHECK(st == LOMO_OK, "index path: %s", lomo_last_error(ctx));
        CHECK(same_weights(m, m2), "sharded = single");
        lomo_model_destroy(m2);
        lomo_model_destroy(m);
    }

    /* tied: without lm_head (as transformers saves), and with a redundant one */
    for (int k = 0; k < 2; k++) {
        const char *dir = k ? "st/tiny_tied_head" : "st/tiny_tied";
        if ((m = load_dir(fx_path(dir), LOMO_F32))) {
            CHECK(lomo_model_config(m)->tie_word_embeddings == 1 && lomo_model_num_params(m) == 20, "%s is tied", dir);
            check_values(m, LOMO_F32, LOMO_F32, LOMO_F32, dir);
            lomo_model_destroy(m);
        }
    }
}

/* ---- round trips ---- */

static void test_round_trip(void) {
    static const lomo_dtype dts[3] = {LOMO_F32, LOMO_BF16, LOMO_F16};
    lomo_llama_config cfgs[3] = {TINY, TINY, TINY};
    cfgs[1].tie_word_embeddings = 1;
    cfgs[1].num_key_value_heads = 1;
    cfgs[2].vocab_size = 4500;  /* [4500, 16]: more than one 65536-element conversion slice */
    for (int c = 2; c >= 0; c--) {
        for (int k = 0; k < 3; k++) {
            lomo_dtype d = dts[k];
            lomo_model *a = new_model(&cfgs[c], d, 100 + (uint64_t)k);
            if (!a) continue;
            for (int sharded = 0; sharded < 2; sharded++) {
                char *dir = tpath(sharded ? "rt_sharded" : "rt_single");
                lomo_status st = lomo_model_save_hf(a, dir, sharded ? 3000 : 0);
                CHECK(st == LOMO_OK, "save %s: %s", dir, lomo_last_error(ctx));
                lomo_model *b = load_dir(dir, d);
                if (b) {
                    CHECK(same_weights(a, b), "round trip %s config %d %s: weights differ", lomo_dtype_name(d), c,
                          sharded ? "sharded" : "single");
                    CHECK(fx_same_config(lomo_model_config(a), lomo_model_config(b)), "config round trip");
                    lomo_model_destroy(b);
                }
                /* into another dtype: same as converting the f32 values */
                lomo_model *f = load_dir(dir, LOMO_F32);
                if (f) {
                    lomo_model *g = new_model(&cfgs[c], d, 1);
                    for (int p = 0; g && p < lomo_model_num_params(f); p++) {
                        lomo_param_info info;
                        lomo_model_param(f, p, &info);
                        float *w = malloc(info.numel * sizeof(float));
                        lomo_model_get_param_f32(f, p, w, info.numel);
                        lomo_model_set_param_f32(g, p, w, info.numel);
                        free(w);
                    }
                    CHECK(g && same_weights(a, g), "%s loaded as F32 keeps the values", lomo_dtype_name(d));
                    lomo_model_destroy(g);
                    lomo_model_destroy(f);
                }
                char *idx = tpath(sharded ? "rt_sharded/model.safetensors.index.json" : "rt_single/model.safetensors");
                CHECK(exists(idx), "%s written", idx);
                CHECK(count_files(dir, ".tmp.") == 0, "no temporary files left in %s", dir);
            }
            /* the single file: valid header, storage dtype, no lm_head when tied, deterministic */
            st_file f;
            if (st_open(ctx, tpath("rt_single/model.safetensors"), &f) == LOMO_OK) {
                CHECK((f.data - f.base) % 8 == 0, "data 8-byte aligned");
                CHECK(f.ntensors == lomo_model_num_params(a), "one entry per parameter");
                const st_tensor *t = st_find(&f, "model.layers.1.mlp.down_proj.weight");
                st_dtype want = d == LOMO_F32 ? ST_F32 : d == LOMO_BF16 ? ST_BF16 : ST_F16;
                CHECK(t && t->dtype == want && t->shape[0] == 16 && t->shape[1] == 24, "down_proj entry");
                CHECK((st_find(&f, "lm_head.weight") != NULL) == (c != 1), "lm_head only when untied");
                st_close(&f);
            }
            size_t n1, n2;
            uint8_t *b1 = fx_read_file(tpath("rt_single/model.safetensors"), &n1);
            lomo_model_save_hf(a, tpath("rt_single"), 0);
            uint8_t *b2 = fx_read_file(tpath("rt_single/model.safetensors"), &n2);
            CHECK(n1 == n2 && n1 && !memcmp(b1, b2, n1), "saving twice writes the same bytes");
            free(b1);
            free(b2);
            json_t *cj = json_load_file(tpath("rt_single/config.json"), 0, NULL);
            static const char *torch_names[] = {"float32", "bfloat16", "float16"};
            CHECK(cj && !strcmp(json_string_value(json_object_get(cj, "torch_dtype")), torch_names[d]),
                  "config.json torch_dtype %s", torch_names[d]);
            json_decref(cj);
            lomo_model_destroy(a);
        }
    }

    /* the index of the last sharded save (untied F16, 3000-byte shards) */
    json_t *ix = json_load_file(tpath("rt_sharded/model.safetensors.index.json"), 0, NULL);
    CHECK(ix != NULL, "index.json is JSON");
    if (ix) {
        json_t *wm = json_object_get(ix, "weight_map");
        json_int_t total = json_integer_value(json_object_get(json_object_get(ix, "metadata"), "total_size"));
        lomo_model *a = new_model(&cfgs[0], LOMO_F16, 1);
        CHECK(a && total == (json_int_t)(lomo_model_num_weights(a) * 2), "total_size %lld", (long long)total);
        CHECK((int)json_object_size(wm) == lomo_model_num_params(a), "weight_map has every tensor");
        const char *s = json_string_value(json_object_get(wm, "model.embed_tokens.weight"));
        int nshards = count_files(tpath("rt_sharded"), "-of-");
        CHECK(nshards > 2, "several shards (%d)", nshards);
        char want[64];
        snprintf(want, sizeof want, "model-00001-of-%05d.safetensors", nshards);
        CHECK(s && !strcmp(s, want), "embed_tokens in the first shard: %s", s ? s : "(none)");
        CHECK(!exists(tpath("rt_sharded/model.safetensors")), "no single file beside shards");
        lomo_model_destroy(a);
        json_decref(ix);
    }
}

/* A later save removes the files of the other layout, which would shadow it. */
static void test_stale_files(void) {
    lomo_model *a = new_model(&TINY, LOMO_F32, 1), *b = new_model(&TINY, LOMO_F32, 2);
    if (!a || !b) goto done;
    char *dir = tpath("stale");
    CHECK(lomo_model_save_hf(a, dir, 4000) == LOMO_OK, "sharded save: %s", lomo_last_error(ctx));
    int n1 = count_files(dir, "-of-");
    CHECK(lomo_model_save_hf(a, dir, 8000) == LOMO_OK, "fewer shards: %s", lomo_last_error(ctx));
    int n2 = count_files(dir, "-of-");
    CHECK(n2 < n1 && n2 > 1, "old shards removed (%d then %d files)", n1, n2);
    CHECK(lomo_model_save_hf(b, dir, 0) == LOMO_OK, "single save: %s", lomo_last_error(ctx));
    CHECK(count_files(dir, "-of-") == 0 && !exists(tpath("stale/model.safetensors.index.json")),
          "shards and index removed after a single-file save");
    lomo_model *c = load_dir(dir, LOMO_F32);
    CHECK(c && same_weights(b, c), "the folder holds the last save");
    lomo_model_destroy(c);
    CHECK(lomo_model_save_hf(a, dir, 4000) == LOMO_OK, "sharded again: %s", lomo_last_error(ctx));
    CHECK(!exists(tpath("stale/model.safetensors")), "single file removed after a sharded save");
    c = load_dir(dir, LOMO_F32);
    CHECK(c && same_weights(a, c), "the folder holds the last save");
    lomo_model_destroy(c);
    /* a folder that does not exist yet, two levels deep */
    CHECK(lomo_model_save_hf(a, tpath("new/deeper"), 0) == LOMO_OK, "creates folders: %s", lomo_last_error(ctx));
    CHECK(exists(tpath("new/deeper/config.json")), "config.json in the new folder");
done:
    lomo_model_destroy(a);
    lomo_model_destroy(b);
}

/* ---- bad checkpoints ---- */

static void expect_load_fail(lomo_model *m, const char *path, lomo_status want, const char *const *needles,
                             const char *what) {
    lomo_model *snap = new_model(lomo_model_config(m), LOMO_F32, 0);
    for (int p = 0; snap && p < lomo_model_num_params(m); p++) {
        lomo_param_info info;
        lomo_model_param(m, p, &info);
        float *w = malloc(info.numel * sizeof(float));
        lomo_model_get_param_f32(m, p, w, info.numel);
        lomo_model_set_param_f32(snap, p, w, info.numel);
        free(w);
    }
    lomo_status st = lomo_model_load_safetensors(m, path);
    const char *err = lomo_last_error(ctx);
    CHECK(st == want, "%s: status %s, want %s (%s)", what, lomo_status_name(st), lomo_status_name(want), err);
    for (int i = 0; needles[i]; i++) CHECK(strstr(err, needles[i]) != NULL, "%s: error lacks \"%s\": %s", what, needles[i], err);
    CHECK(snap && same_weights(m, snap), "%s: a failed load changed weights", what);
    lomo_model_destroy(snap);
}

#define NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})
#define GATE0 "model.layers.0.mlp.gate_proj.weight"

static void drop3_add2(json_t *h) {
    json_object_del(h, "model.norm.weight");
    json_object_del(h, GATE0);
    json_object_del(h, "lm_head.weight");
    json_object_set_new(h, "model.extra.weight", json_pack("{s:s,s:[i],s:[i,i]}", "dtype", "F32", "shape", 0,
                                                           "data_offsets", 0, 0));
    json_object_set_new(h, "bias", json_pack("{s:s,s:[i],s:[i,i]}", "dtype", "F32", "shape", 0, "data_offsets", 0, 0));
}
static void keep_embed_only(json_t *h) {
    json_t *e = json_incref(json_object_get(h, "model.embed_tokens.weight"));
    json_object_clear(h);
    json_object_set_new(h, "model.embed_tokens.weight", e);
}
static void transpose_gate(json_t *h) {
    json_object_set_new(json_object_get(h, GATE0), "shape", json_pack("[i,i]", 16, 24));
}
static void norm_as_i32(json_t *h) {
    json_object_set_new(json_object_get(h, "model.norm.weight"), "dtype", json_string("I32"));
}
static void head_transposed(json_t *h) {
    json_object_set_new(json_object_get(h, "lm_head.weight"), "shape", json_pack("[i,i]", 16, 37));
}
static void add_rotary_buffer(json_t *h) {
    json_object_set_new(h, "model.layers.1.self_attn.rotary_emb.inv_freq",
                        json_pack("{s:s,s:[i],s:[i,i]}", "dtype", "F32", "shape", 0, "data_offsets", 0, 0));
}
static void overlap_norms(json_t *h) {
    json_object_set(json_object_get(h, "model.layers.1.input_layernorm.weight"), "data_offsets",
                    json_object_get(json_object_get(h, "model.norm.weight"), "data_offsets"));
}

static void test_bad_checkpoints(void) {
    lomo_model *m = new_model(&TINY, LOMO_BF16, 3);
    if (!m) return;
    char *f = tpath("bad.safetensors");

    mutate("st/tiny/model.safetensors", f, drop3_add2);
    expect_load_fail(m, f, LOMO_ERR_FORMAT,
                     NEEDLES("bad.safetensors", "missing 3 tensors", "model.norm.weight", GATE0, "lm_head.weight",
                             "unexpected 2 tensors", "model.extra.weight", "bias"),
                     "missing and unexpected, in one error");
    mutate("st/tiny/model.safetensors", f, keep_embed_only);
    expect_load_fail(m, f, LOMO_ERR_FORMAT, NEEDLES("missing 20 tensors", "(12 more)"), "long list capped");
    mutate("st/tiny/model.safetensors", f, transpose_gate);
    expect_load_fail(m, f, LOMO_ERR_FORMAT,
                     NEEDLES("bad.safetensors: tensor " GATE0 ": expected shape [24, 16], found [16, 24]"),
                     "wrong shape");
    mutate("st/tiny/model.safetensors", f, norm_as_i32);
    expect_load_fail(m, f, LOMO_ERR_FORMAT, NEEDLES("bad.safetensors", "model.norm.weight", "I32", "not supported"),
                     "unsupported dtype");
    mutate("st/tiny/model.safetensors", f, overlap_norms);
    expect_load_fail(m, f, LOMO_ERR_FORMAT, NEEDLES("bad.safetensors", "model.norm.weight", "overlap"),
                     "overlapping ranges");
    size_t n;
    uint8_t *b = fx_read_file(fx_path("st/tiny/model.safetensors"), &n);
    write_all(f, b, n / 2);
    expect_load_fail(m, f, LOMO_ERR_FORMAT, NEEDLES("bad.safetensors", "past the end"), "truncated file");
    free(b);
    expect_load_fail(m, tpath("none.safetensors"), LOMO_ERR_IO, NEEDLES("none.safetensors"), "no such file");
    expect_load_fail(m, tmp, LOMO_ERR_IO, NEEDLES(tmp, "model.safetensors.index.json"), "folder without weights");

    /* old checkpoints' RoPE buffers are ignored */
    mutate("st/tiny/model.safetensors", f, add_rotary_buffer);
    CHECK(lomo_model_load_safetensors(m, f) == LOMO_OK, "rotary_emb.inv_freq ignored: %s", lomo_last_error(ctx));
    lomo_model_destroy(m);

    /* tied model: an lm_head of the wrong shape is an error, not silently ignored */
    lomo_llama_config tied = TINY;
    tied.tie_word_embeddings = 1;
    m = new_model(&tied, LOMO_F32, 3);
    if (m) {
        mutate("st/tiny_tied_head/model.safetensors", f, head_transposed);
        expect_load_fail(m, f, LOMO_ERR_FORMAT, NEEDLES("lm_head.weight", "expected shape [37, 16]", "tied"),
                         "tied lm_head of another shape");
        CHECK(lomo_model_load_safetensors(m, fx_path("st/tiny/model.safetensors")) == LOMO_OK,
              "an lm_head of the embedding's shape is ignored by a tied model: %s", lomo_last_error(ctx));
        lomo_model_destroy(m);
    }
}

static void test_bad_index(void) {
    lomo_model *m = new_model(&TINY, LOMO_F32, 3);
    if (!m) return;
    mkdir(tpath("ix"), 0777);
    static const char *shards[] = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                   "model-00003-of-00003.safetensors"};
    char rel[128], from[128];
    for (int i = 0; i < 3; i++) {
        snprintf(rel, sizeof rel, "ix/%s", shards[i]);
        snprintf(from, sizeof from, "st/tiny_sharded/%s", shards[i]);
        copy_file(fx_path(from), tpath(rel));
    }
    json_t *good = json_load_file(fx_path("st/tiny_sharded/model.safetensors.index.json"), 0, NULL);
    char *ip = tpath("ix/model.safetensors.index.json");
    json_t *j;

    j = json_deep_copy(good);
    json_object_del(j, "weight_map");
    json_dump_file(j, ip, 0);
    json_decref(j);
    expect_load_fail(m, ip, LOMO_ERR_FORMAT, NEEDLES("index.json", "weight_map", "missing"), "no weight_map");

    j = json_deep_copy(good);
    json_object_set_new(j, "weight_map", json_pack("[s]", "x"));
    json_dump_file(j, ip, 0);
    json_decref(j);
    expect_load_fail(m, ip, LOMO_ERR_FORMAT, NEEDLES("index.json", "weight_map", "object"), "weight_map an array");

    j = json_deep_copy(good);
    json_object_set_new(json_object_get(j, "weight_map"), "model.norm.weight",
                        json_string("model-00009-of-00009.safetensors"));
    json_dump_file(j, ip, 0);
    json_decref(j);
    expect_load_fail(m, ip, LOMO_ERR_IO, NEEDLES("model-00009-of-00009.safetensors", "cannot open"), "shard missing");

    j = json_deep_copy(good);
    json_object_set_new(json_object_get(j, "weight_map"), "model.norm.weight", json_string(shards[0]));
    json_dump_file(j, ip, 0);
    json_decref(j);
    expect_load_fail(m, ip, LOMO_ERR_FORMAT, NEEDLES("index.json", "model.norm.weight", "not found in", shards[0]),
                     "tensor not in its shard");

    j = json_deep_copy(good);
    json_object_set_new(json_object_get(j, "weight_map"), "model.norm.weight", json_string("../tiny/model.safetensors"));
    json_dump_file(j, ip, 0);
    json_decref(j);
    expect_load_fail(m, ip, LOMO_ERR_FORMAT, NEEDLES("index.json", "model.norm.weight", "relative"),
                     "shard outside the folder");

    j = json_deep_copy(good);
    json_object_set_new(json_object_get(j, "weight_map"), "model.norm.weight", json_integer(3));
    json_dump_file(j, ip, 0);
    json_decref(j);
    expect_load_fail(m, ip, LOMO_ERR_FORMAT, NEEDLES("index.json", "model.norm.weight"), "file name not a string");

    j = json_deep_copy(good);
    json_object_del(json_object_get(j, "weight_map"), GATE0);
    json_dump_file(j, ip, 0);
    json_decref(j);
    expect_load_fail(m, ip, LOMO_ERR_FORMAT, NEEDLES("index.json", "missing 1 tensor", GATE0),
                     "tensor left out of the weight_map");

    write_all(ip, "{\"weight_map\": {", 16);
    expect_load_fail(m, ip, LOMO_ERR_FORMAT, NEEDLES("index.json", "invalid JSON"), "malformed index");

    json_dump_file(good, ip, 0);
    CHECK(lomo_model_load_safetensors(m, tpath("ix")) == LOMO_OK, "restored index loads: %s", lomo_last_error(ctx));
    check_values(m, LOMO_F32, LOMO_F32, LOMO_F32, "copied shards");
    json_decref(good);
    lomo_model_destroy(m);

    /* config problems surface through lomo_model_load_hf, and nothing leaks */
    mkdir(tpath("cfg"), 0777);
    copy_file(fx_path("st/tiny/model.safetensors"), tpath("cfg/model.safetensors"));
    lomo_model *out = (lomo_model *)1;
    lomo_status st = lomo_model_load_hf(&out, ctx, tpath("cfg"), NULL);
    CHECK(st == LOMO_ERR_IO && out == NULL && strstr(lomo_last_error(ctx), "config.json"), "no config.json: %s",
          lomo_last_error(ctx));
    write_all(tpath("cfg/config.json"), "{\"model_type\": \"gpt2\"}", 22);
    st = lomo_model_load_hf(&out, ctx, tpath("cfg"), NULL);
    CHECK(st == LOMO_ERR_CONFIG && strstr(lomo_last_error(ctx), "model_type"), "gpt2 config: %s", lomo_last_error(ctx));
    copy_file(fx_path("st/tiny_tied/config.json"), tpath("cfg/config.json"));
    st = lomo_model_load_hf(&out, ctx, tpath("cfg"), NULL);
    CHECK(st == LOMO_OK, "untied weights with a tied config load (the lm_head is ignored): %s", lomo_last_error(ctx));
    lomo_model_destroy(out);
}

/* ---- atomicity ---- */

static int same_file(const char *path, const uint8_t *b, size_t n) {
    size_t m;
    uint8_t *c = fx_read_file(path, &m);
    int same = c && m == n && !memcmp(b, c, n);
    free(c);
    return same;
}

static void test_atomic_helper(void) {
    char *p = tpath("atomic.txt");
    CHECK(atomic_write_file(ctx, p, "old contents", 12) == LOMO_OK, "write: %s", lomo_last_error(ctx));
    atomic_file f;
    CHECK(atomic_file_begin(ctx, &f, p) == LOMO_OK, "begin: %s", lomo_last_error(ctx));
    CHECK(atomic_file_write(ctx, &f, "new contents that never land", 29) == LOMO_OK, "write");
    CHECK(count_files(tmp, "atomic.txt.tmp.") == 1, "temporary file beside the target");
    atomic_file_discard(&f);  /* the error path */
    atomic_file_discard(&f);
    CHECK(same_file(p, (const uint8_t *)"old contents", 12), "discarded write leaves the old file");
    CHECK(count_files(tmp, "atomic.txt.tmp.") == 0, "temporary file removed");
    CHECK(atomic_file_begin(ctx, &f, tpath("no/such/dir/x")) == LOMO_ERR_IO && strstr(lomo_last_error(ctx), "no/such/dir/x"),
          "unwritable place: %s", lomo_last_error(ctx));
    atomic_file_discard(&f);
    CHECK(atomic_write_file(ctx, p, "new", 3) == LOMO_OK && same_file(p, (const uint8_t *)"new", 3), "replace");
}

/* write() fails with EFBIG past the file size limit: a disk that fills up midway. */
static lomo_status save_limited(lomo_model *m, const char *dir, size_t shard, rlim_t limit) {
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = limit;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    lomo_status st = lomo_model_save_hf(m, dir, shard);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    return st;
}

typedef struct snapshot { int n; char name[8][64]; uint8_t *data[8]; size_t len[8]; } snapshot;

static void take(snapshot *s, const char *dir) {
    memset(s, 0, sizeof *s);
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) && s->n < 8) {
        if (e->d_name[0] == '.') continue;
        char p[700];
        snprintf(s->name[s->n], 64, "%.63s", e->d_name);
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        s->data[s->n] = fx_read_file(p, &s->len[s->n]);
        s->n++;
    }
    if (d) closedir(d);
}

static int unchanged(const snapshot *s, const char *dir) {
    int ok = count_files(dir, "") == s->n;
    for (int i = 0; i < s->n; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", dir, s->name[i]);
        ok &= same_file(p, s->data[i], s->len[i]);
    }
    return ok;
}

static void drop(snapshot *s) {
    for (int i = 0; i < s->n; i++) free(s->data[i]);
}

static void test_failed_save(void) {
    lomo_model *a = new_model(&TINY, LOMO_F32, 1), *b = new_model(&TINY, LOMO_F32, 2);
    if (!a || !b) goto done;
    for (int sharded = 0; sharded < 2; sharded++) {
        char *dir = tpath(sharded ? "fail_sharded" : "fail_single");
        size_t shard = sharded ? 5000 : 0;  /* shards of 4480, 4160, 4736, ... bytes of data */
        CHECK(lomo_model_save_hf(a, dir, shard) == LOMO_OK, "first save: %s", lomo_last_error(ctx));
        snapshot s;
        take(&s, dir);
        /* single: the weights file is ~22 KB; sharded: the first shard fits, a later one does not */
        rlim_t limit = 8192;
        if (sharded) {
            size_t first = 0, biggest = 0;
            for (int i = 0; i < s.n; i++) {
                if (strstr(s.name[i], "model-00001-")) first = s.len[i];
                if (strstr(s.name[i], "-of-") && s.len[i] > biggest) biggest = s.len[i];
            }
            CHECK(first && biggest > first, "a shard larger than the first (%zu, %zu)", first, biggest);
            limit = first + 1;
        }
        lomo_status st = save_limited(b, dir, shard, limit);
        CHECK(st == LOMO_ERR_IO && strstr(lomo_last_error(ctx), "write failed") &&
                  strstr(lomo_last_error(ctx), ".safetensors"),
              "failed save reports the file: %s (%s)", lomo_status_name(st), lomo_last_error(ctx));
        CHECK(unchanged(&s, dir), "%s: old files byte-identical, no temporary files left", dir);
        lomo_model *c = load_dir(dir, LOMO_F32);
        CHECK(c && same_weights(a, c), "%s still loads the first model", dir);
        lomo_model_destroy(c);
        drop(&s);
    }
done:
    lomo_model_destroy(a);
    lomo_model_destroy(b);
}

int main(void) {
    if (lomo_ctx_create(&ctx, NULL) != LOMO_OK || !mkdtemp(tmp)) return 1;
    test_reference_folders();
    test_round_trip();
    test_stale_files();
    test_bad_checkpoints();
    test_bad_index();
    test_atomic_helper();
    test_failed_save();
    lomo_mem_stats ms;
    lomo_mem_get_stats(ctx, &ms);
    CHECK(ms.current_total == 0, "all device memory freed (%zu bytes left)", ms.current_total);
    remove_tree(tmp);
    lomo_ctx_destroy(ctx);
    return test_summary("test_hf_model");
}
