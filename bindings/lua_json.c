/*
 * lua_json.c: lomo.json through jansson. JSON null is lomo.json.null;
 * decoded arrays carry the metatable lomo.json.array_mt so empty arrays
 * round-trip (lomo.json.array(t) marks a table the same way).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "lomo_lua.h"

#define NULL_KEY "lomo.json.null"
#define ARRAY_KEY "lomo.json.array_mt"
#define BOX_T "lomo.json.box"
#define MAX_DEPTH 512

/* a json_t owned by a userdata, so a Lua error never leaks it */
typedef struct box {
    json_t *j;
} box;

static int box_gc(lua_State *L) {
    box *b = luaL_checkudata(L, 1, BOX_T);
    json_decref(b->j);
    b->j = NULL;
    return 0;
}

static box *new_box(lua_State *L) {
    box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->j = NULL;
    luaL_setmetatable(L, BOX_T);
    return b;
}

/* ---- decode ---- */

static void push_json(lua_State *L, json_t *j, int depth) {
    luaL_checkstack(L, 4, "lomo.json.decode: nested too deeply");
    if (depth > MAX_DEPTH) luaL_error(L, "lomo.json.decode: nested deeper than %d", MAX_DEPTH);
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        lua_createtable(L, 0, (int)json_object_size(j));
        const char *k;
        size_t klen;
        json_t *v;
        json_object_keylen_foreach(j, k, klen, v) {
            lua_pushlstring(L, k, klen);
            push_json(L, v, depth + 1);
            lua_rawset(L, -3);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        lua_createtable(L, n > INT32_MAX ? 0 : (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            push_json(L, json_array_get(j, i), depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        luaL_setmetatable(L, ARRAY_KEY);
        break;
    }
    case JSON_STRING: lua_pushlstring(L, json_string_value(j), json_string_length(j)); break;
    case JSON_INTEGER: lua_pushinteger(L, (lua_Integer)json_integer_value(j)); break;
    case JSON_REAL: lua_pushnumber(L, json_real_value(j)); break;
    case JSON_TRUE: lua_pushboolean(L, 1); break;
    case JSON_FALSE: lua_pushboolean(L, 0); break;
    case JSON_NULL: lua_getfield(L, LUA_REGISTRYINDEX, NULL_KEY); break;
    }
}

static int l_decode(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    box *b = new_box(L);
    json_error_t err;
    b->j = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!b->j) return luaL_error(L, "lomo.json.decode: line %d column %d: %s", err.line, err.column, err.text);
    push_json(L, b->j, 0);
    return 1;
}

/* ---- encode: never raises while it holds json_t nodes; errors go to e->msg ---- */

typedef struct enc {
    char msg[400];
    char path[256];
    int precision;   /* digits the reals need to round-trip */
} enc;

static size_t path_index(enc *e, lua_Integer i) {
    size_t saved = strlen(e->path);
    snprintf(e->path + saved, sizeof e->path - saved, "[%lld]", (long long)i);
    return saved;
}

static size_t path_key(enc *e, const char *key) {
    size_t saved = strlen(e->path);
    snprintf(e->path + saved, sizeof e->path - saved, ".%.60s", key);
    return saved;
}

static void fail(enc *e, const char *what) {
    snprintf(e->msg, sizeof e->msg, "at %.200s: %.100s", e->path[0] ? e->path : "top level", what);
}

static int digits_needed(double x) {
    char buf[40];
    for (int p = 1; p < 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, x);
        if (strtod(buf, NULL) == x) return p;
    }
    return 17;
}

/* is the table at index t a sequence 1..n (n > 0), or marked as an array? */
static int is_array(lua_State *L, int t, lua_Integer *n_out) {
    if (lua_getmetatable(L, t)) {
        luaL_getmetatable(L, ARRAY_KEY);
        int marked = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (marked) {
            *n_out = (lua_Integer)lua_rawlen(L, t);
            return 1;
        }
    }
    lua_Integer count = 0, max = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
            lua_pop(L, 1);
            return 0;
        }
        lua_Integer k = lua_tointeger(L, -1);
        if (k > max) max = k;
        count++;
    }
    *n_out = count;
    return count > 0 && max == count;
}

