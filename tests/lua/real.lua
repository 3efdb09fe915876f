-- A tiny random model through the real bindings, for the guarded real-model tests.
local check = require "check"
local M = {}

M.config = {vocab_size = 32, hidden_size = 16, intermediate_size = 32, num_hidden_layers = 1,
            num_attention_heads = 2, num_key_value_heads = 1, max_position_embeddings = 32,
            tie_word_embeddings = true, rms_norm_eps = 1e-5, rope_theta = 10000.0}

-- model(): lomo, ctx, m, or a skip (reported by the runner) when the bindings are absent
function M.model(seed)
  local lomo, why = check.lomo()
  if not lomo then check.skip("lomo bindings not available: " .. tostring(why)) end
  local ctx = lomo.context{threads = 1}
  local m = lomo.model(ctx, M.config, {dtype = "f32", seed = seed or 1})
  return lomo, ctx, m
end

return M
