/*
 * lua_module.c: luaopen_lomo, the helpers every binding file shares (handle
 * types, option tables, errors) and the small functions of the module
 * (clock, peak_rss, atomic_write, interrupted, help).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lomo_lua.h"

#ifndef LOMO_SCRIPTS_DIR
#define LOMO_SCRIPTS_DIR "scripts"
#endif

#define DOCS_KEY "lomo.docs"   /* registry: function -> help text (weak keys) */

volatile sig_atomic_t lomo_lua_interrupt_flag = 0;

/* ---- reference-counted runtime objects ---- */

lomo_ctx_ref *lomo_lua_ctx_ref_new(lomo_ctx *ctx) {
    lomo_ctx_ref *r = malloc(sizeof *r);
    if (!r) return NULL;
    r->ctx = ctx;
    r->refs = 1;
    return r;
}

void lomo_lua_ctx_ref_release(lomo_ctx_ref *r) {
    if (r && --r->refs == 0) {
        lomo_ctx_destroy(r->ctx);
        free(r);
    }
}

void lomo_lua_model_ref_release(lomo_model_ref *r) {
    if (r && --r->refs == 0) {
        lomo_model_destroy(r->m);
        lomo_lua_ctx_ref_release(r->cr);
        free(r);
    }
}

/* ---- types and help text ---- */

