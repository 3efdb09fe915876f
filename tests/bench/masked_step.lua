-- The training step's cost when the loss covers only the answer (prompt masking, as the WiC
-- recipe and instruction tuning do) against the same step with a target at every position, on
-- the real model, in alternating rounds because the machine is noisy (medians). The LM head and
-- cross-entropy run on the rows that have a target only, so the masked step is the cheaper one:
-- the head is 49152 x 576 against 30 blocks of 576 wide, a fifth of SmolLM2's forward.
--   build/bindings/lomo tests/bench/masked_step.lua [model] [batch] [seq] [steps] [rounds] [clip]
local lomo = require "lomo"
local rounds = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/rounds.lua")

local path = arg[1] or "models/SmolLM2-135M-Instruct.Q4_1.gguf"
local B = math.tointeger(tonumber(arg[2] or "4"))
local T = math.tointeger(tonumber(arg[3] or "80"))
local steps = math.tointeger(tonumber(arg[4] or "3"))
local nrounds = math.tointeger(tonumber(arg[5] or "3"))
local clip = tonumber(arg[6] or "1.0")

local ctx = lomo.context{threads = 2}
local m = lomo.load(ctx, path, {dtype = "f32"})
local V = m:config().vocab_size
local opt = lomo.optimizer(m, {name = "lomo", clip_grad_norm = clip > 0 and clip or nil})
local tokens, answer_only, every = {}, {}, {}
for b = 1, B do
  tokens[b], answer_only[b], every[b] = {}, {}, {}
  for t = 1, T do
    tokens[b][t] = (b * 7919 + t * 104729) % V
    every[b][t] = (b * 31 + t * 7) % V
    answer_only[b][t] = t == T and every[b][t] or -100
  end
end

local function steps_with(targets)
  return function() for _ = 1, steps do opt:step(tokens, targets, 1e-5) end end
end
local ways = {{"a target at every position", steps_with(every)}, {"the answer's position only", steps_with(answer_only)}}
opt:step(tokens, every, 1e-5)   -- warm-up
local med = rounds.medians(ways, nrounds, steps)
print(("%s: LOMO steps (clip_grad_norm %s), batch %d x %d tokens, %d rounds of %d steps, 2 threads; ms a step (median)"):format(
  path, clip > 0 and clip or "off", B, T, nrounds, steps))
rounds.report(ways, med, "  %-30s %9.1f   %.2fx")
m:close()
