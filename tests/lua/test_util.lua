-- lomo.util: the recipe path resolver, sizes, and the recipe's context (the other helpers are
-- exercised through data and trainer)
local check = require "check"
local util = require "lomo.util"

local T = {}

function T.recipe_paths_resolve_against_the_repository_root()
  -- run from the root, as the README does: paths stay as written
  check.eq(util.path_resolver("@examples/wic/recipe.lua", 2)("models/m.gguf"), "models/m.gguf")
  -- run from elsewhere with an absolute recipe path
  check.eq(util.path_resolver("@/home/u/lomo/examples/wic/recipe.lua", 2)("models/m.gguf"),
           "/home/u/lomo/models/m.gguf")
  check.eq(util.path_resolver("@/examples/wic/recipe.lua", 2)("data/x"), "/data/x")
  -- run from inside the example's folder
  check.eq(util.path_resolver("@./recipe.lua", 2)("models/m.gguf"), "./../../models/m.gguf")
  check.eq(util.path_resolver("@../wic/recipe.lua", 2)("a"), "../../a")
  -- absolute paths pass through
  check.eq(util.path_resolver("@/x/examples/wic/recipe.lua", 2)("/abs/p"), "/abs/p")
end

function T.recipe_path_must_be_a_string()
  local ok, err = pcall(util.path_resolver("@examples/wic/recipe.lua", 2), 42)
  check.truthy(not ok and tostring(err):find("recipe.yaml: a path must be a string, got 42", 1, true), tostring(err))
end

function T.sizes_in_bytes_or_with_a_unit()
  check.eq(util.bytes(123, "x"), 123)
  check.eq(util.bytes("16GiB", "x"), 16 * 2^30)
  check.eq(util.bytes("512 MiB", "x"), 512 * 2^20)
  check.eq(util.bytes("2.5GB", "x"), 2500000000)
  check.eq(util.bytes("7", "x"), 7)
  check.eq(util.bytes("3KB", "x"), 3000)
  for _, bad in ipairs{"lots", "16 GiBs", "-1", -1, "1.5.2GB", true, 1.5} do
    local ok, err = pcall(util.bytes, bad, "memory_limit")
    check.truthy(not ok and tostring(err):find("recipe.yaml: memory_limit must be a number of bytes or a size", 1,
                 true), "bytes(" .. tostring(bad) .. "): " .. tostring(err))
  end
end

-- a recipe's model settings: defaults, each field passed on, a bad one named with its place
function T.model_options_checks_before_anything_loads()
  local o = util.model_options({})
  check.eq(o.dtype, "f32")
  check.eq(o.checkpointing, nil)
  check.eq(o.logits_chunk, nil)
  o = util.model_options({dtype = "bf16", checkpointing = "keep_attention", logits_chunk = 4096.0}, "model.")
  check.eq(o.dtype, "bf16")
  check.eq(o.checkpointing, "keep_attention")
  check.eq(math.type(o.logits_chunk), "integer")
  check.eq(o.logits_chunk, 4096)
  for _, bad in ipairs{-1, 2.5, "many"} do
    local ok, err = pcall(util.model_options, {logits_chunk = bad}, "model.")
    check.truthy(not ok and tostring(err):find("recipe.yaml: model.logits_chunk must be a whole number", 1, true),
                 tostring(err))
  end
end

function T.a_recipe_context_takes_threads_device_and_memory_limit()
  local lomo = check.lomo()
  if not lomo then return end   -- the runner has said the bindings are absent
  local ctx = util.context{threads = 1, device = "cpu", memory_limit = "64MiB"}
  check.eq(ctx.device, "cpu")
  local ok, err = pcall(lomo.model, ctx, {hidden_size = 4096, intermediate_size = 11008, num_hidden_layers = 8,
                                          num_attention_heads = 32, num_key_value_heads = 32, vocab_size = 32000,
                                          max_position_embeddings = 64})
  check.truthy(not ok and tostring(err):find("memory_limit of 64.0 MiB", 1, true), tostring(err))
  ctx:close()
  for _, bad in ipairs{{threads = -1}, {threads = "two"}, {memory_limit = "much"}} do
    local good, e = pcall(util.context, bad)
    check.truthy(not good and tostring(e):find("recipe.yaml: ", 1, true), tostring(e))
  end
end

return T