static void set_doc(lua_State *L, int fn_index, const char *doc) {
    fn_index = lua_absindex(L, fn_index);
    if (luaL_getsubtable(L, LUA_REGISTRYINDEX, DOCS_KEY) == 0) {
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
    }
    lua_pushvalue(L, fn_index);
    lua_pushstring(L, doc);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

void lomo_lua_set_funcs(lua_State *L, const lomo_lua_reg *funcs) {
    for (; funcs->name; funcs++) {
        lua_pushcfunction(L, funcs->fn);
        if (funcs->doc) set_doc(L, -1, funcs->doc);
        lua_setfield(L, -2, funcs->name);
    }
}

void lomo_lua_new_type(lua_State *L, const char *tname, const lomo_lua_reg *methods, lua_CFunction close,
                       lua_CFunction tostring) {
    luaL_newmetatable(L, tname);
    lua_newtable(L);
    lomo_lua_set_funcs(L, methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__methods");   /* for help(), whatever __index becomes */
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

void lomo_lua_set_fields(lua_State *L, const char *tname, lua_CFunction index, const lomo_lua_reg *fields) {
    luaL_getmetatable(L, tname);
    lua_getfield(L, -1, "__methods");
    lua_pushcclosure(L, index, 1);
    lua_setfield(L, -2, "__index");
    lua_newtable(L);   /* for help(), in order: "name  text" */
    for (int i = 0; fields[i].name; i++) {
        lua_pushfstring(L, "%s  %s", fields[i].name, fields[i].doc ? fields[i].doc : "");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "__fields");
    lua_pop(L, 1);
}

int lomo_lua_is_type(lua_State *L, int i, const char *tname) {
    return luaL_testudata(L, i, tname) != NULL;
}

int lomo_lua_fail(lua_State *L, lomo_ctx *ctx, lomo_status st, const char *where) {
    const char *msg = ctx ? lomo_last_error(ctx) : NULL;
    if (!msg || !*msg) msg = lomo_status_name(st);
    return luaL_error(L, "%s: %s", where, msg);
}

/* ---- contexts and devices ---- */

static int is_device_name(const char *s) {
    return strcmp(s, "cpu") == 0 || strcmp(s, "cuda") == 0;
}

const char *lomo_lua_opt_device(lua_State *L, int t, const char *where) {
    const char *d = lomo_lua_opt_str(L, t, "device", NULL, where);
    if (!d || !*d) return NULL;
    if (!is_device_name(d)) luaL_error(L, "%s: device must be \"cpu\" or \"cuda\", got \"%s\"", where, d);
    return d;
}

lomo_ctx *lomo_lua_new_ctx(lua_State *L, int threads, const char *device, size_t memory_limit, const char *where) {
    char why[512] = "";
    lomo_ctx_options o = {.num_threads = threads, .device = device, .why = why, .why_len = sizeof why,
                          .memory_limit = memory_limit};
    lomo_ctx *ctx = NULL;
    lomo_status st = lomo_ctx_create(&ctx, &o);
    if (st == LOMO_OK) return ctx;
    if (st == LOMO_ERR_DEVICE) luaL_error(L, "%s: %s; device = \"cpu\" runs on the CPU", where, why);
    luaL_error(L, "%s: %s", where, *why ? why : lomo_status_name(st));
    return NULL;
}

/* ---- option tables ---- */

void lomo_lua_check_keys(lua_State *L, int t, const char *where, const char *const *known) {
    t = lua_absindex(L, t);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "%s: option keys must be strings", where);
        const char *k = lua_tostring(L, -1);
        int ok = 0;
        for (const char *const *p = known; *p; p++)
            if (strcmp(*p, k) == 0) ok = 1;
        if (!ok) luaL_error(L, "%s: unknown option '%s'", where, k);
    }
}

lua_Integer lomo_lua_opt_int(lua_State *L, int t, const char *key, lua_Integer def, const char *where) {
    if (lua_isnoneornil(L, t)) return def;
    lua_getfield(L, t, key);
    lua_Integer v = def;
    if (!lua_isnil(L, -1)) {
        int isnum = 0;
        v = lua_tointegerx(L, -1, &isnum);
        if (!isnum) luaL_error(L, "%s: field '%s' must be an integer, got %s", where, key, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return v;
}

lua_Number lomo_lua_opt_num(lua_State *L, int t, const char *key, lua_Number def, const char *where) {
    if (lua_isnoneornil(L, t)) return def;
    lua_getfield(L, t, key);
    lua_Number v = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "%s: field '%s' must be a number, got %s", where, key, luaL_typename(L, -1));
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

int lomo_lua_opt_bool(lua_State *L, int t, const char *key, int def, const char *where) {
    if (lua_isnoneornil(L, t)) return def;
    lua_getfield(L, t, key);
    int v = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TBOOLEAN)
            luaL_error(L, "%s: field '%s' must be a boolean, got %s", where, key, luaL_typename(L, -1));
        v = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

const char *lomo_lua_opt_str(lua_State *L, int t, const char *key, const char *def, const char *where) {
    if (lua_isnoneornil(L, t)) return def;
    lua_getfield(L, t, key);
    const char *v = def;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "%s: field '%s' must be a string, got %s", where, key, luaL_typename(L, -1));
        v = lua_tostring(L, -1);   /* stays alive: the table holds it */
    }
    lua_pop(L, 1);
    return v;
}

int lomo_lua_to_checkpointing(lua_State *L, int i, const char *what) {
    static const char *const names[] = {"off", "blocks", "keep_attention"};
    if (lua_type(L, i) == LUA_TBOOLEAN) return lua_toboolean(L, i) ? LOMO_CHECKPOINT_BLOCKS : LOMO_CHECKPOINT_OFF;
    if (lua_type(L, i) == LUA_TSTRING)
        for (int k = 0; k < 3; k++)
            if (strcmp(lua_tostring(L, i), names[k]) == 0) return k;
    const char *got = lua_type(L, i) == LUA_TSTRING ? lua_pushfstring(L, "\"%s\"", lua_tostring(L, i))
                                                    : luaL_typename(L, i);
    return luaL_error(L, "%s must be a boolean or \"off\", \"blocks\" or \"keep_attention\", got %s", what, got);
}

int lomo_lua_opt_checkpointing(lua_State *L, int t, const char *where) {
    if (lua_isnoneornil(L, t)) return LOMO_CHECKPOINT_OFF;
    lua_getfield(L, t, "checkpointing");
    char what[160];
    snprintf(what, sizeof what, "%s: field 'checkpointing'", where);
    int v = lua_isnil(L, -1) ? LOMO_CHECKPOINT_OFF : lomo_lua_to_checkpointing(L, -1, what);
    lua_pop(L, 1);
    return v;
}

int lomo_lua_parse_dtype(lua_State *L, const char *s, const char *where, lomo_dtype *out) {
    if (strcmp(s, "f32") == 0 || strcmp(s, "float32") == 0) *out = LOMO_F32;
    else if (strcmp(s, "bf16") == 0 || strcmp(s, "bfloat16") == 0) *out = LOMO_BF16;
    else if (strcmp(s, "f16") == 0 || strcmp(s, "float16") == 0) *out = LOMO_F16;
    else return luaL_error(L, "%s: dtype must be \"f32\", \"bf16\" or \"f16\", got \"%s\"", where, s);
    return 0;
}

/* ---- small functions ---- */

static int l_clock(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

static int l_peak_rss(lua_State *L) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return luaL_error(L, "lomo.peak_rss: %s", strerror(errno));
    lua_pushinteger(L, (lua_Integer)ru.ru_maxrss * 1024);
    return 1;
}

static int l_isatty(lua_State *L) {
    lua_Integer fd = luaL_optinteger(L, 1, 1);
    lua_pushboolean(L, fd >= 0 && fd <= 1024 && isatty((int)fd));
    return 1;
}

static int l_interrupted(lua_State *L) {
    lua_pushboolean(L, lomo_lua_interrupt_flag != 0);
    lomo_lua_interrupt_flag = 0;
    return 1;
}

/* temp file next to path, write, fsync, rename, fsync the folder */
static int l_atomic_write(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, path);
    lua_pushfstring(L, ".tmp.%d", (int)getpid());
    luaL_addvalue(&b);
    luaL_pushresult(&b);
    const char *tmp = lua_tostring(L, -1);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) return luaL_error(L, "lomo.atomic_write: %s: %s", path, strerror(errno));
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, s + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return luaL_error(L, "lomo.atomic_write: %s: %s", path, strerror(e));
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return luaL_error(L, "lomo.atomic_write: %s: %s", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return luaL_error(L, "lomo.atomic_write: %s: %s", path, strerror(e));
    }
    /* the rename itself is durable only once the folder is synced */
    const char *slash = strrchr(path, '/');
    lua_pushlstring(L, slash ? path : ".", slash ? (size_t)(slash - path) + (slash == path) : 1);
    int dfd = open(lua_tostring(L, -1), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* ---- help ---- */

static const char *doc_of(lua_State *L, int i) {
    i = lua_absindex(L, i);
    const char *d = NULL;
    if (lua_getfield(L, LUA_REGISTRYINDEX, DOCS_KEY) == LUA_TTABLE) {
        lua_pushvalue(L, i);
        lua_rawget(L, -2);
        d = lua_tostring(L, -1);   /* the docs table keeps the string alive */
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return d;
}

static int cmp_strings(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* prints "  name  text" for each string key of the table at t, sorted */
static void print_members(lua_State *L, int t, const char *prefix, const char *sep) {
    t = lua_absindex(L, t);
    size_t n = 0, cap = 16;
    const char **keys = lua_newuserdatauv(L, cap * sizeof *keys, 0);
    int holder = lua_gettop(L);
    lua_newtable(L);   /* keeps the key strings alive while sorting */
    int anchor = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) continue;
        if (n == cap) {
            cap *= 2;
            const char **k2 = lua_newuserdatauv(L, cap * sizeof *k2, 0);
            memcpy(k2, keys, n * sizeof *keys);
            keys = k2;
            lua_replace(L, holder);
        }
        keys[n++] = lua_tostring(L, -1);
        lua_pushvalue(L, -1);
        lua_rawseti(L, anchor, (lua_Integer)n);
    }
    qsort(keys, n, sizeof *keys, cmp_strings);
    for (size_t i = 0; i < n; i++) {
        if (keys[i][0] == '_') continue;
        lua_getfield(L, t, keys[i]);
        const char *d = doc_of(L, -1);
        int type = lua_type(L, -1);
        if (d) printf("  %s%s%s%s\n", prefix, sep, keys[i], d);
        else if (type == LUA_TFUNCTION) printf("  %s%s%s(...)\n", prefix, sep, keys[i]);
        else if (type == LUA_TTABLE) printf("  %s%s%s  (table)\n", prefix, sep, keys[i]);
        else {
            printf("  %s%s%s = %s\n", prefix, sep, keys[i], luaL_tolstring(L, -1, NULL));
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_settop(L, holder - 1);
}

int lomo_lua_help(lua_State *L) {
    luaL_checkany(L, 1);
    int type = lua_type(L, 1);
    if (type == LUA_TUSERDATA && lua_getmetatable(L, 1)) {
        lua_getfield(L, -1, "__name");
        const char *name = lua_tostring(L, -1);
        lua_getfield(L, -2, "__methods");
        if (name && lua_istable(L, -1)) {
            printf("%s methods:\n", name);
            print_members(L, -1, "obj", ":");
            if (lua_getfield(L, -3, "__fields") == LUA_TTABLE) {
                for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
                    printf("  obj.%s\n", lua_tostring(L, -1));
                    lua_pop(L, 1);
                }
            }
            fflush(stdout);
            return 0;
        }
        lua_settop(L, 1);
    }
    if (type == LUA_TTABLE) {
        const char *name = "table";
        lua_getfield(L, 1, "_NAME");
        if (lua_isstring(L, -1)) name = lua_tostring(L, -1);
        printf("%s:\n", name);
        print_members(L, 1, name, ".");
        fflush(stdout);
        return 0;
    }
    const char *d = doc_of(L, 1);
    if (d) printf("%s\n", d);
    else printf("%s: no help (a %s)\n", luaL_tolstring(L, 1, NULL), luaL_typename(L, 1));
    fflush(stdout);
    return 0;
}

static const lomo_lua_reg module_funcs[] = {
    {"clock", l_clock, "() -> monotonic seconds"},
    {"peak_rss", l_peak_rss, "() -> peak resident memory of the process, bytes"},
    {"interrupted", l_interrupted, "() -> true once after Ctrl-C"},
    {"isatty", l_isatty, "([fd = 1]) -> whether the file descriptor is a terminal"},
    {"atomic_write", l_atomic_write, "(path, s): write through a temp file, fsync, rename"},
    {"help", lomo_lua_help, "(obj): print the functions of a table or the methods of a handle"},
    {NULL, NULL, NULL},
};

/* prepends <scripts>/?.lua;<scripts>/?/init.lua to package.path */
static void add_scripts_path(lua_State *L, const char *dir) {
    if (lua_getglobal(L, "package") != LUA_TTABLE) {
        lua_pop(L, 1);
        return;
    }
    lua_getfield(L, -1, "path");
    const char *old = lua_tostring(L, -1);
    lua_pushfstring(L, "%s/?.lua;", dir);
    if (old && strstr(old, lua_tostring(L, -1))) {   /* already there (module loaded twice) */
        lua_pop(L, 3);
        return;
    }
    lua_pushfstring(L, "%s/?/init.lua;%s", dir, old ? old : "");
    lua_concat(L, 2);
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

int luaopen_lomo(lua_State *L) {
    luaL_checkversion(L);
    lua_newtable(L);
    lomo_lua_set_funcs(L, module_funcs);
    lua_pushliteral(L, "lomo");
    lua_setfield(L, -2, "_NAME");
    lua_pushliteral(L, LOMO_LUA_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, LOMO_LOGITS_CHUNK);
    lua_setfield(L, -2, "LOGITS_CHUNK");
    const char *dir = getenv("LOMO_PATH");
    if (!dir || !*dir) dir = LOMO_SCRIPTS_DIR;
    lua_pushstring(L, dir);
    lua_setfield(L, -2, "path");
    add_scripts_path(L, dir);

    lomo_lua_open_json(L);
    lua_setfield(L, -2, "json");
    lomo_lua_open_yaml(L);
    lua_setfield(L, -2, "yaml");
    lomo_lua_open_model(L);
    lomo_lua_open_tokenizer(L);
    lomo_lua_open_optim(L);
    lomo_lua_open_tensor(L);
    return 1;
}
