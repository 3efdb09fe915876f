-- lomo.eval, with a fake model (stock lua5.4) and, when the bindings load, a tiny real one
local check = require "check"
local fake = require "fake"
local real = require "real"
local eval = require "lomo.eval"
local rng = require "lomo.rng"

local T = {}

-- context "ab"; choice 1 is one token of id 5 (log p -0.51), choice 2 three tokens of id 3
-- (-0.31 each): summed, choice 1 wins (-0.51 > -0.93); normalized, choice 2 (-0.31 > -0.51)
local function item(answer)
  return {context = {256, 97, 98}, choices = {{5}, {3, 3, 3}}, answer = answer}
end

function T.score_sums_only_choice_tokens_never_padding()
  local m = fake.scorer()
  local res = eval.score(m, {item(1), item(2), item(1)}, {batch = 4})
  for i = 1, 3 do
    check.near(res[i].sum[1], -0.51, 1e-12)
    check.near(res[i].sum[2], -0.93, 1e-12)
    check.near(res[i].mean[2], -0.31, 1e-12)
    check.eq(res[i].n, {1, 3})
    check.eq(res[i].pred_sum, 1)
    check.eq(res[i].pred_mean, 2)
  end
  check.eq(m.rows_seen, 6)
  check.eq(m.calls, 2, "6 rows in batches of 4")
  -- batch size and a fixed T change nothing
  local r1 = eval.score(fake.scorer(), {item(1)}, {batch = 1, T = 12})
  check.eq(r1[1].sum, res[1].sum)
end

function T.multiple_choice_accuracy_summed_and_normalized()
  local r = eval.multiple_choice(fake.scorer(), {item(1), item(2), item(1), item(2)})
  check.eq(r.n, 4)
  check.near(r.accuracy, 0.5)
  check.near(r.accuracy_norm, 0.5)
  local r2 = eval.multiple_choice(fake.scorer(), {item(1), item(1), item(1)})
  check.near(r2.accuracy, 1.0)
  check.near(r2.accuracy_norm, 0.0)
  check.raises(function() eval.multiple_choice(fake.scorer(), {item(nil)}) end, "item 1 has no answer")
end

function T.choices_example_tokenizes_context_and_choices()
  local tok = fake.tokenizer()
  local it = eval.choices_example(tok, "Q? ", {"No", "Yes"}, 2)
  check.eq(it.context, {256, 81, 63, 32})
  check.eq(it.choices, {{78, 111}, {89, 101, 115}})
  check.eq(it.answer, 2)
  local it2 = eval.choices_example(tok, "Q", {"a"}, 1, {bos = false, eos = true})
  check.eq(it2.context, {81})
  check.eq(it2.choices, {{97, 257}})
  check.raises(function() eval.choices_example(tok, "Q", {}, 1) end, "choices must be a non-empty array")
  check.raises(function() eval.choices_example(tok, "Q", {3}, 1) end, "choice 1 must be a string")
end

function T.score_errors()
  check.raises(function() eval.score(fake.scorer(), {{context = {}, choices = {{1}}}}) end, "context is empty")
  check.raises(function() eval.score(fake.scorer(), {{context = {1}, choices = {{}}}}) end, "choice 1 has no tokens")
  check.raises(function() eval.score(fake.scorer(), {5}) end, "item 1 must be")
  local bad = {token_logprobs = function() return {} end}
  check.raises(function() eval.score(bad, {item(1)}) end, "token_logprobs returned 0 rows for 2")
end

function T.accuracy_and_argmax()
  check.near(eval.accuracy({1, 2, 3}, {1, 2, 1}), 2 / 3)
  check.raises(function() eval.accuracy({1}, {1, 2}) end, "1 predictions for 2 answers")
  check.eq(eval.argmax({0.1, 0.5, 0.5, -1}), 2)
  local nan = eval.accuracy({}, {})
  check.truthy(nan ~= nan)
end

