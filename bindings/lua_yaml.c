/*
 * lua_yaml.c: lomo.yaml through libyaml's event parser.
 *
 * Plain scalars resolve by the YAML 1.2 core schema (so 1e-4 is a number and
 * "no" stays a string); quoted and block scalars are strings; !!str, !!int,
 * !!float, !!bool and !!null tags are honoured. Mapping keys are strings.
 * Anchors, aliases and merge keys (<<) work. A null value in a mapping leaves
 * the key absent; in a sequence it is lomo.json.null. Errors name the file,
 * line and column.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "lomo_lua.h"

#define STATE_T "lomo.yaml.state"
#define MAX_DEPTH 512

/* parser, file and current event in a userdata, so a Lua error never leaks them */
typedef struct ystate {
    yaml_parser_t parser;
    yaml_event_t ev;
    FILE *f;
    int has_parser, has_ev;
    const char *name;   /* the file name, or "<string>"; anchored on the Lua stack */
    int anchors;        /* stack index of the anchors table */
} ystate;

static int state_gc(lua_State *L) {
    ystate *s = luaL_checkudata(L, 1, STATE_T);
    if (s->has_ev) yaml_event_delete(&s->ev);
    if (s->has_parser) yaml_parser_delete(&s->parser);
    if (s->f) fclose(s->f);
    s->has_ev = s->has_parser = 0;
    s->f = NULL;
    return 0;
}

static int fail_at(lua_State *L, ystate *s, yaml_mark_t m, const char *what) {
    return luaL_error(L, "%s:%d:%d: %s", s->name, (int)m.line + 1, (int)m.column + 1, what);
}

static void next_event(lua_State *L, ystate *s) {
    if (s->has_ev) yaml_event_delete(&s->ev);
    s->has_ev = 0;
    if (!yaml_parser_parse(&s->parser, &s->ev)) {
        yaml_parser_t *p = &s->parser;
        const char *problem = p->problem ? p->problem : "syntax error";
        if (p->context)
            luaL_error(L, "%s:%d:%d: %s (%s at line %d)", s->name, (int)p->problem_mark.line + 1,
                       (int)p->problem_mark.column + 1, problem, p->context, (int)p->context_mark.line + 1);
        luaL_error(L, "%s:%d:%d: %s", s->name, (int)p->problem_mark.line + 1, (int)p->problem_mark.column + 1,
                   problem);
    }
    s->has_ev = 1;
}

/* ---- scalar resolution (YAML 1.2 core schema) ---- */

static int is_digits(const char *p, const char *set) {
    if (!*p) return 0;
    for (; *p; p++)
        if (!strchr(set, *p)) return 0;
    return 1;
}

static int match_float(const char *s) {
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    int digits = 0;
    while (*p >= '0' && *p <= '9') p++, digits++;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') p++, digits++;
    }
    if (!digits) return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!(*p >= '0' && *p <= '9')) return 0;
        while (*p >= '0' && *p <= '9') p++;
    }
    return *p == 0;
}

static int is_null(const char *v) {
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

static int is_bool(const char *v, int *b) {
    if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "TRUE")) return *b = 1, 1;
    if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "FALSE")) return *b = 0, 1;
    return 0;
}

/* pushes an integer (or a float when it overflows); 0 if v is not an integer */
static int push_int(lua_State *L, const char *v) {
    const char *p = v;
    int neg = 0;
    if (*p == '+' || *p == '-') neg = *p++ == '-';
    int base = 10;
    if (p[0] == '0' && p[1] == 'x' && v == p) base = 16, p += 2;
    else if (p[0] == '0' && p[1] == 'o' && v == p) base = 8, p += 2;
    if (!is_digits(p, base == 16 ? "0123456789abcdefABCDEF" : base == 8 ? "01234567" : "0123456789")) return 0;
    errno = 0;
    unsigned long long u = strtoull(p, NULL, base);
    if (errno == ERANGE || u > (unsigned long long)INT64_MAX + (unsigned long long)neg) {
        lua_pushnumber(L, strtod(v, NULL));   /* too big for an integer */
    } else {
        lua_pushinteger(L, neg ? (lua_Integer)(0 - u) : (lua_Integer)u);
    }
    return 1;
}

static int push_float(lua_State *L, const char *v) {
    const char *p = v;
    int neg = 0;
    if (*p == '+' || *p == '-') neg = *p++ == '-';
    if (!strcmp(p, ".inf") || !strcmp(p, ".Inf") || !strcmp(p, ".INF")) {
        lua_pushnumber(L, neg ? -HUGE_VAL : HUGE_VAL);
        return 1;
    }
    if (p == v && (!strcmp(v, ".nan") || !strcmp(v, ".NaN") || !strcmp(v, ".NAN"))) {
        lua_pushnumber(L, NAN);
        return 1;
    }
    if (!match_float(v)) return 0;
    lua_pushnumber(L, strtod(v, NULL));
    return 1;
}

