-- Tests of tensor views (m:param, m:tensors) and of the context's device: shape, dtype,
-- stats against values computed here from totable(), set/totable round trips (f32 exact,
-- bf16 within its rounding), a view seeing an optimizer step, and the errors (bad shapes,
-- indices out of range, a closed model, a closed view, a wrong name, an unknown device).
local lomo = require "lomo"

local T = {}

-- the shared assertions (tests/lua/check.lua), under the short names these tests use
local check = require "check"
local fails, eq, near, truthy = check.raises, check.eq, check.near, check.truthy

local CFG = {hidden_size = 16, intermediate_size = 32, num_hidden_layers = 2, num_attention_heads = 2,
             num_key_value_heads = 1, vocab_size = 32, max_position_embeddings = 64}
local UP = "model.layers.0.mlp.up_proj.weight"   -- [32, 16]
-- the views' device: cpu unless LOMO_TEST_DEVICE=cuda (a GPU check of the same tests)
local DEVICE = os.getenv("LOMO_TEST_DEVICE") or "cpu"

local function tiny(dtype, seed)
  local ctx = lomo.context{threads = 1, device = DEVICE}
  return lomo.model(ctx, CFG, {dtype = dtype or "f32", seed = seed or 7}), ctx
end

local function batch()
  local tokens, targets = {}, {}
  for b = 1, 2 do
    local row, tgt = {}, {}
    for t = 1, 8 do
      row[t] = (b * 5 + t * 3) % 32
      tgt[t] = (row[t] + 3) % 32
    end
    tokens[b], targets[b] = row, tgt
  end
  return tokens, targets
end

