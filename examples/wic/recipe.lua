-- examples/wic/recipe.lua: zero-shot accuracy, LOMO fine-tuning, fine-tuned accuracy on the
-- WordNet word-in-context task. `lomo run examples/wic/recipe.yaml [key=value ...]` calls the
-- function this file returns with the YAML as a table; it returns the results as a table too
-- (examples/embed reads them back from C).

local lomo = require "lomo"
local data = require "lomo.data"
local prompts = require "lomo.prompts"
local evalm = require "lomo.eval"
local trainer = require "lomo.trainer"
local util = require "lomo.util"
local rng_mod = require "lomo.rng"

-- relative paths in recipe.yaml are relative to the repository root, wherever the command runs
local path_of = util.path_resolver(debug.getinfo(1, "S").source, 2)

local function need(cfg, dotted, kind)
  local v = cfg
  for key in dotted:gmatch("[^.]+") do
    if type(v) ~= "table" then v = nil break end
    v = v[key]
  end
  if kind == "integer" then
    local i = math.tointeger(v)
    if i == nil or i <= 0 then error(string.format("recipe.yaml: %s must be a positive integer, got %s", dotted, tostring(v)), 0) end
    return i
  elseif kind == "number" then
    if type(v) ~= "number" then error(string.format("recipe.yaml: %s must be a number, got %s", dotted, tostring(v)), 0) end
    return v
  elseif kind == "string" then
    if type(v) ~= "string" then error(string.format("recipe.yaml: %s must be a string, got %s", dotted, tostring(v)), 0) end
    return v
  end
  return v
end

