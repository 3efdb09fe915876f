-- lomo.profile: the rows and report made from a context's profile (the counts themselves are
-- checked against the graph in tests/test_profile.c).
local check = require "check"
local profile = require "lomo.profile"

local T = {}

local stats = {
  matmul = {calls = 30, seconds = 3.0, flops = 6e12},
  rmsnorm = {calls = 5, seconds = 1.0, flops = 0},
  rope = {calls = 0, seconds = 0, flops = 0},
}

function T.rows_are_the_ops_that_ran_slowest_first()
  local rows, total = profile.rows(stats)
  check.eq(#rows, 2)
  check.eq(total, 4.0)
  check.eq(rows[1].op, "matmul")
  check.eq(rows[1].share, 0.75)
  check.eq(rows[1].tflops, 2.0)
  check.eq(rows[2].op, "rmsnorm")
  check.eq(rows[2].tflops, nil)
end

function T.report_has_a_line_per_op_and_a_total()
  local text = profile.report(stats)
  check.truthy(text:find("matmul%s+30%s+3%.0000%s+75%.0%%%s+2%.000"), text)
  check.truthy(text:find("rmsnorm%s+5%s+1%.0000%s+25%.0%%%s+%-"), text)
  check.truthy(not text:find("rope"), "an op that never ran is listed:\n" .. text)
  check.truthy(text:find("total%s+4%.0000%s+100%.0%%"), text)
end

function T.an_empty_profile_reports_zero()
  local text = profile.report({})
  check.truthy(text:find("total%s+0%.0000%s+0%.0%%"), text)
end

function T.bad_input_is_named()
  local ok, err = pcall(profile.rows, nil)
  check.truthy(not ok and tostring(err):find("expected the table of ctx:profile_stats()", 1, true), tostring(err))
  ok, err = pcall(profile.rows, {matmul = {calls = "3"}})
  check.truthy(not ok and tostring(err):find("entry 'matmul' needs numbers", 1, true), tostring(err))
end

return T
