-- lomo.util: the few operating-system services the recipe library needs. Each uses the
-- bindings (require "lomo") when they are loaded and falls back to plain Lua otherwise,
-- so the library runs, and is tested, under a stock lua5.4.

local M = {}

local bindings_cache -- false: looked for and absent

-- bindings(): the lomo C module, or nil (and the reason) when it cannot be loaded.
function M.bindings()
  if bindings_cache == nil then
    local ok, mod = pcall(require, "lomo")
    if ok and type(mod) == "table" then
      bindings_cache = mod
    else
      bindings_cache = false
      M.bindings_error = tostring(mod)
    end
  end
  return bindings_cache or nil, M.bindings_error
end

-- json(explicit): {encode=, decode=}; explicit wins, then lomo.json.
function M.json(explicit, who)
  if explicit ~= nil then
    if type(explicit) ~= "table" or type(explicit.encode) ~= "function"
       or type(explicit.decode) ~= "function" then
      error((who or "lomo") .. ": json must be a table with encode and decode functions", 3)
    end
    return explicit
  end
  local b = M.bindings()
  if b and b.json then return b.json end
  error((who or "lomo") .. ": JSON needs the lomo bindings (lomo.json) or an explicit json = {encode=, decode=}", 3)
end

function M.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

function M.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

-- atomic_write(path, s): readers see the old file or the new one, never a torn write.
function M.atomic_write(path, s)
  local b = M.bindings()
  if b and b.atomic_write then
    b.atomic_write(path, s)
    return true
  end
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then error("atomic_write: " .. tostring(err), 2) end
  local ok, werr = f:write(s)
  if ok then ok, werr = f:flush() end
  f:close()
  if not ok then
    os.remove(tmp)
    error("atomic_write: " .. path .. ": " .. tostring(werr), 2)
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    error("atomic_write: " .. path .. ": " .. tostring(rerr), 2)
  end
  return true
end

-- mkdir_p(dir): creates dir and its parents (lomo.mkdir when the bindings have it).
function M.mkdir_p(dir)
  local b = M.bindings()
  if b and b.mkdir then
    b.mkdir(dir)
    return true
  end
  local ok = os.execute("mkdir -p " .. M.shell_quote(dir))
  if not ok then error("mkdir: cannot create directory " .. dir, 2) end
  return true
end

-- remove_tree(dir): rm -r of a checkpoint directory (no bindings call exists for it).
function M.remove_tree(dir)
  return os.execute("rm -rf " .. M.shell_quote(dir))
end

function M.clock()
  local b = M.bindings()
  if b and b.clock then return b.clock() end
  return os.clock()
end

function M.join(a, b)
  if a == "" or b:sub(1, 1) == "/" then return b end
  if a:sub(-1) == "/" then return a .. b end
  return a .. "/" .. b
end

function M.dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- path_of(p) for a recipe: relative paths in its YAML resolve against the folder `up` levels
-- above the recipe file (the repository root for examples/NAME/recipe.lua), so they do not
-- depend on where the command runs; absolute paths pass through. `file` is the recipe's own
-- path, debug.getinfo(1, "S").source in the recipe. A path that is not a string is an error.
function M.path_resolver(file, up)
  local root = M.dirname((file:gsub("^@", "")))
  for _ = 1, up do
    local last = root:match("[^/]*$")
    if last == "." or last == ".." then root = root .. "/.."
    else root = root:match("^(.*)/[^/]*$") or "." end
    if root == "" then root = "/" end
  end
  return function(p)
    if type(p) ~= "string" then error("recipe.yaml: a path must be a string, got " .. tostring(p), 0) end
    if p:sub(1, 1) == "/" or root == "." then return p end
    return M.join(root, p)
  end
end

-- The checkpointing modes by name (lomo.load and lomo.model also take true for "blocks").
M.CHECKPOINTING_MODES = {off = true, blocks = true, keep_attention = true}

-- checkpointing(v, field): a recipe's checkpointing setting, checked before anything loads: nil,
-- a boolean or a mode's name (lomo.load and lomo.model take it as is).
function M.checkpointing(v, field)
  if v == nil or type(v) == "boolean" or M.CHECKPOINTING_MODES[v] then return v end
  error(string.format("recipe.yaml: %s must be true, false, off, blocks or keep_attention, got %s", field,
                      tostring(v)), 0)
end

-- model_options(t, prefix): a recipe's model settings as lomo.load and lomo.model take them,
-- checked before anything loads: dtype (default f32), checkpointing (as above) and logits_chunk
-- (the LM head's vocabulary rows at a time, a whole number; 0 or unset: 8192 under checkpointing,
-- else all). prefix names where they sit in the recipe ("model." or "").
function M.model_options(t, prefix)
  prefix = prefix or ""
  local chunk = t.logits_chunk
  if chunk ~= nil and not (math.tointeger(chunk) and chunk >= 0) then
    error(string.format("recipe.yaml: %slogits_chunk must be a whole number of vocabulary rows (0: automatic), " ..
                        "got %s", prefix, tostring(chunk)), 0)
  end
  return {dtype = t.dtype or "f32", checkpointing = M.checkpointing(t.checkpointing, prefix .. "checkpointing"),
          logits_chunk = math.tointeger(chunk)}
end

local UNITS = {[""] = 1, B = 1, KB = 1e3, MB = 1e6, GB = 1e9, TB = 1e12,
               KiB = 2^10, MiB = 2^20, GiB = 2^30, TiB = 2^40}

-- bytes(v, field): a recipe's size, a whole number of bytes or a string such as "16GiB", "512 MiB"
-- or "2.5GB"; the bytes as an integer. field names the setting in the error.
function M.bytes(v, field)
  local n = math.tointeger(v)
  if n == nil and type(v) == "string" then
    local num, unit = v:match("^%s*([%d%.]+)%s*(%a*)%s*$")
    if num and tonumber(num) and UNITS[unit] then n = math.tointeger(math.floor(tonumber(num) * UNITS[unit])) end
  end
  if n == nil or n < 0 then
    error(string.format("recipe.yaml: %s must be a number of bytes or a size such as 16GiB or 512MB, got %s",
                        field, tostring(v)), 0)
  end
  return n
end

-- context(cfg): the context a recipe runs in, from its threads (default 2), device and memory_limit
-- (a size: bytes() above; the device memory the run may hold, past which it stops with an
-- out-of-memory error naming what did not fit).
function M.context(cfg)
  local threads = cfg.threads == nil and 2 or math.tointeger(cfg.threads)
  if threads == nil or threads < 0 then
    error("recipe.yaml: threads must be a whole number, got " .. tostring(cfg.threads), 0)
  end
  local limit = cfg.memory_limit ~= nil and M.bytes(cfg.memory_limit, "memory_limit") or nil
  local lomo, why = M.bindings()
  if not lomo then error("recipe: the lomo bindings are not loaded: " .. tostring(why), 0) end
  return lomo.context{threads = threads, device = cfg.device, memory_limit = limit}
end

-- check(cond, who, fmt, ...): argument checking with messages that name the caller.
function M.fail(who, fmt, ...)
  error(who .. ": " .. string.format(fmt, ...), 3)
end

return M
