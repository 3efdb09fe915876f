-- Stand-ins for the bindings' objects, with the contract's method names, so the recipe
-- library is tested under a stock lua5.4: a byte tokenizer, models for eval, a model and
-- optimizer whose "training" is deterministic, and a small JSON codec (tests only; the
-- library takes JSON from lomo.json).
local M = {}

---------------------------------------------------------------------------------------------
-- tokenizer: one id per byte; bos = 256, eos = 257
local Tok = {}
Tok.__index = Tok
function M.tokenizer(opts)
  opts = opts or {}
  local t = setmetatable({}, Tok)
  if opts.bos ~= false then t.bos = 256 end
  t.add_bos = t.bos ~= nil and opts.add_bos ~= false   -- as Llama's: encode(add_special) starts with it
  if opts.eos ~= false then t.eos = 257 end
  return t
end
function Tok:encode(s, o)
  assert(type(s) == "string", "encode: text must be a string")
  local ids = {}
  if o and o.add_special and self.bos then ids[1] = self.bos end
  for i = 1, #s do ids[#ids + 1] = s:byte(i) end
  return ids
end
function Tok:decode(ids, o)
  local out = {}
  for _, id in ipairs(ids) do
    if id < 256 then out[#out + 1] = string.char(id)
    elseif not (o and o.skip_special) then out[#out + 1] = id == 256 and "<s>" or "</s>" end
  end
  return table.concat(out)
end
function Tok:vocab_size() return 258 end

---------------------------------------------------------------------------------------------
-- scoring model: log p(target) = -(target % 10) / 10 - 0.01, independent of the context;
-- ignored positions return -1000 so that counting one would show.
local Scorer = {}
Scorer.__index = Scorer
function M.scorer() return setmetatable({calls = 0, rows_seen = 0}, Scorer) end
function M.logp(target) return -(target % 10) / 10 - 0.01 end
function Scorer:token_logprobs(tokens, targets)
  self.calls = self.calls + 1
  local out = {}
  for b = 1, #tokens do
    assert(#tokens[b] == #targets[b], "row lengths differ")
    self.rows_seen = self.rows_seen + 1
    local row = {}
    for t = 1, #tokens[b] do
      row[t] = targets[b][t] == -100 and -1000.0 or M.logp(targets[b][t])
    end
    out[b] = row
  end
  return out
end

-- counting model for generation: V = 10; the next token after x is (x + 1) % 10 with logit 5
local Counter = {}
Counter.__index = Counter
function M.counter(V) return setmetatable({V = V or 10, calls = 0}, Counter) end
function Counter:next_logits(ids)
  self.calls = self.calls + 1
  local l = {}
  for i = 1, self.V do l[i] = 0.0 end
  l[(ids[#ids] + 1) % self.V + 1] = 5.0
  return l
end

---------------------------------------------------------------------------------------------
-- trainable model: K weights; the "loss" of a batch depends on every token's id and position
-- in the batch, on the weights, hence on the data order and on all earlier steps.
local K = 7
local Model = {}
Model.__index = Model
function M.model(seed)
  local w = {}
  for k = 1, K do w[k] = 0.1 * k + 0.01 * (seed or 0) end
  return setmetatable({w = w, saves = 0}, Model)
end
local function write_numbers(path, nums)
  local f = assert(io.open(path, "wb"))
  for _, v in ipairs(nums) do f:write(string.format("%.17g\n", v)) end
  f:close()
end
local function read_numbers(path)
  local f = assert(io.open(path, "rb"))
  local out = {}
  for l in f:lines() do out[#out + 1] = tonumber(l) end
  f:close()
  return out
end
function Model:save(dir)
  self.saves = self.saves + 1
  write_numbers(dir .. "/weights.txt", self.w)
end
function M.load_model(dir)
  return setmetatable({w = read_numbers(dir .. "/weights.txt"), saves = 0}, Model)
end
-- eval: the mean squared weight (any deterministic function of the weights)
function Model:score()
  local s = 0
  for k = 1, K do s = s + self.w[k] * self.w[k] end
  return s / K
end

local Opt = {}
Opt.__index = Opt
function M.optimizer(m) return setmetatable({m = m, mom = {0, 0, 0, 0, 0, 0, 0}, n = 0}, Opt) end
function Opt:step(tokens, targets, lr)
  assert(type(lr) == "number", "lr must be a number")
  local w, g = self.m.w, {0, 0, 0, 0, 0, 0, 0}
  local loss, n = 0.0, 0
  for b = 1, #tokens do
    for t = 1, #tokens[b] do
      if targets[b][t] ~= -100 then
        local k = (tokens[b][t] * 3 + t + b) % K + 1
        local d = w[k] - targets[b][t] * 0.01
        loss, n = loss + d * d, n + 1
        g[k] = g[k] + 2 * d
      end
    end
  end
  if n == 0 then return {loss = 0 / 0, skipped = true, loss_scale = 1} end
  local norm = 0
  for k = 1, K do
    local gk = g[k] / n
    norm = norm + gk * gk
    self.mom[k] = 0.9 * self.mom[k] + gk
    w[k] = w[k] - lr * self.mom[k]
  end
  self.n = self.n + 1
  return {loss = loss / n, grad_norm = math.sqrt(norm), skipped = false, loss_scale = 1}
end
function Opt:steps() return self.n end
function Opt:save(path)
  local nums = {self.n}
  for k = 1, K do nums[#nums + 1] = self.mom[k] end
  write_numbers(path, nums)
end
function Opt:load(path)
  local nums = read_numbers(path)
  self.n = math.tointeger(nums[1])
  for k = 1, K do self.mom[k] = nums[k + 1] end
end

---------------------------------------------------------------------------------------------
-- JSON (tests only)
local json = {}
M.json = json
local esc = {['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t'}
local function enc(v, out)
  local t = type(v)
  if v == nil or v == json.null then out[#out + 1] = "null"
  elseif t == "boolean" then out[#out + 1] = tostring(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then error("json.encode: non-finite number") end
    out[#out + 1] = math.type(v) == "integer" and string.format("%d", v) or string.format("%.17g", v)
  elseif t == "string" then
    out[#out + 1] = '"' .. v:gsub('[%c"\\]', function(c) return esc[c] or string.format("\\u%04x", c:byte()) end) .. '"'
  elseif t == "table" then
    local n = #v
    local is_array = n > 0 or next(v) == nil
    if is_array then
      for k in pairs(v) do if math.type(k) ~= "integer" or k < 1 or k > n then is_array = false break end end
    end
    if is_array then
      out[#out + 1] = "["
      for i = 1, n do if i > 1 then out[#out + 1] = "," end enc(v[i], out) end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        enc(k, out)
        out[#out + 1] = ":"
        local x = v[k]
        if x == nil then x = v[math.tointeger(tonumber(k))] end
        enc(x, out)
      end
      out[#out + 1] = "}"
    end
  else
    error("json.encode: cannot encode " .. t)
  end
end
json.null = setmetatable({}, {__name = "json.null"})
function json.encode(v)
  local out = {}
  enc(v, out)
  return table.concat(out)
end
function json.decode(s)
  local i = 1
  local function ws() i = s:find("[^ \t\r\n]", i) or (#s + 1) end
  local function err(msg) error(string.format("json.decode: %s at byte %d", msg, i), 0) end
  local val
  local function str()
    local out = {}
    i = i + 1
    while true do
      local c = s:sub(i, i)
      if c == "" then err("unterminated string") end
      if c == '"' then i = i + 1 break end
      if c == "\\" then
        local e = s:sub(i + 1, i + 1)
        local map = {b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\", ["/"] = "/"}
        if e == "u" then
          out[#out + 1] = utf8.char(tonumber(s:sub(i + 2, i + 5), 16))
          i = i + 6
        elseif map[e] then
          out[#out + 1] = map[e]
          i = i + 2
        else err("bad escape") end
      else
        out[#out + 1] = c
        i = i + 1
      end
    end
    return table.concat(out)
  end
  function val()
    ws()
    local c = s:sub(i, i)
    if c == "{" then
      local t = {}
      i = i + 1 ws()
      if s:sub(i, i) == "}" then i = i + 1 return t end
      while true do
        ws()
        if s:sub(i, i) ~= '"' then err("expected a key") end
        local k = str()
        ws()
        if s:sub(i, i) ~= ":" then err("expected ':'") end
        i = i + 1
        t[k] = val()
        ws()
        local d = s:sub(i, i)
        i = i + 1
        if d == "}" then return t end
        if d ~= "," then err("expected ',' or '}'") end
      end
    elseif c == "[" then
      local t = {}
      i = i + 1 ws()
      if s:sub(i, i) == "]" then i = i + 1 return t end
      while true do
        t[#t + 1] = val()
        ws()
        local d = s:sub(i, i)
        i = i + 1
        if d == "]" then return t end
        if d ~= "," then err("expected ',' or ']'") end
      end
    elseif c == '"' then return str()
    elseif s:sub(i, i + 3) == "true" then i = i + 4 return true
    elseif s:sub(i, i + 4) == "false" then i = i + 5 return false
    elseif s:sub(i, i + 3) == "null" then i = i + 4 return json.null
    else
      local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
      if not num or num == "" then err("unexpected character") end
      i = i + #num
      if num:find("[.eE]") then return tonumber(num) end
      return math.tointeger(tonumber(num)) or tonumber(num)
    end
  end
  local v = val()
  ws()
  if i <= #s then err("trailing characters") end
  return v
end

return M
