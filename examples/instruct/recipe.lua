-- examples/instruct/recipe.lua: instruction tuning with LOMO from JSONL records, each
-- {"instruction", "response"} or a conversation {"messages": [{"role", "content"}, ...]} that ends
-- with the assistant's reply. Loss only on the assistant's replies (every one of a conversation,
-- each with its end-of-turn token); held-out replies and loss are printed before and after.

local lomo = require "lomo"
local data = require "lomo.data"
local prompts = require "lomo.prompts"
local evalm = require "lomo.eval"
local trainer = require "lomo.trainer"
local util = require "lomo.util"

-- relative paths in recipe.yaml are relative to the repository root, wherever the command runs
local path_of = util.path_resolver(debug.getinfo(1, "S").source, 2)

local function int_field(cfg, name, default, least)
  local v = cfg[name]
  if v == nil then return default end
  local i = math.tointeger(v)
  least = least or 0
  if i == nil or i < least then
    error(string.format("recipe.yaml: %s must be an integer of at least %d, got %s", name, least, tostring(v)), 0)
  end
  return i
end

return function(cfg)
  local t0 = lomo.clock()
  local seed = int_field(cfg, "seed", 0)
  if cfg.template ~= nil and not prompts.TEMPLATES[cfg.template] then   -- before the model loads
    error(string.format("recipe.yaml: template must be one of %s, got %s", prompts.TEMPLATE_NAMES,
                        tostring(cfg.template)), 0)
  end
  local template = cfg.template   -- nil: the model's own, once its tokenizer is loaded
  local model_path = path_of(cfg.model)
  local data_path = path_of(cfg.data)
  local n_held = int_field(cfg, "heldout", 4)
  local max_len = int_field(cfg, "max_len", 256, 1)
  -- the training fields are checked before the model loads and generates
  local batch, epochs = int_field(cfg, "batch", 4, 1), int_field(cfg, "epochs", 1, 1)
  local steps = cfg.steps and int_field(cfg, "steps", nil, 1)
  local model_opts = util.model_options(cfg)
  local gen = cfg.generate or {}

  -- each record as the conversation it is
  local function conversation(r, lineno)
    if r.messages == nil then
      if type(r.instruction) ~= "string" or type(r.response) ~= "string" then
        error(string.format("%s:%d: a record needs \"messages\", or string fields \"instruction\" and " ..
                            "\"response\"", data_path, lineno), 0)
      end
      return {{role = "user", content = r.instruction}, {role = "assistant", content = r.response}}
    end
    local ok = type(r.messages) == "table" and #r.messages >= 2
    for _, msg in ipairs(ok and r.messages or {}) do
      ok = ok and type(msg) == "table" and type(msg.role) == "string" and type(msg.content) == "string"
    end
    if not ok or r.messages[#r.messages].role ~= "assistant" then
      error(string.format("%s:%d: \"messages\" must be a list of {\"role\", \"content\"} strings that ends " ..
                          "with the assistant's reply", data_path, lineno), 0)
    end
    return r.messages
  end
  local records = {}
  for r, lineno in data.jsonl(data_path) do records[#records + 1] = conversation(r, lineno) end
  if #records <= n_held then
    error(string.format("%s: %d records, not enough to hold out %d", data_path, #records, n_held), 0)
  end
  local train_rows, held_rows = data.split(records, {eval = n_held, seed = seed})

  local ctx = util.context(cfg)
  local m = lomo.load(ctx, model_path, model_opts)
  local tok = lomo.tokenizer(model_path)
  if not template then
    local note
    template, note = prompts.template_for(tok)
    print(string.format("template: %s, the model's%s", template, note and " (" .. note .. ")" or ""))
  end

  local function example(messages)
    return data.segments(tok, prompts.chat_turns(messages, {template = template}), {max_len = max_len})
  end
  local train, held = {}, {}
  for i, r in ipairs(train_rows) do train[i] = example(r) end
  for i, r in ipairs(held_rows) do held[i] = example(r) end

  local stops = evalm.chat_stops(tok, template)
  local function replies(title)
    print(title)
    for _, messages in ipairs(held_rows) do
      local head = table.move(messages, 1, #messages - 1, 1, {})
      local prompt = prompts.chat(head, {template = template, add_generation_prompt = true})
      local text = evalm.generate_text(m, tok, prompt, {bos = false, max_new_tokens = gen.max_new_tokens or 40,
                                                        temperature = gen.temperature or 0, top_p = gen.top_p,
                                                        seed = seed, stop = stops})
      print(string.format("  > %s\n    %s", head[#head].content, (text:gsub("\n", "\n    "))))
    end
  end

  local function held_loss()
    local ppl, nll = evalm.perplexity(m, held, {batch = #held})
    return {loss = nll, perplexity = ppl}
  end

  print(string.format("%d training records, %d held out, from %s", #train, #held, cfg.data))
  replies("held-out replies before training:")

  local o = cfg.optim or {}
  local opt = lomo.optimizer(m, {name = o.name or "lomo", clip_grad_norm = o.clip_grad_norm,
                                 clip_grad_value = o.clip_grad_value, weight_decay = o.weight_decay,
                                 seed = seed})
  local out_dir = cfg.out_dir and path_of(cfg.out_dir) or nil
  local r = trainer.run{
    model = m, optimizer = opt, data = data.loader(train, {batch = batch, seed = seed}),
    epochs = epochs, steps = steps, seed = seed,
    lr = {name = o.schedule or "linear", lr = o.lr or 0.01, warmup = o.warmup or 0},
    eval = function() return held_loss() end, eval_at_start = true,
    out_dir = out_dir, memory = ctx, progress = cfg.progress,   -- nil: a bar on a terminal, lines in a log
    profile = cfg.profile and ctx or nil,   -- profile: true prints where the step time went
    title = "instruction tuning with LOMO",
  }

  if r.profile_report then io.write("where the training steps' time went:\n", r.profile_report) end
  replies("held-out replies after training:")
  local first, last = r.evals[1], r.evals[#r.evals]
  print(string.format("held-out response loss %.4f -> %.4f (perplexity %.2f -> %.2f), %d steps, %.0f s",
    first.loss, last.loss, first.perplexity, last.perplexity, r.step, lomo.clock() - t0))
  if cfg.save_model and out_dir then
    -- weights, config and tokenizer: a folder lomo and transformers load as it is
    m:save(out_dir .. "/model")
    -- a vocabulary tokenizer.json cannot hold (a text at two ids, a token that is not UTF-8)
    local saved, why = pcall(tok.save, tok, out_dir .. "/model")
    if not saved then print("the tokenizer is not saved with it: " .. tostring(why)) end
    print("model saved to " .. out_dir .. "/model; talk to it with")
    print(string.format("  lomo chat %s/model%s --template %s", out_dir,
                        saved and "" or " --tokenizer " .. model_path, template))
  end
  opt:close()
  m:close()
  tok:close()
  ctx:close()
  return {loss_before = first.loss, loss_after = last.loss, steps = r.step}
end
