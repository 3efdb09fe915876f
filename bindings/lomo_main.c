/*
 * lomo_main.c: the `lomo` program.
 *
 *   lomo script.lua [args...]        run a recipe; `arg` as in lua.c
 *   lomo run recipe.yaml [k=v ...]   YAML config + overrides, handed to the recipe it names
 *   lomo plan <model> --seq N ...    memory plan without loading the weights
 *   lomo                             REPL (stdin a terminal), else runs stdin
 *
 * Interrupts follow lua.c: SIGINT only sets a flag and a Lua hook; the hook
 * raises "interrupted" at the next Lua instruction, so a C call in progress
 * (a training step) completes first and the model stays consistent.
 */
#include <ctype.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "cli_lua.h"
#include "lomo_cli.h"
#include "lomo_lua.h"

static lua_State *g_L;                 /* the state the SIGINT hook goes to */
static volatile sig_atomic_t g_in_call; /* 1 while lomo_cli_docall runs Lua */
static int g_repl;                      /* the REPL survives every Ctrl-C */
volatile sig_atomic_t lomo_cli_at_prompt_interrupt;

static void lstop(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted");
}

static void on_sigint(int sig) {
    (void)sig;
    lomo_lua_interrupt_flag = 1;
    /* as lua.c: outside the REPL a second Ctrl-C ends a call that does not return to Lua */
    if (g_in_call && !g_repl) signal(SIGINT, SIG_DFL);
    if (g_in_call) lua_sethook(g_L, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    else lomo_cli_at_prompt_interrupt = 1;
}

static void install_sigint(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;   /* no SA_RESTART: a blocking read returns, so the prompt sees Ctrl-C */
    sigaction(SIGINT, &sa, NULL);
}

/* "chunk:line: ..." (error() at level 1 and up, or a runtime fault): where the program went wrong.
 * A chunk is a .lua file, stdin or "[string ...]"; "data.jsonl:12: ..." is a place in the input. */
static int has_position(const char *msg) {
    const char *colon = strchr(msg, ':');
    if (!colon || colon == msg || !isdigit((unsigned char)colon[1])) return 0;
    const char *p = colon + 1;
    while (isdigit((unsigned char)*p)) p++;
    size_t n = (size_t)(colon - msg);
    int chunk = msg[0] == '[' || (n == 5 && strncmp(msg, "stdin", 5) == 0) ||
                (n > 4 && strncmp(colon - 4, ".lua", 4) == 0);
    return *p == ':' && chunk;
}

/*
 * A message that names a position gets a traceback (a fault in a script). One
 * raised without a position, as recipes and the bindings report bad input
 * ("recipe.yaml: train.batch must be even ..."), is shown alone: the traceback
 * would only point into the recipe's own checks. LOMO_TRACEBACK=1 always adds it.
 */
static int msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    const char *always = getenv("LOMO_TRACEBACK");
    if (has_position(msg) || (always && *always && strcmp(always, "0") != 0)) luaL_traceback(L, L, msg, 1);
    else lua_pushstring(L, msg);
    return 1;
}

int lomo_cli_docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    install_sigint();
    g_in_call = 1;
    int status = lua_pcall(L, narg, nres, base);
    g_in_call = 0;
    lua_sethook(L, NULL, 0, 0);   /* a Ctrl-C that came as the call ended */
    lua_remove(L, base);
    return status;
}

void lomo_cli_report(lua_State *L, int status) {
    if (status == LUA_OK) return;
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "lomo: %s\n", msg ? msg : "(error object is not a string)");
    fflush(stderr);
    lua_pop(L, 1);
}

void lomo_cli_get(lua_State *L, const char *field) {
    lua_getfield(L, LUA_REGISTRYINDEX, "lomo.cli");
    lua_getfield(L, -1, field);
    lua_remove(L, -2);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: lomo [script.lua [args...]]\n"
            "       lomo run recipe.yaml [key=value ...]   (dotted keys: optim.lr=1e-4)\n"
            "       lomo plan <model.gguf | hf-folder> --seq N [--batch B] [--dtype f32|bf16|f16] "
            "[--checkpointing[=blocks|keep_attention]] [--device cpu|cuda]\n"
            "       lomo generate <model.gguf | hf-folder> [prompt ...]\n"
            "                [--chat[=chatml|smollm2|llama3|zephyr]]\n"
            "                [--max-new N] [--temperature T] [--top-p P] [--seed S] [--system TEXT]\n"
            "                [--dtype ...] [--device ...]\n"
            "       lomo chat <model.gguf | hf-folder> [--template chatml|smollm2|llama3|zephyr]\n"
            "                [options as generate's]\n"
            "                (a conversation on stdin, a line a turn)\n"
            "       lomo convert <model.gguf | hf-folder> <out-folder> [--dtype f32|bf16|f16] [--tokenizer PATH]\n"
            "                (a Hugging Face folder: config, safetensors and tokenizer)\n"
            "       lomo perplexity <model.gguf | hf-folder> <text-file | -> [--seq N] [--batch B]\n"
            "                (how well the model predicts a text)\n"
            "       lomo --version | --help\n"
            "Without arguments, lomo opens a REPL (help(lomo) lists the API) or runs stdin.\n"
            "Environment: LOMO_DEVICE (cpu | cuda, the default device), LOMO_PATH (the recipe library, for\n"
            "an installed lomo), LOMO_CUDA_MODULE (the CUDA backend's liblomo_cuda.so, when moved),\n"
            "LOMO_ATTENTION (mma | pipe | simt: the GPU's attention kernels for 16-bit models),\n"
            "LOMO_TRACEBACK=1 (a traceback with every error), OMP_NUM_THREADS.\n");
}

