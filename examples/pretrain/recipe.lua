-- examples/pretrain/recipe.lua: a tiny model from random weights, trained on the bytes of a
-- text file. Tokens are bytes (ids 0..255), so the recipe needs no tokenizer file.

local lomo = require "lomo"
local data = require "lomo.data"
local evalm = require "lomo.eval"
local trainer = require "lomo.trainer"
local util = require "lomo.util"

-- relative paths in recipe.yaml are relative to the repository root, wherever the command runs
local path_of = util.path_resolver(debug.getinfo(1, "S").source, 2)

local function bytes_of(s)
  local ids = {}
  for i = 1, #s do ids[i] = s:byte(i) end
  return ids
end

local function text_of(ids)
  local parts = {}
  for i, id in ipairs(ids) do parts[i] = string.char(id) end
  return table.concat(parts)
end

-- language-modelling rows of T from a byte stream, starting at several offsets so that every
-- byte is seen at several positions of a row
local function rows_of(ids, T, offsets)
  local rows = {}
  for k = 0, offsets - 1 do
    local off = (k * T) // offsets
    local tail = table.move(ids, off + 1, #ids, 1, {})
    for _, r in ipairs(data.chunk(tail, T)) do rows[#rows + 1] = r end
  end
  return rows
end

local function posint(v, name)
  local i = math.tointeger(v)
  if i == nil or i <= 0 then error(string.format("recipe.yaml: %s must be a positive integer, got %s", name, tostring(v)), 0) end
  return i
end

return function(cfg)
  local t0 = lomo.clock()
  local seed = math.tointeger(cfg.seed) or 0
  local T = posint(cfg.seq, "seq")
  local B = posint(cfg.batch, "batch")
  local steps = posint(cfg.steps, "steps")
  if type(cfg.model) ~= "table" then error("recipe.yaml: model must be a table of HF config fields", 0) end
  if cfg.model.vocab_size ~= 256 then error("recipe.yaml: model.vocab_size must be 256 (byte tokens)", 0) end
  local model_opts = util.model_options(cfg)
  model_opts.seed = seed

  local path = path_of(cfg.text)
  local f, err = io.open(path, "rb")
  if not f then error(err, 0) end
  local text = f:read("a")
  f:close()
  local frac = cfg.heldout or 0.1
  local cut = #text - math.floor(#text * frac)
  local train_ids, held_ids = bytes_of(text:sub(1, cut)), bytes_of(text:sub(cut + 1))
  if #train_ids < T + 1 or #held_ids < T + 1 then
    error(string.format("%s: %d bytes is too short for rows of %d", cfg.text, #text, T), 0)
  end
  local train = rows_of(train_ids, T, 4)
  local held = data.chunk(held_ids, T)

  local ctx = util.context(cfg)
  local m = lomo.model(ctx, cfg.model, model_opts)
  local n_params = 0
  for _, p in ipairs(m:params()) do n_params = n_params + p.numel end
  print(string.format("a %.2fM-parameter model; %d training bytes in %d rows of %d, %d held-out bytes",
    n_params / 1e6, #train_ids, #train, T, #held_ids))

  local function held_bpb()
    local _, nll = evalm.perplexity(m, held, {batch = B})
    return {loss = nll, bits_per_byte = nll / math.log(2)}
  end

  local o = cfg.optim or {}
  local opt = lomo.optimizer(m, {name = o.name or "adalomo", clip_grad_norm = o.clip_grad_norm,
                                 weight_decay = o.weight_decay, seed = seed})
  local out_dir = cfg.out_dir and path_of(cfg.out_dir) or nil
  local r = trainer.run{
    model = m, optimizer = opt, data = data.loader(train, {batch = B, seed = seed, drop_last = true}),
    steps = steps, seed = seed,
    lr = {name = o.schedule or "cosine", lr = o.lr or 3e-2, warmup = o.warmup or 0},
    eval = function() return held_bpb() end, eval_every = math.max(1, steps // 5), eval_at_start = true,
    out_dir = out_dir, memory = ctx, progress = cfg.progress,   -- nil: a bar on a terminal, lines in a log
    profile = cfg.profile and ctx or nil,   -- profile: true prints where the step time went
    title = "pretraining from scratch (" .. cfg.text .. ")",
  }

  if r.profile_report then io.write("where the training steps' time went:\n", r.profile_report) end
  local s = cfg.sample or {}
  local prompt = s.prompt or "The "
  local out = evalm.generate(m, bytes_of(prompt), {max_new_tokens = s.max_new_tokens or 120, temperature = 0})
  local first, last = r.evals[1], r.evals[#r.evals]
  print(string.format("held-out bits per byte %.3f -> %.3f after %d steps (%.0f s)",
    first.bits_per_byte, last.bits_per_byte, r.step, lomo.clock() - t0))
  print("greedy sample: " .. prompt .. text_of(out))
  if cfg.save_model and out_dir then
    m:save(out_dir .. "/model")
    print("model saved to " .. out_dir .. "/model (an HF folder; tokens are bytes)")
  end
  opt:close()
  m:close()
  ctx:close()
  return {bits_per_byte_before = first.bits_per_byte, bits_per_byte_after = last.bits_per_byte, steps = r.step}
end
