-- lomo.schedule
local check = require "check"
local schedule = require "lomo.schedule"

local T = {}

function T.constant_with_and_without_warmup()
  local f = schedule.new{name = "constant", lr = 0.5}
  check.eq(f(1), 0.5)
  check.eq(f(1000), 0.5)
  local g = schedule.new{name = "constant", lr = 1.0, warmup = 4}
  check.near(g(1), 0.25)
  check.near(g(2), 0.5)
  check.near(g(4), 1.0)
  check.near(g(5), 1.0)
end

function T.linear_warmup_then_decay_to_zero()
  local f = schedule.new{name = "linear", lr = 1.0, total = 10, warmup = 2}
  check.near(f(1), 0.5)
  check.near(f(2), 1.0)
  check.near(f(3), 1.0)        -- the first decay step is at peak
  check.near(f(10), 1 / 8)     -- the last step still learns
  check.near(f(11), 0.0)       -- and the line reaches 0 one step later
  check.near(f(50), 0.0)
  for s = 3, 9 do check.truthy(f(s + 1) < f(s), "decreasing at " .. s) end
  local g = schedule.new{name = "linear", lr = 2.0, total = 4}
  check.eq({g(1), g(2), g(3), g(4)}, {2.0, 1.5, 1.0, 0.5})
end

function T.cosine_from_peak_to_min()
  local f = schedule.new{name = "cosine", lr = 1.0, total = 11, warmup = 1, min_lr = 0.1}
  check.near(f(1), 1.0)
  check.near(f(2), 1.0)
  check.near(f(7), 0.1 + 0.9 * 0.5)  -- halfway through the decay
  check.truthy(f(11) > 0.1 and f(11) < 0.15)
  check.near(f(100), 0.1)
  local g = schedule.new{name = "cosine", lr = 1.0, total = 5}
  check.near(g(1), 1.0)
end

function T.warmup_as_ratio_or_steps()
  check.eq(schedule.warmup_steps({warmup = 0.1}, 100), 10)
  check.eq(schedule.warmup_steps({warmup = 5}, 100), 5)
  check.eq(schedule.warmup_steps({warmup = 5.0}, 100), 5)
  check.eq(schedule.warmup_steps({warmup_ratio = 0.25}, 10), 3)
  check.eq(schedule.warmup_steps({warmup_steps = 7}, 10), 7)
  check.eq(schedule.warmup_steps({}, 10), 0)
  local f = schedule.new{name = "linear", lr = 1.0, total = 20, warmup = 0.2}
  check.near(f(4), 1.0)
  check.near(f(2), 0.5)
end

function T.errors_name_the_option()
  check.raises(function() schedule.new{name = "step", lr = 1, total = 3} end, "unknown schedule 'step'")
  check.raises(function() schedule.new{name = "linear", lr = 1} end, "total must be a positive integer")
  check.raises(function() schedule.new{lr = -1} end, "lr must be a non-negative number")
  check.raises(function() schedule.new{name = "linear", lr = 1, total = 5, warmup = 6} end, "longer than the run")
  check.raises(function() schedule.new{name = "constant", lr = 1, warmup = 0.5} end, "needs total")
  check.raises(function() schedule.new{name = "linear", lr = 1, total = 5, warmup = -1} end, "non-negative")
  check.raises(function() schedule.new{name = "linear", lr = 1, total = 5, warmup_ratio = 2} end, "ratio must be in")
  check.raises(function() schedule.new() end, "expected a table")
end

function T.resolve_numbers_functions_and_tables()
  check.eq(schedule.resolve(0.1, 10)(3), 0.1)
  local fn = function(s) return s * 2 end
  check.eq(schedule.resolve(fn, 10), fn)
  local f = schedule.resolve({name = "linear", lr = 1.0, warmup = 0}, 4)
  check.eq(f(1), 1.0)
  check.eq(f(4), 0.25)
  check.raises(function() schedule.resolve("fast", 4) end, "lr must be")
end

return T
