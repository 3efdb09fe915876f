/*
 * lomo_lua.h: the Lua module `lomo`, shared by the loadable module (lomo.so)
 * and the `lomo` program, which compile the same sources.
 *
 * Handles follow liolib.c: a full userdata is created in a closed state, then
 * opened; __gc and __close are the same idempotent close; a method on a closed
 * handle raises "<type>: use after close". Runtime objects that others depend
 * on (a context under its models, a model under its optimizers) are reference
 * counted, so closing or collecting them in any order never leaves a dangling
 * pointer.
 */
#ifndef LOMO_LUA_H
#define LOMO_LUA_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>

#include "lomo.h"

/* the project's version, which CMakeLists.txt defines for every file it builds */
#ifndef LOMO_VERSION
#define LOMO_VERSION "unknown"
#endif
#define LOMO_LUA_VERSION LOMO_VERSION

/* type names: the metatable names and the text of every error about a handle */
#define LOMO_T_CONTEXT "lomo.context"
#define LOMO_T_MODEL "lomo.model"
#define LOMO_T_TOKENIZER "lomo.tokenizer"
#define LOMO_T_OPTIMIZER "lomo.optimizer"
#define LOMO_T_TENSOR "lomo.tensor"

/* the module's entry point; the only symbol lomo.so exports */
__attribute__((visibility("default"))) int luaopen_lomo(lua_State *L);

/* ---- interrupts (lua.c's pattern): the program's SIGINT handler sets the flag ---- */
extern volatile sig_atomic_t lomo_lua_interrupt_flag;

/* ---- shared by the binding files ---- */

/* A context, shared by its handle and every object made in it. */
typedef struct lomo_ctx_ref {
    lomo_ctx *ctx;
    int refs;
} lomo_ctx_ref;
lomo_ctx_ref *lomo_lua_ctx_ref_new(lomo_ctx *ctx);
void lomo_lua_ctx_ref_release(lomo_ctx_ref *r);

/* A model, shared by its handle and its optimizers; open is 0 once m:close() ran. */
typedef struct lomo_model_ref {
    lomo_model *m;
    lomo_ctx_ref *cr;
    int refs;
    int open;
} lomo_model_ref;
void lomo_lua_model_ref_release(lomo_model_ref *r);

/* One method or function with its one-line help text. */
typedef struct lomo_lua_reg {
    const char *name;
    lua_CFunction fn;
    const char *doc;
} lomo_lua_reg;

/* Creates the metatable `tname` (methods in __index, __gc = __close = close, __tostring). */
void lomo_lua_new_type(lua_State *L, const char *tname, const lomo_lua_reg *methods, lua_CFunction close,
                       lua_CFunction tostring);
/*
 * Gives the type tname fields (obj.name): __index becomes index, a C closure
 * whose upvalue 1 is the methods table, and help() lists fields (fn unused).
 */
void lomo_lua_set_fields(lua_State *L, const char *tname, lua_CFunction index, const lomo_lua_reg *fields);
/* Sets functions into the table on top of the stack and records their help text. */
void lomo_lua_set_funcs(lua_State *L, const lomo_lua_reg *funcs);

/* Raises "<where>: <runtime message>" for a failed runtime call. */
int lomo_lua_fail(lua_State *L, lomo_ctx *ctx, lomo_status st, const char *where);

/*
 * A new runtime context; device "cpu", "cuda", or NULL for the runtime's
 * choice (LOMO_DEVICE, else cuda when usable, else cpu). Raises "<where>: ..."
 * naming the device when it cannot be had.
 */
lomo_ctx *lomo_lua_new_ctx(lua_State *L, int threads, const char *device, size_t memory_limit, const char *where);
/* The optional field 'device' of the table at t: NULL when absent or "", else "cpu" or "cuda". */
const char *lomo_lua_opt_device(lua_State *L, int t, const char *where);

/* The handle at index i of type tname, raising on a wrong type or a closed handle. */
lomo_ctx_ref *lomo_lua_check_context(lua_State *L, int i);
lomo_model_ref *lomo_lua_check_model(lua_State *L, int i);
/* Whether the value at i is a handle of type tname (open or not). */
int lomo_lua_is_type(lua_State *L, int i, const char *tname);

/* Option tables: raise on keys not in `known` (NULL-terminated), naming the key. */
void lomo_lua_check_keys(lua_State *L, int t, const char *where, const char *const *known);
/* Optional fields of the table at t; the default when absent; errors name the field. */
lua_Integer lomo_lua_opt_int(lua_State *L, int t, const char *key, lua_Integer def, const char *where);
lua_Number lomo_lua_opt_num(lua_State *L, int t, const char *key, lua_Number def, const char *where);
int lomo_lua_opt_bool(lua_State *L, int t, const char *key, int def, const char *where);
const char *lomo_lua_opt_str(lua_State *L, int t, const char *key, const char *def, const char *where);
int lomo_lua_parse_dtype(lua_State *L, const char *s, const char *where, lomo_dtype *out);
/* A lomo_checkpointing from the value at i (what names it in errors): a boolean (true = blocks) or
 * "off", "blocks", "keep_attention"; the _opt form reads field 'checkpointing' of the table at t. */
int lomo_lua_to_checkpointing(lua_State *L, int i, const char *what);
int lomo_lua_opt_checkpointing(lua_State *L, int t, const char *where);

/* A config table with HF field names to the runtime's struct, and back. */
void lomo_lua_check_config(lua_State *L, int t, const char *where, lomo_llama_config *out);
void lomo_lua_push_config(lua_State *L, const lomo_llama_config *c);
/* A config from a path: a .gguf file, an HF folder or its config.json. */
lomo_status lomo_lua_config_from_path(lomo_ctx *ctx, const char *path, lomo_llama_config *out);

/*
 * A [B][T] table of ids at arg, checked against the vocabulary V (-100 also
 * allowed when is_target), into a new userdata buffer left on the stack. *B
 * and *T: 0 means take them from this table, else they must match.
 */
int32_t *lomo_lua_check_ids(lua_State *L, int arg, const char *where, const char *what, int V, int is_target,
                            int *B, int *T);

/*
 * Pushes a tensor handle: a view of parameter index (0-based) of the model
 * whose handle is at model_arg. The view holds a reference to the model and
 * keeps its handle from being collected.
 */
void lomo_lua_push_tensor(lua_State *L, int model_arg, lomo_model_ref *r, int index);

/* The sub-modules; each leaves its table on the stack. */
void lomo_lua_open_json(lua_State *L);
void lomo_lua_open_yaml(lua_State *L);
void lomo_lua_open_model(lua_State *L);      /* sets context, load, model, plan into the table on top */
void lomo_lua_open_tokenizer(lua_State *L);  /* sets tokenizer into the table on top */
void lomo_lua_open_optim(lua_State *L);      /* sets optimizer into the table on top */
void lomo_lua_open_tensor(lua_State *L);     /* registers the tensor type; sets nothing */

/* help(obj): prints the functions of a table or the methods of a handle. */
int lomo_lua_help(lua_State *L);

#endif