function T.perplexity_over_targets_only()
  local exs = {{input = {1, 2, 3}, target = {2, 3, -100}}, {input = {4}, target = {6}}}
  local ppl, nll, n = eval.perplexity(fake.scorer(), exs, {batch = 1})
  -- log p: target 2 -> -0.21, 3 -> -0.31, 6 -> -0.61
  check.eq(n, 3)
  check.near(nll, (0.21 + 0.31 + 0.61) / 3, 1e-12)
  check.near(ppl, math.exp((0.21 + 0.31 + 0.61) / 3), 1e-12)
  check.raises(function() eval.perplexity(fake.scorer(), {{input = {1}, target = {-100}}}) end, "no target tokens")
end

function T.generate_greedy_with_stop_and_length()
  local m = fake.counter(10)
  local out, why = eval.generate(m, {3}, {max_new_tokens = 10, stop = {7}})
  check.eq(out, {4, 5, 6})
  check.eq(why, "stop")
  out, why = eval.generate(fake.counter(10), {8}, {max_new_tokens = 4})
  check.eq(out, {9, 0, 1, 2})
  check.eq(why, "length")
  check.raises(function() eval.generate(m, {}, {}) end, "ids must be a non-empty array")
end

function T.sample_temperature_and_top_p()
  local logits = {math.log(0.6), math.log(0.3), math.log(0.1)}
  local r = rng.new(123)
  local counts = {0, 0, 0}
  for _ = 1, 3000 do
    local id = eval.sample(logits, {temperature = 1.0, rng = r})
    counts[id + 1] = counts[id + 1] + 1
  end
  check.truthy(math.abs(counts[1] / 3000 - 0.6) < 0.04, "p0 " .. counts[1])
  check.truthy(math.abs(counts[2] / 3000 - 0.3) < 0.04, "p1 " .. counts[2])
  check.truthy(math.abs(counts[3] / 3000 - 0.1) < 0.03, "p2 " .. counts[3])
  -- top_p 0.5 keeps only the most likely token; 0.8 the first two
  for _ = 1, 200 do check.eq(eval.sample(logits, {temperature = 1.0, top_p = 0.5, rng = r}), 0) end
  local seen = {}
  for _ = 1, 500 do seen[eval.sample(logits, {temperature = 1.0, top_p = 0.8, rng = r})] = true end
  check.truthy(seen[0] and seen[1] and not seen[2], "top_p 0.8 keeps tokens 0 and 1 only")
  -- temperature 0 is greedy; a seed makes sampling reproducible
  check.eq(eval.sample({1, 9, 3}, {}), 1)
  local a = eval.generate(fake.counter(10), {1}, {max_new_tokens = 8, temperature = 2.0, seed = 5})
  local b = eval.generate(fake.counter(10), {1}, {max_new_tokens = 8, temperature = 2.0, seed = 5})
  check.eq(a, b)
  check.raises(function() eval.sample(logits, {temperature = 1.0}) end, "needs opts.rng")
  check.raises(function() eval.sample({}, {}) end, "empty logits")
end

function T.generate_text_decodes_and_stops_at_eos()
  local tok = fake.tokenizer()
  -- a model that spells "hi" then ends
  local script = {104, 105, 257}
  local m = {n = 0, next_logits = function(self, ids)
    self.n = self.n + 1
    local l = {}
    for i = 1, 258 do l[i] = 0.0 end
    l[script[self.n] + 1] = 1.0
    return l
  end}
  local text, why, ids = eval.generate_text(m, tok, "say: ", {max_new_tokens = 5})
  check.eq(text, "hi")
  check.eq(why, "stop")
  check.eq(ids, {104, 105})
end

-- every choice one token: one next_logits row per item, token_logprobs never called
function T.score_single_token_choices_by_next_logits()
  local m = {calls = 0, rows = 0}
  function m:token_logprobs() error("token_logprobs must not be called") end
  -- V = 4: logits {0, ln 2, ln 3, 0} whatever the context, so p = {1, 2, 3, 1} / 7
  function m:next_logits(seqs)
    self.calls = self.calls + 1
    local out = {}
    for b = 1, #seqs do
      self.rows = self.rows + 1
      out[b] = {0.0, math.log(2), math.log(3), 0.0}
    end
    return out
  end
  local items = {}
  for i = 1, 5 do items[i] = {context = {1, 2, i % 4}, choices = {{1}, {2}, {0}}, answer = 2} end
  local res = eval.score(m, items, {batch = 2})
  check.eq(m.calls, 3, "5 items in calls of 2")
  check.eq(m.rows, 5, "one row per item")
  for i = 1, 5 do
    check.near(res[i].sum[1], math.log(2 / 7), 1e-12)
    check.near(res[i].sum[2], math.log(3 / 7), 1e-12)
    check.near(res[i].sum[3], math.log(1 / 7), 1e-12)
    check.eq(res[i].n, {1, 1, 1})
    check.eq(res[i].pred_sum, 2)
    check.eq(res[i].pred_mean, 2)
  end
  local bad = {token_logprobs = m.token_logprobs, next_logits = function() return {} end}
  check.raises(function() eval.score(bad, items) end, "next_logits returned 0 rows for 5")
