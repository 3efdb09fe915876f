-- lomo.svg
local check = require "check"
local svg = require "lomo.svg"

local T = {}

-- a small well-formedness check: balanced tags, quoted attributes, escaped text
local function well_formed(s)
  check.truthy(s:sub(1, 38) == '<?xml version="1.0" encoding="UTF-8"?>', "XML declaration")
  local body = s:gsub("^<%?xml.-%?>%s*", "")
  local stack = {}
  local pos = 1
  while true do
    local a, b, tag = body:find("(<[^>]*>)", pos)
    local text = body:sub(pos, (a or (#body + 1)) - 1)
    check.truthy(not text:find("<", 1, true), "raw '<' in text")
    for ent in text:gmatch("&([^;]*);") do
      check.truthy(({amp = 1, lt = 1, gt = 1, quot = 1, apos = 1})[ent], "unknown entity " .. ent)
    end
    if not a then break end
    local name = tag:match("^</?([%w:%-]+)")
    check.truthy(name, "bad tag " .. tag)
    local attrs = tag:gsub("^</?[%w:%-]+", ""):gsub("/?>$", "")
    attrs = attrs:gsub('%s+[%w:%-]+="[^"<]*"', "")
    check.truthy(not attrs:find("%S"), "bad attributes in " .. tag)
    if tag:sub(2, 2) == "/" then
      check.eq(table.remove(stack), name, "closing tag")
    elseif tag:sub(-2) ~= "/>" then
      stack[#stack + 1] = name
    end
    pos = b + 1
  end
  check.eq(#stack, 0, "unclosed tags")
end

local function xmllint(s)
  local p = io.popen("command -v xmllint 2>/dev/null")
  local path = p and p:read("l")
  if p then p:close() end
  if not path or path == "" then
    check.note("xmllint: not installed; SVGs checked by the built-in well-formedness check only")
    return
  end
  local dir = check.tmpdir()
  check.write(dir .. "/c.svg", s)
  local ok = os.execute("xmllint --noout '" .. dir .. "/c.svg' 2>/dev/null")
  check.rmtree(dir)
  check.truthy(ok, "xmllint rejects the SVG")
end

function T.loss_curve_is_a_standalone_svg_with_axes_labels_and_polyline()
  local losses = {}
  for i = 1, 120 do losses[i] = 3 * math.exp(-i / 30) + 0.1 * math.sin(i) end
  local s = svg.loss_curve(losses, {title = "run <1> & \"quotes\"", smooth = 0.9})
  well_formed(s)
  xmllint(s)
  check.truthy(s:find('xmlns="http://www.w3.org/2000/svg"', 1, true))
  check.truthy(s:find("<polyline", 1, true))
  check.truthy(s:find(">step</text>", 1, true) and s:find(">loss</text>", 1, true), "axis labels")
  check.truthy(s:find("run &lt;1&gt; &amp; &quot;quotes&quot;", 1, true), "escaped title")
  local pts = s:match('points="([^"]*)"')
  local n = 0
  for x, y in pts:gmatch("([%d%.%-]+),([%d%.%-]+)") do
    n = n + 1
    x, y = tonumber(x), tonumber(y)
    check.truthy(x >= 0 and x <= 640 and y >= 0 and y <= 400, "point inside the canvas")
  end
  check.eq(n, 120)
end

function T.degenerate_series_still_render()
  for _, series in ipairs({{}, {2.5}, {1, 1, 1}, {0 / 0, 1, math.huge, 2}, {{10, 1}, {20, 0.5}}}) do
    local s = svg.loss_curve(series)
    well_formed(s)
  end
  local s = svg.loss_curve({0 / 0, 1, math.huge, 2})
  local pts = s:match('points="([^"]*)"')
  local n = select(2, pts:gsub(",", ","))
  check.eq(n, 2, "non-finite values skipped")
  local two = svg.loss_curve(nil, {smooth = 0.5, series = {{name = "train", points = {3, 2, 1, 0.5}},
                                             {name = "eval", points = {{1, 3}, {2, 2}, {3, 1.5}}, smooth = false}}})
  check.eq(select(2, two:gsub("<polyline", "")), 3, "raw + smoothed train, raw eval")
  well_formed(two)
  xmllint(two)
  check.truthy(two:find(">eval</text>", 1, true), "legend")
end

function T.nice_ticks()
  local t, step = svg.nice_ticks(0, 10, 5)
  check.eq(step, 2)
  check.eq(t, {0, 2, 4, 6, 8, 10})
  local t2 = svg.nice_ticks(0.13, 0.52, 4)
  check.truthy(#t2 >= 3 and t2[1] >= 0.13 and t2[#t2] <= 0.52)
  check.eq(svg.escape("a<b>&'\""), "a&lt;b&gt;&amp;&apos;&quot;")
end

return T
