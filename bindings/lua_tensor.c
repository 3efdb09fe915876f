/*
 * lua_tensor.c: the tensor handle, a view of one model parameter
 * (m:param(name | index)).
 *
 * A view owns no runtime memory: every read or write goes through
 * lomo_model_get_param_f32 / lomo_model_set_param_f32, so it always shows the
 * weights as they are now (after an optimizer step, say), in f32 whatever the
 * storage dtype, on whatever device holds them. Those calls move whole
 * parameters, so each method reads or writes the whole tensor once through a
 * host buffer of numel floats.
 *
 * The view holds a reference to the model (so the runtime model outlives
 * m:close() while a view points at it) and keeps the model's handle as a
 * uservalue (so a view outliving every variable holding the model does not
 * see it collected and closed). A view whose model was closed raises
 * "tensor <name>: its model is closed"; a closed view "tensor <name>: use
 * after close".
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lomo_lua.h"

#define BUF_T "lomo.tensor.buffer"

typedef struct tensor_handle {
    lomo_model_ref *mr;   /* NULL: closed */
    int index;            /* the parameter, 0-based */
    int ndim;
    int64_t shape[2];
    size_t numel;
    lomo_dtype dtype;
    const char *name;     /* uservalue 2 keeps the string alive; NULL only while being made */
} tensor_handle;

/* uservalues: the model's handle, the parameter's name */
enum { UV_MODEL = 1, UV_NAME = 2 };

static const char *name_of(const tensor_handle *h) {
    return h->name ? h->name : "?";
}

static tensor_handle *check_tensor(lua_State *L, int i) {
    tensor_handle *h = luaL_checkudata(L, i, LOMO_T_TENSOR);
    if (!h->mr) luaL_error(L, "tensor %s: use after close", name_of(h));
    if (!h->mr->open) luaL_error(L, "tensor %s: its model is closed", name_of(h));
    return h;
}

/* ---- host buffers ----
 * A box on the Lua stack whose __gc frees the buffer, so an error anywhere
 * (out of memory inside the Lua API included) cannot leak it; buf_free gives
 * the memory back at once instead of at the next collection. */

typedef struct host_buf {
    float *p;
} host_buf;

static int buf_gc(lua_State *L) {
    host_buf *b = luaL_checkudata(L, 1, BUF_T);
    free(b->p);
    b->p = NULL;
    return 0;
}

static host_buf *buf_push(lua_State *L, const tensor_handle *h) {
    host_buf *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->p = NULL;
    luaL_setmetatable(L, BUF_T);
    if (h->numel > SIZE_MAX / sizeof(float) || !(b->p = malloc((h->numel ? h->numel : 1) * sizeof(float))))
        luaL_error(L, "tensor %s: out of memory for %I values", name_of(h), (lua_Integer)h->numel);
    return b;
}

static void buf_free(host_buf *b) {
    free(b->p);
    b->p = NULL;
}

/* a pushed buffer holding the tensor's values */
static host_buf *read_all(lua_State *L, const tensor_handle *h) {
    host_buf *b = buf_push(L, h);
    lomo_status st = lomo_model_get_param_f32(h->mr->m, h->index, b->p, h->numel);
    if (st != LOMO_OK) {
        buf_free(b);
        lua_pushfstring(L, "tensor %s", name_of(h));
        lomo_lua_fail(L, h->mr->cr->ctx, st, lua_tostring(L, -1));
    }
    return b;
}

/* writes the buffer into the tensor and frees it */
static void write_all(lua_State *L, const tensor_handle *h, host_buf *b) {
    lomo_status st = lomo_model_set_param_f32(h->mr->m, h->index, b->p, h->numel);
    buf_free(b);
    if (st != LOMO_OK) {
        lua_pushfstring(L, "tensor %s", name_of(h));
        lomo_lua_fail(L, h->mr->cr->ctx, st, lua_tostring(L, -1));
    }
}

/* ---- making and closing ---- */