#define TAG(x) "tag:yaml.org,2002:" x

/* pushes the value of the current scalar event; returns 0 when it is null (pushes nothing) */
static int push_scalar(lua_State *L, ystate *s) {
    const char *v = (const char *)s->ev.data.scalar.value;
    size_t len = s->ev.data.scalar.length;
    const char *tag = (const char *)s->ev.data.scalar.tag;
    int plain = s->ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    int b;
    if (tag && strcmp(tag, "!") != 0) {
        if (!strcmp(tag, TAG("str"))) {
            lua_pushlstring(L, v, len);
        } else if (!strcmp(tag, TAG("null"))) {
            return 0;
        } else if (!strcmp(tag, TAG("bool"))) {
            if (!is_bool(v, &b)) fail_at(L, s, s->ev.start_mark, "!!bool value is not true or false");
            lua_pushboolean(L, b);
        } else if (!strcmp(tag, TAG("int"))) {
            if (!push_int(L, v)) fail_at(L, s, s->ev.start_mark, "!!int value is not an integer");
        } else if (!strcmp(tag, TAG("float"))) {
            if (!push_float(L, v) && !push_int(L, v))
                fail_at(L, s, s->ev.start_mark, "!!float value is not a number");
            lua_pushnumber(L, lua_tonumber(L, -1));
            lua_remove(L, -2);
        } else {
            lua_pushlstring(L, v, len);   /* unknown tags: the text */
        }
        return 1;
    }
    if (!plain || tag) {
        lua_pushlstring(L, v, len);
        return 1;
    }
    if (is_null(v)) return 0;
    if (is_bool(v, &b)) {
        lua_pushboolean(L, b);
        return 1;
    }
    if (push_int(L, v) || push_float(L, v)) return 1;
    lua_pushlstring(L, v, len);
    return 1;
}

static void remember_anchor(lua_State *L, ystate *s, const char *anchor) {
    if (!anchor) return;
    lua_pushstring(L, anchor);
    lua_pushvalue(L, -2);
    lua_rawset(L, s->anchors);
}

/* copies the keys of the table on top absent from the table at t (a merge key) */
static void merge_into(lua_State *L, int t) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pushvalue(L, -2);
        if (lua_rawget(L, t) == LUA_TNIL) {
            lua_pop(L, 1);
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, t);
        } else {
            lua_pop(L, 2);
        }
    }
}

static void push_null_sentinel(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, "lomo.json.null");
}

