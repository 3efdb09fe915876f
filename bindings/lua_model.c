/*
 * lua_model.c: lomo.context, lomo.load, lomo.model and lomo.plan, and the
 * methods of context and model handles.
 *
 * Token tables are arrays of B rows, each an array of T integer ids
 * (0-based vocabulary ids); targets use -100 for ignored positions.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lomo_lua.h"

typedef struct context_handle {
    lomo_ctx_ref *r;   /* NULL: closed */
} context_handle;

typedef struct model_handle {
    lomo_model_ref *r;   /* NULL: closed */
} model_handle;

/* ---- context ---- */

lomo_ctx_ref *lomo_lua_check_context(lua_State *L, int i) {
    context_handle *h = luaL_checkudata(L, i, LOMO_T_CONTEXT);
    if (!h->r) luaL_error(L, LOMO_T_CONTEXT ": use after close");
    return h->r;
}

static int l_context(lua_State *L) {
    static const char *const known[] = {"threads", "device", "memory_limit", NULL};
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        lomo_lua_check_keys(L, 1, "lomo.context", known);
    }
    lua_Integer threads = lomo_lua_opt_int(L, 1, "threads", 0, "lomo.context");
    if (threads < 0 || threads > 4096) return luaL_error(L, "lomo.context: threads must be in [0, 4096]");
    const char *device = lomo_lua_opt_device(L, 1, "lomo.context");
    lua_Integer limit = lomo_lua_opt_int(L, 1, "memory_limit", 0, "lomo.context");
    if (limit < 0) return luaL_error(L, "lomo.context: memory_limit must be 0 (none) or a number of bytes");
    context_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->r = NULL;   /* closed until the context exists */
    luaL_setmetatable(L, LOMO_T_CONTEXT);
    lomo_ctx *ctx = lomo_lua_new_ctx(L, (int)threads, device, (size_t)limit, "lomo.context");
    h->r = lomo_lua_ctx_ref_new(ctx);
    if (!h->r) {
        lomo_ctx_destroy(ctx);
        return luaL_error(L, "lomo.context: out of memory");
    }
    return 1;
}

static int ctx_close(lua_State *L) {
    context_handle *h = luaL_checkudata(L, 1, LOMO_T_CONTEXT);
    lomo_lua_ctx_ref_release(h->r);
    h->r = NULL;
    return 0;
}

static int ctx_tostring(lua_State *L) {
    context_handle *h = luaL_checkudata(L, 1, LOMO_T_CONTEXT);
    if (h->r) lua_pushfstring(L, LOMO_T_CONTEXT " (%s, %p)", lomo_ctx_device(h->r->ctx), (void *)h->r);
    else lua_pushliteral(L, LOMO_T_CONTEXT " (closed)");
    return 1;
}

/* ctx.device as a field; everything else from the methods */
static int ctx_index(lua_State *L) {
    const char *k = lua_tostring(L, 2);
    if (k && strcmp(k, "device") == 0) {
        lua_pushstring(L, lomo_ctx_device(lomo_lua_check_context(L, 1)->ctx));
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_gettable(L, lua_upvalueindex(1));
    return 1;
}

static void push_mem(lua_State *L, const size_t *v, size_t total) {
    lua_createtable(L, 0, LOMO_MEM_COUNT + 1);
    for (int c = 0; c < LOMO_MEM_COUNT; c++) {
        lua_pushinteger(L, (lua_Integer)v[c]);
        lua_setfield(L, -2, lomo_mem_category_name((lomo_mem_category)c));
    }
    lua_pushinteger(L, (lua_Integer)total);
    lua_setfield(L, -2, "total");
}

static int ctx_memory(lua_State *L) {
    lomo_ctx_ref *r = lomo_lua_check_context(L, 1);
    lomo_mem_stats s;
    lomo_mem_get_stats(r->ctx, &s);
    lua_createtable(L, 0, 2);
    push_mem(L, s.current, s.current_total);
    lua_setfield(L, -2, "current");
    push_mem(L, s.peak, s.peak_total);
    lua_setfield(L, -2, "peak");
    return 1;
}

static int ctx_reset_peak(lua_State *L) {
    lomo_ctx_ref *r = lomo_lua_check_context(L, 1);
    lomo_mem_reset_peak(r->ctx);
    return 0;
}

static int ctx_profile(lua_State *L) {
    lomo_ctx_ref *r = lomo_lua_check_context(L, 1);
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    lomo_profile_enable(r->ctx, lua_toboolean(L, 2));
    return 0;
}

static int ctx_profile_stats(lua_State *L) {
    lomo_ctx_ref *r = lomo_lua_check_context(L, 1);
    lomo_op_stats s;
    lomo_profile_get(r->ctx, &s);
    lua_createtable(L, 0, LOMO_OP_COUNT);
    for (int op = 0; op < LOMO_OP_COUNT; op++) {
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, (lua_Integer)s.calls[op]);
        lua_setfield(L, -2, "calls");
        lua_pushnumber(L, s.seconds[op]);
        lua_setfield(L, -2, "seconds");
        lua_pushnumber(L, s.flops[op]);
        lua_setfield(L, -2, "flops");
        lua_setfield(L, -2, lomo_op_name((lomo_op)op));
    }
    return 1;
}