static json_t *to_json(lua_State *L, int i, enc *e, int depth) {
    i = lua_absindex(L, i);
    if (depth > MAX_DEPTH || !lua_checkstack(L, 4)) {
        fail(e, "nested too deeply (a cycle?)");
        return NULL;
    }
    switch (lua_type(L, i)) {
    case LUA_TBOOLEAN: return json_boolean(lua_toboolean(L, i));
    case LUA_TNUMBER:
        if (lua_isinteger(L, i)) return json_integer((json_int_t)lua_tointeger(L, i));
        {
            double x = lua_tonumber(L, i);
            if (!isfinite(x)) {
                fail(e, "JSON has no inf or nan");
                return NULL;
            }
            int p = digits_needed(x);
            if (p > e->precision) e->precision = p;
            return json_real(x);
        }
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, i, &len);
        json_t *j = json_stringn(s, len);
        if (!j) fail(e, "string is not valid UTF-8");
        return j;
    }
    case LUA_TUSERDATA:
    case LUA_TLIGHTUSERDATA: {
        lua_getfield(L, LUA_REGISTRYINDEX, NULL_KEY);
        int is_null = lua_rawequal(L, -1, i);
        lua_pop(L, 1);
        if (is_null) return json_null();
        break;
    }
    case LUA_TTABLE: {
        lua_Integer n;
        if (is_array(L, i, &n)) {
            json_t *a = json_array();
            for (lua_Integer k = 1; a && k <= n; k++) {
                size_t saved = path_index(e, k);
                lua_rawgeti(L, i, k);
                json_t *v = to_json(L, -1, e, depth + 1);
                lua_pop(L, 1);
                e->path[saved] = 0;
                if (!v || json_array_append_new(a, v) != 0) {
                    json_decref(a);
                    if (!e->msg[0]) fail(e, "out of memory");
                    return NULL;
                }
            }
            return a;
        }
        json_t *o = json_object();
        lua_pushnil(L);
        while (o && lua_next(L, i)) {
            char keybuf[32];
            const char *key;
            if (lua_type(L, -2) == LUA_TSTRING) {
                key = lua_tostring(L, -2);
            } else if (lua_isinteger(L, -2)) {
                snprintf(keybuf, sizeof keybuf, "%lld", (long long)lua_tointeger(L, -2));
                key = keybuf;
            } else {
                lua_pop(L, 2);
                json_decref(o);
                fail(e, "object keys must be strings or integers");
                return NULL;
            }
            size_t saved = path_key(e, key);
            json_t *v = to_json(L, -1, e, depth + 1);
            lua_pop(L, 1);
            if (v) e->path[saved] = 0;
            if (!v || json_object_set_new(o, key, v) != 0) {
                lua_pop(L, 1);
                json_decref(o);
                if (!e->msg[0]) fail(e, "object key is not valid UTF-8");
                return NULL;
            }
        }
        return o;
    }
    default: break;
    }
    char what[64];
    snprintf(what, sizeof what, "cannot encode a %s", luaL_typename(L, i));
    fail(e, what);
    return NULL;
}

static int l_encode(lua_State *L) {
    luaL_checkany(L, 1);
    static const char *const known[] = {"indent", "sort_keys", NULL};
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lomo_lua_check_keys(L, 2, "lomo.json.encode", known);
    }
    lua_Integer indent = lomo_lua_opt_int(L, 2, "indent", 0, "lomo.json.encode");
    int sort = lomo_lua_opt_bool(L, 2, "sort_keys", 1, "lomo.json.encode");
    if (indent < 0 || indent > 31) return luaL_error(L, "lomo.json.encode: indent must be in [0, 31]");
    lua_settop(L, 1);
    box *b = new_box(L);
    enc e;
    memset(&e, 0, sizeof e);
    e.precision = 1;
    b->j = to_json(L, 1, &e, 0);
    if (!b->j) return luaL_error(L, "lomo.json.encode: %s", e.msg[0] ? e.msg : "failed");
    size_t flags = JSON_ENCODE_ANY | JSON_REAL_PRECISION(e.precision) | (sort ? JSON_SORT_KEYS : 0);
    flags |= indent ? JSON_INDENT(indent) : JSON_COMPACT;
    char *s = json_dumps(b->j, flags);
    if (!s) return luaL_error(L, "lomo.json.encode: out of memory");
    lua_pushstring(L, s);   /* raises only on OOM */
    free(s);
    return 1;
}

static int l_array(lua_State *L) {
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_setmetatable(L, ARRAY_KEY);
    return 1;
}

static int null_tostring(lua_State *L) {
    lua_pushliteral(L, "null");
    return 1;
}

static const lomo_lua_reg json_funcs[] = {
    {"decode", l_decode, "(s) -> value (null -> lomo.json.null, arrays marked with lomo.json.array_mt)"},
    {"encode", l_encode, "(v, {indent=0, sort_keys=true}) -> string"},
    {"array", l_array, "([t]) -> t marked to encode as a JSON array (even when empty)"},
    {NULL, NULL, NULL},
};

void lomo_lua_open_json(lua_State *L) {
    luaL_newmetatable(L, BOX_T);
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, ARRAY_KEY);
    lua_pop(L, 1);
    /* the null sentinel: one userdata per state */
    if (lua_getfield(L, LUA_REGISTRYINDEX, NULL_KEY) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_newuserdatauv(L, 0, 0);
        lua_createtable(L, 0, 2);
        lua_pushcfunction(L, null_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "lomo.json.null");
        lua_setfield(L, -2, "__name");
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, NULL_KEY);
    }
    lua_newtable(L);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "null");
    luaL_getmetatable(L, ARRAY_KEY);
    lua_setfield(L, -2, "array_mt");
    lua_pushliteral(L, "lomo.json");
    lua_setfield(L, -2, "_NAME");
    lomo_lua_set_funcs(L, json_funcs);
    lua_remove(L, -2);
}