end

-- real bindings ---------------------------------------------------------------------------

function T.real_model_logprobs_agree_with_forward_loss()
  local _, _, m = real.model(3)
  local tokens = {{1, 2, 3, 4, 5, 6}, {7, 8, 9, 10, 11, 12}}
  local targets = {{2, 3, 4, 5, 6, 7}, {8, 9, -100, -100, -100, -100}}
  local loss = m:forward(tokens, targets)
  local lp = m:token_logprobs(tokens, targets)
  local s, n = 0.0, 0
  for b = 1, 2 do
    for t = 1, 6 do
      if targets[b][t] ~= -100 then s, n = s - lp[b][t], n + 1
      else check.eq(lp[b][t], 0.0, "ignored positions are 0") end
    end
  end
  check.near(s / n, loss, 1e-4)
  m:close()
end

function T.real_model_multiple_choice_and_generation()
  local _, _, m = real.model(4)
  local items = {{context = {1, 2, 3}, choices = {{4}, {5, 6}}, answer = 1},
                 {context = {7, 8}, choices = {{9, 10}, {11}}, answer = 2}}
  local r = eval.multiple_choice(m, items, {batch = 2})
  check.truthy(r.accuracy >= 0 and r.accuracy <= 1)
  -- padding never changes a score: batch 1 (no padding) and batch 4 (padding) agree
  local a = eval.score(m, items, {batch = 1})
  local b = eval.score(m, items, {batch = 4})
  for i = 1, 2 do for c = 1, 2 do check.near(a[i].sum[c], b[i].sum[c], 1e-4) end end
  -- one-token choices: one row per item by next_logits, as one row per choice would score them
  local singles = {{context = {1, 2, 3}, choices = {{4}, {5}}, answer = 1},
                   {context = {7, 8}, choices = {{9}, {11}}, answer = 2},
                   {context = {3}, choices = {{1}, {2}}, answer = 1}}
  local fast, rows = eval.score(m, singles, {batch = 2}), eval.score(m, singles, {batch = 2, by_rows = true})
  for i = 1, 3 do for c = 1, 2 do check.near(fast[i].sum[c], rows[i].sum[c], 1e-4) end end
  local g1 = eval.generate(m, {1, 2}, {max_new_tokens = 4})
  local g2 = eval.generate(m, {1, 2}, {max_new_tokens = 4})
  check.eq(g1, g2)
  check.eq(#g1, 4)
  -- the key/value cache generates what running the whole sequence for each token does
  local opts = {max_new_tokens = 12, temperature = 0.8, seed = 3}
  local cached = eval.generate(m, {5, 9, 2}, opts)
  opts.cache = false
  check.eq(cached, eval.generate(m, {5, 9, 2}, opts))
  -- a second turn continuing the cache (pos) generates what the whole conversation from scratch
  -- does; the positions the cache holds: every new id but the last when stopped for length
  local first, why, held = eval.generate(m, {5, 9, 2}, {max_new_tokens = 4})
  check.eq(why, "length")
  check.eq(held, 3 + 3)
  local turn = {first[4], 7, 7, 1}
  local second = eval.generate(m, turn, {max_new_tokens = 6, pos = held})
  local whole = {5, 9, 2}
  for _, id in ipairs(first) do whole[#whole + 1] = id end
  for i = 2, #turn do whole[#whole + 1] = turn[i] end
  check.eq(second, eval.generate(m, whole, {max_new_tokens = 6, cache = false}))
  check.raises(function() eval.generate({next_logits = m.next_logits}, {1}, {pos = 2}) end, "pos needs a model")
  m:close()
end

return T
