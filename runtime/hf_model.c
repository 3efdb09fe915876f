/*
 * hf_model.c: a lomo_model in and out of a Hugging Face folder
 * (config.json + model.safetensors, or shards + model.safetensors.index.json).
 *
 * Loading checks the whole checkpoint (every name, shape and dtype) before
 * it writes a single weight, then converts tensor by tensor, through a small
 * f32 buffer, into the model's storage dtype: it never holds an f32 copy of
 * the model. A tensor already in the storage dtype is copied as it is.
 *
 * Tied embeddings: the model has no lm_head.weight of its own. A checkpoint
 * for it may still carry one (some exporters write the shared tensor twice);
 * it is accepted when its shape is [vocab_size, hidden_size] and ignored, so
 * the embedding decides. Buffers older transformers versions saved
 * (model.layers.N.self_attn.rotary_emb.inv_freq) are ignored as transformers
 * itself ignores them: the runtime computes RoPE from rope_theta and rope_scaling.
 *
 * Saving writes the storage dtype unchanged, in parameter order, sharded in
 * that order when max_shard_bytes is exceeded (a tensor larger than the limit
 * gets a shard of its own, as transformers does). Every file is staged under
 * a temporary name and fsync'd; only when all are written are they renamed
 * into place, so a failed save leaves the folder as it was. Afterwards the
 * files of the other layout (model.safetensors vs. shards and index) that
 * would shadow the new checkpoint are removed.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "atomic_file.h"
#include "dtype.h"
#include "model.h"
#include "safetensors.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define LIST_MAX 8          /* names listed in a missing/unexpected error */
#define CONVERT_CHUNK 65536 /* elements widened to f32 at a time */

static char *join(const char *dir, const char *file) {
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, file);
    return p;
}

static st_dtype st_dtype_of(lomo_dtype d) { return d == LOMO_F32 ? ST_F32 : d == LOMO_BF16 ? ST_BF16 : ST_F16; }

/* ---- loading ---- */

/* A bounded, comma-separated list of names for one error message. */
typedef struct name_list {
    char text[400];
    int count;
} name_list;

static void list_add(name_list *l, const char *name) {
    if (l->count < LIST_MAX) {
        size_t k = strlen(l->text);
        snprintf(l->text + k, sizeof l->text - k, "%s%.80s", l->count ? ", " : "", name);
    }
    l->count++;
}

static void list_close(name_list *l) {
    if (l->count > LIST_MAX) {
        size_t k = strlen(l->text);
        snprintf(l->text + k, sizeof l->text - k, ", ... (%d more)", l->count - LIST_MAX);
    }
}

static int is_rotary_buffer(const char *name) {
    const char *suffix = ".self_attn.rotary_emb.inv_freq";
    size_t n = strlen(name), s = strlen(suffix);
    return n > s && strncmp(name, "model.layers.", 13) == 0 && strcmp(name + n - s, suffix) == 0;
}

static int shape_equals(const param_desc *d, const st_tensor *t) {
    if (t->ndim != d->ndim) return 0;
    for (int i = 0; i < d->ndim; i++)
        if (t->shape[i] != d->shape[i]) return 0;
    return 1;
}

static lomo_status shape_error(lomo_ctx *ctx, const st_source *s, const int64_t *want, int want_ndim,
                               const char *note) {
    char a[128], b[128];
    st_format_shape(a, sizeof a, want, want_ndim);
    st_format_shape(b, sizeof b, s->t->shape, s->t->ndim);
    return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: expected shape %s%s, found %s", s->file->name, s->name, a,
                     note, b);
}

/* 1: the source is known and deliberately not loaded; -1: error set. */
static int ignorable(lomo_model *m, const st_source *s) {
    if (is_rotary_buffer(s->name)) return 1;
    if (m->cfg.tie_word_embeddings && strcmp(s->name, "lm_head.weight") == 0) {
        const param_desc *emb = &m->params[0];
        if (shape_equals(emb, s->t)) return 1;
        shape_error(m->ctx, s, emb->shape, emb->ndim, " (tied to model.embed_tokens.weight)");
        return -1;
    }
    return 0;
}

static void widen(float *out, const uint8_t *src, st_dtype dt, size_t n) {
    if (dt == ST_F32) {
        memcpy(out, src, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);  /* the mapped data need not be aligned */
        out[i] = dt == ST_F16 ? lomo_f16_to_f32(h) : lomo_bf16_to_f32(h);
    }
}

