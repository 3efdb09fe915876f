-- lomo.eval: multiple-choice scoring by log-likelihood, accuracy, perplexity, and generation.
-- Works with any model object that has m:token_logprobs(tokens, targets) (B rows of T log
-- probabilities, one per target) and m:next_logits(ids) (V logits for the next token; given
-- {ids, ids, ...}, one such table per sequence, as lomo models do).

local data = require "lomo.data"
local rng_mod = require "lomo.rng"

local M = {}

local IGNORE = data.IGNORE

local function fail(who, fmt, ...)
  error(who .. ": " .. string.format(fmt, ...), 3)
end

-- choices_example(tok, source, choices, answer, opts): a multiple-choice item whose context
-- and choices are token ids. opts.bos (default: tok.add_bos), opts.eos (default false:
-- score the choice's tokens only).
function M.choices_example(tok, source, choices, answer, opts)
  local who = "lomo.eval.choices_example"
  opts = opts or {}
  if type(choices) ~= "table" or #choices < 1 then fail(who, "choices must be a non-empty array") end
  local ctx = {}
  if data.wants_bos(tok, opts) then ctx[1] = tok.bos end
  for _, id in ipairs(tok:encode(source, {add_special = false})) do ctx[#ctx + 1] = id end
  local ids = {}
  for i, c in ipairs(choices) do
    if type(c) ~= "string" then fail(who, "choice %d must be a string", i) end
    local t = tok:encode(c, {add_special = false})
    if opts.eos then t[#t + 1] = tok.eos end
    ids[i] = t
  end
  return {context = ctx, choices = ids, answer = answer, choice_texts = choices}
end

-- the scoring row for a context and one continuation: the loss positions are the continuation
local function choice_row(context, cont)
  local ids = {}
  for i = 1, #context do ids[i] = context[i] end
  for i = 1, #cont do ids[#ids + 1] = cont[i] end
  return data.from_ids(ids, #context)
end

-- the log-softmax of logits at the (1-based) indices ks, in double
local function log_softmax_at(logits, ks)
  local mx = -math.huge
  for _, v in ipairs(logits) do if v > mx then mx = v end end
  local z = 0.0
  for _, v in ipairs(logits) do z = z + math.exp(v - mx) end
  local lse = mx + math.log(z)
  local out = {}
  for i, k in ipairs(ks) do out[i] = logits[k] - lse end
  return out
end

-- Every choice one token: one row per item (not per choice), and the model's next-token logits
-- at the context's end give every choice's log-probability; B items a call.
local function score_next_token(m, items, results, B, who)
  for first = 1, #items, B do
    local contexts = {}
    for i = first, math.min(first + B - 1, #items) do contexts[#contexts + 1] = items[i].context end
    local all = m:next_logits(contexts)
    if type(all) ~= "table" or #all ~= #contexts then
      fail(who, "next_logits returned %d rows for %d", type(all) == "table" and #all or -1, #contexts)
    end
    for k, logits in ipairs(all) do
      local i = first + k - 1
      local ks = {}
      for c, cont in ipairs(items[i].choices) do ks[c] = cont[1] + 1 end   -- ids are 0-based
      local r = results[i]
      r.sum = log_softmax_at(logits, ks)
      for c = 1, #ks do r.mean[c], r.n[c] = r.sum[c], 1 end
    end
  end
end

-- score(m, items, {batch = 8, T = nil, by_rows = false}): per item {sum = {..}, mean = {..},
-- n = {..}} over its choices (log-likelihood summed, and divided by the choice's token count),
-- and the predictions {pred_sum=, pred_mean=} (1-based). Padding and context never count: only
-- positions whose target is a choice token are summed. When every choice is one token and the
-- model has next_logits, each item is one row (batch items a call) instead of one row per
-- choice; by_rows = true scores one row per choice regardless.
function M.score(m, items, opts)
  local who = "lomo.eval.score"
  opts = opts or {}
  local B = opts.batch or 8
  local single = not opts.by_rows and m.next_logits ~= nil
  local results = {}
  for i, it in ipairs(items) do
    if type(it) ~= "table" or type(it.context) ~= "table" or type(it.choices) ~= "table" then
      fail(who, "item %d must be {context = ids, choices = {ids, ...}}", i)
    end
    if #it.context == 0 then fail(who, "item %d: the context is empty (add a BOS token)", i) end
    for c, cont in ipairs(it.choices) do
      if #cont == 0 then fail(who, "item %d: choice %d has no tokens", i, c) end
      single = single and #cont == 1
    end
    results[i] = {sum = {}, mean = {}, n = {}, answer = it.answer}
  end
  -- one row per choice, unless the next-token logits score every choice of an item at once
  local rows, owner = {}, {}
  if single then
    score_next_token(m, items, results, B, who)
  else
    for i, it in ipairs(items) do
      for c, cont in ipairs(it.choices) do
        rows[#rows + 1] = choice_row(it.context, cont)
        owner[#owner + 1] = {i, c}
      end
    end
  end
  for first = 1, #rows, B do
    local batch = {}
    for r = first, math.min(first + B - 1, #rows) do batch[#batch + 1] = rows[r] end
    local tokens, targets = data.pad(batch, {T = opts.T, pad_id = opts.pad_id or 0})
    local lp = m:token_logprobs(tokens, targets)
    if type(lp) ~= "table" or #lp ~= #batch then
      fail(who, "token_logprobs returned %d rows for %d", type(lp) == "table" and #lp or -1, #batch)
    end
    for b = 1, #batch do
      local s, n = 0.0, 0
      local trow, lrow = targets[b], lp[b]
      for t = 1, #trow do
        if trow[t] ~= IGNORE then s, n = s + lrow[t], n + 1 end
      end
      local i, c = owner[first + b - 1][1], owner[first + b - 1][2]
      results[i].sum[c], results[i].n[c], results[i].mean[c] = s, n, (n > 0) and s / n or -math.huge
    end
  end
  for _, r in ipairs(results) do
    r.pred_sum, r.pred_mean = M.argmax(r.sum), M.argmax(r.mean)
  end
  return results
end

-- argmax(t): the index of the largest value (the first on ties).
function M.argmax(t)
  local best, bi = -math.huge, nil
  for i = 1, #t do
    if bi == nil or t[i] > best then best, bi = t[i], i end
  end
  return bi
end

-- accuracy(predictions, answers): the fraction of equal pairs.
function M.accuracy(pred, answers)
  if #pred ~= #answers then fail("lomo.eval.accuracy", "%d predictions for %d answers", #pred, #answers) end
  if #pred == 0 then return 0 / 0 end
  local c = 0
  for i = 1, #pred do if pred[i] == answers[i] then c = c + 1 end end
  return c / #pred
end

-- multiple_choice(m, items, opts): {accuracy = (summed), accuracy_norm = (length-normalized),
-- n =, results =}.
function M.multiple_choice(m, items, opts)
  local res = M.score(m, items, opts)
  local ps, pm, ans = {}, {}, {}
  for i, r in ipairs(res) do
    if r.answer == nil then fail("lomo.eval.multiple_choice", "item %d has no answer", i) end
    ps[i], pm[i], ans[i] = r.pred_sum, r.pred_mean, r.answer
  end
  return {accuracy = M.accuracy(ps, ans), accuracy_norm = M.accuracy(pm, ans), n = #res, results = res}
end

-- perplexity(m, examples, {batch = 8, T = nil}): exp of the mean negative log-likelihood over
-- every target position of the examples ({input=, target=}); also returns nll and count.
function M.perplexity(m, examples, opts)
  opts = opts or {}
  local B = opts.batch or 8
  local total, count = 0.0, 0
  for first = 1, #examples, B do
    local batch = {}
    for r = first, math.min(first + B - 1, #examples) do batch[#batch + 1] = examples[r] end
    local tokens, targets = data.pad(batch, {T = opts.T, pad_id = opts.pad_id or 0})
    local lp = m:token_logprobs(tokens, targets)
    for b = 1, #batch do
      for t = 1, #targets[b] do
        if targets[b][t] ~= IGNORE then total, count = total - lp[b][t], count + 1 end
      end
    end
  end
  if count == 0 then fail("lomo.eval.perplexity", "no target tokens") end
  return math.exp(total / count), total / count, count
end

---------------------------------------------------------------------------------------------
-- Generation.

-- sample(logits, {temperature = 0, top_p = 1, rng = r}): a 0-based token id.
-- temperature 0 is greedy; top_p keeps the smallest set of most likely tokens whose
-- probability reaches top_p.
function M.sample(logits, opts)
  local who = "lomo.eval.sample"
  opts = opts or {}
  local V = #logits
  if V == 0 then fail(who, "empty logits") end
  local temp = opts.temperature or 0
  if temp <= 0 then return M.argmax(logits) - 1 end
  local r = opts.rng
  if not rng_mod.is_rng(r) then fail(who, "sampling needs opts.rng (a lomo.rng)") end
  local top_p = opts.top_p or 1.0
  local mx = -math.huge
  for i = 1, V do if logits[i] > mx then mx = logits[i] end end
  local p, z = {}, 0.0
  for i = 1, V do
    local e = math.exp((logits[i] - mx) / temp)
    p[i], z = e, z + e
  end
  local idx
  if top_p < 1.0 then
    idx = {}
    for i = 1, V do idx[i] = i end
    table.sort(idx, function(a, b) if p[a] ~= p[b] then return p[a] > p[b] end return a < b end)
    local cum, keep = 0.0, 0
    repeat
      keep = keep + 1
      cum = cum + p[idx[keep]] / z
    until cum >= top_p or keep == V
    for k = keep + 1, V do idx[k] = nil end
    z = 0.0
    for k = 1, keep do z = z + p[idx[k]] end
  end
  local u = r:random() * z
  local acc = 0.0
  if idx then
    for k = 1, #idx do
      acc = acc + p[idx[k]]
      if u < acc then return idx[k] - 1 end
    end
    return idx[#idx] - 1
  end
  for i = 1, V do
    acc = acc + p[i]
    if u < acc then return i - 1 end
  end
  return V - 1
end

-- generate(m, ids, {max_new_tokens = 32, temperature = 0, top_p = 1, seed = 0 or rng =,
--                   stop = {ids...}, cache = true, pos = 0, on_token = f}): the new ids and why it
-- stopped ("stop" or "length"). The stop token is not included in the result; on_token(id, out)
-- sees each new id as it comes (streaming output). A model with m:decode keeps the sequence's
-- keys and values, so each new token costs one position's forward; cache = false (or any model
-- object with only m:next_logits) runs the whole sequence for every token instead. pos > 0
-- continues the sequence the cache holds: ids are its next tokens, from position pos (a chat's
-- next turn). A third result says how many positions the cache holds after the call: every new
-- id but the last when generation stopped for length (the stop token is never fed).
function M.generate(m, ids, opts)
  local who = "lomo.eval.generate"
  opts = opts or {}
  if type(ids) ~= "table" or #ids == 0 then fail(who, "ids must be a non-empty array") end
  local max_new = opts.max_new_tokens or 32
  local stop = {}
  local s = opts.stop
  if type(s) == "number" then s = {s} end
  for _, id in ipairs(s or {}) do stop[id] = true end
  local r = opts.rng
  if (opts.temperature or 0) > 0 and not r then r = rng_mod.new(opts.seed or 0) end
  local pos = opts.pos or 0
  local cached = opts.cache ~= false and m.decode ~= nil
  if pos ~= 0 and not cached then fail(who, "pos needs a model with m:decode and cache ~= false") end
  local seq = {}
  for i = 1, #ids do seq[i] = ids[i] end
  local out = {}
  if max_new <= 0 then return out, "length", pos end
  local logits = cached and m:decode(seq, pos) or m:next_logits(seq)
  for step = 1, max_new do
    local id = M.sample(logits, {temperature = opts.temperature, top_p = opts.top_p, rng = r})
    if stop[id] then return out, "stop", pos + #seq end
    out[#out + 1] = id
    seq[#seq + 1] = id
    if opts.on_token then opts.on_token(id, out) end
    if step == max_new then break end
    logits = cached and m:decode({id}, pos + #seq - 1) or m:next_logits(seq)
  end
  return out, "length", pos + #seq - 1
end

-- chat_stops(tok, template): the ids that end a reply in a chat template (lomo.prompts): the
-- tokenizer's EOS and the template's end of turn when it is one token (Llama 3 Instruct's EOS is
-- <|end_of_text|>, its turns end with <|eot_id|>; SmolLM2's EOS is its <|im_end|>).
function M.chat_stops(tok, template)
  local stops = {tok.eos}
  local close = tok:encode(require("lomo.prompts").template(template).close, {add_special = false})
  if #close == 1 and close[1] ~= tok.eos then stops[#stops + 1] = close[1] end
  return stops
end

-- generate_text(m, tok, text, opts): generate from a prompt string and decode the reply;
-- stops at tok.eos unless opts.stop is given. opts.bos (default: tok.add_bos) puts the BOS first.
function M.generate_text(m, tok, text, opts)
  opts = opts or {}
  local ids = {}
  if data.wants_bos(tok, opts) and tok.bos then ids[1] = tok.bos end
  for _, id in ipairs(tok:encode(text, {add_special = false})) do ids[#ids + 1] = id end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if o.stop == nil then o.stop = tok.eos and {tok.eos} or {} end
  local out, why = M.generate(m, ids, o)
  return tok:decode(out, {skip_special = true}), why, out
end

return M
