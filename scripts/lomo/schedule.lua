-- lomo.schedule: learning-rate schedules as plain functions of the step.
--
-- new{name = "constant"|"linear"|"cosine", lr = peak, total = steps,
--     warmup = n (integer: steps; float < 1: ratio of total), or warmup_steps= / warmup_ratio=,
--     min_lr = 0 (cosine floor)}
-- returns f(step) for step = 1..total, the step about to be taken:
--   warm-up (step <= W):   lr * step / W            (the first step already learns; step W is at peak)
--   constant:              lr
--   linear:                lr * (total - step + 1) / (total - W)   (peak at W+1, reaching 0 at total+1)
--   cosine:                min_lr + (lr - min_lr) * (1 + cos(pi * (step - W - 1) / (total - W))) / 2
-- Steps past total keep the last value's rule (linear and cosine clamp at 0 / min_lr).

local M = {}

local function fail(fmt, ...)
  error("lomo.schedule: " .. string.format(fmt, ...), 3)
end

-- warmup_steps(opts, total): W from warmup / warmup_steps / warmup_ratio.
function M.warmup_steps(opts, total)
  local w = opts.warmup_steps
  local function ratio(r)
    if type(r) ~= "number" or r < 0 or r > 1 then fail("warm-up ratio must be in [0, 1], got %s", tostring(r)) end
    if total == nil then fail("a warm-up ratio needs total") end
    return math.floor(r * total + 0.5)
  end
  if w == nil and opts.warmup_ratio ~= nil then w = ratio(opts.warmup_ratio)
  end
  if w == nil and opts.warmup ~= nil then
    local v = opts.warmup
    if type(v) ~= "number" or v < 0 then fail("warmup must be a non-negative number, got %s", tostring(v)) end
    if math.type(v) == "integer" or v >= 1 then w = math.floor(v) else w = ratio(v) end
  end
  w = w or 0
  if math.tointeger(w) == nil or w < 0 then fail("warmup steps must be a non-negative integer, got %s", tostring(w)) end
  if total and w > total then fail("warm-up (%d steps) is longer than the run (%d steps)", w, total) end
  return math.tointeger(w)
end

function M.new(opts)
  if type(opts) ~= "table" then fail("expected a table of options") end
  local name = opts.name or "constant"
  local lr = opts.lr
  if type(lr) ~= "number" or lr < 0 then fail("lr must be a non-negative number, got %s", tostring(lr)) end
  local total = opts.total
  if name ~= "constant" or total ~= nil then
    if math.tointeger(total) == nil or total <= 0 then fail("total must be a positive integer, got %s", tostring(total)) end
  end
  local W = M.warmup_steps(opts, total)
  local min_lr = opts.min_lr or 0
  local function warm(step)
    if step <= W then return lr * step / W end
  end
  if name == "constant" then
    return function(step) return warm(step) or lr end
  elseif name == "linear" then
    local span = total - W
    return function(step)
      local w = warm(step)
      if w then return w end
      if span <= 0 then return 0.0 end
      return lr * math.max(0, total - step + 1) / span
    end
  elseif name == "cosine" then
    local span = total - W
    return function(step)
      local w = warm(step)
      if w then return w end
      if span <= 0 then return min_lr end
      local p = math.min(1, (step - W - 1) / span)
      return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))
    end
  end
  fail("unknown schedule '%s' (constant, linear, cosine)", tostring(name))
end

-- resolve(lr_or_schedule, total): a function of the step from a number, a function or a table
-- of schedule options (total filled in when absent).
function M.resolve(v, total)
  if type(v) == "number" then return function() return v end end
  if type(v) == "function" then return v end
  if type(v) == "table" then
    local o = {}
    for k, x in pairs(v) do o[k] = x end
    o.total = o.total or total
    return M.new(o)
  end
  fail("lr must be a number, a function of the step or a schedule table, got %s", type(v))
end

return M