static void convert_into(lomo_model *m, int p, const st_source *s, float *buf) {
    const uint8_t *src = st_tensor_data(s->file, s->t);
    st_dtype want = st_dtype_of(m->dtype);
    size_t n = m->params[p].numel;
    if (s->t->dtype == want) {  /* same bits: no rounding, NaN payloads kept */
        m->be->to_device(param_ptr(m, p), src, n * lomo_dtype_size(m->dtype));
        m->have_forward = 0;
        m->rec_valid = 0;
        return;
    }
    size_t esize = st_dtype_bits(s->t->dtype) / 8;
    for (size_t i0 = 0; i0 < n; i0 += CONVERT_CHUNK) {
        size_t k = n - i0 < CONVERT_CHUNK ? n - i0 : CONVERT_CHUNK;
        widen(buf, src + i0 * esize, s->t->dtype, k);
        model_param_write_f32(m, p, i0, buf, k);
    }
}

lomo_status st_load_model(lomo_model *m, const st_source *src, int n, const char *where) {
    lomo_ctx *ctx = m->ctx;
    const st_source **by_param = calloc((size_t)m->nparams, sizeof *by_param);
    float *buf = malloc(CONVERT_CHUNK * sizeof(float));
    lomo_status st = LOMO_OK;
    if (!by_param || !buf) {
        st = lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory loading", where);
        goto done;
    }
    name_list missing = {{0}, 0}, unexpected = {{0}, 0};
    for (int i = 0; i < n; i++) {
        int p = lomo_model_find_param(m, src[i].name);
        if (p >= 0 && !by_param[p]) {
            by_param[p] = &src[i];
            continue;
        }
        int ig = p >= 0 ? 0 : ignorable(m, &src[i]);
        if (ig < 0) {
            st = LOMO_ERR_FORMAT;
            goto done;
        }
        if (!ig) list_add(&unexpected, src[i].name);  /* unknown, or a second copy of a name */
    }
    for (int p = 0; p < m->nparams; p++)
        if (!by_param[p]) list_add(&missing, m->params[p].name);
    if (missing.count || unexpected.count) {
        list_close(&missing);
        list_close(&unexpected);
        char a[480] = "", b[480] = "";
        if (missing.count)
            snprintf(a, sizeof a, "missing %d tensor%s: %s", missing.count, missing.count > 1 ? "s" : "",
                     missing.text);
        if (unexpected.count)
            snprintf(b, sizeof b, "%sunexpected %d tensor%s: %s", missing.count ? "; " : "", unexpected.count,
                     unexpected.count > 1 ? "s" : "", unexpected.text);
        st = lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: checkpoint does not match the model: %s%s", where, a, b);
        goto done;
    }
    for (int p = 0; p < m->nparams; p++) {
        const param_desc *d = &m->params[p];
        const st_source *s = by_param[p];
        if (!shape_equals(d, s->t)) {
            st = shape_error(ctx, s, d->shape, d->ndim, "");
            goto done;
        }
        st_dtype dt = s->t->dtype;
        if (dt != ST_F32 && dt != ST_F16 && dt != ST_BF16) {
            st = lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: tensor %s: dtype %s is not supported (F32, F16 or BF16)",
                           s->file->name, s->name, st_dtype_name(dt));
            goto done;
        }
    }
    /* everything checked: from here on nothing can fail */
    for (int p = 0; p < m->nparams; p++) convert_into(m, p, by_param[p], buf);
done:
    free(by_param);
    free(buf);
    return st;
}

static lomo_status load_single(lomo_model *m, const char *path) {
    st_file f;
    lomo_status st = st_open(m->ctx, path, &f);
    if (st) return st;
    st_source *src = calloc((size_t)f.ntensors + 1, sizeof *src);
    if (!src) {
        st_close(&f);
        return lomo_fail(m->ctx, LOMO_ERR_OOM, "%s: out of memory", path);
    }
    for (int i = 0; i < f.ntensors; i++) src[i] = (st_source){f.tensors[i].name, &f, &f.tensors[i]};
    st = st_load_model(m, src, f.ntensors, path);
    free(src);
    st_close(&f);
    return st;
}

/* A shard name must stay inside the folder: relative, with no ".." part. */
static int safe_relative(const char *s) {
    if (!*s || s[0] == '/') return 0;
    for (const char *p = s; *p;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') return 0;
        p += n + (e ? 1 : 0);
    }
    return 1;
}

