-- lomo.trainer: the training loop. Lua owns the loop; each step is one opt:step in C.
--
--   local trainer = require "lomo.trainer"
--   local ck = trainer.latest(out_dir)                    -- nil on a fresh start
--   local m = lomo.load(ctx, ck and ck.model or base_model)
--   local opt = lomo.optimizer(m, {name = "lomo"})
--   local r = trainer.run{model = m, optimizer = opt, data = loader, steps = 500,
--                         lr = {name = "linear", lr = 1e-3, warmup = 0.1},
--                         eval = function(m, info) return {accuracy = ...} end, eval_every = 100,
--                         checkpoint_every = 100, out_dir = out_dir, resume = ck}
--
-- Options (cfg):
--   model, optimizer      objects with m:save(dir), opt:step(tokens, targets, lr) -> {loss=, ...},
--                         opt:save(path), opt:load(path), opt:steps()
--   data                  a lomo.data loader (or anything with next(), state(), set_state(),
--                         batches_per_epoch())
--   steps | epochs        the length of the run (steps wins)
--   lr                    number, function(step) or lomo.schedule options (total filled in)
--   eval, eval_every      eval(model, info) -> table of numbers; run every eval_every steps,
--                         at the end (eval_at_end, default true) and at step 0 (eval_at_start)
--   checkpoint_every      steps between checkpoints (needs out_dir); keep = checkpoints kept (2)
--   out_dir               where metrics.jsonl, checkpoints and loss.svg go (nil: nowhere)
--   resume                a checkpoint from trainer.latest(out_dir), or true to look it up;
--                         the model must already hold the checkpoint's weights (load ck.model)
--   seed                  seed of info.rng, a PRNG handed to eval and saved in checkpoints
--   progress              "bar", "lines", "off"; default: "bar" on a terminal, "lines" (every
--                         5% of the run) when stderr is not one; progress_out (io.stderr)
--   memory                function() -> bytes, or a lomo context (ctx:memory())
--   profile               a lomo context: its training steps (not evaluation) are profiled op by
--                         op, from zero (the context's earlier counts are reset); the result gets
--                         profile (lomo.profile.rows) and profile_report, and
--                         out_dir/profile.txt holds the report
--   json                  {encode=, decode=} (default lomo.json)
--   clock                 function() -> seconds (default lomo.clock)
--   interrupted           function() -> bool (default lomo.interrupted): checkpoint and stop
--   stop_after            stop after this many steps of this call, as if killed (tests)
--   on_step               function(info) called after every step
--
-- Checkpoint layout: out_dir/checkpoint-NNNNNNNN/{model/, optimizer.bin, state.json}; the
-- state is written last and out_dir/latest.json is switched to the new checkpoint only once it
-- is complete, so a crash at any point leaves the previous checkpoint usable.

local util = require "lomo.util"
local schedule = require "lomo.schedule"
local rng_mod = require "lomo.rng"
local svg = require "lomo.svg"
local progress = require "lomo.progress"
local profile_mod = require "lomo.profile"

local M = {}

M.STATE_VERSION = 1

local function fail(fmt, ...)
  error("lomo.trainer: " .. string.format(fmt, ...), 3)
end

-- JSON cannot hold NaN or infinities; they travel as strings.
local function num_out(v)
  if type(v) ~= "number" then return v end
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" end
  if v == -math.huge then return "-inf" end
  return v
end
local function num_in(v)
  if v == "nan" then return 0 / 0 end
  if v == "inf" then return math.huge end
  if v == "-inf" then return -math.huge end
  return v
end
local function clean(t)
  local o = {}
  for k, v in pairs(t) do
    if type(v) == "number" then o[k] = num_out(v)
    elseif type(v) == "table" then o[k] = clean(v)
    else o[k] = v end
  end
  return o
end
M.clean = clean

local function map(t, f)
  local o = {}
  for i = 1, #t do o[i] = f(t[i]) end
  return o
end

local function read_json(json, path)
  local s = util.read_file(path)
  if s == nil then return nil end
  local ok, v = pcall(json.decode, s)
  if not ok then error("lomo.trainer: " .. path .. ": " .. tostring(v), 0) end
  return v
end

-- latest(out_dir [, json]): the newest complete checkpoint {dir=, model=, optimizer=, state=,
-- step=}, or nil when there is none.
function M.latest(out_dir, json)
  if type(out_dir) ~= "string" then fail("latest: out_dir must be a string") end
  json = util.json(json, "lomo.trainer")
  local idx = read_json(json, util.join(out_dir, "latest.json"))
  if idx == nil then return nil end
  if type(idx.checkpoint) ~= "string" then
    error("lomo.trainer: " .. util.join(out_dir, "latest.json") .. ": field 'checkpoint' missing", 2)
  end
  local dir = util.join(out_dir, idx.checkpoint)
  return {dir = dir, model = util.join(dir, "model"), optimizer = util.join(dir, "optimizer.bin"),
          state = util.join(dir, "state.json"), step = math.tointeger(idx.step),
          checkpoints = idx.checkpoints or {idx.checkpoint}}
end

local function memory_of(cfg)
  local m = cfg.memory
  if type(m) == "function" then return m() end
  if m ~= nil and (type(m) == "table" or type(m) == "userdata") and m.memory then
    local r = m:memory()
    return r and r.current and r.current.total
  end
  local b = util.bindings()
  if b and b.peak_rss then return b.peak_rss() end
  return nil
end

function M.run(cfg)
  if type(cfg) ~= "table" then fail("run expects a table of options") end
  local m, opt, loader = cfg.model, cfg.optimizer, cfg.data
  if m == nil then fail("option 'model' is required") end
  if opt == nil then fail("option 'optimizer' is required") end
  if loader == nil or loader.next == nil then fail("option 'data' must be a loader (lomo.data.loader)") end
  local total = cfg.steps
  if total == nil then
    local epochs = cfg.epochs or 1
    if math.tointeger(epochs) == nil or epochs <= 0 then fail("epochs must be a positive integer") end
    total = epochs * loader:batches_per_epoch()
  end
  if math.tointeger(total) == nil or total <= 0 then fail("steps must be a positive integer, got %s", tostring(total)) end
  local lr_of = schedule.resolve(cfg.lr or 1e-3, total)
  local out_dir = cfg.out_dir
  local ck_every = cfg.checkpoint_every
  if ck_every and not out_dir then fail("checkpoint_every needs out_dir") end
  local keep = cfg.keep or 2
  local json = (out_dir or cfg.resume) and util.json(cfg.json, "lomo.trainer") or nil
  local clock = cfg.clock or util.clock
  local interrupted = cfg.interrupted
  if interrupted == nil then
    local b = util.bindings()
    interrupted = b and b.interrupted
  end
  local rng = rng_mod.new(cfg.seed or 0)
  local eval_every = cfg.eval_every
  local prof = cfg.profile
  if prof ~= nil and (type(prof) ~= "userdata" and type(prof) ~= "table" or not prof.profile_stats) then
    fail("profile must be a lomo context (ctx), got %s", type(prof))
  end
  if prof then prof:profile_reset() end

  local st = {step = 0, losses = {}, evals = {}, tokens = 0, elapsed = 0.0}
  local checkpoints = {}
  local last_ck_step = nil

  -- resume
  local resume = cfg.resume
  if resume == true then
    if not out_dir then fail("resume = true needs out_dir") end
    resume = M.latest(out_dir, json)
  end
  if resume then
    local s = read_json(json, resume.state)
    if s == nil then fail("resume: cannot read %s", resume.state) end
    if math.tointeger(s.version) ~= M.STATE_VERSION then fail("resume: %s: unknown state version", resume.state) end
    opt:load(resume.optimizer)
    loader:set_state(s.data)
    rng:set_state(s.rng)
    st.step = math.tointeger(s.step)
    st.losses = map(s.losses or {}, num_in)
    st.evals = s.evals or {}
    st.tokens = s.tokens or 0
    st.elapsed = s.elapsed or 0.0
    checkpoints = resume.checkpoints or {}
    last_ck_step = st.step
    if st.step > total then fail("resume: the checkpoint is at step %d, past the run's %d steps", st.step, total) end
  end

  -- the metrics log: on resume, entries past the checkpoint (from the run that died) go
  local log
  if out_dir then
    util.mkdir_p(out_dir)
    local path = util.join(out_dir, "metrics.jsonl")
    if resume or cfg.append_log then
      local kept = {}
      local old = util.read_file(path)
      if old then
        for line in old:gmatch("[^\n]+") do
          local ok, e = pcall(json.decode, line)
          if ok and type(e) == "table" and (math.tointeger(e.step) or math.huge) <= st.step then
            kept[#kept + 1] = line .. "\n"
          end
        end
      end
      util.atomic_write(path, table.concat(kept))
      log = assert(io.open(path, "ab"))
    else
      log = assert(io.open(path, "wb"))
    end
  end
  local function log_line(t)
    if log then
      log:write(json.encode(clean(t)), "\n")
      log:flush()
    end
  end

  -- stderr that is not a terminal (a log) gets whole lines; a caller's own stream gets the bar
  local auto_mode = cfg.progress_out and "bar" or progress.default_mode()
  local bar = progress.new{mode = cfg.progress == false and "off" or cfg.progress or auto_mode,
                           out = cfg.progress_out, every = cfg.progress_every or math.max(1, total // 20)}
  local info = {model = m, optimizer = opt, rng = rng, step = st.step, total = total, trainer = st}

  local function do_eval()
    if not cfg.eval then return end
    info.step = st.step
    local r = cfg.eval(m, info)
    if type(r) ~= "table" then fail("eval must return a table of metrics, got %s", type(r)) end
    local e = {step = st.step}
    for k, v in pairs(r) do if type(v) == "number" or type(v) == "string" or type(v) == "boolean" then e[k] = v end end
    st.evals[#st.evals + 1] = e
    local entry = {type = "eval"}
    for k, v in pairs(e) do entry[k] = v end
    log_line(entry)
    local parts = {}
    for k, v in pairs(e) do
      if k ~= "step" then parts[#parts + 1] = string.format("%s=%s", k, type(v) == "number" and string.format("%.4f", v) or tostring(v)) end
    end
    table.sort(parts)
    bar:message(string.format("eval at step %d: %s", st.step, table.concat(parts, " ")))
    return e
  end

  local function checkpoint()
    if st.step == last_ck_step then return end
    local name = string.format("checkpoint-%08d", st.step)
    local dir = util.join(out_dir, name)
    util.remove_tree(dir) -- leftovers of a run that died after this step
    util.mkdir_p(util.join(dir, "model"))
    m:save(util.join(dir, "model"))
    opt:save(util.join(dir, "optimizer.bin"))
    local state = {version = M.STATE_VERSION, step = st.step, total = total, data = loader:state(),
                   rng = rng:state(), losses = map(st.losses, num_out), evals = clean(st.evals),
                   tokens = st.tokens, elapsed = st.elapsed}
    util.atomic_write(util.join(dir, "state.json"), json.encode(state))
    local list = {}
    for _, c in ipairs(checkpoints) do if c ~= name then list[#list + 1] = c end end
    list[#list + 1] = name
    local dropped = {}
    while #list > keep do dropped[#dropped + 1] = table.remove(list, 1) end
    util.atomic_write(util.join(out_dir, "latest.json"),
                      json.encode({checkpoint = name, step = st.step, checkpoints = list}))
    for _, c in ipairs(dropped) do util.remove_tree(util.join(out_dir, c)) end
    checkpoints = list
    last_ck_step = st.step
    log_line({type = "checkpoint", step = st.step, dir = name})
  end

  local stopped = "done"
  local t0 = clock()
  local run_tokens, run_steps = 0, 0
  local elapsed0 = st.elapsed

  local ok, err = pcall(function()
    if cfg.eval_at_start and st.step == 0 and #st.evals == 0 then
      do_eval()
      t0 = clock()   -- tokens/s and the ETA measure training, not the evaluation before it
    end
    while st.step < total do
      local batch = loader:next()
      local s = st.step + 1
      local lr = lr_of(s)
      if prof then prof:profile(true) end
      local r = opt:step(batch.tokens, batch.targets, lr)
      if prof then prof:profile(false) end
      if type(r) ~= "table" then fail("optimizer step returned %s, expected a table", type(r)) end
      st.step = s
      local loss = r.loss
      st.losses[s] = loss
      st.tokens = st.tokens + (batch.n_tokens or 0)
      run_tokens, run_steps = run_tokens + (batch.n_tokens or 0), run_steps + 1
      local dt = clock() - t0
      st.elapsed = elapsed0 + dt
      local tps = dt > 0 and run_tokens / dt or nil
      local eta = dt > 0 and (total - s) * dt / run_steps or nil
      local mem = memory_of(cfg)
      log_line({type = "train", step = s, loss = loss, lr = lr, grad_norm = r.grad_norm,
                skipped = r.skipped, loss_scale = r.loss_scale, epoch = batch.epoch,
                tokens = st.tokens, tokens_per_s = tps, elapsed = st.elapsed, memory = mem})
      bar:update{step = s, total = total, loss = loss, lr = lr, tokens_per_s = tps, eta = eta,
                 memory = mem, epoch = batch.epoch}
      info.step = s
      if cfg.on_step then cfg.on_step({step = s, loss = loss, lr = lr, result = r, batch = batch}) end
      if eval_every and s % eval_every == 0 then
        local e0 = clock()
        do_eval()
        t0 = t0 + (clock() - e0)   -- keep evaluation out of tokens/s and the ETA
      end
      if ck_every and s % ck_every == 0 then checkpoint() end
      if cfg.stop_after and run_steps >= cfg.stop_after and s < total then
        stopped = "stop_after"
        return
      end
      if interrupted and interrupted() then
        bar:message(string.format("interrupted at step %d", s))
        if out_dir and json then checkpoint() end
        stopped = "interrupted"
        return
      end
    end
    if cfg.eval and cfg.eval_at_end ~= false then
      local last = st.evals[#st.evals]
      if not last or math.tointeger(last.step) ~= st.step then do_eval() end
    end
    if ck_every then checkpoint() end
  end)
  bar:finish()
  if log then log:close() end
  if prof then prof:profile(false) end   -- an error inside a step left it on
  if not ok then error(err, 0) end

  local result = {step = st.step, losses = st.losses, evals = st.evals, tokens = st.tokens,
                  elapsed = st.elapsed, stopped = stopped, total = total}
  if prof then
    local stats = prof:profile_stats()
    result.profile = profile_mod.rows(stats)
    result.profile_report = profile_mod.report(stats)
    if out_dir then util.atomic_write(util.join(out_dir, "profile.txt"), result.profile_report) end
  end
  if out_dir and stopped ~= "stop_after" and cfg.svg ~= false then
    result.svg = util.join(out_dir, "loss.svg")
    util.atomic_write(result.svg, M.loss_svg(st, cfg.title))
  end
  return result
end

-- loss_svg(state, title): the train loss curve, with eval loss when the evals report one.
function M.loss_svg(st, title)
  local train = {}
  for i = 1, #st.losses do train[#train + 1] = {i, st.losses[i]} end
  local series = {{name = "train loss", points = train}}
  local ev = {}
  for _, e in ipairs(st.evals) do
    if type(e.loss) == "number" then ev[#ev + 1] = {e.step, e.loss} end
  end
  if #ev > 0 then series[2] = {name = "eval loss", points = ev, smooth = false} end
  return svg.loss_curve(nil, {series = series, title = title or "training loss",
                              smooth = #train > 50 and 0.9 or nil})
end

return M
