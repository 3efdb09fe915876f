-- cli.lua: the Lua half of the `lomo` program (embedded at build time):
-- `lomo run`, `lomo plan` and how the REPL shows values.
local lomo = require "lomo"

local M = {}

-- ---- lomo run recipe.yaml [key=value ...] ----

local function split_key(key)
  if key == "" or key:find("%.%.") or key:sub(1, 1) == "." or key:sub(-1) == "." then
    error(("override '%s': expected a dotted key such as optim.lr"):format(key), 0)
  end
  local parts = {}
  for p in key:gmatch("[^.]+") do parts[#parts + 1] = p end
  return parts
end

-- a numeric part indexes a list that already exists
local function index_of(t, part)
  local n = tonumber(part)
  if n and math.type(n) == "integer" and t[1] ~= nil then return n end
  return part
end

function M.apply_override(cfg, spec)
  local key, text = spec:match("^([^=]+)=(.*)$")
  if not key then error(("override '%s': expected key=value"):format(spec), 0) end
  local value = text
  if text ~= "" then value = lomo.yaml.decode(text, "override " .. key) end
  local parts = split_key(key)
  local t = cfg
  for i = 1, #parts - 1 do
    local k = index_of(t, parts[i])
    local nxt = t[k]
    if nxt == nil then
      nxt = {}
      t[k] = nxt
    elseif type(nxt) ~= "table" then
      error(("override %s: %s is a %s, not a mapping"):format(key, table.concat(parts, ".", 1, i), type(nxt)), 0)
    end
    t = nxt
  end
  t[index_of(t, parts[#parts])] = value
end

function M.run(yaml, ...)
  if not yaml then error("usage: lomo run recipe.yaml [key=value ...]", 0) end
  local cfg = lomo.yaml.load(yaml)
  if type(cfg) ~= "table" then error(yaml .. ": expected a mapping at the top level", 0) end
  for i = 1, select("#", ...) do M.apply_override(cfg, (select(i, ...))) end
  local recipe = cfg.recipe
  if type(recipe) ~= "string" then error(yaml .. ": needs a 'recipe: path/to/recipe.lua' entry", 0) end
  local dir = yaml:match("^(.*)/[^/]*$") or "."
  if recipe:sub(1, 1) ~= "/" then recipe = dir .. "/" .. recipe end
  local chunk, err = loadfile(recipe)
  if not chunk then error(err, 0) end
  local fn = chunk()
  if type(fn) ~= "function" then
    error(("%s: a recipe returns a function(config), got a %s"):format(recipe, type(fn)), 0)
  end
  return fn(cfg, {yaml = yaml, dir = dir, recipe = recipe})
end

-- ---- lomo plan <model> --seq N --batch B --dtype bf16 [--checkpointing[=keep_attention]] [--device cuda] ----

local function size(n)
  if n >= 10 * 2^30 then return ("%.1f GiB"):format(n / 2^30) end
  return ("%.1f MiB"):format(n / 2^20)
end

M.plan_usage = "usage: lomo plan <model.gguf | hf-folder | config.json> --seq N [--batch B] " ..
               "[--dtype f32|bf16|f16] [--checkpointing[=blocks|keep_attention]] [--device cpu|cuda]"

function M.plan(...)
  local args = {...}
  local opt = {batch = 1, dtype = "f32", checkpointing = false}
  local i = 1
  while i <= #args do
    local a = args[i]
    local function value()
      i = i + 1
      if args[i] == nil then error(a .. " needs a value\n" .. M.plan_usage, 0) end
      return args[i]
    end
    if a == "--seq" or a == "--batch" then
      local v = math.tointeger(tonumber(value()))
      if not v or v <= 0 then error(a .. " needs a positive integer, got " .. args[i], 0) end
      opt[a:sub(3)] = v
    elseif a == "--dtype" then opt.dtype = value()
    elseif a == "--device" then opt.device = value()
    elseif a == "--checkpointing" then opt.checkpointing = "blocks"
    elseif a:match("^%-%-checkpointing=") then
      opt.checkpointing = a:match("=(.*)")
      local known = {off = true, blocks = true, keep_attention = true}
      if not known[opt.checkpointing] then
        error(a .. ": checkpointing is off, blocks or keep_attention\n" .. M.plan_usage, 0)
      end
    elseif a:sub(1, 1) == "-" then error("unknown option " .. a .. "\n" .. M.plan_usage, 0)
    elseif opt.model then error("one model only (got " .. opt.model .. " and " .. a .. ")", 0)
    else opt.model = a end
    i = i + 1
  end
  if not opt.model or not opt.seq then error(M.plan_usage, 0) end
  local p = lomo.plan{model = opt.model, seq = opt.seq, batch = opt.batch, dtype = opt.dtype,
                      checkpointing = opt.checkpointing, device = opt.device}
  print(("memory plan for %s: batch %d x seq %d, %s weights, checkpointing %s"):format(
    opt.model, opt.batch, opt.seq, opt.dtype, opt.checkpointing or "off"))
  local cols = {"weights", "activations", "gradients", "optimizer", "scratch", "total"}
  local line = {("%-10s"):format("")}
  for _, c in ipairs(cols) do line[#line + 1] = ("%12s"):format(c) end
  print(table.concat(line))
  for _, name in ipairs{"inference", "lomo", "lomo-clip", "adalomo", "sgd", "adamw"} do
    line = {("%-10s"):format(name)}
    for _, c in ipairs(cols) do line[#line + 1] = ("%12s"):format(size(p[name][c])) end
    print(table.concat(line))
  end
  return p
end

-- ---- the REPL's view of values ----

local function show(v, depth, seen)
  if type(v) == "string" then return (("%q"):format(v):gsub("\\\n", "\\n")) end
  if type(v) ~= "table" or getmetatable(v) and getmetatable(v).__tostring then return tostring(v) end
  if seen[v] then return "{...}" end
  if depth > 3 then return "{...}" end
  seen[v] = true
  local parts, n = {}, #v
  for i = 1, math.min(n, 20) do parts[#parts + 1] = show(v[i], depth + 1, seen) end
  if n > 20 then parts[#parts + 1] = ("... (%d items)"):format(n) end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
    return type(a) < type(b)
  end)
  for i, k in ipairs(keys) do
    if i > 40 then parts[#parts + 1] = ("... (%d keys)"):format(#keys); break end
    local ks = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. show(k, 3, seen) .. "]"
    parts[#parts + 1] = ks .. " = " .. show(v[k], depth + 1, seen)
  end
  seen[v] = nil
  return "{" .. table.concat(parts, ", ") .. "}"
end

function M.show(...)
  local out = {}
  for i = 1, select("#", ...) do out[i] = show((select(i, ...)), 1, {}) end
  print(table.concat(out, "\t"))
end

return M