static lomo_status load_index(lomo_model *m, const char *index_path) {
    lomo_ctx *ctx = m->ctx;
    json_error_t je;
    FILE *fp = fopen(index_path, "rb");
    if (!fp) return lomo_fail(ctx, LOMO_ERR_IO, "%s: cannot open: %s", index_path, strerror(errno));
    json_t *root = json_loadf(fp, JSON_REJECT_DUPLICATES, &je);
    fclose(fp);
    if (!root)
        return lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: invalid JSON at line %d, column %d: %s", index_path, je.line,
                         je.column, je.text);
    lomo_status st = LOMO_OK;
    char *dir = atomic_dirname(index_path);
    const char **fnames = NULL;  /* distinct shard names, as in the index */
    st_file *files = NULL;
    st_source *src = NULL;
    int nfiles = 0, opened = 0;
    const json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    const json_t *meta = json_is_object(root) ? json_object_get(root, "metadata") : NULL;
    if (!dir) {
        st = lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory", index_path);
        goto done;
    }
    if (!json_is_object(root)) {
        st = lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: expected a JSON object", index_path);
        goto done;
    }
    if (meta && !json_is_object(meta) && !json_is_null(meta)) {
        st = lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: metadata: expected an object", index_path);
        goto done;
    }
    if (!wm || !json_is_object(wm)) {
        st = lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: weight_map: %s", index_path,
                       wm ? "expected an object {tensor: file}" : "missing");
        goto done;
    }
    size_t nw = json_object_size(wm);
    fnames = calloc(nw + 1, sizeof *fnames);
    files = calloc(nw + 1, sizeof *files);
    src = calloc(nw + 1, sizeof *src);
    if (!fnames || !files || !src) {
        st = lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory", index_path);
        goto done;
    }
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)wm, key, val) {
        if (!json_is_string(val) || !safe_relative(json_string_value(val))) {
            st = lomo_fail(ctx, LOMO_ERR_FORMAT,
                           "%s: weight_map: tensor %s: expected a file name relative to the folder", index_path,
                           key);
            goto done;
        }
        int k = 0;
        while (k < nfiles && strcmp(fnames[k], json_string_value(val)) != 0) k++;
        if (k == nfiles) fnames[nfiles++] = json_string_value(val);
    }
    for (opened = 0; opened < nfiles; opened++) {
        char *path = join(dir, fnames[opened]);
        st = path ? st_open(ctx, path, &files[opened]) : lomo_fail(ctx, LOMO_ERR_OOM, "out of memory");
        free(path);
        if (st) goto done;
    }
    int n = 0;
    json_object_foreach((json_t *)wm, key, val) {
        int k = 0;
        while (strcmp(fnames[k], json_string_value(val)) != 0) k++;
        const st_tensor *t = st_find(&files[k], key);
        if (!t) {
            st = lomo_fail(ctx, LOMO_ERR_FORMAT, "%s: weight_map: tensor %s: not found in %s", index_path, key,
                           files[k].name);
            goto done;
        }
        src[n++] = (st_source){key, &files[k], t};
    }
    st = st_load_model(m, src, n, index_path);
done:
    for (int k = 0; k < opened; k++) st_close(&files[k]);
    free(files);
    free(fnames);
    free(src);
    free(dir);
    json_decref(root);
    return st;
}

static int is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

lomo_status lomo_model_load_safetensors(lomo_model *m, const char *path) {
    if (!m) return LOMO_ERR_INVALID_ARG;
    if (!path) return lomo_fail(m->ctx, LOMO_ERR_INVALID_ARG, "lomo_model_load_safetensors: NULL path");
    if (!is_dir(path)) return ends_with(path, ".index.json") ? load_index(m, path) : load_single(m, path);
    /* a folder: one file first, as transformers looks for it first */
    char *single = join(path, SINGLE_NAME), *index = join(path, INDEX_NAME);
    lomo_status st;
    if (!single || !index) st = lomo_fail(m->ctx, LOMO_ERR_OOM, "%s: out of memory", path);
    else if (exists(single)) st = load_single(m, single);
    else if (exists(index)) st = load_index(m, index);
    else st = lomo_fail(m->ctx, LOMO_ERR_IO, "%s: neither %s nor %s found", path, SINGLE_NAME, INDEX_NAME);
    free(single);
    free(index);
    return st;
}

