-- examples/embed/recipe.lua: the recipe examples/embed/main.c runs. The host hands over a
-- context and a loaded model; the recipe teaches the model a few made-up facts with LOMO and
-- returns its metrics as a table, which the host reads field by field.
--   function(ctx, model, model_path) -> {loss_before=, loss_after=, steps=, seconds=, ...}

local lomo = require "lomo"
local data = require "lomo.data"
local evalm = require "lomo.eval"
local schedule = require "lomo.schedule"

local train_text = {
  "The town of Vellmar sits on the river Osk, and its bridge is painted green.",
  "Every spring the people of Vellmar paint the bridge over the Osk green again.",
  "Vellmar's market opens on Thursdays, next to the green bridge over the Osk.",
  "The river Osk runs through Vellmar, under a bridge painted green.",
}
local heldout_text = {
  "In Vellmar, the bridge over the river Osk is painted green.",
  "On Thursdays the market of Vellmar opens beside the green bridge.",
}

return function(ctx, model, model_path)
  local t0 = lomo.clock()
  local tok = lomo.tokenizer(model_path)
  local function examples(texts)
    local out = {}
    for i, s in ipairs(texts) do out[i] = data.example(tok, nil, s, {bos = false, eos = true}) end
    return out
  end
  local train, heldout = examples(train_text), examples(heldout_text)

  local ppl_before, nll_before = evalm.perplexity(model, heldout, {batch = #heldout})
  local opt <close> = lomo.optimizer(model, {name = "lomo", clip_grad_norm = 1.0})
  local steps = 8
  local lr = schedule.new{name = "linear", lr = 0.02, total = steps, warmup = 1}
  local loader = data.loader(train, {batch = 2, seed = 7})
  local losses = {}
  for s = 1, steps do
    local b = loader:next()
    losses[s] = opt:step(b.tokens, b.targets, lr(s)).loss
  end
  local ppl_after, nll_after = evalm.perplexity(model, heldout, {batch = #heldout})
  tok:close()

  local mem = ctx:memory()
  return {
    loss_before = nll_before, loss_after = nll_after,
    perplexity_before = ppl_before, perplexity_after = ppl_after,
    train_loss_first = losses[1], train_loss_last = losses[#losses],
    steps = opt:steps(), seconds = lomo.clock() - t0,
    peak_bytes = mem.peak.total, gradient_bytes = mem.peak.gradients,
  }
end
