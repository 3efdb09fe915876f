/*
 * examples/embed/main.c: a host program that embeds lomo.
 *
 *   embed_lomo MODEL.gguf [RECIPE.lua] [THREADS]
 *
 * 1. The C API alone: reads the model's config from the GGUF header and prints the memory a
 *    LOMO training step would need (lomo_plan_memory), without loading any weights.
 * 2. Lua as the host's scripting layer: a lua_State of its own with the lomo module in it
 *    (luaL_requiref of luaopen_lomo, from the lomo_lua_static library). Through the Lua API it
 *    creates a context and loads the model (lomo.context, lomo.load), runs the recipe (a Lua
 *    file returning function(ctx, model, model_path) -> metrics table) and reads the metrics
 *    back from the Lua stack.
 * Every error is reported with its message and the program exits non-zero; nothing aborts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <lomo.h>
#include <lomo_io.h>

int luaopen_lomo(lua_State *L);

/* message handler: the error with a traceback, as lua.c does */
static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* calls the function below nargs arguments on the stack; 0 on success, else prints the error */
static int call(lua_State *L, int nargs, int nresults, const char *what) {
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    int st = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    if (st != LUA_OK) {
        fprintf(stderr, "embed_lomo: %s: %s\n", what, lua_tostring(L, -1));
        lua_pop(L, 1);
        return 1;
    }
    return 0;
}

static int print_plan(const char *model_path, int threads) {
    lomo_ctx *ctx = NULL;
    char why[256] = "";
    lomo_status st = lomo_ctx_create(&ctx, &(lomo_ctx_options){.num_threads = threads, .why = why, .why_len = sizeof why});
    if (st != LOMO_OK) {
        fprintf(stderr, "embed_lomo: cannot create a context: %s\n", why);
        return 1;
    }
    lomo_llama_config cfg;
    lomo_model_options mo = {.dtype = LOMO_F32};
    lomo_optim_options oo;
    lomo_optim_options_default(&oo, LOMO_OPTIM_LOMO);
    lomo_plan plan;
    const int B = 4, T = 64;
    if ((st = lomo_config_load_gguf(ctx, model_path, &cfg)) != LOMO_OK ||
        (st = lomo_plan_memory(ctx, &cfg, &mo, &oo, B, T, &plan)) != LOMO_OK) {
        fprintf(stderr, "embed_lomo: %s\n", lomo_last_error(ctx));
        lomo_ctx_destroy(ctx);
        return 1;
    }
    printf("model: %d layers, hidden %d, %d heads (%d kv), vocab %d\n", cfg.num_hidden_layers,
           cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size);
    printf("plan for a LOMO step, f32, batch %d x %d tokens: weights %.1f MiB, activations %.1f MiB, "
           "gradients %.1f MiB, optimizer %.1f MiB, total %.1f MiB\n",
           B, T, plan.weights / 1048576.0, plan.activations / 1048576.0, plan.gradients / 1048576.0,
           plan.optimizer / 1048576.0, plan.total / 1048576.0);
    lomo_ctx_destroy(ctx);
    return 0;
}

/* prints every number and string field of the table on top of the stack, sorted by key */
static void print_metrics(lua_State *L) {
    int t = lua_gettop(L);
    lua_newtable(L); /* the keys, to sort them */
    int keys = lua_gettop(L);
    lua_Integer n = 0;
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING) {
            lua_pushvalue(L, -1);
            lua_rawseti(L, keys, ++n);
        }
    }
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, keys);
    lua_call(L, 1, 0); /* string keys only: sort cannot fail */
    lua_pop(L, 1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, keys, i);
        const char *k = lua_tostring(L, -1);
        lua_gettable(L, t);
        if (lua_isinteger(L, -1)) printf("  %-22s %lld\n", k, (long long)lua_tointeger(L, -1));
        else if (lua_type(L, -1) == LUA_TNUMBER) printf("  %-22s %.6g\n", k, lua_tonumber(L, -1));
        else if (lua_type(L, -1) == LUA_TSTRING) printf("  %-22s %s\n", k, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_settop(L, t);
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 4 || strcmp(argv[1], "--help") == 0) {
        fprintf(stderr, "usage: %s MODEL.gguf [RECIPE.lua] [THREADS]\n", argv[0]);
        return argc < 2 ? 2 : 0;
    }
    const char *model_path = argv[1];
    const char *recipe = argc > 2 ? argv[2] : "examples/embed/recipe.lua";
    int threads = argc > 3 ? atoi(argv[3]) : 2;

    if (print_plan(model_path, threads)) return 1;

    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "embed_lomo: cannot create a Lua state\n");
        return 1;
    }
    luaL_openlibs(L);
    luaL_requiref(L, "lomo", luaopen_lomo, 1); /* also puts lomo's recipe library on package.path */
    int lomo_index = lua_gettop(L);
    int rc = 1;

    /* ctx = lomo.context{threads = threads} */
    lua_getfield(L, lomo_index, "context");
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, threads);
    lua_setfield(L, -2, "threads");
    if (call(L, 1, 1, "lomo.context")) goto done;
    int ctx_index = lua_gettop(L);

    /* model = lomo.load(ctx, model_path) */
    lua_getfield(L, lomo_index, "load");
    lua_pushvalue(L, ctx_index);
    lua_pushstring(L, model_path);
    if (call(L, 2, 1, "lomo.load")) goto done;
    int model_index = lua_gettop(L);

    /* metrics = dofile(recipe)(ctx, model, model_path) */
    if (luaL_loadfile(L, recipe) != LUA_OK) {
        fprintf(stderr, "embed_lomo: %s\n", lua_tostring(L, -1));
        goto done;
    }
    if (call(L, 0, 1, recipe)) goto done;
    if (!lua_isfunction(L, -1)) {
        fprintf(stderr, "embed_lomo: %s must return a function, it returned a %s\n", recipe, luaL_typename(L, -1));
        goto done;
    }
    lua_pushvalue(L, ctx_index);
    lua_pushvalue(L, model_index);
    lua_pushstring(L, model_path);
    if (call(L, 3, 1, recipe)) goto done;
    if (!lua_istable(L, -1)) {
        fprintf(stderr, "embed_lomo: the recipe returned a %s, not a table of metrics\n", luaL_typename(L, -1));
        goto done;
    }

    /* the host reads what it needs by name, and prints the rest */
    lua_getfield(L, -1, "loss_before");
    lua_getfield(L, -2, "loss_after");
    int isnum_before = 0, isnum_after = 0;
    double before = lua_tonumberx(L, -2, &isnum_before), after = lua_tonumberx(L, -1, &isnum_after);
    lua_pop(L, 2);
    printf("metrics from %s:\n", recipe);
    print_metrics(L);
    if (!isnum_before || !isnum_after) {
        fprintf(stderr, "embed_lomo: the metrics lack loss_before / loss_after\n");
        goto done;
    }
    printf("held-out loss %.4f -> %.4f: %s\n", before, after, after < before ? "fine-tuning helped" : "no gain");
    rc = 0;

done:
    lua_close(L); /* collects the model and the context: __gc closes them */
    return rc;
}