static int ctx_profile_reset(lua_State *L) {
    lomo_profile_reset(lomo_lua_check_context(L, 1)->ctx);
    return 0;
}

/* ---- config tables ---- */

static int get_int_field(lua_State *L, int t, const char *where, const char *key, int required, int def) {
    lua_getfield(L, t, key);
    int v = def;
    if (lua_isnil(L, -1)) {
        if (required) luaL_error(L, "%s: config field '%s' is missing", where, key);
    } else {
        int isnum = 0;
        lua_Integer x = lua_tointegerx(L, -1, &isnum);
        if (!isnum || x < -2147483647 || x > 2147483647)
            luaL_error(L, "%s: config field '%s' must be an integer, got %s", where, key, luaL_tolstring(L, -1, NULL));
        v = (int)x;
    }
    lua_pop(L, 1);
    return v;
}

static double get_num_field(lua_State *L, int t, const char *where, const char *key, double def) {
    lua_getfield(L, t, key);
    double v = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "%s: config field '%s' must be a number, got %s", where, key, luaL_typename(L, -1));
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

/* config.rope_scaling: nil, or HF's object as a table {rope_type = "linear" | "llama3", factor = ...} */
static void check_rope_scaling(lua_State *L, int t, const char *where, lomo_rope_scaling *rs) {
    if (lua_getfield(L, t, "rope_scaling") == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "%s: config field 'rope_scaling' must be a table, got %s", where, luaL_typename(L, -1));
    int s = lua_gettop(L);
    if (lua_getfield(L, s, "rope_type") != LUA_TSTRING)
        luaL_error(L, "%s: config field 'rope_scaling.rope_type' must be a string, got %s", where,
                   luaL_typename(L, -1));
    const char *type = lua_tostring(L, -1);
    rs->rope_type = lomo_rope_type_from_name(type);
    if (rs->rope_type < 0)
        luaL_error(L, "%s: config field 'rope_scaling.rope_type': \"%s\" is not one of default, linear, llama3",
                   where, type);
    lua_pop(L, 1);
    const char *in = lua_pushfstring(L, "%s: rope_scaling", where);  /* names the table in field errors */
    rs->factor = get_num_field(L, s, in, "factor", 0);
    rs->low_freq_factor = get_num_field(L, s, in, "low_freq_factor", 0);
    rs->high_freq_factor = get_num_field(L, s, in, "high_freq_factor", 0);
    rs->original_max_position_embeddings = get_int_field(L, s, in, "original_max_position_embeddings", 0, 0);
    lua_pop(L, 2);
}

void lomo_lua_check_config(lua_State *L, int t, const char *where, lomo_llama_config *c) {
    t = lua_absindex(L, t);
    if (!lua_istable(L, t)) luaL_error(L, "%s: config must be a table, got %s", where, luaL_typename(L, t));
    memset(c, 0, sizeof *c);
    c->hidden_size = get_int_field(L, t, where, "hidden_size", 1, 0);
    c->intermediate_size = get_int_field(L, t, where, "intermediate_size", 1, 0);
    c->num_hidden_layers = get_int_field(L, t, where, "num_hidden_layers", 1, 0);
    c->num_attention_heads = get_int_field(L, t, where, "num_attention_heads", 1, 0);
    c->num_key_value_heads = get_int_field(L, t, where, "num_key_value_heads", 0, c->num_attention_heads);
    c->vocab_size = get_int_field(L, t, where, "vocab_size", 1, 0);
    c->max_position_embeddings = get_int_field(L, t, where, "max_position_embeddings", 0, 2048);
    lua_getfield(L, t, "tie_word_embeddings");
    if (lua_isnil(L, -1)) c->tie_word_embeddings = 0;
    else if (lua_isboolean(L, -1)) c->tie_word_embeddings = lua_toboolean(L, -1);
    else luaL_error(L, "%s: config field 'tie_word_embeddings' must be a boolean, got %s", where, luaL_typename(L, -1));
    lua_pop(L, 1);
    c->rms_norm_eps = get_num_field(L, t, where, "rms_norm_eps", 1e-5);
    c->rope_theta = get_num_field(L, t, where, "rope_theta", 10000.0);
    check_rope_scaling(L, t, where, &c->rope_scaling);
}