/* the node whose first event is current; pushes its value, or returns 0 for null */
static int parse_node(lua_State *L, ystate *s, int depth) {
    luaL_checkstack(L, 8, "lomo.yaml: nested too deeply");
    if (depth > MAX_DEPTH) fail_at(L, s, s->ev.start_mark, "nested too deeply");
    yaml_mark_t start = s->ev.start_mark;
    switch (s->ev.type) {
    case YAML_SCALAR_EVENT: {
        int has = push_scalar(L, s);
        if (!has) push_null_sentinel(L);
        remember_anchor(L, s, (const char *)s->ev.data.scalar.anchor);
        if (!has) lua_pop(L, 1);
        return has;
    }
    case YAML_ALIAS_EVENT: {
        lua_pushstring(L, (const char *)s->ev.data.alias.anchor);
        if (lua_rawget(L, s->anchors) == LUA_TNIL) {
            lua_pop(L, 1);
            lua_pushfstring(L, "unknown alias *%s", (const char *)s->ev.data.alias.anchor);
            fail_at(L, s, start, lua_tostring(L, -1));
        }
        push_null_sentinel(L);
        int null = lua_rawequal(L, -1, -2);
        lua_pop(L, null ? 2 : 1);   /* an alias of a null is null */
        return !null;
    }
    case YAML_SEQUENCE_START_EVENT: {
        lua_newtable(L);
        remember_anchor(L, s, (const char *)s->ev.data.sequence_start.anchor);
        lua_Integer n = 0;
        for (;;) {
            next_event(L, s);
            if (s->ev.type == YAML_SEQUENCE_END_EVENT) break;
            if (!parse_node(L, s, depth + 1)) push_null_sentinel(L);
            lua_rawseti(L, -2, ++n);
        }
        return 1;
    }
    case YAML_MAPPING_START_EVENT: {
        lua_newtable(L);
        int t = lua_gettop(L);
        remember_anchor(L, s, (const char *)s->ev.data.mapping_start.anchor);
        lua_newtable(L);   /* merge sources (<<), applied at the end: explicit keys win */
        int merges = t + 1;
        lua_Integer nmerge = 0;
        for (;;) {
            next_event(L, s);
            if (s->ev.type == YAML_MAPPING_END_EVENT) break;
            yaml_mark_t kmark = s->ev.start_mark;
            int merge = 0;
            if (s->ev.type == YAML_SCALAR_EVENT) {
                merge = s->ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                        strcmp((const char *)s->ev.data.scalar.value, "<<") == 0;
                lua_pushlstring(L, (const char *)s->ev.data.scalar.value, s->ev.data.scalar.length);
                remember_anchor(L, s, (const char *)s->ev.data.scalar.anchor);
            } else if (s->ev.type == YAML_ALIAS_EVENT) {
                if (!parse_node(L, s, depth + 1) ||
                    (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
                    fail_at(L, s, kmark, "mapping keys must be scalars");
                lua_pushstring(L, lua_tostring(L, -1));
                lua_remove(L, -2);
            } else {
                fail_at(L, s, kmark, "mapping keys must be scalars");
            }
            next_event(L, s);
            int has = parse_node(L, s, depth + 1);
            if (merge) {
                if (!has || !lua_istable(L, -1)) fail_at(L, s, kmark, "merge key << needs a mapping or a list of them");
                lua_rawgeti(L, -1, 1);
                int list = lua_istable(L, -1);
                lua_pop(L, 1);
                if (list) {   /* earlier mappings take precedence */
                    for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TTABLE; i++) lua_rawseti(L, merges, ++nmerge);
                    lua_pop(L, 1);
                } else {
                    lua_pushvalue(L, -1);
                    lua_rawseti(L, merges, ++nmerge);
                }
                lua_pop(L, 2);
                continue;
            }
            lua_pushvalue(L, -1 - has);
            if (lua_rawget(L, t) != LUA_TNIL) {
                lua_pushfstring(L, "duplicate key '%s'", lua_tostring(L, -2 - has));
                fail_at(L, s, kmark, lua_tostring(L, -1));
            }
            lua_pop(L, 1);
            if (has) lua_rawset(L, t);
            else lua_pop(L, 1);
        }
        for (lua_Integer i = 1; i <= nmerge; i++) {
            lua_rawgeti(L, merges, i);
            merge_into(L, t);
            lua_pop(L, 1);
        }
        lua_settop(L, t);
        return 1;
    }
    default: fail_at(L, s, start, "unexpected YAML event"); return 0;
    }
}

/* parses the stream; pushes the first document's value (nil for an empty stream) */
static int parse_stream(lua_State *L, ystate *s) {
    lua_newtable(L);
    s->anchors = lua_gettop(L);
    next_event(L, s);   /* stream start */
    next_event(L, s);
    if (s->ev.type == YAML_STREAM_END_EVENT) {
        lua_pushnil(L);
        return 1;
    }
    next_event(L, s);   /* past document start */
    if (!parse_node(L, s, 0)) lua_pushnil(L);
    next_event(L, s);   /* document end */
    next_event(L, s);
    if (s->ev.type != YAML_STREAM_END_EVENT)
        fail_at(L, s, s->ev.start_mark, "a second document (lomo.yaml reads one document per file)");
    return 1;
}

static ystate *new_state(lua_State *L, const char *name) {
    ystate *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    luaL_setmetatable(L, STATE_T);
    if (!yaml_parser_initialize(&s->parser)) luaL_error(L, "lomo.yaml: out of memory");
    s->has_parser = 1;
    s->name = name;
    return s;
}

static int l_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    ystate *s = new_state(L, path);
    s->f = fopen(path, "rb");
    if (!s->f) return luaL_error(L, "lomo.yaml.load: %s: %s", path, strerror(errno));
    yaml_parser_set_input_file(&s->parser, s->f);
    parse_stream(L, s);
    return 1;
}

static int l_decode(lua_State *L) {
    size_t len;
    const char *str = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "<string>");
    lua_settop(L, 2);
    ystate *s = new_state(L, name);
    yaml_parser_set_input_string(&s->parser, (const unsigned char *)str, len);
    parse_stream(L, s);
    return 1;
}

static const lomo_lua_reg yaml_funcs[] = {
    {"load", l_load, "(path) -> value of the YAML file; errors name file:line:column"},
    {"decode", l_decode, "(s [, name]) -> value of the YAML text"},
    {NULL, NULL, NULL},
};

void lomo_lua_open_yaml(lua_State *L) {
    luaL_newmetatable(L, STATE_T);
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushliteral(L, "lomo.yaml");
    lua_setfield(L, -2, "_NAME");
    lomo_lua_set_funcs(L, yaml_funcs);
}