lomo_status lomo_model_load_hf(lomo_model **out, lomo_ctx *ctx, const char *dir, const lomo_model_options *opts) {
    if (!out || !ctx || !dir) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "lomo_model_load_hf: NULL argument");
    *out = NULL;
    char *cfg_path = join(dir, "config.json");
    if (!cfg_path) return lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory", dir);
    lomo_llama_config cfg;
    lomo_status st = lomo_config_load_hf(ctx, cfg_path, &cfg);
    free(cfg_path);
    if (st) return st;
    lomo_model *m;
    /* every weight comes from the file: skip the random init */
    if ((st = model_create(&m, ctx, &cfg, opts, 0))) return st;
    if ((st = lomo_model_load_safetensors(m, dir))) {
        lomo_model_destroy(m);
        return st;
    }
    *out = m;
    return LOMO_OK;
}

/* ---- saving ---- */

/* model-NNNNN-of-MMMMM.safetensors: its shard number and count, or 0. */
static int shard_name(const char *s, int *i, int *of) {
    const char *pat = "model-#####-of-#####.safetensors";
    if (strlen(s) != strlen(pat)) return 0;
    int a = 0, b = 0, field = 0;
    for (size_t k = 0; pat[k]; k++) {
        if (pat[k] != '#') {
            if (s[k] != pat[k]) return 0;
            if (pat[k] == 'f') field = 1;
            continue;
        }
        if (s[k] < '0' || s[k] > '9') return 0;
        if (field) b = b * 10 + (s[k] - '0');
        else a = a * 10 + (s[k] - '0');
    }
    *i = a;
    *of = b;
    return 1;
}

/* Removes the files of an earlier save that would shadow or mix with this one. */
static int remove_stale(const char *dir, int nshards) {
    int removed = 0;
    char *p;
    if (nshards == 1) {
        if ((p = join(dir, INDEX_NAME)) && unlink(p) == 0) removed++;
    } else {
        if ((p = join(dir, SINGLE_NAME)) && unlink(p) == 0) removed++;
    }
    free(p);
    DIR *d = opendir(dir);
    if (!d) return removed;
    struct dirent *e;
    while ((e = readdir(d))) {
        int i, of;
        if (!shard_name(e->d_name, &i, &of)) continue;
        if (nshards > 1 && of == nshards && i >= 1 && i <= nshards) continue;
        if ((p = join(dir, e->d_name)) && unlink(p) == 0) removed++;
        free(p);
    }
    closedir(d);
    return removed;
}

/* Streams tensor p's bytes from the device into f. */
static lomo_status write_param(lomo_model *m, atomic_file *f, int p, uint8_t *buf, size_t cap) {
    size_t bytes = m->params[p].numel * lomo_dtype_size(m->dtype);
    const char *src = param_ptr(m, p);
    for (size_t off = 0; off < bytes; off += cap) {
        size_t k = bytes - off < cap ? bytes - off : cap;
        m->be->to_host(buf, src + off, k);
        lomo_status st = atomic_file_write(m->ctx, f, buf, k);
        if (st) return st;
    }
    return LOMO_OK;
}

static lomo_status write_shard(lomo_model *m, atomic_file *f, const char *path, const st_out_tensor *t, int first,
                               int count, uint8_t *buf, size_t cap) {
    uint8_t *hdr;
    size_t hlen;
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    lomo_status st = st_build_header(m->ctx, base, t + first, count, &hdr, &hlen);
    if (st) return st;
    st = atomic_file_begin(m->ctx, f, path);
    if (!st) st = atomic_file_write(m->ctx, f, hdr, hlen);
    free(hdr);
    for (int p = first; !st && p < first + count; p++) st = write_param(m, f, p, buf, cap);
    if (!st) st = atomic_file_finish(m->ctx, f);
    return st;
}

static lomo_status write_text(lomo_ctx *ctx, atomic_file *f, const char *path, const char *text) {
    lomo_status st = atomic_file_begin(ctx, f, path);
    if (!st) st = atomic_file_write(ctx, f, text, strlen(text));
    if (!st) st = atomic_file_finish(ctx, f);
    return st;
}

