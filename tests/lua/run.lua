-- The Lua test runner: lua5.4 tests/lua/run.lua [filter]   (or: lomo tests/lua/run.lua [filter])
-- Loads every tests/lua/test_*.lua next to this file; each returns a table of named test
-- functions. A test passes unless it raises an error. check.skip(reason) marks a test as
-- skipped, which is reported, never silent. The filter is a plain substring of
-- "file:test" (e.g. "test_data" or "shuffle"). Prints one line per failure, then
-- "N passed, N failed" alone on a line; exits 1 when anything failed.

local here = (arg and arg[0] or "tests/lua/run.lua"):match("^(.*)/[^/]*$") or "."
local root = here .. "/../.."
package.path = table.concat({here .. "/?.lua", root .. "/scripts/?.lua", package.path}, ";")
-- stock lua5.4 finds the bindings where the build puts them (after LUA_CPATH's entries)
package.cpath = package.cpath .. ";" .. root .. "/build/bindings/?.so"

local filter = arg and arg[1]
local verbose = os.getenv("LOMO_TEST_VERBOSE") ~= nil

local function list_tests()
  local files = {}
  local p = io.popen('ls -1 "' .. here .. '" 2>/dev/null')
  if p then
    for name in p:lines() do
      if name:match("^test_[%w_]+%.lua$") then files[#files + 1] = name end
    end
    p:close()
  end
  table.sort(files)
  return files
end

local check = require "check"
local passed, failed, skipped = 0, 0, 0
local skip_lines = {}

local function one_line(msg, tb)
  msg = tostring(msg):gsub("\n", " | ")
  -- the innermost frame inside a test file, to point at the failing line
  local at = tb and tb:match("(test_[%w_]+%.lua:%d+):")
  if at and not msg:find(at, 1, true) then msg = msg .. " [at " .. at .. "]" end
  return msg
end

local files = list_tests()
if #files == 0 then
  print("no tests found in " .. here)
  failed = 1
end

for _, file in ipairs(files) do
  local ok, tests = pcall(dofile, here .. "/" .. file)
  if not ok or type(tests) ~= "table" then
    if not filter or file:find(filter, 1, true) then
      failed = failed + 1
      print(string.format("FAIL %s: cannot load: %s", file, one_line(ok and "did not return a table" or tests)))
    end
  else
    local names = {}
    for name, fn in pairs(tests) do if type(fn) == "function" then names[#names + 1] = name end end
    table.sort(names)
    for _, name in ipairs(names) do
      local full = file .. ":" .. name
      if not filter or full:find(filter, 1, true) then
        local tb
        local tok, err = xpcall(tests[name], function(e)
          if check.is_skip(e) then return e end
          tb = debug.traceback(tostring(e), 2)
          return e
        end)
        if tok then
          passed = passed + 1
          if verbose then print("ok   " .. full) end
        elseif check.is_skip(err) then
          skipped = skipped + 1
          skip_lines[#skip_lines + 1] = string.format("SKIP %s: %s", full, err.reason)
        else
          failed = failed + 1
          print(string.format("FAIL %s: %s", full, one_line(err, tb)))
          if verbose and tb then print(tb) end
        end
      end
    end
  end
end

for _, note in ipairs(check.notes) do print("NOTE " .. note) end
for _, l in ipairs(skip_lines) do print(l) end
if skipped > 0 then print(string.format("%d skipped", skipped)) end
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
