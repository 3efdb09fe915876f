-- lomo.svg: a standalone SVG line chart of a loss curve (axes, ticks, labels, polyline).

local M = {}

local function esc(s)
  return (tostring(s):gsub("[&<>\"']", {["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                                         ['"'] = "&quot;", ["'"] = "&apos;"}))
end
M.escape = esc

local function finite(v) return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge end

-- nice_ticks(lo, hi, n): about n round tick values covering [lo, hi].
function M.nice_ticks(lo, hi, n)
  n = n or 5
  if hi <= lo then hi = lo + 1 end
  local raw = (hi - lo) / n
  local mag = 10 ^ math.floor(math.log(raw, 10))
  local step
  for _, k in ipairs({1, 2, 2.5, 5, 10}) do
    step = k * mag
    if step >= raw then break end
  end
  local ticks = {}
  local first = math.ceil(lo / step - 1e-9) * step
  local v = first
  while v <= hi + step * 1e-9 do
    ticks[#ticks + 1] = math.abs(v) < step * 1e-9 and 0.0 or v
    v = v + step
  end
  return ticks, step
end

local function fmt(v)
  if v == math.floor(v) and math.abs(v) < 1e15 then return string.format("%d", math.floor(v)) end
  local s = string.format("%.4g", v)
  return s
end

-- loss_curve(series, opts) -> string.
-- series: an array of losses (x = 1, 2, ...) or of {x, y} pairs; or opts.series = {{name=,
-- points=, color=, smooth=}, ...} for several lines (e.g. train and eval; smooth = false turns
-- opts.smooth off for one line). Non-finite values are skipped.
-- opts: title, xlabel ("step"), ylabel ("loss"), width (640), height (400), smooth (EMA
-- factor in (0, 1) drawn over the raw curve, default none).
function M.loss_curve(series, opts)
  opts = opts or {}
  local lines = opts.series
  if not lines then lines = {{name = opts.name or "loss", points = series, color = "#1f77b4"}} end
  local palette = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"}
  local W, H = opts.width or 640, opts.height or 400
  local ml, mr, mt, mb = 64, 16, 36, 48
  local pw, ph = W - ml - mr, H - mt - mb

  local norm = {}
  local xmin, xmax, ymin, ymax = math.huge, -math.huge, math.huge, -math.huge
  for li, l in ipairs(lines) do
    local pts = {}
    for i, p in ipairs(l.points or {}) do
      local x, y
      if type(p) == "table" then x, y = p[1], p[2] else x, y = i, p end
      if finite(x) and finite(y) then
        pts[#pts + 1] = {x, y}
        if x < xmin then xmin = x end
        if x > xmax then xmax = x end
        if y < ymin then ymin = y end
        if y > ymax then ymax = y end
      end
    end
    local smooth = l.smooth
    if smooth == nil then smooth = opts.smooth end
    norm[li] = {name = l.name or ("series " .. li), color = l.color or palette[(li - 1) % #palette + 1], pts = pts,
                smooth = smooth}
  end
  if xmin == math.huge then xmin, xmax, ymin, ymax = 0, 1, 0, 1 end
  if xmax == xmin then xmin, xmax = xmin - 1, xmax + 1 end
  if ymax == ymin then ymin, ymax = ymin - 0.5, ymax + 0.5 end
  local xt = M.nice_ticks(xmin, xmax, 6)
  local yt, ystep = M.nice_ticks(ymin, ymax, 5)
  -- widen the y range to whole ticks so the curve sits inside the grid
  ymin = math.min(ymin, math.floor(ymin / ystep) * ystep)
  ymax = math.max(ymax, math.ceil(ymax / ystep) * ystep)
  yt = M.nice_ticks(ymin, ymax, 5)

  local function sx(x) return ml + (x - xmin) / (xmax - xmin) * pw end
  local function sy(y) return mt + ph - (y - ymin) / (ymax - ymin) * ph end

  local o = {}
  local function add(s, ...) o[#o + 1] = string.format(s, ...) end
  add('<?xml version="1.0" encoding="UTF-8"?>\n')
  add('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">\n', W, H, W, H)
  add('<rect x="0" y="0" width="%d" height="%d" fill="white"/>\n', W, H)
  if opts.title then
    add('<text x="%.1f" y="20" text-anchor="middle" font-size="14">%s</text>\n', W / 2, esc(opts.title))
  end
  -- grid and ticks
  for _, v in ipairs(yt) do
    if v >= ymin - 1e-12 and v <= ymax + 1e-12 then
      local y = sy(v)
      add('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e0e0e0"/>\n', ml, y, ml + pw, y)
      add('<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>\n', ml - 6, y, esc(fmt(v)))
    end
  end
  for _, v in ipairs(xt) do
    if v >= xmin - 1e-12 and v <= xmax + 1e-12 then
      local x = sx(v)
      add('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e0e0e0"/>\n', x, mt, x, mt + ph)
      add('<text x="%.1f" y="%d" text-anchor="middle">%s</text>\n', x, mt + ph + 16, esc(fmt(v)))
    end
  end
  -- axes
  add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>\n', ml, mt + ph, ml + pw, mt + ph)
  add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>\n', ml, mt, ml, mt + ph)
  add('<text x="%.1f" y="%d" text-anchor="middle">%s</text>\n', ml + pw / 2, H - 8, esc(opts.xlabel or "step"))
  add('<text x="14" y="%.1f" text-anchor="middle" transform="rotate(-90 14 %.1f)">%s</text>\n',
      mt + ph / 2, mt + ph / 2, esc(opts.ylabel or "loss"))

  local function polyline(pts, color, width, opacity)
    if #pts == 0 then return end
    local coords = {}
    for i, p in ipairs(pts) do coords[i] = string.format("%.2f,%.2f", sx(p[1]), sy(p[2])) end
    add('<polyline fill="none" stroke="%s" stroke-width="%s" stroke-opacity="%s" points="%s"/>\n',
        color, width, opacity, table.concat(coords, " "))
    if #pts == 1 then
      add('<circle cx="%.2f" cy="%.2f" r="3" fill="%s"/>\n', sx(pts[1][1]), sy(pts[1][2]), color)
    end
  end
  for li, l in ipairs(norm) do
    local a = l.smooth
    if a and a > 0 and a < 1 and #l.pts > 2 then
      polyline(l.pts, l.color, 1, 0.35)
      local sm, e = {}, nil
      for i, p in ipairs(l.pts) do
        e = e and (a * e + (1 - a) * p[2]) or p[2]
        sm[i] = {p[1], e}
      end
      polyline(sm, l.color, 2, 1)
    else
      polyline(l.pts, l.color, 1.5, 1)
    end
    if #norm > 1 then
      local ly = mt + 14 * li
      add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>\n', ml + pw - 110, ly, ml + pw - 90, ly, l.color)
      add('<text x="%d" y="%d" dominant-baseline="middle">%s</text>\n', ml + pw - 84, ly, esc(l.name))
    end
  end
  add('</svg>\n')
  return table.concat(o)
end

return M
