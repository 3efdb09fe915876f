-- Scoring speed on the real model: prompts of 40 to 88 tokens, shortest first (as the WiC recipe
-- sorts them), scored three ways, in alternating rounds because the machine is noisy (medians):
--   forward       a full forward per prompt: the LM head on every position, which is what
--                 next_logits did before it ran the head on the last position only
--   next_logits   one prompt per call
--   batched       next_logits on `batch` prompts at a time (rows of different lengths)
--   build/bindings/lomo tests/bench/next_logits.lua [model] [prompts] [rounds] [batch]
local lomo = require "lomo"
local rounds = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/rounds.lua")

local path = arg[1] or "models/SmolLM2-135M-Instruct.Q4_1.gguf"
local n = math.tointeger(tonumber(arg[2] or "32"))
local nrounds = math.tointeger(tonumber(arg[3] or "3"))
local batch = math.tointeger(tonumber(arg[4] or "16"))

local ctx = lomo.context{threads = 2}
local m = lomo.load(ctx, path, {dtype = "f32"})
local V = m:config().vocab_size
local prompts = {}
for i = 1, n do
  local s = {}
  for t = 1, 40 + (i * 37) % 49 do s[t] = (i * 7919 + t * 104729) % V end
  prompts[i] = s
end
table.sort(prompts, function(a, b) return #a < #b end)

local ways = {
  {"forward (head on every position)", function() for _, s in ipairs(prompts) do m:forward({s}) end end},
  {"next_logits, one prompt a call", function() for _, s in ipairs(prompts) do m:next_logits(s) end end},
  {("next_logits, %d prompts a call"):format(batch), function()
    for first = 1, n, batch do
      local group = {}
      for i = first, math.min(first + batch - 1, n) do group[#group + 1] = prompts[i] end
      m:next_logits(group)
    end
  end},
}
ways[2][2]()   -- warm-up
local med = rounds.medians(ways, nrounds, n)
print(("%s: %d prompts of 40-88 tokens, %d rounds, 2 threads; ms a prompt (median), and against the first"):format(
  path, n, nrounds))
rounds.report(ways, med, "  %-36s %8.2f   %.2fx")
m:close()