/* model.safetensors.index.json: total data bytes and where each tensor lives. */
static char *index_json(const lomo_model *m, const int *shard_of, int nshards, uint64_t total) {
    json_t *root = json_object(), *meta = json_object(), *wm = json_object();
    char fname[64];
    int bad = !root || !meta || !wm;
    if (!bad) bad |= json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
    for (int p = 0; !bad && p < m->nparams; p++) {
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", shard_of[p] + 1, nshards);
        bad |= json_object_set_new(wm, m->params[p].name, json_string(fname));
    }
    if (!bad) bad |= json_object_set(root, "metadata", meta) | json_object_set(root, "weight_map", wm);
    char *s = bad ? NULL : json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(meta);
    json_decref(wm);
    json_decref(root);
    return s;
}

lomo_status lomo_model_save_hf(lomo_model *m, const char *dir, size_t max_shard_bytes) {
    if (!m) return LOMO_ERR_INVALID_ARG;
    lomo_ctx *ctx = m->ctx;
    if (!dir) return lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "lomo_model_save_hf: NULL folder");
    lomo_status st = atomic_make_dirs(ctx, dir, "lomo_model_save_hf");
    if (st) return st;

    int np = m->nparams, nshards = 1;
    st_out_tensor *t = calloc((size_t)np, sizeof *t);
    int *shard_of = calloc((size_t)np, sizeof *shard_of), *first = calloc((size_t)np + 1, sizeof *first);
    atomic_file *files = calloc((size_t)np + 2, sizeof *files);
    size_t cap = (size_t)1 << 20;
    uint8_t *buf = malloc(cap);
    char *text = NULL, *path = NULL;
    int nfiles = 0;
    if (!t || !shard_of || !first || !files || !buf) {
        st = lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory saving", dir);
        goto done;
    }
    st_dtype sdt = st_dtype_of(m->dtype);
    for (int i = 0; i < np + 2; i++) files[i].fd = -1;  /* so discarding an unused slot is a no-op */
    uint64_t total = 0, in_shard = 0;
    for (int p = 0; p < np; p++) {
        const param_desc *d = &m->params[p];
        t[p] = (st_out_tensor){.name = d->name, .dtype = sdt, .ndim = d->ndim, .shape = {d->shape[0], d->shape[1]}};
        uint64_t bytes = d->numel * lomo_dtype_size(m->dtype);
        if (max_shard_bytes && in_shard > 0 && in_shard + bytes > max_shard_bytes) {
            first[nshards++] = p;
            in_shard = 0;
        }
        shard_of[p] = nshards - 1;
        in_shard += bytes;
        total += bytes;
    }
    first[nshards] = np;
    if (nshards > 99999) {
        st = lomo_fail(ctx, LOMO_ERR_INVALID_ARG, "%s: max_shard_bytes %zu gives %d shards, more than 99999", dir,
                       max_shard_bytes, nshards);
        goto done;
    }
    for (int s = 0; s < nshards; s++) {
        char fname[64];
        if (nshards == 1) snprintf(fname, sizeof fname, SINGLE_NAME);
        else snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, nshards);
        free(path);
        path = join(dir, fname);
        st = path ? write_shard(m, &files[nfiles++], path, t, first[s], first[s + 1] - first[s], buf, cap)
                  : lomo_fail(ctx, LOMO_ERR_OOM, "out of memory");
        if (st) goto done;
    }
    if (nshards > 1) {
        free(path);
        path = join(dir, INDEX_NAME);
        text = index_json(m, shard_of, nshards, total);
        st = path && text ? write_text(ctx, &files[nfiles++], path, text)
                          : lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory", dir);
        free(text);
        if (st) goto done;
    }
    free(path);
    path = join(dir, "config.json");
    text = hf_config_json(&m->cfg, (int)m->dtype);
    st = path && text ? write_text(ctx, &files[nfiles++], path, text)
                      : lomo_fail(ctx, LOMO_ERR_OOM, "%s: out of memory", dir);
    free(text);
    if (st) goto done;
    for (int i = 0; i < nfiles && !st; i++) st = atomic_file_publish(ctx, &files[i]);
    if (!st) st = atomic_dir_sync(ctx, dir);
    if (!st && remove_stale(dir, nshards)) st = atomic_dir_sync(ctx, dir);
done:
    for (int i = 0; files && i < nfiles; i++) atomic_file_discard(&files[i]);
    free(files);
    free(path);
    free(buf);
    free(first);
    free(shard_of);
    free(t);
    return st;
}