void lomo_lua_push_tensor(lua_State *L, int model_arg, lomo_model_ref *r, int index) {
    model_arg = lua_absindex(L, model_arg);
    lomo_param_info pi;
    lomo_status st = lomo_model_param(r->m, index, &pi);
    if (st != LOMO_OK) lomo_lua_fail(L, r->cr->ctx, st, "lomo.model:param");
    tensor_handle *h = lua_newuserdatauv(L, sizeof *h, 2);
    memset(h, 0, sizeof *h);   /* closed until it holds its reference */
    luaL_setmetatable(L, LOMO_T_TENSOR);
    lua_pushstring(L, pi.name);
    h->name = lua_tostring(L, -1);   /* strings do not move; the uservalue keeps it */
    lua_setiuservalue(L, -2, UV_NAME);
    lua_pushvalue(L, model_arg);
    lua_setiuservalue(L, -2, UV_MODEL);
    h->index = index;
    h->ndim = pi.ndim;
    h->shape[0] = pi.shape[0];
    h->shape[1] = pi.ndim > 1 ? pi.shape[1] : 1;
    h->numel = pi.numel;
    h->dtype = pi.dtype;
    h->mr = r;
    r->refs++;
}

static int tensor_close(lua_State *L) {
    tensor_handle *h = luaL_checkudata(L, 1, LOMO_T_TENSOR);
    if (h->mr) {
        lomo_lua_model_ref_release(h->mr);
        h->mr = NULL;
        lua_pushnil(L);   /* the model's handle may be collected now */
        lua_setiuservalue(L, 1, UV_MODEL);
    }
    return 0;
}

static void push_shape_text(lua_State *L, const tensor_handle *h) {
    if (h->ndim == 2) lua_pushfstring(L, "[%I, %I]", (lua_Integer)h->shape[0], (lua_Integer)h->shape[1]);
    else lua_pushfstring(L, "[%I]", (lua_Integer)h->shape[0]);
}

/* tensor(model.norm.weight, [576], bf16) */
static int tensor_tostring(lua_State *L) {
    tensor_handle *h = luaL_checkudata(L, 1, LOMO_T_TENSOR);
    if (!h->mr) {
        lua_pushfstring(L, "tensor(%s, closed)", name_of(h));
    } else if (!h->mr->open) {
        lua_pushfstring(L, "tensor(%s, model closed)", name_of(h));
    } else {
        push_shape_text(L, h);
        lua_pushfstring(L, "tensor(%s, %s, %s)", name_of(h), lua_tostring(L, -1), lomo_dtype_name(h->dtype));
    }
    return 1;
}

/* ---- fields and sizes ---- */

static const char *kind_name(lomo_param_kind k) {
    switch (k) {
    case LOMO_PARAM_EMBEDDING: return "embedding";
    case LOMO_PARAM_NORM: return "norm";
    case LOMO_PARAM_LINEAR: return "linear";
    }
    return "?";
}

/* t.name works on a closed view too: it is how errors name it */
static int tensor_index(lua_State *L) {
    const char *k = lua_tostring(L, 2);
    if (k && strcmp(k, "name") == 0) {
        lua_pushstring(L, name_of(luaL_checkudata(L, 1, LOMO_T_TENSOR)));
        return 1;
    }
    if (k && (strcmp(k, "dtype") == 0 || strcmp(k, "kind") == 0 || strcmp(k, "device") == 0)) {
        tensor_handle *h = check_tensor(L, 1);
        if (k[0] == 'd' && k[1] == 't') {
            lua_pushstring(L, lomo_dtype_name(h->dtype));
            return 1;
        }
        lomo_param_info pi;
        lomo_status st = lomo_model_param(h->mr->m, h->index, &pi);
        if (st != LOMO_OK) return lomo_lua_fail(L, h->mr->cr->ctx, st, "tensor");
        lua_pushstring(L, k[0] == 'k' ? kind_name(pi.kind) : pi.device);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_gettable(L, lua_upvalueindex(1));
    return 1;
}

static int tensor_shape(lua_State *L) {
    tensor_handle *h = check_tensor(L, 1);
    lua_createtable(L, h->ndim, 0);
    for (int d = 0; d < h->ndim; d++) {
        lua_pushinteger(L, (lua_Integer)h->shape[d]);
        lua_rawseti(L, -2, d + 1);
    }
    return 1;
}

static int tensor_numel(lua_State *L) {
    tensor_handle *h = check_tensor(L, 1);
    lua_pushinteger(L, (lua_Integer)h->numel);
    return 1;
}

/* ---- reading ---- */

typedef struct tensor_stats {
    double mean, std, min, max, rms, absmax;
    size_t finite, nan, inf;
} tensor_stats;

/* over the finite values (two passes, in double); NaN where there are none */
static void compute_stats(tensor_stats *s, const float *x, size_t n) {
    double sum = 0, sumsq = 0, mn = INFINITY, mx = -INFINITY;
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        if (isnan(v)) s->nan++;
        else if (isinf(v)) s->inf++;
        else {
            s->finite++;
            sum += v;
            sumsq += v * v;
            if (v < mn) mn = v;
            if (v > mx) mx = v;
        }
    }
    if (s->finite == 0) {
        s->mean = s->std = s->min = s->max = s->rms = s->absmax = NAN;
        return;
    }
    double mean = sum / (double)s->finite, dev = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(x[i])) dev += ((double)x[i] - mean) * ((double)x[i] - mean);
    s->mean = mean;
    s->std = sqrt(dev / (double)s->finite);   /* population: the spread of these values */
    s->min = mn;
    s->max = mx;
    s->rms = sqrt(sumsq / (double)s->finite);
    s->absmax = fmax(fabs(mn), fabs(mx));
}

