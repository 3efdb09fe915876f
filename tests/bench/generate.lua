-- Generation speed on the real model, greedy, in alternating rounds because the machine is noisy
-- (medians): the whole sequence run for each new token (next_logits, what lomo.eval.generate did
-- before it kept a key/value cache) against m:decode, one position's forward per token; then a
-- long prompt's first pass, m:decode (filling the cache) against m:next_logits.
--   build/bindings/lomo tests/bench/generate.lua [model] [prompt tokens] [new tokens] [rounds] [long prompt]
local lomo = require "lomo"
local rounds = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/rounds.lua")
local eval = require "lomo.eval"

local path = arg[1] or "models/SmolLM2-135M-Instruct.Q4_1.gguf"
local prompt_len = math.tointeger(tonumber(arg[2] or "60"))
local new = math.tointeger(tonumber(arg[3] or "64"))
local nrounds = math.tointeger(tonumber(arg[4] or "3"))
local long = math.tointeger(tonumber(arg[5] or "1024"))

local ctx = lomo.context{threads = 2}
local m = lomo.load(ctx, path, {dtype = "f32"})
local V = m:config().vocab_size
local prompt = {}
for t = 1, prompt_len do prompt[t] = (t * 104729 + 7919) % V end

local outs = {}
local function generating(w, cache)
  return function() outs[w] = eval.generate(m, prompt, {max_new_tokens = new, cache = cache}) end
end
local ways = {{"whole sequence per token", generating(1, false)}, {"key/value cache", generating(2, true)}}
eval.generate(m, prompt, {max_new_tokens = 2})   -- warm-up
local med = rounds.medians(ways, nrounds, new)
local same = #outs[1] == #outs[2]
for i = 1, #outs[1] do same = same and outs[1][i] == outs[2][i] end
print(("%s: greedy, a prompt of %d tokens, %d new, %d rounds, 2 threads; ms a token (median), and against the first"):format(
  path, prompt_len, new, nrounds))
rounds.report(ways, med, "  %-26s %8.1f   %.2fx")
print(("  the same %d tokens both ways: %s"):format(#outs[1], same and "yes" or "NO"))

local big = {}
for t = 1, long do big[t] = (t * 7919 + 104729) % V end
local first = {{"next_logits (a forward)", function() m:next_logits(big) end},
               {"decode from position 0", function() m:decode(big, 0) end}}
print(("a prompt of %d tokens, its first pass; ms (median), and against the first"):format(long))
rounds.report(first, rounds.medians(first, nrounds), "  %-26s %8.0f   %.2fx")
m:close()
