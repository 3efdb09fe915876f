/*
 * lua_optim.c: lomo.optimizer and the optimizer handle. The learning rate
 * is an argument of every step; schedules live in Lua.
 */
#include <math.h>
#include <string.h>

#include "lomo_lua.h"

typedef struct optim_handle {
    lomo_optim *o;       /* NULL: closed */
    lomo_model_ref *mr;  /* keeps the model alive while the optimizer is */
    lomo_optim_kind kind;
} optim_handle;

static optim_handle *check_optim(lua_State *L, int i) {
    optim_handle *h = luaL_checkudata(L, i, LOMO_T_OPTIMIZER);
    if (!h->o) luaL_error(L, LOMO_T_OPTIMIZER ": use after close");
    return h;
}

/* an optimizer whose model was closed must not touch it */
static optim_handle *check_live_optim(lua_State *L, int i, const char *where) {
    optim_handle *h = check_optim(L, i);
    if (!h->mr->open) luaL_error(L, "%s: its " LOMO_T_MODEL " was closed", where);
    return h;
}

static int parse_kind(lua_State *L, const char *s, lomo_optim_kind *k) {
    if (strcmp(s, "lomo") == 0) *k = LOMO_OPTIM_LOMO;
    else if (strcmp(s, "adalomo") == 0) *k = LOMO_OPTIM_ADALOMO;
    else if (strcmp(s, "sgd") == 0) *k = LOMO_OPTIM_SGD;
    else if (strcmp(s, "adamw") == 0) *k = LOMO_OPTIM_ADAMW;
    else return luaL_error(L, "lomo.optimizer: name must be \"lomo\", \"adalomo\", \"sgd\" or \"adamw\", got \"%s\"", s);
    return 0;
}

static int l_optimizer(lua_State *L) {
    static const char *const known[] = {
        "name", "weight_decay", "clip_grad_norm", "clip_grad_value", "loss_scaling", "loss_scale_init",
        "loss_scale_window", "guard_nonfinite", "stochastic_rounding", "seed", "norm_method", "adam_beta1",
        "adam_beta2", "adam_eps", "adalomo_decay", "adalomo_eps1", "adalomo_eps2", "adalomo_clip", NULL};
    const char *w = "lomo.optimizer";
    lomo_model_ref *mr = lomo_lua_check_model(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lomo_lua_check_keys(L, 2, w, known);
    }
    lomo_optim_kind kind = LOMO_OPTIM_LOMO;
    parse_kind(L, lomo_lua_opt_str(L, 2, "name", "lomo", w), &kind);
    lomo_optim_options o;
    lomo_optim_options_default(&o, kind);
    o.weight_decay = (float)lomo_lua_opt_num(L, 2, "weight_decay", o.weight_decay, w);
    o.clip_grad_norm = (float)lomo_lua_opt_num(L, 2, "clip_grad_norm", o.clip_grad_norm, w);
    o.clip_grad_value = (float)lomo_lua_opt_num(L, 2, "clip_grad_value", o.clip_grad_value, w);
    lua_Integer ls = lomo_lua_opt_int(L, 2, "loss_scaling", o.loss_scaling, w);
    if (ls < -1 || ls > 1) return luaL_error(L, "%s: field 'loss_scaling' must be -1 (auto), 0 or 1", w);
    o.loss_scaling = (int)ls;
    o.loss_scale_init = (float)lomo_lua_opt_num(L, 2, "loss_scale_init", o.loss_scale_init, w);
    lua_Integer win = lomo_lua_opt_int(L, 2, "loss_scale_window", o.loss_scale_window, w);
    if (win < 1 || win > 1 << 30) return luaL_error(L, "%s: field 'loss_scale_window' must be positive", w);
    o.loss_scale_window = (int)win;
    o.guard_nonfinite = lomo_lua_opt_bool(L, 2, "guard_nonfinite", o.guard_nonfinite, w);
    o.stochastic_rounding = lomo_lua_opt_bool(L, 2, "stochastic_rounding", o.stochastic_rounding, w);
    o.seed = (uint64_t)lomo_lua_opt_int(L, 2, "seed", (lua_Integer)o.seed, w);
    const char *nm = lomo_lua_opt_str(L, 2, "norm_method", NULL, w);
    if (nm) {
        if (strcmp(nm, "auto") == 0) o.norm_method = LOMO_NORM_AUTO;
        else if (strcmp(nm, "form_grad") == 0) o.norm_method = LOMO_NORM_FORM_GRAD;
        else if (strcmp(nm, "gram") == 0) o.norm_method = LOMO_NORM_GRAM;
        else return luaL_error(L, "%s: field 'norm_method' must be \"auto\", \"form_grad\" or \"gram\"", w);
    }
    o.adam_beta1 = (float)lomo_lua_opt_num(L, 2, "adam_beta1", o.adam_beta1, w);
    o.adam_beta2 = (float)lomo_lua_opt_num(L, 2, "adam_beta2", o.adam_beta2, w);
    o.adam_eps = (float)lomo_lua_opt_num(L, 2, "adam_eps", o.adam_eps, w);
    o.adalomo_decay = (float)lomo_lua_opt_num(L, 2, "adalomo_decay", o.adalomo_decay, w);
    o.adalomo_eps1 = (float)lomo_lua_opt_num(L, 2, "adalomo_eps1", o.adalomo_eps1, w);
    o.adalomo_eps2 = (float)lomo_lua_opt_num(L, 2, "adalomo_eps2", o.adalomo_eps2, w);
    o.adalomo_clip = (float)lomo_lua_opt_num(L, 2, "adalomo_clip", o.adalomo_clip, w);

    optim_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->o = NULL;
    h->mr = NULL;
    h->kind = kind;
    luaL_setmetatable(L, LOMO_T_OPTIMIZER);
    lomo_status st = lomo_optim_create(&h->o, mr->m, &o);
    if (st != LOMO_OK) {
        h->o = NULL;
        return lomo_lua_fail(L, mr->cr->ctx, st, w);
    }
    h->mr = mr;
    mr->refs++;
    return 1;
}

