/*
 * lua_tokenizer.c: lomo.tokenizer and its handle. ids are 0-based
 * vocabulary ids in plain Lua arrays.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lomo_lua.h"

typedef struct tok_handle {
    lomo_tokenizer *t;   /* NULL: closed */
    lomo_ctx_ref *cr;
} tok_handle;

static tok_handle *check_tok(lua_State *L, int i) {
    tok_handle *h = luaL_checkudata(L, i, LOMO_T_TOKENIZER);
    if (!h->t) luaL_error(L, LOMO_T_TOKENIZER ": use after close");
    return h;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* lomo.tokenizer([ctx,] path): a tokenizer.json, an HF folder holding one, or a .gguf file */
static int l_tokenizer(lua_State *L) {
    const char *w = "lomo.tokenizer";
    lomo_ctx_ref *cr = NULL;
    int pa = 1;
    if (lomo_lua_is_type(L, 1, LOMO_T_CONTEXT)) {
        cr = lomo_lua_check_context(L, 1);
        pa = 2;
    }
    const char *path = luaL_checkstring(L, pa);
    struct stat sb;
    if (stat(path, &sb) != 0) return luaL_error(L, "%s: %s: %s", w, path, strerror(errno));
    int is_dir = S_ISDIR(sb.st_mode);
    if (is_dir) path = lua_pushfstring(L, "%s/tokenizer.json", path);

    tok_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->t = NULL;
    h->cr = NULL;
    luaL_setmetatable(L, LOMO_T_TOKENIZER);
    if (cr) {
        cr->refs++;
    } else {   /* a private context, for the error text; the tokenizer never needs a GPU */
        lomo_ctx *ctx = lomo_lua_new_ctx(L, 0, "cpu", 0, w);
        cr = lomo_lua_ctx_ref_new(ctx);
        if (!cr) {
            lomo_ctx_destroy(ctx);
            return luaL_error(L, "%s: out of memory", w);
        }
    }
    h->cr = cr;
    lomo_tokenizer *t = NULL;
    lomo_status st = (!is_dir && ends_with(path, ".gguf")) ? lomo_tokenizer_load_gguf(&t, cr->ctx, path)
                                                           : lomo_tokenizer_load_hf(&t, cr->ctx, path);
    if (st != LOMO_OK) return lomo_lua_fail(L, cr->ctx, st, w);   /* __gc releases cr */
    h->t = t;
    return 1;
}

static int tok_close(lua_State *L) {
    tok_handle *h = luaL_checkudata(L, 1, LOMO_T_TOKENIZER);
    if (h->t) lomo_tokenizer_destroy(h->t);
    h->t = NULL;
    lomo_lua_ctx_ref_release(h->cr);
    h->cr = NULL;
    return 0;
}

static int tok_tostring(lua_State *L) {
    tok_handle *h = luaL_checkudata(L, 1, LOMO_T_TOKENIZER);
    if (h->t) lua_pushfstring(L, LOMO_T_TOKENIZER " (%d tokens)", lomo_tokenizer_vocab_size(h->t));
    else lua_pushliteral(L, LOMO_T_TOKENIZER " (closed)");
    return 1;
}

/* tok.bos / tok.eos as fields; everything else from the methods */
static int tok_index(lua_State *L) {
    const char *k = lua_tostring(L, 2);
    if (k && (strcmp(k, "bos") == 0 || strcmp(k, "eos") == 0)) {
        tok_handle *h = check_tok(L, 1);
        int id = k[0] == 'b' ? lomo_tokenizer_bos_id(h->t) : lomo_tokenizer_eos_id(h->t);
        if (id < 0) lua_pushnil(L);
        else lua_pushinteger(L, id);
        return 1;
    }
    if (k && strcmp(k, "add_bos") == 0) {
        lua_pushboolean(L, lomo_tokenizer_adds_bos(check_tok(L, 1)->t));
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_gettable(L, lua_upvalueindex(1));
    return 1;
}

static int tok_encode(lua_State *L) {
    const char *w = "lomo.tokenizer:encode";
    tok_handle *h = check_tok(L, 1);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    static const char *const known[] = {"add_special", NULL};
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lomo_lua_check_keys(L, 3, w, known);
    }
    int add_special = lomo_lua_opt_bool(L, 3, "add_special", 0, w);
    int32_t *ids = NULL;
    size_t n = 0;
    lomo_status st = lomo_tokenizer_encode(h->t, text, len, add_special, &ids, &n);
    if (st != LOMO_OK) return lomo_lua_fail(L, h->cr->ctx, st, w);
    if (!lua_checkstack(L, 2)) {
        free(ids);
        return luaL_error(L, "%s: stack overflow", w);
    }
    lua_createtable(L, n > (size_t)1 << 30 ? 0 : (int)n, 0);   /* may raise only on OOM */
    for (size_t i = 0; i < n; i++) {
        lua_pushinteger(L, ids[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    free(ids);
    return 1;
}

static int tok_decode(lua_State *L) {
    const char *w = "lomo.tokenizer:decode";
    tok_handle *h = check_tok(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const known[] = {"skip_special", NULL};
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lomo_lua_check_keys(L, 3, w, known);
    }
    int skip_special = lomo_lua_opt_bool(L, 3, "skip_special", 1, w);
    int V = lomo_tokenizer_vocab_size(h->t);
    lua_Integer n = luaL_len(L, 2);
    int32_t *ids = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof(int32_t), 0);
    for (lua_Integer i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        int isnum = 0;
        lua_Integer v = lua_tointegerx(L, -1, &isnum);
        if (!isnum) return luaL_error(L, "%s: ids[%I] must be an integer, got %s", w, i + 1, luaL_typename(L, -1));
        if (v < 0 || v >= V) return luaL_error(L, "%s: ids[%I] = %I is outside the vocabulary [0, %d)", w, i + 1, v, V);
        ids[i] = (int32_t)v;
        lua_pop(L, 1);
    }
    char *text = NULL;
    size_t len = 0;
    lomo_status st = lomo_tokenizer_decode(h->t, ids, (size_t)n, skip_special, &text, &len);
    if (st != LOMO_OK) return lomo_lua_fail(L, h->cr->ctx, st, w);
    lua_pushlstring(L, text, len);   /* raises only on OOM */
    free(text);
    return 1;
}

static int tok_vocab_size(lua_State *L) {
    tok_handle *h = check_tok(L, 1);
    lua_pushinteger(L, lomo_tokenizer_vocab_size(h->t));
    return 1;
}

static int tok_token_to_id(lua_State *L) {
    tok_handle *h = check_tok(L, 1);
    int id = lomo_tokenizer_token_to_id(h->t, luaL_checkstring(L, 2));
    if (id < 0) lua_pushnil(L);
    else lua_pushinteger(L, id);
    return 1;
}

static int tok_id_to_token(lua_State *L) {
    tok_handle *h = check_tok(L, 1);
    lua_Integer id = luaL_checkinteger(L, 2);
    const char *s = (id < 0 || id > 1 << 30) ? NULL : lomo_tokenizer_id_to_token(h->t, (int)id);
    if (s) lua_pushstring(L, s);
    else lua_pushnil(L);
    return 1;
}

static int tok_chat_template(lua_State *L) {
    const char *src = lomo_tokenizer_chat_template(check_tok(L, 1)->t);
    if (src) lua_pushstring(L, src);
    else lua_pushnil(L);
    return 1;
}

static int tok_save(lua_State *L) {
    tok_handle *h = check_tok(L, 1);
    lomo_status st = lomo_tokenizer_save_hf(h->t, luaL_checkstring(L, 2));
    if (st != LOMO_OK) return lomo_lua_fail(L, h->cr->ctx, st, "lomo.tokenizer:save");
    return 0;
}

static const lomo_lua_reg tok_methods[] = {
    {"encode", tok_encode, "(text, {add_special=false}) -> ids"},
    {"decode", tok_decode, "(ids, {skip_special=true}) -> string"},
    {"vocab_size", tok_vocab_size, "() -> number of tokens"},
    {"token_to_id", tok_token_to_id, "(s) -> id or nil"},
    {"id_to_token", tok_id_to_token, "(id) -> string or nil"},
    {"chat_template", tok_chat_template, "() -> the model's chat template (Jinja source, not run) or nil"},
    {"save", tok_save, "(folder): tokenizer.json and tokenizer_config.json, as transformers reads them"},
    {"close", tok_close, "()"},
    {NULL, NULL, NULL},
};

static const lomo_lua_reg tok_fields[] = {
    {"bos", NULL, "the BOS token id, or nil"},
    {"eos", NULL, "the EOS token id, or nil"},
    {"add_bos", NULL, "whether the tokenizer starts a text with its BOS (encode with add_special does)"},
    {NULL, NULL, NULL},
};

static const lomo_lua_reg tok_funcs[] = {
    {"tokenizer", l_tokenizer, "([ctx,] path) -> tokenizer from a tokenizer.json, an HF folder or a .gguf file"},
    {NULL, NULL, NULL},
};

void lomo_lua_open_tokenizer(lua_State *L) {
    lomo_lua_new_type(L, LOMO_T_TOKENIZER, tok_methods, tok_close, tok_tostring);
    lomo_lua_set_fields(L, LOMO_T_TOKENIZER, tok_index, tok_fields);
    lomo_lua_set_funcs(L, tok_funcs);
}
