-- lomo.trainer: the loop, eval and checkpoint cadence, exact resume, the metrics log,
-- interrupts and the loss curve; with the fake model/optimizer, and a tiny real model when
-- the bindings load.
local check = require "check"
local fake = require "fake"
local real = require "real"
local data = require "lomo.data"
local trainer = require "lomo.trainer"

local T = {}

local function examples(n)
  local r = require("lomo.rng").new(99)
  local exs = {}
  for i = 1, n do
    local len = r:random(3, 9)
    local ids = {}
    for k = 1, len do ids[k] = r:random(0, 50) end
    exs[i] = data.from_ids(ids, r:random(0, 2))
  end
  return exs
end

local function loader() return data.loader(examples(37), {batch = 4, T = 8, seed = 7}) end

local function in_tmp(fn)
  local dir = check.tmpdir()
  local ok, err = pcall(fn, dir)
  check.rmtree(dir)
  if not ok then error(err, 0) end
end

local function base_cfg(m, opt, out, extra)
  local cfg = {model = m, optimizer = opt, data = loader(), steps = 25, progress = "off",
               lr = {name = "linear", lr = 0.05, warmup = 3}, json = fake.json, out_dir = out,
               eval = function(model) return {score = model:score()} end, eval_every = 10,
               checkpoint_every = 5, keep = 2, clock = function() return 0.0 end}
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return cfg
end

local function train_losses(path)
  local out = {}
  for line in io.lines(path) do
    local e = fake.json.decode(line)
    if e.type == "train" then
      check.truthy(out[e.step] == nil, "step " .. e.step .. " logged twice")
      out[e.step] = e.loss
    end
  end
  return out
end

