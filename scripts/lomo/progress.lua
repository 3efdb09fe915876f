-- lomo.progress: a one-line progress bar (step, loss, lr, tokens/s, ETA, memory), redrawn
-- in place with "\r", or printed as plain lines for logs.

local M = {}

-- bytes(n): "512 B", "1.5 KiB", "2.25 GiB".
function M.bytes(n)
  if type(n) ~= "number" then return "?" end
  local units = {"B", "KiB", "MiB", "GiB", "TiB"}
  local u = 1
  while n >= 1024 and u < #units do n, u = n / 1024, u + 1 end
  if u == 1 then return string.format("%d B", math.floor(n)) end
  local digits = n < 10 and 2 or (n < 100 and 1 or 0)
  return string.format("%." .. digits .. "f %s", n, units[u])
end

-- duration(s): "42s", "3m05s", "1h02m".
function M.duration(s)
  if type(s) ~= "number" or s ~= s or s == math.huge or s < 0 then return "?" end
  s = math.floor(s + 0.5)
  if s < 60 then return string.format("%ds", s) end
  if s < 3600 then return string.format("%dm%02ds", s // 60, s % 60) end
  return string.format("%dh%02dm", s // 3600, (s % 3600) // 60)
end

-- format{step=, total=, loss=, lr=, tokens_per_s=, eta=, memory=, epoch=, width=}: the line.
function M.format(f)
  local parts = {}
  local total = f.total
  if total and total > 0 then
    local width = f.width or 20
    local filled = math.min(width, math.floor(width * f.step / total))
    parts[#parts + 1] = string.format("[%s%s] %d/%d", string.rep("#", filled), string.rep(".", width - filled), f.step, total)
  else
    parts[#parts + 1] = string.format("step %d", f.step or 0)
  end
  if f.epoch then parts[#parts + 1] = string.format("ep %d", f.epoch) end
  if f.loss then parts[#parts + 1] = string.format("loss %.4f", f.loss) end
  if f.lr then parts[#parts + 1] = string.format("lr %.2e", f.lr) end
  if f.tokens_per_s then parts[#parts + 1] = string.format("%.0f tok/s", f.tokens_per_s) end
  if f.eta then parts[#parts + 1] = "ETA " .. M.duration(f.eta) end
  if f.memory then parts[#parts + 1] = "mem " .. M.bytes(f.memory) end
  return table.concat(parts, "  ")
end

-- default_mode(): "bar" when stderr is a terminal, else "lines" (a log gets whole lines, not
-- a single line redrawn with "\r"); "bar" when that cannot be told (no bindings).
function M.default_mode()
  local ok, lomo = pcall(require, "lomo")
  if ok and type(lomo) == "table" and lomo.isatty then return lomo.isatty(2) and "bar" or "lines" end
  return "bar"
end

local Bar = {}
Bar.__index = Bar

-- new{out = io.stderr, mode = "bar"|"lines"|"off", every = 1}
function M.new(opts)
  opts = opts or {}
  return setmetatable({out = opts.out or io.stderr, mode = opts.mode or "bar", every = opts.every or 1,
                       last_len = 0, shown = false}, Bar)
end

function Bar:update(fields)
  if self.mode == "off" then return end
  local line = M.format(fields)
  if self.mode == "lines" then
    if (fields.step or 0) % self.every == 0 then self.out:write(line, "\n") end
  else
    local pad = self.last_len > #line and string.rep(" ", self.last_len - #line) or ""
    self.out:write("\r", line, pad)
    self.last_len = #line
    self.shown = true
  end
  if self.out.flush then self.out:flush() end
end

-- message(s): a line printed above the bar (the bar is redrawn by the next update).
function Bar:message(s)
  if self.mode == "off" then return end
  if self.mode == "bar" and self.shown then
    self.out:write("\r", string.rep(" ", self.last_len), "\r")
    self.last_len = 0
    self.shown = false
  end
  self.out:write(s, "\n")
  if self.out.flush then self.out:flush() end
end

function Bar:finish()
  if self.mode == "bar" and self.shown then self.out:write("\n") self.shown = false end
  if self.out.flush then self.out:flush() end
end

return M