void lomo_lua_push_config(lua_State *L, const lomo_llama_config *c) {
    lua_createtable(L, 0, 12);
    /* field f of struct *s, pushed by push, under its own name */
#define SET(push, s, f) (push(L, (s)->f), lua_setfield(L, -2, #f))
    SET(lua_pushinteger, c, hidden_size);
    SET(lua_pushinteger, c, intermediate_size);
    SET(lua_pushinteger, c, num_hidden_layers);
    SET(lua_pushinteger, c, num_attention_heads);
    SET(lua_pushinteger, c, num_key_value_heads);
    SET(lua_pushinteger, c, vocab_size);
    SET(lua_pushinteger, c, max_position_embeddings);
    SET(lua_pushboolean, c, tie_word_embeddings);
    SET(lua_pushnumber, c, rms_norm_eps);
    SET(lua_pushnumber, c, rope_theta);
    const lomo_rope_scaling *rs = &c->rope_scaling;
    if (rs->rope_type != LOMO_ROPE_DEFAULT) {
        lua_createtable(L, 0, 5);
        lua_pushstring(L, lomo_rope_type_name((lomo_rope_type)rs->rope_type));
        lua_setfield(L, -2, "rope_type");
        SET(lua_pushnumber, rs, factor);
        if (rs->rope_type == LOMO_ROPE_LLAMA3) {
            SET(lua_pushnumber, rs, low_freq_factor);
            SET(lua_pushnumber, rs, high_freq_factor);
            SET(lua_pushinteger, rs, original_max_position_embeddings);
        }
        lua_setfield(L, -2, "rope_scaling");
    }
#undef SET
    lua_pushliteral(L, "llama");
    lua_setfield(L, -2, "model_type");
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

lomo_status lomo_lua_config_from_path(lomo_ctx *ctx, const char *path, lomo_llama_config *out) {
    struct stat sb;
    if (stat(path, &sb) != 0) return LOMO_ERR_IO;
    if (S_ISDIR(sb.st_mode)) {
        size_t n = strlen(path);
        char *p = malloc(n + 16);
        if (!p) return LOMO_ERR_OOM;
        memcpy(p, path, n);
        strcpy(p + n, "/config.json");
        lomo_status st = lomo_config_load_hf(ctx, p, out);
        free(p);
        return st;
    }
    if (ends_with(path, ".json")) return lomo_config_load_hf(ctx, path, out);
    return lomo_config_load_gguf(ctx, path, out);
}

/* ---- model ---- */

lomo_model_ref *lomo_lua_check_model(lua_State *L, int i) {
    model_handle *h = luaL_checkudata(L, i, LOMO_T_MODEL);
    if (!h->r || !h->r->open) luaL_error(L, LOMO_T_MODEL ": use after close");
    return h->r;
}

/* field logits_chunk of table t: 0 (automatic) or vocabulary rows */
static int opt_logits_chunk(lua_State *L, int t, const char *where) {
    lua_Integer k = lomo_lua_opt_int(L, t, "logits_chunk", 0, where);
    if (k < 0 || k > INT_MAX)
        luaL_error(L, "%s: field 'logits_chunk' must be 0 (automatic) or a number of vocabulary rows, got %I", where,
                   k);
    return (int)k;
}

static void check_model_opts(lua_State *L, int i, const char *where, lomo_model_options *mo, int with_seed) {
    static const char *const known_seed[] = {"dtype", "checkpointing", "logits_chunk", "seed", NULL};
    static const char *const known[] = {"dtype", "checkpointing", "logits_chunk", NULL};
    memset(mo, 0, sizeof *mo);
    mo->dtype = LOMO_F32;
    if (lua_isnoneornil(L, i)) return;
    luaL_checktype(L, i, LUA_TTABLE);
    lomo_lua_check_keys(L, i, where, with_seed ? known_seed : known);
    lomo_lua_parse_dtype(L, lomo_lua_opt_str(L, i, "dtype", "f32", where), where, &mo->dtype);
    mo->checkpointing = lomo_lua_opt_checkpointing(L, i, where);
    mo->logits_chunk = opt_logits_chunk(L, i, where);
    if (with_seed) mo->seed = (uint64_t)lomo_lua_opt_int(L, i, "seed", 0, where);
}

/* pushes a closed model handle (its metatable set) and returns it */
static model_handle *new_model_handle(lua_State *L) {
    model_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->r = NULL;
    luaL_setmetatable(L, LOMO_T_MODEL);
    return h;
}

static void open_model_handle(lua_State *L, model_handle *h, lomo_model *m, lomo_ctx_ref *cr) {
    lomo_model_ref *r = malloc(sizeof *r);
    if (!r) {
        lomo_model_destroy(m);
        luaL_error(L, "lomo.model: out of memory");
    }
    r->m = m;
    r->cr = cr;
    cr->refs++;
    r->refs = 1;
    r->open = 1;
    h->r = r;
}

static int l_load(lua_State *L) {
    lomo_ctx_ref *cr = lomo_lua_check_context(L, 1);
    const char *path = luaL_checkstring(L, 2);
    lomo_model_options mo;
    check_model_opts(L, 3, "lomo.load", &mo, 0);
    struct stat sb;
    if (stat(path, &sb) != 0) return luaL_error(L, "lomo.load: %s: %s", path, strerror(errno));
    model_handle *h = new_model_handle(L);
    lomo_model *m = NULL;
    lomo_status st = S_ISDIR(sb.st_mode) ? lomo_model_load_hf(&m, cr->ctx, path, &mo)
                                         : lomo_model_load_gguf(&m, cr->ctx, path, &mo);
    if (st != LOMO_OK) return lomo_lua_fail(L, cr->ctx, st, "lomo.load");
    open_model_handle(L, h, m, cr);
    return 1;
}

static int l_model(lua_State *L) {
    lomo_ctx_ref *cr = lomo_lua_check_context(L, 1);
    lomo_llama_config cfg;
    lomo_lua_check_config(L, 2, "lomo.model", &cfg);
    lomo_model_options mo;
    check_model_opts(L, 3, "lomo.model", &mo, 1);
    lomo_status st = lomo_config_validate(cr->ctx, &cfg);
    if (st != LOMO_OK) return lomo_lua_fail(L, cr->ctx, st, "lomo.model: config");
    model_handle *h = new_model_handle(L);
    lomo_model *m = NULL;
    st = lomo_model_create(&m, cr->ctx, &cfg, &mo);
    if (st != LOMO_OK) return lomo_lua_fail(L, cr->ctx, st, "lomo.model");
    open_model_handle(L, h, m, cr);
    return 1;
}

static int model_close(lua_State *L) {
    model_handle *h = luaL_checkudata(L, 1, LOMO_T_MODEL);
    if (h->r) {
        h->r->open = 0;
        lomo_lua_model_ref_release(h->r);
        h->r = NULL;
    }
    return 0;
}

static int model_tostring(lua_State *L) {
    model_handle *h = luaL_checkudata(L, 1, LOMO_T_MODEL);
    if (h->r && h->r->open) {
        const lomo_llama_config *c = lomo_model_config(h->r->m);
        lua_pushfstring(L, LOMO_T_MODEL " (%d layers, hidden %d, vocab %d, %I weights)", c->num_hidden_layers,
                        c->hidden_size, c->vocab_size, (lua_Integer)lomo_model_num_weights(h->r->m));
    } else {
        lua_pushliteral(L, LOMO_T_MODEL " (closed)");
    }
    return 1;
}

static int model_config(lua_State *L) {
    lomo_model_ref *r = lomo_lua_check_model(L, 1);
    lomo_lua_push_config(L, lomo_model_config(r->m));
    return 1;
}

static const char *kind_name(lomo_param_kind k) {
    switch (k) {
    case LOMO_PARAM_EMBEDDING: return "embedding";
    case LOMO_PARAM_NORM: return "norm";
    case LOMO_PARAM_LINEAR: return "linear";
    }
    return "?";
}

static int model_params(lua_State *L) {
    lomo_model_ref *r = lomo_lua_check_model(L, 1);
    int n = lomo_model_num_params(r->m);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lomo_param_info pi;
        lomo_status st = lomo_model_param(r->m, i, &pi);
        if (st != LOMO_OK) return lomo_lua_fail(L, r->cr->ctx, st, "lomo.model:params");
        lua_createtable(L, 0, 5);
        lua_pushstring(L, pi.name);
        lua_setfield(L, -2, "name");
        lua_createtable(L, pi.ndim, 0);
        for (int d = 0; d < pi.ndim; d++) {
            lua_pushinteger(L, pi.shape[d]);
            lua_rawseti(L, -2, d + 1);
        }
        lua_setfield(L, -2, "shape");
        lua_pushinteger(L, (lua_Integer)pi.numel);
        lua_setfield(L, -2, "numel");
        lua_pushstring(L, lomo_dtype_name(pi.dtype));
        lua_setfield(L, -2, "dtype");
        lua_pushstring(L, kind_name(pi.kind));
        lua_setfield(L, -2, "kind");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int find_param(lua_State *L, lomo_model_ref *r, int arg, const char *where, lomo_param_info *pi) {
    const char *name = luaL_checkstring(L, arg);
    int idx = lomo_model_find_param(r->m, name);
    if (idx < 0) luaL_error(L, "%s: no parameter named '%s'", where, name);
    lomo_status st = lomo_model_param(r->m, idx, pi);
    if (st != LOMO_OK) lomo_lua_fail(L, r->cr->ctx, st, where);
    return idx;
}

static int model_get(lua_State *L) {
    lomo_model_ref *r = lomo_lua_check_model(L, 1);
    lomo_param_info pi;
    int idx = find_param(L, r, 2, "lomo.model:get", &pi);
    float *buf = lua_newuserdatauv(L, pi.numel * sizeof(float), 0);   /* freed by the GC, even on error */
    lomo_status st = lomo_model_get_param_f32(r->m, idx, buf, pi.numel);
    if (st != LOMO_OK) return lomo_lua_fail(L, r->cr->ctx, st, "lomo.model:get");
    lua_createtable(L, (int)pi.numel, 0);
    for (size_t i = 0; i < pi.numel; i++) {
        lua_pushnumber(L, buf[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int model_set(lua_State *L) {
    lomo_model_ref *r = lomo_lua_check_model(L, 1);
    lomo_param_info pi;
    int idx = find_param(L, r, 2, "lomo.model:set", &pi);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 3);
    if ((size_t)n != pi.numel)
        return luaL_error(L, "lomo.model:set: %s has %I values, got %I", pi.name, (lua_Integer)pi.numel, n);
    float *buf = lua_newuserdatauv(L, pi.numel * sizeof(float), 0);
    for (lua_Integer i = 0; i < n; i++) {
        if (lua_rawgeti(L, 3, i + 1) != LUA_TNUMBER)
            return luaL_error(L, "lomo.model:set: %s: value [%I] must be a number, got %s", pi.name, i + 1,
                              luaL_typename(L, -1));
        buf[i] = (float)lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    lomo_status st = lomo_model_set_param_f32(r->m, idx, buf, pi.numel);
    if (st != LOMO_OK) return lomo_lua_fail(L, r->cr->ctx, st, "lomo.model:set");
    return 0;
}

/* m:param(name | index): index is 1-based, in the order of m:params() */
static int model_param(lua_State *L) {
    lomo_model_ref *r = lomo_lua_check_model(L, 1);
    int n = lomo_model_num_params(r->m), idx;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        int isint = 0;
        lua_Integer i = lua_tointegerx(L, 2, &isint);
        if (!isint) return luaL_error(L, "lomo.model:param: index must be an integer, got %s", luaL_tolstring(L, 2, NULL));
        if (i < 1 || i > n) return luaL_error(L, "lomo.model:param: index %I is outside [1, %d]", i, n);
        idx = (int)i - 1;
    } else {
        lomo_param_info pi;
        idx = find_param(L, r, 2, "lomo.model:param", &pi);
    }
    lomo_lua_push_tensor(L, 1, r, idx);
    return 1;
}

static int tensors_next(lua_State *L) {
    lomo_model_ref *r = lomo_lua_check_model(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    if (i < 0 || i >= lomo_model_num_params(r->m)) return 0;
    lua_pushinteger(L, i + 1);
    lomo_lua_push_tensor(L, 1, r, (int)i);
    return 2;
}

static int model_tensors(lua_State *L) {
    lomo_lua_check_model(L, 1);
    lua_pushcfunction(L, tensors_next);
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 0);
    return 3;
}

/*
 * Reads a [B][T] table of ids at arg into a new userdata buffer (pushed).
 * is_target: -100 allowed. B and T in/out: 0 means "set from this table".
 * With lengths (ragged rows), T is the longest row's length, shorter rows are
 * padded with id 0, and *lengths [B] (another userdata, pushed first) gets
 * each row's length; without, every row must have T ids.
 */
static int32_t *check_rows(lua_State *L, int arg, const char *where, const char *what, int V, int is_target, int *B,
                           int *T, int32_t **lengths) {
    arg = lua_absindex(L, arg);
    if (!lua_istable(L, arg)) luaL_error(L, "%s: %s must be an array of rows of token ids, got %s", where, what,
                                         luaL_typename(L, arg));
    lua_Integer b = luaL_len(L, arg);
    if (b <= 0 || b > 1 << 20) luaL_error(L, "%s: %s must have at least one row", where, what);
    if (*B && b != *B) luaL_error(L, "%s: %s has %I rows, tokens have %d", where, what, b, *B);
    lua_rawgeti(L, arg, 1);
    if (!lua_istable(L, -1)) luaL_error(L, "%s: %s[1] must be an array of token ids, got %s", where, what,
                                        luaL_typename(L, -1));
    lua_Integer t = luaL_len(L, -1);
    lua_pop(L, 1);
    if (t <= 0 || t > 1 << 24) luaL_error(L, "%s: %s[1] is empty", where, what);
    if (*T && t != *T) luaL_error(L, "%s: %s rows have %I ids, tokens rows have %d", where, what, t, *T);
    if (lengths) {
        *lengths = lua_newuserdatauv(L, (size_t)b * sizeof(int32_t), 0);
        for (lua_Integer i = 0; i < b; i++) {
            if (lua_rawgeti(L, arg, i + 1) != LUA_TTABLE)
                luaL_error(L, "%s: %s[%I] must be an array of token ids, got %s", where, what, i + 1, luaL_typename(L, -1));
            lua_Integer n = luaL_len(L, -1);
            lua_pop(L, 1);
            if (n <= 0 || n > 1 << 24) luaL_error(L, "%s: %s[%I] is empty", where, what, i + 1);
            (*lengths)[i] = (int32_t)n;
            if (n > t) t = n;
        }
    }
    int32_t *ids = lua_newuserdatauv(L, (size_t)b * (size_t)t * sizeof(int32_t), 0);
    for (lua_Integer i = 0; i < b; i++) {
        if (lua_rawgeti(L, arg, i + 1) != LUA_TTABLE)
            luaL_error(L, "%s: %s[%I] must be an array of token ids, got %s", where, what, i + 1, luaL_typename(L, -1));
        lua_Integer n = lengths ? (*lengths)[i] : t;
        if (luaL_len(L, -1) != n)
            luaL_error(L, "%s: %s[%I] has %I ids, %s[1] has %I (rows must be padded to one length)", where, what,
                       i + 1, luaL_len(L, -1), what, t);
        for (lua_Integer j = n; j < t; j++) ids[i * t + j] = 0;
        for (lua_Integer j = 0; j < n; j++) {
            lua_rawgeti(L, -1, j + 1);
            int isnum = 0;
            lua_Integer v = lua_tointegerx(L, -1, &isnum);
            if (!isnum)
                luaL_error(L, "%s: %s[%I][%I] must be an integer token id, got %s", where, what, i + 1, j + 1,
                           luaL_tolstring(L, -1, NULL));
            if ((v < 0 || v >= V) && !(is_target && v == -100))
                luaL_error(L, "%s: %s[%I][%I] = %I is outside the vocabulary [0, %d)%s", where, what, i + 1, j + 1,
                           v, V, is_target ? " and not -100" : "");
            ids[i * t + j] = (int32_t)v;
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    *B = (int)b;
    *T = (int)t;
    return ids;
}

int32_t *lomo_lua_check_ids(lua_State *L, int arg, const char *where, const char *what, int V, int is_target,
                            int *B, int *T) {
    return check_rows(L, arg, where, what, V, is_target, B, T, NULL);
}

static int model_forward(lua_State *L) {
    lua_settop(L, 3);   /* buffers pushed below must not look like arguments */
    lomo_model_ref *r = lomo_lua_check_model(L, 1);
    int V = lomo_model_config(r->m)->vocab_size;
    int B = 0, T = 0;
    int32_t *tokens = lomo_lua_check_ids(L, 2, "lomo.model:forward", "tokens", V, 0, &B, &T);
    int32_t *targets = NULL;
    if (!lua_isnoneornil(L, 3)) targets = lomo_lua_check_ids(L, 3, "lomo.model:forward", "targets", V, 1, &B, &T);
    float loss = 0;
    lomo_status st = lomo_model_forward(r->m, tokens, targets, B, T, &loss, NULL);
    if (st != LOMO_OK) return lomo_lua_fail(L, r->cr->ctx, st, "lomo.model:forward");
    if (targets) lua_pushnumber(L, loss);
    else lua_pushnil(L);
    return 1;
}

static int model_token_logprobs(lua_State *L) {
    lua_settop(L, 3);
    lomo_model_ref *r = lomo_lua_check_model(L, 1);
    int V = lomo_model_config(r->m)->vocab_size;
    int B = 0, T = 0;
    int32_t *tokens = lomo_lua_check_ids(L, 2, "lomo.model:token_logprobs", "tokens", V, 0, &B, &T);
    int32_t *targets = lomo_lua_check_ids(L, 3, "lomo.model:token_logprobs", "targets", V, 1, &B, &T);
    float loss = 0;
    lomo_status st = lomo_model_forward(r->m, tokens, targets, B, T, &loss, NULL);
    if (st != LOMO_OK) return lomo_lua_fail(L, r->cr->ctx, st, "lomo.model:token_logprobs");
    size_t n = (size_t)B * (size_t)T;
    float *lp = lua_newuserdatauv(L, n * sizeof(float), 0);
    st = lomo_model_token_logprobs(r->m, lp, n);
    if (st != LOMO_OK) return lomo_lua_fail(L, r->cr->ctx, st, "lomo.model:token_logprobs");
    lua_createtable(L, B, 0);
    for (int b = 0; b < B; b++) {
        lua_createtable(L, T, 0);
        for (int t = 0; t < T; t++) {
            lua_pushnumber(L, lp[(size_t)b * T + t]);
            lua_rawseti(L, -2, t + 1);
        }
        lua_rawseti(L, -2, b + 1);
    }
    return 1;
}

/* The ids at arg as rows: an array of ids is one row (*batch = 0), an array of such arrays is rows
 * (*batch = 1). Returns the stack index of the rows table. */
static int ids_as_rows(lua_State *L, int arg, int *batch) {
    luaL_checktype(L, arg, LUA_TTABLE);
    *batch = lua_rawgeti(L, arg, 1) == LUA_TTABLE;
    lua_pop(L, 1);
    if (*batch) return arg;
    lua_createtable(L, 1, 0);   /* the sequence as one row */
    lua_pushvalue(L, arg);
    lua_rawseti(L, -2, 1);
    return lua_gettop(L);
}

/* Pushes logits [B, V]: one table of V numbers, or (batch) a table of B such tables. */
static void push_logit_rows(lua_State *L, const float *x, int B, int V, int batch) {
    if (batch) lua_createtable(L, B, 0);
    for (int b = 0; b < B; b++) {
        lua_createtable(L, V, 0);
        for (int v = 0; v < V; v++) {
            lua_pushnumber(L, x[(size_t)b * V + v]);
            lua_rawseti(L, -2, v + 1);
        }
        if (batch) lua_rawseti(L, -2, b + 1);
    }
}

/* m:next_logits(ids) -> V logits for the token after ids; m:next_logits({ids, ids, ...}) -> one such
 * table per sequence, the sequences (of any lengths) run as one batch */
static int model_next_logits(lua_State *L) {
    lua_settop(L, 2);
    lomo_model_ref *r = lomo_lua_check_model(L, 1);
    int V = lomo_model_config(r->m)->vocab_size, batch;
    int rows = ids_as_rows(L, 2, &batch);
    int B = 0, T = 0;
    int32_t *lengths = NULL;
    int32_t *ids = check_rows(L, rows, "lomo.model:next_logits", "ids", V, 0, &B, &T, &lengths);
    float *next = lua_newuserdatauv(L, (size_t)B * V * sizeof(float), 0);
    lomo_status st = lomo_model_next_logits(r->m, ids, B, T, lengths, next);
    if (st != LOMO_OK) return lomo_lua_fail(L, r->cr->ctx, st, "lomo.model:next_logits");
    push_logit_rows(L, next, B, V, batch);
    return 1;
}

/* m:decode(ids, pos) -> V logits for the token after ids, which are positions pos.. (default 0: a new
 * sequence) of a sequence whose earlier positions the key/value cache holds; m:decode({ids, ...}, pos)
 * the same for rows of one length, one table each */
static int model_decode(lua_State *L) {
    lua_settop(L, 3);
    lomo_model_ref *r = lomo_lua_check_model(L, 1);
    int V = lomo_model_config(r->m)->vocab_size, batch;
    lua_Integer pos = luaL_optinteger(L, 3, 0);
    if (pos < 0 || pos > INT32_MAX) luaL_error(L, "lomo.model:decode: pos must be >= 0, got %I", pos);
    int rows = ids_as_rows(L, 2, &batch);
    int B = 0, T = 0;
    int32_t *ids = check_rows(L, rows, "lomo.model:decode", "ids", V, 0, &B, &T, NULL);
    float *next = lua_newuserdatauv(L, (size_t)B * V * sizeof(float), 0);
    lomo_status st = lomo_model_decode(r->m, ids, B, T, (int)pos, next);
    if (st != LOMO_OK) return lomo_lua_fail(L, r->cr->ctx, st, "lomo.model:decode");
    push_logit_rows(L, next, B, V, batch);
    return 1;
}

static int model_decode_reset(lua_State *L) {
    lomo_model_decode_reset(lomo_lua_check_model(L, 1)->m);
    return 0;
}

static int model_save(lua_State *L) {
    lomo_model_ref *r = lomo_lua_check_model(L, 1);
    const char *dir = luaL_checkstring(L, 2);
    lomo_status st = lomo_model_save_hf(r->m, dir, 0);
    if (st != LOMO_OK) return lomo_lua_fail(L, r->cr->ctx, st, "lomo.model:save");
    return 0;
}

static int model_num_weights(lua_State *L) {
    lomo_model_ref *r = lomo_lua_check_model(L, 1);
    lua_pushinteger(L, (lua_Integer)lomo_model_num_weights(r->m));
    return 1;
}

static int model_set_checkpointing(lua_State *L) {
    lomo_model_ref *r = lomo_lua_check_model(L, 1);
    luaL_checkany(L, 2);
    int mode = lomo_lua_to_checkpointing(L, 2, "lomo.model:set_checkpointing: argument");
    lomo_status st = lomo_model_set_checkpointing(r->m, mode);
    if (st != LOMO_OK) return lomo_lua_fail(L, r->cr->ctx, st, "lomo.model:set_checkpointing");
    return 0;
}

/* ---- plan ---- */

static void push_plan(lua_State *L, const lomo_plan *p) {
    lua_createtable(L, 0, 6);
#define SETP(f) (lua_pushinteger(L, (lua_Integer)p->f), lua_setfield(L, -2, #f))
    SETP(weights);
    SETP(activations);
    SETP(gradients);
    SETP(optimizer);
    SETP(scratch);
    SETP(total);
    SETP(kv_cache_per_position);
#undef SETP
}

static int l_plan(lua_State *L) {
    static const char *const known[] = {"config", "model", "seq", "batch", "dtype", "checkpointing", "logits_chunk",
                                        "device", NULL};
    const char *where = "lomo.plan";
    luaL_checktype(L, 1, LUA_TTABLE);
    lomo_lua_check_keys(L, 1, where, known);
    lua_Integer T = lomo_lua_opt_int(L, 1, "seq", 0, where);
    lua_Integer B = lomo_lua_opt_int(L, 1, "batch", 1, where);
    if (T <= 0 || T > 1 << 24) return luaL_error(L, "%s: field 'seq' must be a positive integer", where);
    if (B <= 0 || B > 1 << 20) return luaL_error(L, "%s: field 'batch' must be a positive integer", where);
    lomo_model_options mo = {.dtype = LOMO_F32};
    lomo_lua_parse_dtype(L, lomo_lua_opt_str(L, 1, "dtype", "f32", where), where, &mo.dtype);
    mo.checkpointing = lomo_lua_opt_checkpointing(L, 1, where);
    mo.logits_chunk = opt_logits_chunk(L, 1, where);
    /* plans differ by backend; one for a named device needs none (a context on the CPU plans it) */
    const char *device = lomo_lua_opt_device(L, 1, where);

    /* the context lives in a closed-safe userdata so an error below cannot leak it */
    context_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->r = NULL;
    luaL_setmetatable(L, LOMO_T_CONTEXT);
    lomo_ctx *ctx = lomo_lua_new_ctx(L, 0, device ? "cpu" : NULL, 0, where);
    if (!device) device = lomo_ctx_device(ctx);
    h->r = lomo_lua_ctx_ref_new(ctx);
    if (!h->r) {
        lomo_ctx_destroy(ctx);
        return luaL_error(L, "%s: out of memory", where);
    }
    lomo_status st = LOMO_OK;

    lomo_llama_config cfg;
    lua_getfield(L, 1, "config");
    lua_getfield(L, 1, "model");
    if (!lua_isnil(L, -2)) {
        lomo_lua_check_config(L, -2, "lomo.plan: config", &cfg);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        const char *path = lua_tostring(L, -1);
        struct stat sb;
        if (stat(path, &sb) != 0) return luaL_error(L, "%s: %s: %s", where, path, strerror(errno));
        st = lomo_lua_config_from_path(ctx, path, &cfg);
        if (st != LOMO_OK) return lomo_lua_fail(L, ctx, st, where);
    } else {
        return luaL_error(L, "%s: needs 'config' (a table) or 'model' (a path)", where);
    }
    lomo_plan p;
    st = lomo_plan_memory_for(ctx, device, &cfg, &mo, NULL, (int)B, (int)T, &p);
    if (st != LOMO_OK) return lomo_lua_fail(L, ctx, st, where);
    lua_createtable(L, 0, 15);
    lua_pushstring(L, device);
    lua_setfield(L, -2, "device");
    lua_pushinteger(L, (lua_Integer)p.weights);
    lua_setfield(L, -2, "weights");
    lua_pushinteger(L, (lua_Integer)p.activations);
    lua_setfield(L, -2, "activations");
    lua_pushinteger(L, (lua_Integer)p.scratch);
    lua_setfield(L, -2, "scratch");
    lua_pushinteger(L, (lua_Integer)p.total);
    lua_setfield(L, -2, "total");
    lua_pushinteger(L, (lua_Integer)p.kv_cache_per_position);
    lua_setfield(L, -2, "kv_cache_per_position");
    lua_pushinteger(L, p.logits_chunk);
    lua_setfield(L, -2, "logits_chunk");
    lua_pushinteger(L, cfg.vocab_size);
    lua_setfield(L, -2, "vocab_size");
    push_plan(L, &p);
    lua_setfield(L, -2, "inference");

    static const struct { const char *name; lomo_optim_kind kind; float clip; } kinds[] = {
        {"lomo", LOMO_OPTIM_LOMO, 0.0f},     {"lomo-clip", LOMO_OPTIM_LOMO, 1.0f},
        {"adalomo", LOMO_OPTIM_ADALOMO, 0.0f}, {"sgd", LOMO_OPTIM_SGD, 0.0f},
        {"adamw", LOMO_OPTIM_ADAMW, 0.0f},
    };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        lomo_optim_options oo;
        lomo_optim_options_default(&oo, kinds[k].kind);
        oo.clip_grad_norm = kinds[k].clip;
        st = lomo_plan_memory_for(ctx, device, &cfg, &mo, &oo, (int)B, (int)T, &p);
        if (st != LOMO_OK) return lomo_lua_fail(L, ctx, st, where);
        push_plan(L, &p);
        lua_setfield(L, -2, kinds[k].name);
    }
    return 1;
}

static const lomo_lua_reg context_methods[] = {
    {"memory", ctx_memory, "() -> {current = {weights=, activations=, ..., total=}, peak = {...}} bytes"},
    {"reset_peak", ctx_reset_peak, "(): peaks restart from the current use"},
    {"profile", ctx_profile, "(on): time every op of its models from now (each waits for the device), or stop"},
    {"profile_stats", ctx_profile_stats, "() -> {matmul = {calls=, seconds=, flops=}, ...} for every kind of op"},
    {"profile_reset", ctx_profile_reset, "(): profile counts back to zero"},
    {"close", ctx_close, "(): models made in it keep it alive until they close"},
    {NULL, NULL, NULL},
};

static const lomo_lua_reg context_fields[] = {
    {"device", NULL, "\"cpu\" or \"cuda\": where its models live and run"},
    {NULL, NULL, NULL},
};

static const lomo_lua_reg model_methods[] = {
    {"config", model_config, "() -> table with HF field names"},
    {"params", model_params, "() -> array of {name=, shape=, numel=, dtype=, kind=}"},
    {"param", model_param, "(name | index) -> a tensor: a view of that parameter (help(t) for its methods)"},
    {"tensors", model_tensors, "() -> iterator: for i, t in m:tensors() do ... end, t a tensor view"},
    {"get", model_get, "(name) -> the parameter as a flat array of numbers"},
    {"set", model_set, "(name, array): write a parameter from a flat array"},
    {"forward", model_forward, "(tokens, targets) -> mean loss (nil without targets)"},
    {"token_logprobs", model_token_logprobs, "(tokens, targets) -> B rows of T log p(target)"},
    {"next_logits", model_next_logits, "(ids) -> V logits of the next token; ({ids, ...}) -> one per sequence, batched"},
    {"decode", model_decode, "(ids, pos=0) -> V logits after ids at positions pos..; a key/value cache holds the earlier ones"},
    {"decode_reset", model_decode_reset, "() frees decode's key/value cache"},
    {"save", model_save, "(dir): HF folder (config.json + model.safetensors), atomic"},
    {"num_weights", model_num_weights, "() -> total scalar count"},
    {"set_checkpointing", model_set_checkpointing, "(bool | \"off\" | \"blocks\" | \"keep_attention\")"},
    {"close", model_close, "()"},
    {NULL, NULL, NULL},
};

static const lomo_lua_reg model_funcs[] = {
    {"context", l_context, "{threads=, device=\"cpu\"|\"cuda\", memory_limit=bytes} -> a context (runtime, device, memory accounting)"},
    {"load", l_load, "(ctx, path, {dtype=, checkpointing=, logits_chunk=}) -> model from a .gguf file or an HF folder; "
                     "checkpointing = false | true | \"blocks\" | \"keep_attention\"; logits_chunk = vocabulary "
                     "rows of the LM head's logits at a time (0: 8192 under checkpointing, else all)"},
    {"model", l_model, "(ctx, cfg, {dtype=, checkpointing=, logits_chunk=, seed=}) -> randomly initialized model"},
    {"plan", l_plan, "{config= | model=, seq=, batch=, dtype=, checkpointing=, logits_chunk=, device=} -> memory plan "
                     "in bytes (no device needed)"},
    {NULL, NULL, NULL},
};

void lomo_lua_open_model(lua_State *L) {
    lomo_lua_new_type(L, LOMO_T_CONTEXT, context_methods, ctx_close, ctx_tostring);
    lomo_lua_set_fields(L, LOMO_T_CONTEXT, ctx_index, context_fields);
    lomo_lua_new_type(L, LOMO_T_MODEL, model_methods, model_close, model_tostring);
    lomo_lua_set_funcs(L, model_funcs);
}
