/*
 * repl.c: the `lomo` REPL, after lua.c's: readline with a history file
 * (~/.lomo_history), `return <line>` tried first so expressions print,
 * incomplete input continued on a ">> " prompt, and Ctrl-C interrupting the
 * running call (or discarding the line being typed) rather than the program.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include <lauxlib.h>
#include <lua.h>

#include "lomo_cli.h"
#include "lomo_lua.h"

#define PROMPT "> "
#define PROMPT2 ">> "
#define EOFMARK "<eof>"
#define HISTORY_MAX 1000

static int g_line_cancelled;

/* readline's input: a Ctrl-C at the prompt ends the line empty and marks it cancelled */
static int repl_getc(FILE *f) {
    for (;;) {
        unsigned char c;
        ssize_t n = read(fileno(f), &c, 1);
        if (n == 1) return c;
        if (n == 0) return EOF;
        if (errno != EINTR) return EOF;
        if (lomo_cli_at_prompt_interrupt) {
            lomo_cli_at_prompt_interrupt = 0;
            lomo_lua_interrupt_flag = 0;
            g_line_cancelled = 1;
            rl_replace_line("", 0);
            return '\n';
        }
    }
}

static char *history_path(void) {
    const char *home = getenv("HOME");
    if (!home || !*home) return NULL;
    size_t n = strlen(home) + sizeof "/.lomo_history";
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/.lomo_history", home);
    return p;
}

/* pushes the next line (without its newline); 0 at end of input */
static int read_line(lua_State *L, int first) {
    g_line_cancelled = 0;
    char *line = readline(first ? PROMPT : PROMPT2);
    if (!line) return 0;
    lua_pushstring(L, line);
    free(line);
    return 1;
}

static int incomplete(lua_State *L, int status) {
    if (status != LUA_ERRSYNTAX) return 0;
    size_t n;
    const char *msg = lua_tolstring(L, -1, &n);
    size_t k = sizeof EOFMARK - 1;
    if (n >= k && strcmp(msg + n - k, EOFMARK) == 0) {
        lua_pop(L, 1);
        return 1;
    }
    return 0;
}

/* the line on top as "return <line>"; on success replaces it by the chunk */
static int try_expression(lua_State *L) {
    const char *line = lua_tostring(L, -1);
    const char *ret = lua_pushfstring(L, "return %s;", line);
    int status = luaL_loadbuffer(L, ret, strlen(ret), "=stdin");
    if (status == LUA_OK) {
        lua_remove(L, -2);   /* the "return" text */
        lua_remove(L, -2);   /* the line: the chunk replaces it */
        return LUA_OK;
    }
    lua_pop(L, 2);
    return status;
}

/* the line on top as a statement, reading more lines while it is incomplete */
static int try_statement(lua_State *L) {
    for (;;) {
        size_t len;
        const char *code = lua_tolstring(L, -1, &len);
        int status = luaL_loadbuffer(L, code, len, "=stdin");
        if (!incomplete(L, status)) {
            lua_remove(L, -2);   /* keep the chunk or the message, drop the text */
            return status;
        }
        if (!read_line(L, 0)) {   /* end of input inside a statement */
            lua_pop(L, 1);
            lua_pushliteral(L, "stdin: unfinished statement at end of input");
            return LUA_ERRSYNTAX;
        }
        if (g_line_cancelled) {
            lua_pop(L, 2);
            return -1;
        }
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
        lua_pushvalue(L, -1);
        lua_replace(L, 1);   /* the history entry grows with the statement */
    }
}

static void add_to_history(const char *hist, const char *code) {
    if (!code[0]) return;
    add_history(code);
    if (hist) append_history(1, hist);
}

int lomo_repl(lua_State *L) {
    rl_catch_signals = 0;      /* SIGINT is ours (lomo_main.c) */
    rl_getc_function = repl_getc;
    rl_readline_name = "lomo";
    char *hist = history_path();
    using_history();
    if (hist && read_history(hist) != 0) write_history(hist);   /* creates the file */
    printf("lomo %s (%s). help(lomo) lists the API; Ctrl-C interrupts, Ctrl-D exits.\n", LOMO_LUA_VERSION,
           LUA_RELEASE);
    fflush(stdout);
    for (;;) {
        lua_settop(L, 0);
        if (!read_line(L, 1)) break;
        if (g_line_cancelled) continue;
        const char *text = lua_tostring(L, 1);
        lua_pushstring(L, text);   /* kept for the history */
        lua_insert(L, 1);
        int status = try_expression(L);
        if (status != LUA_OK) {
            lua_pushvalue(L, 1);
            status = try_statement(L);
            if (status == -1) continue;
        }
        /* the whole (possibly multi-line) input goes to the history as one entry */
        add_to_history(hist, lua_tostring(L, 1));
        if (status != LUA_OK) {
            lomo_cli_report(L, status);
            continue;
        }
        int base = lua_gettop(L) - 1;   /* below the chunk */
        status = lomo_cli_docall(L, 0, LUA_MULTRET);
        lomo_lua_interrupt_flag = 0;
        if (status != LUA_OK) {
            lomo_cli_report(L, status);
            continue;
        }
        int nres = lua_gettop(L) - base;
        if (nres > 0) {
            lomo_cli_get(L, "show");
            lua_insert(L, base + 1);
            status = lomo_cli_docall(L, nres, 0);
            lomo_cli_report(L, status);
        }
        fflush(stdout);
    }
    printf("\n");
    fflush(stdout);
    if (hist) history_truncate_file(hist, HISTORY_MAX);
    free(hist);
    return 0;
}
