-- Assertions for the Lua tests (tests/lua/run.lua).
local M = {notes = {}}

local function show(v, depth)
  depth = depth or 0
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" or depth > 2 then return tostring(v) end
  local parts, n = {}, 0
  for k, x in pairs(v) do
    n = n + 1
    if n > 12 then parts[#parts + 1] = "..." break end
    parts[#parts + 1] = (math.type(k) == "integer" and "" or (tostring(k) .. "=")) .. show(x, depth + 1)
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end
M.show = show

local function deep_eq(a, b, path)
  if type(a) ~= type(b) then return false, path end
  if type(a) ~= "table" then
    if a ~= a and b ~= b then return true end -- NaN equals NaN here
    if a == b then return true end
    return false, path
  end
  for k, v in pairs(a) do
    local ok, p = deep_eq(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, p end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) end
  end
  return true
end

function M.eq(got, want, msg)
  local ok, where = deep_eq(got, want, "")
  if not ok then
    error(string.format("%sexpected %s, got %s%s", msg and (msg .. ": ") or "", show(want), show(got),
                        where ~= "" and (" (differs at " .. where .. ")") or ""), 2)
  end
end

function M.near(got, want, tol, msg)
  tol = tol or 1e-9
  if type(got) ~= "number" or math.abs(got - want) > tol * math.max(1, math.abs(want)) then
    error(string.format("%sexpected %.17g (tol %g), got %s", msg and (msg .. ": ") or "", want, tol, tostring(got)), 2)
  end
end

function M.truthy(v, msg)
  if not v then error(msg or "expected a true value", 2) end
  return v
end

-- raises(fn, pattern): fn must raise an error whose message contains pattern (plain text).
function M.raises(fn, pattern, ...)
  local ok, err = pcall(fn, ...)
  if ok then error("expected an error" .. (pattern and (" mentioning '" .. pattern .. "'") or ""), 2) end
  if pattern and not tostring(err):find(pattern, 1, true) then
    error(string.format("error %q does not mention %q", tostring(err), pattern), 2)
  end
  return tostring(err)
end

local Skip = {}
function M.skip(reason) error(setmetatable({reason = reason}, Skip), 0) end
function M.is_skip(e) return getmetatable(e) == Skip end
function M.note(s) M.notes[#M.notes + 1] = s end

-- tmpdir(): a fresh directory under /tmp, removed by rmtree.
function M.tmpdir()
  local name = os.tmpname()
  os.remove(name)
  assert(os.execute("mkdir -p '" .. name .. "'"))
  return name
end
function M.rmtree(dir)
  if dir and dir:match("^/tmp/") then os.execute("rm -rf '" .. dir .. "'") end
end

function M.write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end
function M.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- lomo(): the bindings or nil; the outcome is reported once in the runner's output.
local lomo_mod, lomo_err
function M.lomo()
  if lomo_mod == nil then
    local ok, m = pcall(require, "lomo")
    if ok and type(m) == "table" then
      lomo_mod = m
      M.note("lomo bindings: loaded (" .. tostring(m.version) .. "); real-model tests run")
    else
      lomo_mod = false
      lomo_err = tostring(m):match("^[^\n]*")
      M.note("lomo bindings: not available (" .. lomo_err .. "); real-model tests skipped, fakes used")
    end
  end
  return lomo_mod or nil, lomo_err
end

return M
