-- lomo.progress
local check = require "check"
local progress = require "lomo.progress"

local T = {}

local function sink()
  local out = {buf = {}}
  function out:write(...) for _, s in ipairs({...}) do self.buf[#self.buf + 1] = s end end
  function out:text() return table.concat(self.buf) end
  return out
end

function T.formats()
  check.eq(progress.bytes(512), "512 B")
  check.eq(progress.bytes(1536), "1.50 KiB")
  check.eq(progress.bytes(3 * 1024 ^ 3), "3.00 GiB")
  check.eq(progress.bytes(150 * 1024 ^ 2), "150 MiB")
  check.eq(progress.bytes(nil), "?")
  check.eq(progress.duration(42), "42s")
  check.eq(progress.duration(185), "3m05s")
  check.eq(progress.duration(3720), "1h02m")
  check.eq(progress.duration(0 / 0), "?")
  local line = progress.format{step = 5, total = 10, loss = 1.23456, lr = 1e-4, tokens_per_s = 1234.4,
                               eta = 65, memory = 2048, epoch = 1, width = 10}
  check.eq(line, "[#####.....] 5/10  ep 1  loss 1.2346  lr 1.00e-04  1234 tok/s  ETA 1m05s  mem 2.00 KiB")
  check.eq(progress.format{step = 3}, "step 3")
end

function T.bar_redraws_in_place_and_clears_for_messages()
  local out = sink()
  local bar = progress.new{out = out}
  bar:update{step = 1, total = 2, loss = 10.0}
  bar:update{step = 2, total = 2, loss = 1.0}
  bar:message("eval: 0.5")
  bar:finish()
  local s = out:text()
  check.truthy(s:sub(1, 1) == "\r")
  check.truthy(s:find("eval: 0.5\n", 1, true))
  check.eq(select(2, s:gsub("\n", "\n")), 1, "one line for the message; the bar was cleared before it")
  local lines = sink()
  local b2 = progress.new{out = lines, mode = "lines", every = 2}
  for i = 1, 4 do b2:update{step = i, total = 4} end
  b2:finish()
  check.eq(select(2, lines:text():gsub("\n", "\n")), 2, "every second step")
  local off = sink()
  local b3 = progress.new{out = off, mode = "off"}
  b3:update{step = 1}
  b3:message("x")
  b3:finish()
  check.eq(off:text(), "")
end

return T
