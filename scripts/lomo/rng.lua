-- lomo.rng: a reproducible PRNG in Lua 5.4 integers (xoshiro128**, seeded by splitmix64).
-- The same seed gives the same stream on every platform and every run; the state is four
-- 32-bit integers, so it goes through JSON unchanged (checkpoints save it).

local M = {}

local MASK32 = 0xffffffff

local Rng = {}
Rng.__index = Rng
Rng.__name = "lomo.rng"

local function rotl32(x, k)
  return ((x << k) | (x >> (32 - k))) & MASK32
end

-- splitmix64 step: returns (new state, output); 64-bit wrap-around is Lua 5.4's integer arithmetic.
local function splitmix64(x)
  x = x + 0x9e3779b97f4a7c15
  local z = x
  z = (z ~ (z >> 30)) * 0xbf58476d1ce4e5b9
  z = (z ~ (z >> 27)) * 0x94d049bb133111eb
  return x, z ~ (z >> 31)
end
M.splitmix64 = splitmix64

local function check_seed(seed, what)
  local s = math.tointeger(seed)
  if s == nil then
    error(string.format("%s: seed must be an integer, got %s", what, tostring(seed)), 3)
  end
  return s
end

-- new(seed): seed is any integer (negative ones included).
function M.new(seed)
  local x = check_seed(seed == nil and 0 or seed, "lomo.rng.new")
  local s = {}
  local a, b
  x, a = splitmix64(x)
  x, b = splitmix64(x)
  s[1], s[2], s[3], s[4] = a & MASK32, a >> 32, b & MASK32, b >> 32
  if s[1] | s[2] | s[3] | s[4] == 0 then s[1] = 1 end -- the all-zero state is a fixed point
  return setmetatable({s = s}, Rng)
end

-- from_state{a, b, c, d}: the inverse of rng:state(); numbers from JSON may arrive as floats.
function M.from_state(st)
  if type(st) ~= "table" or #st ~= 4 then
    error("lomo.rng.from_state: expected an array of 4 integers", 2)
  end
  local s = {}
  for i = 1, 4 do
    local v = math.tointeger(st[i])
    if v == nil or v < 0 or v > MASK32 then
      error(string.format("lomo.rng.from_state: element %d is not a 32-bit unsigned integer (%s)",
                          i, tostring(st[i])), 2)
    end
    s[i] = v
  end
  if s[1] | s[2] | s[3] | s[4] == 0 then
    error("lomo.rng.from_state: the all-zero state is invalid", 2)
  end
  return setmetatable({s = s}, Rng)
end

function M.is_rng(v)
  return getmetatable(v) == Rng
end

-- next32(): a uniform integer in [0, 2^32).
function Rng:next32()
  local s = self.s
  local result = (rotl32((s[2] * 5) & MASK32, 7) * 9) & MASK32
  local t = (s[2] << 9) & MASK32
  s[3] = s[3] ~ s[1]
  s[4] = s[4] ~ s[2]
  s[2] = s[2] ~ s[3]
  s[1] = s[1] ~ s[4]
  s[3] = s[3] ~ t
  s[4] = rotl32(s[4], 11)
  return result
end

-- random(): a float in [0, 1) with 53 random bits.
-- random(n): an integer in [1, n]; random(m, n): an integer in [m, n]. Unbiased (rejection).
function Rng:random(m, n)
  if m == nil then
    local a, b = self:next32() >> 5, self:next32() >> 6 -- 27 + 26 bits
    return (a * 67108864 + b) / 9007199254740992.0
  end
  if n == nil then m, n = 1, m end
  local lo, hi = math.tointeger(m), math.tointeger(n)
  if lo == nil or hi == nil then
    error("lomo.rng:random: bounds must be integers", 2)
  end
  if hi < lo then
    error(string.format("lomo.rng:random: empty interval [%d, %d]", lo, hi), 2)
  end
  local span = hi - lo + 1
  if span > MASK32 + 1 or span <= 0 then
    error("lomo.rng:random: interval wider than 2^32", 2)
  end
  local limit = ((MASK32 + 1) // span) * span
  while true do
    local r = self:next32()
    if r < limit then return lo + r % span end
  end
end

-- permutation(n): a uniformly random array holding 1..n (Fisher-Yates).
function Rng:permutation(n)
  local p = {}
  for i = 1, n do p[i] = i end
  for i = n, 2, -1 do
    local j = self:random(i)
    p[i], p[j] = p[j], p[i]
  end
  return p
end

function Rng:state()
  local s = self.s
  return {s[1], s[2], s[3], s[4]}
end

function Rng:set_state(st)
  self.s = M.from_state(st).s
end

function Rng:clone()
  return M.from_state(self:state())
end

-- derive(seed, ...): a seed mixed from several integers (e.g. seed and epoch), stable across runs.
function M.derive(seed, ...)
  local x = check_seed(seed, "lomo.rng.derive")
  local out
  x, out = splitmix64(x)
  for i = 1, select("#", ...) do
    local v = check_seed((select(i, ...)), "lomo.rng.derive")
    x, out = splitmix64(out ~ v)
  end
  return out
end

return M