function T.runs_the_requested_steps_with_schedule_and_cadence()
  in_tmp(function(dir)
    local m = fake.model(0)
    local opt = fake.optimizer(m)
    local lrs = {}
    local r = trainer.run(base_cfg(m, opt, dir, {on_step = function(i) lrs[i.step] = i.lr end}))
    check.eq(r.step, 25)
    check.eq(r.stopped, "done")
    check.eq(#r.losses, 25)
    check.eq(opt:steps(), 25)
    check.near(lrs[1], 0.05 / 3)
    check.near(lrs[3], 0.05)
    check.near(lrs[25], 0.05 / 22)
    check.truthy(r.losses[25] < r.losses[1], "the fake loss falls")
    -- evals at 10, 20 and the end; checkpoints at 5..25, the last two kept
    local steps = {}
    for _, e in ipairs(r.evals) do steps[#steps + 1] = e.step end
    check.eq(steps, {10, 20, 25})
    local ck = trainer.latest(dir, fake.json)
    check.eq(ck.step, 25)
    check.eq(ck.checkpoints, {"checkpoint-00000020", "checkpoint-00000025"})
    check.truthy(io.open(dir .. "/checkpoint-00000020/state.json"), "kept")
    check.truthy(not io.open(dir .. "/checkpoint-00000015/state.json"), "pruned")
    check.truthy(io.open(ck.model .. "/weights.txt"), "model saved")
    check.truthy(io.open(ck.optimizer), "optimizer saved")
    local logged = train_losses(dir .. "/metrics.jsonl")
    for s = 1, 25 do check.eq(logged[s], r.losses[s]) end
    local svg = check.read(r.svg)
    check.truthy(svg:find("<polyline", 1, true), "loss curve written")
  end)
end

function T.epochs_define_the_length()
  local m = fake.model(0)
  local r = trainer.run{model = m, optimizer = fake.optimizer(m), data = loader(), epochs = 2,
                        progress = "off", lr = 0.01}
  check.eq(r.step, 20, "37 examples in batches of 4: 10 per epoch")
end

-- a stand-in context: counts the optimizer steps taken while its profile is on
local function fake_profiled_ctx()
  local ctx = {on = false, resets = 0, stats = {matmul = {calls = 0, seconds = 0, flops = 0}}}
  function ctx:profile(on) self.on = on end
  function ctx:profile_reset() self.resets = self.resets + 1 end
  function ctx:profile_stats() return self.stats end
  return ctx
end

function T.profile_covers_the_training_steps_only()
  in_tmp(function(dir)
    local ctx = fake_profiled_ctx()
    local m = fake.model(0)
    local opt = fake.optimizer(m)
    local step = opt.step
    opt.step = function(self, ...)
      if ctx.on then
        ctx.stats.matmul.calls = ctx.stats.matmul.calls + 1
        ctx.stats.matmul.seconds = ctx.stats.matmul.seconds + 0.5
      end
      return step(self, ...)
    end
    local evals_profiled = 0
    local r = trainer.run(base_cfg(m, opt, dir, {profile = ctx, eval_at_start = true, eval = function(model)
      if ctx.on then evals_profiled = evals_profiled + 1 end
      return {score = model:score()}
    end}))
    check.eq(ctx.resets, 1, "the profile starts from zero")
    check.eq(ctx.stats.matmul.calls, 25, "every training step profiled")
    check.eq(evals_profiled, 0, "evaluation is not profiled")
    check.eq(ctx.on, false, "profiling is off after the run")
    check.eq(r.profile[1].op, "matmul")
    check.eq(r.profile[1].seconds, 12.5)
    check.truthy(r.profile_report:find("matmul", 1, true), r.profile_report)
    check.eq(check.read(dir .. "/profile.txt"), r.profile_report)
  end)
  local ok, err = pcall(trainer.run, {model = fake.model(0), optimizer = fake.optimizer(fake.model(0)),
                                      data = loader(), steps = 1, progress = "off", profile = 42})
  check.truthy(not ok and tostring(err):find("profile must be a lomo context", 1, true), tostring(err))
end

function T.resume_after_a_kill_reproduces_the_uninterrupted_run_exactly()
  in_tmp(function(dir)
    -- the reference: 25 uninterrupted steps
    local m = fake.model(0)
    local ref = trainer.run(base_cfg(m, fake.optimizer(m), dir .. "/ref"))
    -- killed after 12 steps (checkpoints at 5 and 10), then resumed from step 10
    local m1 = fake.model(0)
    local k = trainer.run(base_cfg(m1, fake.optimizer(m1), dir .. "/run", {stop_after = 12}))
    check.eq(k.stopped, "stop_after")
    check.eq(k.step, 12)
    local ck = trainer.latest(dir .. "/run", fake.json)
    check.eq(ck.step, 10)
    local m2 = fake.load_model(ck.model)
    local opt2 = fake.optimizer(m2)
    local r = trainer.run(base_cfg(m2, opt2, dir .. "/run", {resume = ck}))
    check.eq(r.step, 25)
    check.eq(opt2:steps(), 25, "the optimizer's step count came back")
    for s = 1, 25 do check.eq(r.losses[s], ref.losses[s], "loss at step " .. s) end
    check.eq(m2.w, m.w, "final weights")
    check.eq(r.evals, ref.evals)
    -- the metrics log holds each step once, with the uninterrupted run's losses
    local logged = train_losses(dir .. "/run/metrics.jsonl")
    for s = 1, 25 do check.eq(logged[s], ref.losses[s], "logged loss at step " .. s) end
    -- resume = true finds the latest checkpoint itself; a finished run stays finished
    local m3 = fake.load_model(trainer.latest(dir .. "/run", fake.json).model)
    local again = trainer.run(base_cfg(m3, fake.optimizer(m3), dir .. "/run", {resume = true}))
    check.eq(again.step, 25)
    check.eq(again.losses, ref.losses)
  end)
end

function T.resume_several_times_across_epoch_boundaries()
  in_tmp(function(dir)
    local m = fake.model(1)
    local ref = trainer.run(base_cfg(m, fake.optimizer(m), dir .. "/ref", {checkpoint_every = 3, steps = 31}))
    local cur = fake.model(1)
    local r = trainer.run(base_cfg(cur, fake.optimizer(cur), dir .. "/run",
                                   {checkpoint_every = 3, steps = 31, stop_after = 7}))
    local kills = 0
    while r.stopped == "stop_after" do
      kills = kills + 1
      local ck = trainer.latest(dir .. "/run", fake.json)
      cur = fake.load_model(ck.model)
      r = trainer.run(base_cfg(cur, fake.optimizer(cur), dir .. "/run",
                               {checkpoint_every = 3, steps = 31, stop_after = 7, resume = ck}))
    end
    check.truthy(kills >= 4, "killed " .. kills .. " times")
    check.eq(r.losses, ref.losses)
    check.eq(cur.w, m.w)
  end)
end

function T.interrupt_checkpoints_and_stops()
  in_tmp(function(dir)
    local m = fake.model(0)
    local n = 0
    local r = trainer.run(base_cfg(m, fake.optimizer(m), dir, {interrupted = function()
      n = n + 1
      return n == 7
    end}))
    check.eq(r.stopped, "interrupted")
    check.eq(r.step, 7)
    check.eq(trainer.latest(dir, fake.json).step, 7)
  end)
end

function T.progress_bar_reports_step_loss_lr_throughput_eta_memory()
  local out = {buf = {}}
  function out:write(...) for _, s in ipairs({...}) do self.buf[#self.buf + 1] = s end end
  local t = 0
  local m = fake.model(0)
  trainer.run{model = m, optimizer = fake.optimizer(m), data = loader(), steps = 4, lr = 0.01,
              progress_out = out, memory = function() return 3 * 1024 * 1024 end,
              clock = function() t = t + 0.5 return t end}
  local s = table.concat(out.buf)
  check.truthy(s:find("\r", 1, true), "redrawn in place")
  check.truthy(s:find("4/4", 1, true), s)
  check.truthy(s:find("loss %d") and s:find("lr 1.00e%-02") and s:find("tok/s", 1, true)
               and s:find("ETA", 1, true) and s:find("mem 3.00 MiB", 1, true), s)
  check.eq(s:sub(-1), "\n")
end

function T.errors_name_the_option()
  local m = fake.model(0)
  local opt = fake.optimizer(m)
  check.raises(function() trainer.run{optimizer = opt, data = loader()} end, "option 'model' is required")
  check.raises(function() trainer.run{model = m, data = loader()} end, "option 'optimizer' is required")
  check.raises(function() trainer.run{model = m, optimizer = opt} end, "option 'data'")
  check.raises(function() trainer.run{model = m, optimizer = opt, data = loader(), steps = 0} end, "steps must be")
  check.raises(function() trainer.run{model = m, optimizer = opt, data = loader(), checkpoint_every = 2} end,
               "checkpoint_every needs out_dir")
  check.raises(function() trainer.run{model = m, optimizer = opt, data = loader(), steps = 2, progress = "off",
                                      eval = function() return 1 end, eval_every = 1} end, "eval must return a table")
  local bad = {step = function() return 5 end}
  check.raises(function() trainer.run{model = m, optimizer = bad, data = loader(), steps = 1, progress = "off"} end,
               "optimizer step returned number")
  if not check.lomo() then
    check.raises(function() trainer.run{model = m, optimizer = opt, data = loader(), out_dir = "/tmp/x"} end,
                 "JSON needs the lomo bindings")
  end
  in_tmp(function(dir)
    check.write(dir .. "/latest.json", "{}")
    check.raises(function() trainer.latest(dir, fake.json) end, "field 'checkpoint' missing")
    check.write(dir .. "/latest.json", "{oops")
    check.raises(function() trainer.latest(dir, fake.json) end, dir .. "/latest.json")
    check.eq(trainer.latest(dir .. "/none", fake.json), nil)
  end)
end

function T.non_finite_losses_survive_checkpoints()
  check.eq(trainer.clean({a = 0 / 0, b = {math.huge}, c = 1}), {a = "nan", b = {"inf"}, c = 1})
  in_tmp(function(dir)
    local m = fake.model(0)
    local opt = fake.optimizer(m)
    local real_step = opt.step
    opt.step = function(self, tk, tg, lr)
      if self.n == 1 then self.n = 2 return {loss = 0 / 0, skipped = true} end
      return real_step(self, tk, tg, lr)
    end
    local r = trainer.run(base_cfg(m, opt, dir, {steps = 6, checkpoint_every = 3}))
    check.truthy(r.losses[2] ~= r.losses[2], "NaN kept")
    local m2 = fake.load_model(trainer.latest(dir, fake.json).model)
    local r2 = trainer.run(base_cfg(m2, fake.optimizer(m2), dir, {steps = 6, resume = true}))
    check.truthy(r2.losses[2] ~= r2.losses[2], "NaN restored")
  end)
end

-- real bindings ---------------------------------------------------------------------------

function T.real_model_resume_is_exact()
  local lomo, ctx, m = real.model(5)
  local function mk_loader()
    local exs = {}
    for i = 1, 9 do
      local ids = {}
      for k = 1, 6 do ids[k] = (i * 7 + k * 3) % 32 end
      exs[i] = data.from_ids(ids, 1)
    end
    return data.loader(exs, {batch = 2, T = 5, seed = 3})
  end
  in_tmp(function(dir)
    local function cfg(model, opt, out, extra)
      local c = {model = model, optimizer = opt, data = mk_loader(), steps = 6, lr = 0.05, progress = "off",
                 out_dir = out, checkpoint_every = 2}
      for k, v in pairs(extra or {}) do c[k] = v end
      return c
    end
    local ref = trainer.run(cfg(m, lomo.optimizer(m, {name = "sgd"}), dir .. "/ref"))
    local m1 = lomo.model(ctx, real.config, {dtype = "f32", seed = 5})
    trainer.run(cfg(m1, lomo.optimizer(m1, {name = "sgd"}), dir .. "/run", {stop_after = 3}))
    local ck = trainer.latest(dir .. "/run")
    check.eq(ck.step, 2)
    local m2 = lomo.load(ctx, ck.model, {dtype = "f32"})
    local r = trainer.run(cfg(m2, lomo.optimizer(m2, {name = "sgd"}), dir .. "/run", {resume = ck}))
    for s = 1, 6 do check.eq(r.losses[s], ref.losses[s], "loss at step " .. s) end
    m:close() m1:close() m2:close()
  end)
end

return T