static int optim_close(lua_State *L) {
    optim_handle *h = luaL_checkudata(L, 1, LOMO_T_OPTIMIZER);
    if (h->o) {
        lomo_optim_destroy(h->o);
        h->o = NULL;
        lomo_lua_model_ref_release(h->mr);
        h->mr = NULL;
    }
    return 0;
}

static int optim_tostring(lua_State *L) {
    optim_handle *h = luaL_checkudata(L, 1, LOMO_T_OPTIMIZER);
    if (h->o)
        lua_pushfstring(L, LOMO_T_OPTIMIZER " (%s, %I steps)", lomo_optim_kind_name(h->kind),
                        (lua_Integer)lomo_optim_steps(h->o));
    else
        lua_pushliteral(L, LOMO_T_OPTIMIZER " (closed)");
    return 1;
}

static int optim_step(lua_State *L) {
    const char *w = "lomo.optimizer:step";
    lua_settop(L, 4);   /* buffers pushed below must not look like arguments */
    optim_handle *h = check_live_optim(L, 1, w);
    int V = lomo_model_config(h->mr->m)->vocab_size;
    int B = 0, T = 0;
    int32_t *tokens = lomo_lua_check_ids(L, 2, w, "tokens", V, 0, &B, &T);
    int32_t *targets = lomo_lua_check_ids(L, 3, w, "targets", V, 1, &B, &T);
    if (lua_type(L, 4) != LUA_TNUMBER) return luaL_error(L, "%s: lr must be a number, got %s", w, luaL_typename(L, 4));
    lua_Number lr = lua_tonumber(L, 4);
    if (!isfinite(lr) || lr < 0) return luaL_error(L, "%s: lr must be a finite number >= 0", w);
    lomo_step_result r;
    memset(&r, 0, sizeof r);
    lomo_status st = lomo_optim_step(h->o, tokens, targets, B, T, (float)lr, &r);
    if (st != LOMO_OK) return lomo_lua_fail(L, h->mr->cr->ctx, st, w);
    lua_createtable(L, 0, 5);
    lua_pushnumber(L, r.loss);
    lua_setfield(L, -2, "loss");
    if (!isnan(r.grad_norm)) {
        lua_pushnumber(L, r.grad_norm);
        lua_setfield(L, -2, "grad_norm");
    }
    lua_pushboolean(L, r.skipped);
    lua_setfield(L, -2, "skipped");
    lua_pushboolean(L, r.nonfinite);
    lua_setfield(L, -2, "nonfinite");
    lua_pushnumber(L, r.loss_scale);
    lua_setfield(L, -2, "loss_scale");
    return 1;
}

static int optim_steps(lua_State *L) {
    optim_handle *h = check_optim(L, 1);
    lua_pushinteger(L, (lua_Integer)lomo_optim_steps(h->o));
    return 1;
}

static int optim_loss_scale(lua_State *L) {
    optim_handle *h = check_optim(L, 1);
    lua_pushnumber(L, lomo_optim_loss_scale(h->o));
    return 1;
}

static int optim_name(lua_State *L) {
    optim_handle *h = check_optim(L, 1);
    lua_pushstring(L, lomo_optim_kind_name(h->kind));
    return 1;
}

static int optim_save(lua_State *L) {
    optim_handle *h = check_live_optim(L, 1, "lomo.optimizer:save");
    const char *path = luaL_checkstring(L, 2);
    lomo_status st = lomo_optim_save(h->o, path);
    if (st != LOMO_OK) return lomo_lua_fail(L, h->mr->cr->ctx, st, "lomo.optimizer:save");
    return 0;
}

static int optim_load(lua_State *L) {
    optim_handle *h = check_live_optim(L, 1, "lomo.optimizer:load");
    const char *path = luaL_checkstring(L, 2);
    lomo_status st = lomo_optim_load(h->o, path);
    if (st != LOMO_OK) return lomo_lua_fail(L, h->mr->cr->ctx, st, "lomo.optimizer:load");
    return 0;
}

static const lomo_lua_reg optim_methods[] = {
    {"step", optim_step, "(tokens, targets, lr) -> {loss=, grad_norm=, skipped=, nonfinite=, loss_scale=}"},
    {"steps", optim_steps, "() -> updates applied so far"},
    {"loss_scale", optim_loss_scale, "() -> the current loss scale"},
    {"name", optim_name, "() -> \"lomo\", \"adalomo\", \"sgd\" or \"adamw\""},
    {"save", optim_save, "(path): optimizer state (step count, loss scale, moments), atomic"},
    {"load", optim_load, "(path): state saved by :save for the same model and optimizer"},
    {"close", optim_close, "()"},
    {NULL, NULL, NULL},
};

static const lomo_lua_reg optim_funcs[] = {
    {"optimizer", l_optimizer,
     "(model, {name=\"lomo\"|\"adalomo\"|\"sgd\"|\"adamw\", weight_decay=, clip_grad_norm=, clip_grad_value=, "
     "loss_scaling=, stochastic_rounding=, seed=, ...}) -> optimizer"},
    {NULL, NULL, NULL},
};

void lomo_lua_open_optim(lua_State *L) {
    lomo_lua_new_type(L, LOMO_T_OPTIMIZER, optim_methods, optim_close, optim_tostring);
    lomo_lua_set_funcs(L, optim_funcs);
}
