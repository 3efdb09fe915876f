/*
 * lomo_cli.h: what the `lomo` program's files share (lomo_main.c, repl.c).
 */
#ifndef LOMO_CLI_H
#define LOMO_CLI_H

#include <signal.h>

#include <lua.h>

/* Runs the function on the stack under a traceback handler with interrupts on (lua.c's docall). */
int lomo_cli_docall(lua_State *L, int narg, int nres);
/* Prints the error on top of the stack to stderr and pops it. */
void lomo_cli_report(lua_State *L, int status);
/* Pushes a field of the embedded cli.lua module (run, plan, show). */
void lomo_cli_get(lua_State *L, const char *field);
/* Interrupts raise at the next Lua instruction only inside lomo_cli_docall. */
extern volatile sig_atomic_t lomo_cli_at_prompt_interrupt;

int lomo_repl(lua_State *L);

#endif
