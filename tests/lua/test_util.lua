-- lomo.util: the recipe path resolver (the other helpers are exercised through data and trainer)
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

return T