static int tensor_stats_fn(lua_State *L) {
    tensor_handle *h = check_tensor(L, 1);
    host_buf *b = read_all(L, h);
    tensor_stats s;
    compute_stats(&s, b->p, h->numel);
    buf_free(b);
    lua_createtable(L, 0, 9);
#define SETN(f) (lua_pushnumber(L, s.f), lua_setfield(L, -2, #f))
    SETN(mean);
    SETN(std);
    SETN(min);
    SETN(max);
    SETN(rms);
    SETN(absmax);
#undef SETN
    lua_pushinteger(L, (lua_Integer)s.nan);
    lua_setfield(L, -2, "nan");
    lua_pushinteger(L, (lua_Integer)s.inf);
    lua_setfield(L, -2, "inf");
    lua_pushinteger(L, (lua_Integer)h->numel);
    lua_setfield(L, -2, "numel");
    return 1;
}

/* pushes n values from x as a flat array */
static void push_array(lua_State *L, const float *x, size_t n) {
    lua_createtable(L, n > INT32_MAX ? 0 : (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushnumber(L, x[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static int tensor_totable(lua_State *L) {
    tensor_handle *h = check_tensor(L, 1);
    host_buf *b = read_all(L, h);
    if (h->ndim == 2) {
        size_t rows = (size_t)h->shape[0], cols = (size_t)h->shape[1];
        lua_createtable(L, rows > INT32_MAX ? 0 : (int)rows, 0);
        for (size_t r = 0; r < rows; r++) {
            push_array(L, b->p + r * cols, cols);
            lua_rawseti(L, -2, (lua_Integer)r + 1);
        }
    } else {
        push_array(L, b->p, h->numel);
    }
    buf_free(b);
    return 1;
}

/* t:get(i) (flat, 1-based) or t:get(row, col) for a matrix */
static int tensor_get(lua_State *L) {
    tensor_handle *h = check_tensor(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    size_t at;
    if (lua_isnoneornil(L, 3)) {
        if (i < 1 || (size_t)i > h->numel)
            return luaL_error(L, "tensor %s: index %I is outside [1, %I]", name_of(h), i, (lua_Integer)h->numel);
        at = (size_t)i - 1;
    } else {
        lua_Integer j = luaL_checkinteger(L, 3);
        if (h->ndim != 2) return luaL_error(L, "tensor %s: get(i, j) needs a matrix; this one is 1-D", name_of(h));
        if (i < 1 || i > h->shape[0] || j < 1 || j > h->shape[1])
            return luaL_error(L, "tensor %s: index (%I, %I) is outside [1, %I] x [1, %I]", name_of(h), i, j,
                              (lua_Integer)h->shape[0], (lua_Integer)h->shape[1]);
        at = (size_t)(i - 1) * (size_t)h->shape[1] + (size_t)(j - 1);
    }
    lua_settop(L, 1);
    host_buf *b = read_all(L, h);
    float v = b->p[at];
    buf_free(b);
    lua_pushnumber(L, v);
    return 1;
}

/* ---- writing ---- */

/* the value at the top of the stack, popped, into *out; [i] or [i][j] (j > 0) name it in errors */
static void pop_value(lua_State *L, const tensor_handle *h, host_buf *b, float *out, lua_Integer i, lua_Integer j) {
    if (lua_type(L, -1) != LUA_TNUMBER) {
        const char *got = luaL_typename(L, -1);
        buf_free(b);
        if (j) luaL_error(L, "tensor %s: value [%I][%I] must be a number, got %s", name_of(h), i, j, got);
        luaL_error(L, "tensor %s: value [%I] must be a number, got %s", name_of(h), i, got);
    }
    *out = (float)lua_tonumber(L, -1);
    lua_pop(L, 1);
}

/* rows of a matrix as a nested table at t */
static void read_rows(lua_State *L, const tensor_handle *h, int t, host_buf *b) {
    lua_Integer rows = h->shape[0], cols = h->shape[1], n = (lua_Integer)lua_rawlen(L, t);
    if (n != rows) {
        buf_free(b);
        luaL_error(L, "tensor %s: expected %I rows, got %I", name_of(h), rows, n);
    }
    for (lua_Integer r = 0; r < rows; r++) {
        if (lua_rawgeti(L, t, r + 1) != LUA_TTABLE) {
            const char *got = luaL_typename(L, -1);
            buf_free(b);
            luaL_error(L, "tensor %s: row %I must be a table of %I values, got %s", name_of(h), r + 1, cols, got);
        }
        lua_Integer m = (lua_Integer)lua_rawlen(L, -1);
        if (m != cols) {
            buf_free(b);
            luaL_error(L, "tensor %s: row %I: expected %I values, got %I", name_of(h), r + 1, cols, m);
        }
        for (lua_Integer c = 0; c < cols; c++) {
            lua_rawgeti(L, -1, c + 1);
            pop_value(L, h, b, &b->p[r * cols + c], r + 1, c + 1);
        }
        lua_pop(L, 1);
    }
}

/* t:set(values): a flat array of numel numbers, or for a matrix, rows of numbers */
static int tensor_set(lua_State *L) {
    tensor_handle *h = check_tensor(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    int nested = 0;
    if (h->ndim == 2) {
        nested = lua_rawgeti(L, 2, 1) == LUA_TTABLE;
        lua_pop(L, 1);
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    if (!nested && (size_t)n != h->numel)
        return luaL_error(L, "tensor %s: expected %I values, got %I", name_of(h), (lua_Integer)h->numel, n);
    host_buf *b = buf_push(L, h);
    if (nested) {
        read_rows(L, h, 2, b);
    } else {
        for (lua_Integer i = 0; i < n; i++) {
            lua_rawgeti(L, 2, i + 1);
            pop_value(L, h, b, &b->p[i], i + 1, 0);
        }
    }
    write_all(L, h, b);
    return 0;
}

static int tensor_fill(lua_State *L) {
    tensor_handle *h = check_tensor(L, 1);
    float x = (float)luaL_checknumber(L, 2);
    host_buf *b = buf_push(L, h);
    for (size_t i = 0; i < h->numel; i++) b->p[i] = x;
    write_all(L, h, b);
    return 0;
}

static const lomo_lua_reg tensor_methods[] = {
    {"shape", tensor_shape, "() -> {rows, cols} or {n}"},
    {"numel", tensor_numel, "() -> number of values (also #t)"},
    {"stats", tensor_stats_fn,
     "() -> {mean=, std=, min=, max=, rms=, absmax=, nan=, inf=, numel=} over the finite values, in double"},
    {"totable", tensor_totable, "() -> rows of numbers (a matrix) or numbers (a vector), as f32"},
    {"get", tensor_get, "(i) or (row, col) -> one value, 1-based (reads the whole tensor: use totable in loops)"},
    {"set", tensor_set, "(values): a flat array of numel numbers, or rows; stored in the model's dtype"},
    {"fill", tensor_fill, "(x): every value to x"},
    {"close", tensor_close, "(): drops the view's reference to its model"},
    {NULL, NULL, NULL},
};

static const lomo_lua_reg tensor_fields[] = {
    {"name", NULL, "the HF name, e.g. \"model.norm.weight\""},
    {"dtype", NULL, "the storage dtype: \"f32\", \"bf16\" or \"f16\""},
    {"kind", NULL, "\"embedding\", \"norm\" or \"linear\""},
    {"device", NULL, "where the values live: \"cpu\" or \"cuda\""},
    {NULL, NULL, NULL},
};

void lomo_lua_open_tensor(lua_State *L) {
    luaL_newmetatable(L, BUF_T);
    lua_pushcfunction(L, buf_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lomo_lua_new_type(L, LOMO_T_TENSOR, tensor_methods, tensor_close, tensor_tostring);
    lomo_lua_set_fields(L, LOMO_T_TENSOR, tensor_index, tensor_fields);
    luaL_getmetatable(L, LOMO_T_TENSOR);
    lua_pushcfunction(L, tensor_numel);
    lua_setfield(L, -2, "__len");
    lua_pop(L, 1);
}