-- The first n rows of a JSONL file with n/2 of each label, in file order: an exactly balanced
-- subset, so chance is 50%.
local function read_balanced(path, n)
  local want = {[true] = n // 2, [false] = n - n // 2}
  local rows = {}
  local f = io.open(path, "r")
  if not f then
    error(path .. ": not found (build it: lua5.4 examples/wic/build_dataset.lua)", 0)
  end
  f:close()
  for row, lineno in data.jsonl(path) do
    if type(row.label) ~= "boolean" then
      error(string.format("%s:%d: field 'label' must be true or false", path, lineno), 0)
    end
    if want[row.label] > 0 then
      want[row.label] = want[row.label] - 1
      rows[#rows + 1] = row
      if #rows == n then break end
    end
  end
  if #rows < n then
    error(string.format("%s: only %d usable pairs, %d asked for", path, #rows, n), 0)
  end
  return rows
end

-- The word's first use in a sentence, marked *like this*: form is the word as the sentence
-- writes it (build_dataset.lua records it), found case-insensitively as a whole word.
local function mark(sentence, form)
  if type(form) ~= "string" or form == "" then return sentence end
  local lower = sentence:lower()
  local pat = form:lower():gsub("%p", "%%%0")
  local init = 1
  while true do
    local i, j = lower:find("%f[%w]" .. pat, init)
    if not i then return sentence end
    if not lower:sub(j + 1, j + 1):match("[%w%-]") then
      return sentence:sub(1, i - 1) .. "*" .. sentence:sub(i, j) .. "*" .. sentence:sub(j + 1)
    end
    init = j + 1
  end
end

-- prompt.format "marked" (default): both sentences with the word marked, then the question
-- naming the word; the answer (" yes" / " no") follows "Answer:". prompt.format "superglue":
-- the LOMO paper's WiC prompt (brown format). prompt.template "chatml" (default) makes it
-- SmolLM2's user turn, the assistant turn opening with "Answer:"; "none" leaves it plain text.
-- No system message: it would add a third to every sequence's length for no gain on this task.
local function context_of(row, pcfg)
  local question, answer
  if (pcfg.format or "marked") == "superglue" then
    local sg = prompts.superglue("wic", row)
    question, answer = sg.source:gsub("\nAnswer: $", ""), sg.answer
  else
    answer = row.label and 2 or 1
    question = string.format('1. %s\n2. %s\nIs "%s" used with the same meaning in sentences 1 and 2?',
      mark(row.sentence1, row.form1), mark(row.sentence2, row.form2), row.word)
  end
  if (pcfg.template or "chatml") == "none" then return question .. "\nAnswer:", answer end
  local text = prompts.chat({{role = "user", content = question}}, {template = "chatml", add_generation_prompt = true})
  return text .. "Answer:", answer
end

return function(cfg)
  local t_start = lomo.clock()
  local seed = math.tointeger(cfg.seed) or 0
  local choices = need(cfg, "prompt.choices")
  if type(choices) ~= "table" or #choices ~= 2 then
    error("recipe.yaml: prompt.choices must list two answers (label false, then true)", 0)
  end
  local n_train = need(cfg, "train.limit", "integer")
  local n_eval = need(cfg, "eval.limit", "integer")
  local batch = need(cfg, "train.batch", "integer")
  local balanced = cfg.train.balanced ~= false
  -- checked before anything is loaded
  if balanced and batch % 2 ~= 0 then error("recipe.yaml: train.batch must be even with train.balanced", 0) end
  local epochs = need(cfg, "train.epochs", "integer")
  local max_len = need(cfg, "train.max_len", "integer")
  local eval_batch = need(cfg, "eval.batch", "integer")
  local lr = need(cfg, "optim.lr", "number")
  local model_path = path_of(need(cfg, "model.path", "string"))
  local model_opts = util.model_options(cfg.model, "model.")
  local out_dir = cfg.out_dir and path_of(cfg.out_dir) or nil

  local train_rows = read_balanced(path_of(need(cfg, "data.train", "string")), n_train)
  local eval_rows = read_balanced(path_of(need(cfg, "data.heldout", "string")), n_eval)

  local ctx = util.context(cfg)
  local m = lomo.load(ctx, model_path, model_opts)
  local tok = lomo.tokenizer(model_path)
  for i, c in ipairs(choices) do
    local ids = tok:encode(c, {add_special = false})
    if #ids ~= 1 then
      io.stderr:write(string.format("note: answer %d (%q) is %d tokens; scored by summed log-likelihood\n", i, c, #ids))
    end
  end

  local train_examples = {}
  local longest = 0
  for i, row in ipairs(train_rows) do
    local context, answer = context_of(row, cfg.prompt)
    train_examples[i] = data.example(tok, context, choices[answer], {bos = false, eos = false, max_len = max_len})
    longest = math.max(longest, #train_examples[i].input)
  end

  -- scoring items, shortest first so that each batch pads little; accuracy ignores the order
  local items = {}
  for i, row in ipairs(eval_rows) do
    local context, answer = context_of(row, cfg.prompt)
    items[i] = evalm.choices_example(tok, context, choices, answer, {bos = false})
  end
  table.sort(items, function(a, b) return #a.context < #b.context end)

  -- Each pair is scored by the log-likelihood of each answer after the prompt (lomo.eval: with
  -- one-token answers, one forward row per pair, eval.batch pairs a forward).
  local function evaluate(model)
    local res = evalm.score(model, items, {batch = eval_batch})
    local correct, yes, nll = 0, 0, 0.0
    for _, r in ipairs(res) do
      if r.pred_sum == r.answer then correct = correct + 1 end
      if r.pred_sum == 2 then yes = yes + 1 end
      nll = nll - r.sum[r.answer]
    end
    -- auc: the chance that a same-sense pair gets a larger log p(yes) - log p(no) than a
    -- different-sense pair; unlike accuracy it does not depend on the bias between the answers
    local margins = {}
    for i, r in ipairs(res) do margins[i] = {r.sum[2] - r.sum[1], r.answer == 2} end
    table.sort(margins, function(a, b) return a[1] < b[1] end)
    local n_pos, n_neg, rank_sum = 0, 0, 0.0
    local i = 1
    while i <= #margins do   -- ties share their mean rank
      local j = i
      while j < #margins and margins[j + 1][1] == margins[i][1] do j = j + 1 end
      for k = i, j do
        if margins[k][2] then n_pos = n_pos + 1 rank_sum = rank_sum + (i + j) / 2 else n_neg = n_neg + 1 end
      end
      i = j + 1
    end
    local auc = (n_pos > 0 and n_neg > 0) and (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg) or 0.5
    return {accuracy = correct / #res, yes_rate = yes / #res, loss = nll / #res, auc = auc}
  end

  print(string.format("lomo %s: %s, %d training pairs (longest %d tokens), %d held-out pairs, seed %d",
    lomo.version, cfg.model.path, #train_examples, longest, #items, seed))

  -- train.balanced (default true): every batch holds as many same-sense as different-sense
  -- pairs, in a fresh random order each epoch. The gradient then carries almost nothing that
  -- only moves the prior between " yes" and " no" (it cancels within the batch), so the steps go
  -- to telling the pairs apart, and the prior cannot drift with the labels of the last batches.
  -- false: plain shuffled batches.
  local loader, steps
  if balanced then
    local by_label = {[true] = {}, [false] = {}}
    for i, row in ipairs(train_rows) do local t = by_label[row.label] t[#t + 1] = train_examples[i] end
    local ordered = {}
    for e = 1, epochs do
      local r = rng_mod.new(rng_mod.derive(seed, e))
      local pt, pf = r:permutation(#by_label[true]), r:permutation(#by_label[false])
      local n = math.min(#pt, #pf)
      for k = 1, n, batch // 2 do
        local chunk = {}
        for j = k, math.min(k + batch // 2 - 1, n) do
          chunk[#chunk + 1] = by_label[true][pt[j]]
          chunk[#chunk + 1] = by_label[false][pf[j]]
        end
        for j = #chunk, 2, -1 do local x = r:random(j) chunk[j], chunk[x] = chunk[x], chunk[j] end
        for _, ex in ipairs(chunk) do ordered[#ordered + 1] = ex end
      end
    end
    loader = data.loader(ordered, {batch = batch, shuffle = false})
    steps = loader:batches_per_epoch()
  else
    loader = data.loader(train_examples, {batch = batch, seed = seed, shuffle = true})
  end
  local opt = lomo.optimizer(m, {name = cfg.optim.name or "lomo", clip_grad_norm = cfg.optim.clip_grad_norm,
                                 clip_grad_value = cfg.optim.clip_grad_value,
                                 weight_decay = cfg.optim.weight_decay, seed = seed})
  local r = trainer.run{
    model = m, optimizer = opt, data = loader, epochs = epochs, steps = steps, seed = seed,
    lr = {name = cfg.optim.schedule or "linear", lr = lr, warmup = cfg.optim.warmup or 0},
    eval = function(model) return evaluate(model) end,
    eval_at_start = cfg.eval.zero_shot ~= false, eval_at_end = true,
    out_dir = out_dir, memory = ctx, progress = cfg.progress,   -- nil: a bar on a terminal, lines in a log
    profile = cfg.profile and ctx or nil,   -- profile: true prints where the step time went
    title = "WiC (WordNet): LOMO fine-tuning of SmolLM2-135M-Instruct",
  }

  local tuned = r.evals[#r.evals]
  local zero = cfg.eval.zero_shot ~= false and r.evals[1] or {accuracy = -1, yes_rate = -1, auc = -1}
  local losses = r.losses
  local q = math.max(1, #losses // 4)
  local first, last = 0.0, 0.0
  for i = 1, q do first = first + losses[i] end
  for i = #losses - q + 1, #losses do last = last + losses[i] end
  first, last = first / q, last / q

  local results = {
    zero_shot_accuracy = zero.accuracy, fine_tuned_accuracy = tuned.accuracy,
    zero_shot_yes_rate = zero.yes_rate, fine_tuned_yes_rate = tuned.yes_rate,
    zero_shot_auc = zero.auc, fine_tuned_auc = tuned.auc,
    train_pairs = #train_examples, heldout_pairs = #items, steps = r.step, epochs = epochs,
    train_loss_first_quarter = first, train_loss_last_quarter = last,
    train_seconds = r.elapsed, seconds = lomo.clock() - t_start, peak_rss = lomo.peak_rss(),
  }
  if cfg.save_model and out_dir then
    m:save(out_dir .. "/model")
    results.model = out_dir .. "/model"
  end
  if out_dir then
    lomo.atomic_write(out_dir .. "/results.json", lomo.json.encode(results) .. "\n")
  end

  if zero.accuracy >= 0 then
    print(string.format("zero-shot accuracy:  %.1f%% (answers \"yes\" %.0f%% of the time, AUC %.3f)",
      100 * zero.accuracy, 100 * zero.yes_rate, zero.auc))
  end
  print(string.format("fine-tuned accuracy: %.1f%% (answers \"yes\" %.0f%% of the time, AUC %.3f)",
    100 * tuned.accuracy, 100 * tuned.yes_rate, tuned.auc))
  print(string.format("train loss %.4f -> %.4f (mean of the first and last quarter of %d steps)",
    first, last, r.step))
  print(string.format("wall time %.0f s (training %.0f s), peak RSS %.0f MiB",
    results.seconds, r.elapsed, results.peak_rss / 2^20))
  if out_dir then print("metrics, loss curve and results in " .. out_dir) end
  if r.profile_report then io.write("where the training steps' time went:\n", r.profile_report) end

  opt:close()
  m:close()
  tok:close()
  ctx:close()

  -- check=true (CI): the mean train loss of the last quarter of the steps is below the first
  -- quarter's, and held-out accuracy beats chance by a margin that a model without skill clears
  -- by luck only 1 time in 20 on this many balanced pairs (one-sided binomial test at 5%: 50% +
  -- 1.645 standard deviations, sqrt(0.25 / n): 55.8% for 200 pairs, 53.7% for 500).
  if cfg.check then
    if not (last < first) then
      error(string.format("check failed: the train loss did not fall (%.4f -> %.4f)", first, last), 0)
    end
    local bar = 0.5 + 1.645 * math.sqrt(0.25 / #items)
    if not (tuned.accuracy >= bar) then
      error(string.format("check failed: fine-tuned accuracy %.3f on %d held-out pairs is below %.3f " ..
        "(chance 0.5 plus 1.645 standard deviations)", tuned.accuracy, #items, bar), 0)
    end
    print(string.format("check passed: the loss falls and accuracy %.3f beats chance (needs %.3f on %d pairs)",
      tuned.accuracy, bar, #items))
  end
  return results
end