/* arg table as lua.c builds it: arg[0] = script, arg[1..] = its arguments, arg[-1] = program */
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
    lua_createtable(L, argc > script + 1 ? argc - script - 1 : 0, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int push_args(lua_State *L, char **argv, int from, int argc) {
    luaL_checkstack(L, argc - from + 3, "too many arguments");
    for (int i = from; i < argc; i++) lua_pushstring(L, argv[i]);
    return argc - from;
}

/* everything runs under pcall, so errors while loading are reported too */
static int pmain(lua_State *L) {
    int argc = (int)lua_tointeger(L, 1);
    char **argv = lua_touserdata(L, 2);
    luaL_checkversion(L);
    luaL_openlibs(L);
    luaL_requiref(L, "lomo", luaopen_lomo, 1);
    lua_getfield(L, -1, "help");
    lua_setglobal(L, "help");
    lua_pop(L, 1);
    if (luaL_loadbuffer(L, (const char *)lomo_cli_lua, sizeof lomo_cli_lua, "=cli.lua") != LUA_OK) return lua_error(L);
    lua_call(L, 0, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "lomo.cli");

    int status;
    if (argc < 2) {
        if (isatty(STDIN_FILENO)) {
            g_repl = 1;
            create_arg_table(L, argv, argc, 0);
            lua_pushboolean(L, lomo_repl(L) == 0);
            return 1;
        }
        create_arg_table(L, argv, argc, 0);
        status = luaL_loadfile(L, NULL);
        if (status == LUA_OK) status = lomo_cli_docall(L, 0, 0);
    } else if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-v") == 0) {
        char info[256];
        lomo_build_info(info, sizeof info);
        printf("lomo %s (%s)\n%s\n", LOMO_LUA_VERSION, LUA_RELEASE, info);
        status = LUA_OK;
    } else if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        status = LUA_OK;
    } else if (strcmp(argv[1], "run") == 0 || strcmp(argv[1], "plan") == 0 || strcmp(argv[1], "generate") == 0 ||
               strcmp(argv[1], "chat") == 0 || strcmp(argv[1], "convert") == 0 ||
               strcmp(argv[1], "perplexity") == 0) {
        create_arg_table(L, argv, argc, 2);
        int help = 0;
        for (int i = 2; i < argc; i++) help |= strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0;
        if (help) {   /* `lomo plan --help`: the subcommand's usage, and nothing run */
            lomo_cli_get(L, "print_usage");
            lua_pushstring(L, argv[1]);
            status = lomo_cli_docall(L, 1, 0);
        } else {
            lomo_cli_get(L, argv[1]);
            status = lomo_cli_docall(L, push_args(L, argv, 2, argc), 0);
        }
    } else if (argv[1][0] == '-' && argv[1][1] != 0) {
        fprintf(stderr, "lomo: unknown option %s\n", argv[1]);
        usage(stderr);
        lua_pushboolean(L, 0);
        return 1;
    } else {
        create_arg_table(L, argv, argc, 1);
        const char *script = strcmp(argv[1], "-") == 0 ? NULL : argv[1];
        status = luaL_loadfile(L, script);
        if (status == LUA_OK) status = lomo_cli_docall(L, push_args(L, argv, 2, argc), 0);
    }
    lomo_cli_report(L, status);
    lua_pushboolean(L, status == LUA_OK);
    return 1;
}

int main(int argc, char **argv) {
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "lomo: cannot create the Lua state: not enough memory\n");
        return EXIT_FAILURE;
    }
    g_L = L;
    install_sigint();

    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int status = lua_pcall(L, 2, 1, 0);
    int ok = status == LUA_OK && lua_toboolean(L, -1);
    if (status != LUA_OK) lomo_cli_report(L, status);
    lua_close(L);
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