local function flatten(rows)
  if type(rows[1]) ~= "table" then return rows end
  local out = {}
  for _, r in ipairs(rows) do for _, v in ipairs(r) do out[#out + 1] = v end end
  return out
end

-- the reference: the same statistics, in Lua, over the finite values
local function lua_stats(xs)
  local n, sum, sumsq, mn, mx, nan, inf = 0, 0, 0, math.huge, -math.huge, 0, 0
  for _, v in ipairs(xs) do
    if v ~= v then nan = nan + 1
    elseif v == math.huge or v == -math.huge then inf = inf + 1
    else
      n, sum, sumsq = n + 1, sum + v, sumsq + v * v
      mn, mx = math.min(mn, v), math.max(mx, v)
    end
  end
  local mean, dev = sum / n, 0
  for _, v in ipairs(xs) do
    if v == v and v ~= math.huge and v ~= -math.huge then dev = dev + (v - mean) ^ 2 end
  end
  return {mean = mean, std = math.sqrt(dev / n), min = mn, max = mx, rms = math.sqrt(sumsq / n),
          absmax = math.max(-mn, mx), nan = nan, inf = inf}
end

local function check_stats(t, what)
  local got, want = t:stats(), lua_stats(flatten(t:totable()))
  for _, k in ipairs{"mean", "std", "min", "max", "rms", "absmax"} do
    near(got[k], want[k], 1e-9, what .. " " .. k)
  end
  eq(got.nan, want.nan, what .. " nan")
  eq(got.inf, want.inf, what .. " inf")
  eq(got.numel, t:numel(), what .. " numel")
  return got
end

-- ---- shape, dtype, names ----

function T.shape_dtype_and_names()
  local m = tiny()
  local emb = m:param("model.embed_tokens.weight")
  eq(emb.name, "model.embed_tokens.weight", "name")
  eq(table.concat(emb:shape(), "x"), "32x16", "embedding shape")
  eq(emb:numel(), 512, "numel")
  eq(#emb, 512, "#t")
  eq(emb.dtype, "f32", "dtype")
  eq(emb.kind, "embedding", "kind")
  eq(emb.device, DEVICE, "device")
  local norm = m:param("model.norm.weight")
  eq(#norm:shape(), 1, "a norm is 1-D")
  eq(norm:shape()[1], 16, "norm shape")
  eq(tostring(norm), "tensor(model.norm.weight, [16], f32)", "tostring")
  eq(tostring(m:param(UP)), "tensor(" .. UP .. ", [32, 16], f32)", "tostring of a matrix")
  -- by index, in the order of m:params(); and the iterator
  local ps = m:params()
  eq(m:param(1).name, ps[1].name, "param(1)")
  eq(m:param(#ps).name, ps[#ps].name, "param(#params)")
  local n = 0
  for i, t in m:tensors() do
    n = n + 1
    eq(i, n, "iterator index")
    eq(t.name, ps[i].name, "iterator name " .. i)
    eq(t:numel(), ps[i].numel, "iterator numel " .. i)
    eq(table.concat(t:shape(), "x"), table.concat(ps[i].shape, "x"), "iterator shape " .. i)
  end
  eq(n, #ps, "the iterator visits every parameter")
  local mb = tiny("bf16")
  eq(mb:param(UP).dtype, "bf16", "bf16 model")
  eq(tostring(mb:param("model.norm.weight")), "tensor(model.norm.weight, [16], bf16)", "bf16 tostring")
  eq(tiny("f16"):param(1).dtype, "f16", "f16 model")
end

-- ---- stats ----

function T.stats_match_values_computed_in_lua()
  local m = tiny(nil, 11)
  for _, name in ipairs{"model.embed_tokens.weight", UP, "model.norm.weight"} do
    check_stats(m:param(name), name)
  end
  -- known values: mean 0, population std sqrt(5/2) for {-2, -1, 1, 2}
  local t = m:param("model.norm.weight")
  local xs = {}
  for i = 1, 16 do xs[i] = ({-2, -1, 1, 2})[(i - 1) % 4 + 1] end
  t:set(xs)
  local s = check_stats(t, "known values")
  near(s.mean, 0, 1e-12, "mean")
  near(s.std, math.sqrt(2.5), 1e-12, "std")
  near(s.rms, math.sqrt(2.5), 1e-12, "rms")
  eq(s.min, -2, "min")
  eq(s.max, 2, "max")
  eq(s.absmax, 2, "absmax")
  -- non-finite values are counted, not averaged
  xs[1], xs[2], xs[3] = 0 / 0, math.huge, -math.huge
  t:set(xs)
  s = check_stats(t, "with nan and inf")
  eq(s.nan, 1, "nan count")
  eq(s.inf, 2, "inf count")
  truthy(s.mean == s.mean and s.std == s.std, "mean and std stay finite")
end

-- ---- writing ----

function T.set_totable_round_trip_f32()
  local m = tiny()
  local t = m:param(UP)
  local rows = {}
  for r = 1, 32 do
    rows[r] = {}
    for c = 1, 16 do rows[r][c] = (r * 16 + c) / 64 - 4 end   -- exact in f32
  end
  t:set(rows)
  local back = t:totable()
  eq(#back, 32, "rows")
  eq(#back[1], 16, "cols")
  for r = 1, 32 do for c = 1, 16 do eq(back[r][c], rows[r][c], ("value [%d][%d]"):format(r, c)) end end
  eq(t:get(3, 5), rows[3][5], "get(row, col)")
  eq(t:get(2 * 16 + 5), rows[3][5], "get(flat index)")
  -- the old flat API sees the same values
  local flat = m:get(UP)
  for i, v in ipairs(flatten(rows)) do eq(flat[i], v, "m:get " .. i) end
  -- a flat table also works for a matrix
  local xs = {}
  for i = 1, 512 do xs[i] = i end
  t:set(xs)
  eq(t:get(32, 16), 512, "flat set, last value")
  eq(t:totable()[2][1], 17, "flat set is row-major")
  t:fill(0.25)
  local s = t:stats()
  eq(s.min, 0.25, "fill min")
  eq(s.max, 0.25, "fill max")
end

function T.set_totable_round_trip_bf16()
  local m = tiny("bf16")
  local t = m:param(UP)
  local rows, exact = {}, true
  for r = 1, 32 do
    rows[r] = {}
    for c = 1, 16 do rows[r][c] = math.sin(r * 16 + c) / 3 end
  end
  t:set(rows)
  local back = t:totable()
  for r = 1, 32 do
    for c = 1, 16 do
      local want, got = rows[r][c], back[r][c]
      if got ~= want then exact = false end
      -- bf16 keeps 8 significant bits: relative error at most 2^-9 (round to nearest)
      if math.abs(got - want) > math.abs(want) * 2 ^ -8 then
        error(("bf16 value [%d][%d]: %.9g stored as %.9g"):format(r, c, want, got))
      end
    end
  end
  truthy(not exact, "values are rounded to bf16 (storage is not f32)")
  -- what was read back is exactly representable: a second round trip changes nothing
  t:set(back)
  local again = t:totable()
  for r = 1, 32 do for c = 1, 16 do eq(again[r][c], back[r][c], "bf16 second round trip") end end
end

-- ---- a view of live weights ----

function T.view_reflects_an_optimizer_step()
  local m = tiny(nil, 3)
  local t = m:param(UP)
  local before = flatten(t:totable())
  local s0 = t:stats()
  local opt = lomo.optimizer(m, {name = "sgd"})
  local tokens, targets = batch()
  opt:step(tokens, targets, 0.5)
  local after = flatten(t:totable())
  local changed = 0
  for i = 1, #before do if after[i] ~= before[i] then changed = changed + 1 end end
  truthy(changed > #before // 2, ("most weights change after a step (%d of %d)"):format(changed, #before))
  truthy(t:stats().mean ~= s0.mean, "stats change after a step")
  local flat = m:get(UP)
  for i = 1, #after do eq(after[i], flat[i], "view and m:get agree after the step, " .. i) end
  -- and writes through the view are what the model computes with
  local loss = m:forward(tokens, targets)
  m:param("lm_head.weight"):fill(0)
  near(m:forward(tokens, targets), math.log(32), 1e-5, "zero lm_head: uniform logits")
  truthy(loss ~= math.log(32), "the loss was something else before")
  opt:close()
end

function T.view_keeps_its_model_handle_alive()
  local function only_a_view()
    local ctx = lomo.context{threads = 1, device = DEVICE}
    local m = lomo.model(ctx, CFG, {seed = 5})
    return m:param("model.norm.weight"), setmetatable({m}, {__mode = "v"})
  end
  local t, weak = only_a_view()
  collectgarbage()
  collectgarbage()
  truthy(weak[1] ~= nil, "the view keeps the model's handle from being collected")
  eq(t:stats().mean, 1, "the view still reads (norm weights start at 1)")
  t:close()
  collectgarbage()
  collectgarbage()
  eq(weak[1], nil, "a closed view lets the model go")
end

-- ---- errors ----

function T.bad_shapes_in_set()
  local m = tiny()
  local norm, up = m:param("model.norm.weight"), m:param(UP)
  local up_before = flatten(up:totable())
  fails(norm.set, "tensor model.norm.weight: expected 16 values, got 3", norm, {1, 2, 3})
  fails(up.set, "tensor " .. UP .. ": expected 512 values, got 16", up, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                                                                           14, 15, 16})
  fails(up.set, "tensor " .. UP .. ": expected 32 rows, got 2", up, {{1}, {2}})
  local rows = {}
  for r = 1, 32 do rows[r] = {} for c = 1, 16 do rows[r][c] = 0 end end
  rows[7][17] = 1
  fails(up.set, "row 7: expected 16 values, got 17", up, rows)
  rows[7][17] = nil
  rows[9] = 3
  fails(up.set, "row 9 must be a table of 16 values, got number", up, rows)
  rows[9] = {}
  for c = 1, 16 do rows[9][c] = 0 end
  rows[4][2] = "x"
  fails(up.set, "value [4][2] must be a number, got string", up, rows)
  local xs = {}
  for i = 1, 16 do xs[i] = i end
  xs[5] = {}
  fails(norm.set, "tensor model.norm.weight: value [5] must be a number, got table", norm, xs)
  fails(norm.set, "table expected", norm, 5)
  fails(norm.fill, "number expected", norm, "x")
  -- a failed set writes nothing
  eq(norm:stats().mean, 1, "norm unchanged after failed sets")
  for i, v in ipairs(flatten(up:totable())) do eq(v, up_before[i], "up unchanged after failed sets, " .. i) end
end

function T.index_out_of_range()
  local m = tiny()
  local norm, up = m:param("model.norm.weight"), m:param(UP)
  fails(norm.get, "tensor model.norm.weight: index 17 is outside [1, 16]", norm, 17)
  fails(norm.get, "index 0 is outside [1, 16]", norm, 0)
  fails(up.get, "index (33, 1) is outside [1, 32] x [1, 16]", up, 33, 1)
  fails(up.get, "index (1, 0) is outside", up, 1, 0)
  fails(norm.get, "get(i, j) needs a matrix", norm, 1, 1)
  fails(up.get, "number expected", up, "a")
  local n = #m:params()
  fails(m.param, "lomo.model:param: index 0 is outside [1, " .. n .. "]", m, 0)
  fails(m.param, "index " .. (n + 1) .. " is outside", m, n + 1)
  fails(m.param, "index must be an integer, got 1.5", m, 1.5)
end

function T.wrong_name()
  local m = tiny()
  fails(m.param, "lomo.model:param: no parameter named 'model.layers.9.mlp.up_proj.weight'", m,
        "model.layers.9.mlp.up_proj.weight")
  fails(m.param, "string expected", m, {})
  local t = m:param(1)
  eq(t.nope, nil, "unknown field")
  eq(t.shape ~= nil, true, "methods through __index")
end

function T.closed_model()
  local m = tiny()
  local t = m:param(UP)
  m:close()
  local msg = "tensor " .. UP .. ": its model is closed"
  fails(t.stats, msg, t)
  fails(t.totable, msg, t)
  fails(t.shape, msg, t)
  fails(t.get, msg, t, 1)
  fails(t.set, msg, t, {})
  fails(t.fill, msg, t, 0)
  fails(function() return #t end, msg)
  fails(function() return t.dtype end, msg)
  eq(t.name, UP, "the name stays readable")
  eq(tostring(t), "tensor(" .. UP .. ", model closed)", "tostring")
  fails(m.param, "lomo.model: use after close", m, UP)
  t:close()
end

function T.closed_tensor()
  local m = tiny()
  local t = m:param("model.norm.weight")
  t:close()
  t:close()   -- idempotent
  fails(t.stats, "tensor model.norm.weight: use after close", t)
  fails(t.numel, "tensor model.norm.weight: use after close", t)
  fails(t.set, "tensor model.norm.weight: use after close", t, {})
  eq(tostring(t), "tensor(model.norm.weight, closed)", "tostring")
  eq(t.name, "model.norm.weight", "name after close")
  -- closing a view leaves the model and other views alone
  eq(m:param("model.norm.weight"):stats().mean, 1, "another view")
  local escaped
  do
    local v <close> = m:param(UP)
    escaped = v
    eq(v:numel(), 512, "open inside the block")
  end
  fails(escaped.numel, "tensor " .. UP .. ": use after close", escaped)
  fails(t.stats, "bad argument #1", "not a tensor")
  m:close()
end

-- ---- the context's device ----

function T.context_device()
  fails(lomo.context, 'lomo.context: device must be "cpu" or "cuda", got "nonsense"', {device = "nonsense"})
  fails(lomo.context, "'device' must be a string", {device = 1})
  fails(lomo.plan, 'lomo.plan: device must be "cpu" or "cuda"', {config = CFG, seq = 8, device = "tpu"})
  local ctx = lomo.context{device = "cpu"}
  eq(ctx.device, "cpu", "ctx.device")
  truthy(tostring(ctx):find("lomo.context (cpu, ", 1, true), "tostring names the device: " .. tostring(ctx))
  local m = lomo.model(ctx, CFG, {seed = 1})
  eq(m:param(1).device, "cpu", "a cpu context's tensors live on the cpu")
  m:close()
  ctx:close()
  fails(function() return ctx.device end, "lomo.context: use after close")
  truthy(lomo.plan{config = CFG, seq = 8, device = "cpu"}.total > 0, "plan on cpu")
  -- "cuda" either works (a GPU build on a GPU) or says why not; either way the name is right
  local ok, c = pcall(lomo.context, {device = "cuda"})
  if ok then
    eq(c.device, "cuda", "a cuda context")
    c:close()
  else
    -- the reason itself, not a pointer to stderr
    local msg = tostring(c)
    truthy(msg:find('lomo.context: device "cuda"', 1, true) and msg:find('runs on the CPU', 1, true)
           and (msg:find("is not usable: ", 1, true) or msg:find("no CUDA backend", 1, true)), "cuda error: " .. msg)
  end
  -- the default follows LOMO_DEVICE when it is set
  local env = os.getenv("LOMO_DEVICE")
  if env == "cpu" or env == "cuda" then eq(lomo.context().device, env, "LOMO_DEVICE") end
end

return T
