-- lomo.data: streaming readers (JSONL, CSV, text), deterministic shuffles and splits,
-- tokenization with prompt masking, padding and packing into B x T batches, and a
-- resumable batch loader.
--
-- An example is {input = {ids...}, target = {ids...}} of equal length: target[i] is the
-- id that should follow input[i], or -100 where no loss is taken (prompt, padding).

local rng_mod = require "lomo.rng"
local util = require "lomo.util"

local M = {}

M.IGNORE = -100

local BOM = "\239\187\191" -- a UTF-8 byte-order mark, dropped at the start of a file

local function fail(who, fmt, ...)
  error(who .. ": " .. string.format(fmt, ...), 3)
end

local function open(path, who)
  if type(path) ~= "string" then fail(who, "path must be a string, got %s", type(path)) end
  local f, err = io.open(path, "rb")
  if not f then error(who .. ": " .. tostring(err), 3) end
  return f
end

local function as_rng(seed_or_rng, who)
  if rng_mod.is_rng(seed_or_rng) then return seed_or_rng end
  if math.tointeger(seed_or_rng) == nil then
    fail(who, "seed must be an integer or a lomo.rng, got %s", tostring(seed_or_rng))
  end
  return rng_mod.new(seed_or_rng)
end

---------------------------------------------------------------------------------------------
-- Readers. Each returns an iterator; the file is read one line at a time and closed at the end.

-- lines(path): each line without its end-of-line ("\n" or "\r\n"), and its line number.
function M.lines(path)
  local f = open(path, "lomo.data.lines")
  local n = 0
  return function()
    if not f then return nil end
    local line = f:read("l")
    if line == nil then f:close() f = nil return nil end
    n = n + 1
    if n == 1 and line:sub(1, 3) == BOM then line = line:sub(4) end
    if line:sub(-1) == "\r" then line = line:sub(1, -2) end
    return line, n
  end
end

-- jsonl(path, decode): each record and its line number; blank lines are skipped.
-- decode defaults to lomo.json.decode; passing it keeps this testable without the bindings.
function M.jsonl(path, decode)
  if decode == nil then
    local b = util.bindings()
    decode = b and b.json and b.json.decode
    if not decode then
      fail("lomo.data.jsonl", "no JSON decoder: pass decode or load the lomo bindings")
    end
  elseif type(decode) ~= "function" then
    fail("lomo.data.jsonl", "decode must be a function, got %s", type(decode))
  end
  local next_line = M.lines(path)
  return function()
    while true do
      local line, n = next_line()
      if line == nil then return nil end
      if line:find("%S") then
        local ok, rec = pcall(decode, line)
        if not ok then
          error(string.format("%s:%d: invalid JSON: %s", path, n, tostring(rec)), 2)
        end
        return rec, n
      end
    end
  end
end

-- CSV per RFC 4180: fields separated by sep, optionally quoted with "..." where "" is a quote
-- and quoted fields may hold separators and line breaks.
-- csv(path, {header = true, sep = ","}): with a header, records are tables keyed by column
-- name; without, arrays. Returns each record and its record number (header excluded).
function M.csv(path, opts)
  opts = opts or {}
  local sep = opts.sep or ","
  if #sep ~= 1 or sep == '"' or sep == "\n" then
    fail("lomo.data.csv", "sep must be one character other than a quote or newline")
  end
  local header = opts.header ~= false
  local f = open(path, "lomo.data.csv")
  local line_no = 0
  local function read_line()
    local l = f:read("L")
    if l == nil then return nil end
    line_no = line_no + 1
    if line_no == 1 and l:sub(1, 3) == BOM then l = l:sub(4) end
    return l
  end
  local function parse_record()
    local line = read_line()
    if line == nil then return nil end
    local start_line = line_no
    local fields, buf = {}, {}
    local i, inq = 1, false
    while true do
      if i > #line then
        if inq then
          local more = read_line()
          if more == nil then
            error(string.format("%s:%d: unterminated quoted field", path, start_line), 3)
          end
          line, i = more, 1
        else
          break
        end
      else
        local c = line:sub(i, i)
        if inq then
          if c == '"' then
            if line:sub(i + 1, i + 1) == '"' then
              buf[#buf + 1] = '"'
              i = i + 2
            else
              inq = false
              i = i + 1
            end
          else
            local j = line:find('"', i, true) or (#line + 1)
            buf[#buf + 1] = line:sub(i, j - 1)
            i = j
          end
        elseif c == '"' then
          if #buf > 0 then
            error(string.format("%s:%d: quote inside an unquoted field", path, line_no), 3)
          end
          inq = true
          i = i + 1
        elseif c == sep then
          fields[#fields + 1] = table.concat(buf)
          buf = {}
          i = i + 1
        elseif c == "\r" or c == "\n" then
          break
        else
          local j = line:find("[\r\n\"" .. (sep == "%" and "%%" or sep:gsub("%p", "%%%0")) .. "]", i)
          j = j or (#line + 1)
          buf[#buf + 1] = line:sub(i, j - 1)
          i = j
        end
      end
    end
    fields[#fields + 1] = table.concat(buf)
    return fields, start_line
  end

  local names
  if header then
    names = parse_record()
    if names == nil then f:close() f = nil end
  end
  local n = 0
  return function()
    while f do
      local fields, at = parse_record()
      if fields == nil then f:close() f = nil return nil end
      if not (#fields == 1 and fields[1] == "") then -- skip blank lines
        n = n + 1
        if not names then return fields, n end
        if #fields ~= #names then
          error(string.format("%s:%d: expected %d fields, found %d", path, at, #names, #fields), 2)
        end
        local rec = {}
        for k = 1, #names do rec[names[k]] = fields[k] end
        return rec, n
      end
    end
    return nil
  end
end

-- text(path, {chunk = bytes}): the file in chunks (default 1 MiB).
function M.text(path, opts)
  local size = (opts and opts.chunk) or (1 << 20)
  if math.tointeger(size) == nil or size <= 0 then
    fail("lomo.data.text", "chunk must be a positive integer")
  end
  local f = open(path, "lomo.data.text")
  return function()
    if not f then return nil end
    local s = f:read(size)
    if s == nil then f:close() f = nil end
    return s
  end
end

function M.read_text(path)
  local f = open(path, "lomo.data.read_text")
  local s = f:read("a")
  f:close()
  return s
end

-- collect(iter [, limit]): the first values of an iterator as an array.
function M.collect(iter, limit)
  local out = {}
  for v in iter do
    out[#out + 1] = v
    if limit and #out >= limit then break end
  end
  return out
end

---------------------------------------------------------------------------------------------
-- Shuffles and splits.

-- shuffle(t, seed_or_rng): a shuffled copy of array t; the same seed gives the same order.
function M.shuffle(t, seed_or_rng)
  local r = as_rng(seed_or_rng, "lomo.data.shuffle")
  local p = r:permutation(#t)
  local out = {}
  for i = 1, #p do out[i] = t[p[i]] end
  return out
end

-- split(t, {eval = ratio (0..1) or count, seed = n}): train, eval arrays; which items go to
-- eval depends only on the seed and #t; each part keeps the original order.
function M.split(t, opts)
  local who = "lomo.data.split"
  if type(t) ~= "table" then fail(who, "expected an array") end
  opts = opts or {}
  local e = opts.eval or 0.1
  local n_eval
  if math.type(e) == "integer" then
    n_eval = e
  elseif type(e) == "number" and e >= 0 and e <= 1 then
    n_eval = math.floor(#t * e + 0.5)
  else
    fail(who, "eval must be a ratio in [0, 1] or a count, got %s", tostring(e))
  end
  if n_eval < 0 or n_eval > #t then
    fail(who, "eval count %d outside [0, %d]", n_eval, #t)
  end
  local p = as_rng(opts.seed or 0, who):permutation(#t)
  local is_eval = {}
  for i = 1, n_eval do is_eval[p[i]] = true end
  local train, eval = {}, {}
  for i = 1, #t do
    if is_eval[i] then eval[#eval + 1] = t[i] else train[#train + 1] = t[i] end
  end
  return train, eval
end

---------------------------------------------------------------------------------------------
-- Tokenization with prompt masking.

local function encode_text(tok, s, who, field)
  if s == nil or s == "" then return {} end
  if type(s) ~= "string" then fail(who, "%s must be a string, got %s", field, type(s)) end
  local ids = tok:encode(s, {add_special = false})
  if type(ids) ~= "table" then fail(who, "tokenizer returned %s for %s", type(ids), field) end
  return ids
end

-- tok.bos or tok.eos (what = "bos" or "eos"), an error when the tokenizer has none
local function special(tok, what, who)
  if tok[what] == nil then fail(who, "%s requested but the tokenizer has none", what) end
  return tok[what]
end

-- Whether an encoding starts with the BOS: opts.bos when given, else the tokenizer's own rule
-- (tok.add_bos, from its tokenizer.json or GGUF metadata).
function M.wants_bos(tok, opts)
  if opts and opts.bos ~= nil then return opts.bos and true or false end
  return tok.add_bos == true
end

-- example(tok, prompt, answer, opts): the example for "prompt then answer" with the loss on
-- the answer only. opts: bos (default: tok.add_bos, the tokenizer's own rule), eos (default
-- true: the answer ends with tok.eos), max_len (tokens in input; the prompt is cut from the
-- left so the answer survives), train_on_prompt (default false).
-- Without a prompt (prompt nil or ""), every next token is a target: plain language modelling.
function M.example(tok, prompt, answer, opts)
  local who = "lomo.data.example"
  if type(tok) ~= "table" and type(tok) ~= "userdata" then fail(who, "tokenizer expected") end
  opts = opts or {}
  local p = encode_text(tok, prompt, who, "prompt")
  local a = encode_text(tok, answer, who, "answer")
  local full = {}
  if M.wants_bos(tok, opts) then full[1] = special(tok, "bos", who) end
  for i = 1, #p do full[#full + 1] = p[i] end
  local n_prompt = #full
  for i = 1, #a do full[#full + 1] = a[i] end
  local use_eos = opts.eos
  if use_eos == nil then use_eos = true end
  if use_eos then full[#full + 1] = special(tok, "eos", who) end
  return M.from_ids(full, opts.train_on_prompt and 0 or n_prompt, opts.max_len)
end

-- input = ids[first..n-1], target[i] = ids[i+1] where carries(i+1); at most max_len positions,
-- the start cut (the answer is at the end)
local function shifted(ids, carries, max_len)
  local n = #ids
  local first = 1
  if max_len and n - 1 > max_len then first = n - max_len end
  local input, target = {}, {}
  for i = first, n - 1 do
    input[#input + 1] = ids[i]
    target[#target + 1] = carries(i + 1) and ids[i + 1] or M.IGNORE
  end
  return {input = input, target = target}
end

-- from_ids(ids, n_prompt, max_len): the example for a token sequence whose first n_prompt ids
-- carry no loss. input = ids[1..n-1]; target[i] = ids[i+1] when ids[i+1] is past the prompt.
function M.from_ids(ids, n_prompt, max_len)
  n_prompt = n_prompt or 0
  return shifted(ids, function(k) return k > n_prompt end, max_len)
end

-- segments(tok, pieces, opts): the example for a text in pieces {text =, train = bool} (a chat
-- from lomo.prompts.chat_turns), each tokenized on its own, with the loss on the tokens of the
-- train pieces only. opts: bos (default false: chat templates write their own), eos (default
-- false; true adds tok.eos as a target), max_len (tokens in input; the start is cut).
function M.segments(tok, pieces, opts)
  local who = "lomo.data.segments"
  if type(tok) ~= "table" and type(tok) ~= "userdata" then fail(who, "tokenizer expected") end
  if type(pieces) ~= "table" or #pieces == 0 then fail(who, "pieces must be a non-empty array") end
  opts = opts or {}
  local ids, train = {}, {}
  local function add(id, t) ids[#ids + 1], train[#train + 1] = id, t end
  if opts.bos then add(special(tok, "bos", who), false) end
  for i, piece in ipairs(pieces) do
    if type(piece) ~= "table" then fail(who, "pieces[%d] must be {text =, train =}", i) end
    local field = ("pieces[%d].text"):format(i)
    for _, id in ipairs(encode_text(tok, piece.text, who, field)) do add(id, piece.train == true) end
  end
  if opts.eos then add(special(tok, "eos", who), true) end
  return shifted(ids, function(k) return train[k] end, opts.max_len)
end

-- count_targets(ex): the number of positions carrying a loss.
function M.count_targets(ex)
  local c = 0
  for i = 1, #ex.target do if ex.target[i] ~= M.IGNORE then c = c + 1 end end
  return c
end

---------------------------------------------------------------------------------------------
-- Padding and packing.

local function check_example(ex, i, who)
  if type(ex) ~= "table" or type(ex.input) ~= "table" or type(ex.target) ~= "table" then
    fail(who, "example %d must be {input=, target=}", i)
  end
  if #ex.input ~= #ex.target then
    fail(who, "example %d: input has %d ids, target %d", i, #ex.input, #ex.target)
  end
end

-- pad(examples, {T = n or nil, pad_id = 0, truncate = "left"|"right"|"error"}):
-- tokens, targets as B rows of T (T: the given length, or the longest example);
-- padding goes on the right with pad_id and target -100. Examples longer than T are cut:
-- by default on the left, which keeps the answer at the end of the example.
function M.pad(examples, opts)
  local who = "lomo.data.pad"
  opts = opts or {}
  local pad_id = opts.pad_id or 0
  local T = opts.T
  if T == nil then
    T = 0
    for i, ex in ipairs(examples) do
      check_example(ex, i, who)
      if #ex.input > T then T = #ex.input end
    end
  elseif math.tointeger(T) == nil or T <= 0 then
    fail(who, "T must be a positive integer")
  end
  local trunc = opts.truncate or "left"
  local tokens, targets = {}, {}
  for b, ex in ipairs(examples) do
    check_example(ex, b, who)
    local n = #ex.input
    local first = 1
    if n > T then
      if trunc == "left" then first = n - T + 1
      elseif trunc == "right" then first = 1
      else fail(who, "example %d has %d tokens, more than T = %d", b, n, T) end
    end
    local tr, gr = {}, {}
    for t = 1, T do
      local i = first + t - 1
      if i <= n then
        tr[t], gr[t] = ex.input[i], ex.target[i]
      else
        tr[t], gr[t] = pad_id, M.IGNORE
      end
    end
    tokens[b], targets[b] = tr, gr
  end
  return tokens, targets
end

-- pack(examples, {T =, pad_id = 0}): the examples laid end to end and cut into rows of T
-- (each an example itself); the last row is padded. Attention crosses example boundaries,
-- as in the usual packing of pretraining data.
function M.pack(examples, opts)
  local who = "lomo.data.pack"
  opts = opts or {}
  local T = opts.T
  if math.tointeger(T) == nil or T <= 0 then fail(who, "T must be a positive integer") end
  local pad_id = opts.pad_id or 0
  local rows = {}
  local cur_in, cur_tg = {}, {}
  for i, ex in ipairs(examples) do
    check_example(ex, i, who)
    for k = 1, #ex.input do
      cur_in[#cur_in + 1], cur_tg[#cur_tg + 1] = ex.input[k], ex.target[k]
      if #cur_in == T then
        rows[#rows + 1] = {input = cur_in, target = cur_tg}
        cur_in, cur_tg = {}, {}
      end
    end
  end
  if #cur_in > 0 then
    for _ = #cur_in + 1, T do cur_in[#cur_in + 1], cur_tg[#cur_tg + 1] = pad_id, M.IGNORE end
    rows[#rows + 1] = {input = cur_in, target = cur_tg}
  end
  return rows
end

-- chunk(ids, T, {tail = false}): language-modelling rows from one token stream: row r reads
-- ids[(r-1)T+1 .. rT] and predicts ids[(r-1)T+2 .. rT+1]; a short tail is dropped, or with
-- tail = true kept as a shorter last row (so every token but the first is predicted once).
function M.chunk(ids, T, opts)
  if math.tointeger(T) == nil or T <= 0 then fail("lomo.data.chunk", "T must be a positive integer") end
  local tail = opts and opts.tail
  local rows = {}
  local base = 0
  while base + (tail and 2 or T + 1) <= #ids do
    local input, target = {}, {}
    for t = 1, math.min(T, #ids - 1 - base) do input[t], target[t] = ids[base + t], ids[base + t + 1] end
    rows[#rows + 1] = {input = input, target = target}
    base = base + T
  end
  return rows
end

---------------------------------------------------------------------------------------------
-- Loader: batches of B examples, reshuffled every epoch, with a state that resumes exactly.

local Loader = {}
Loader.__index = Loader
Loader.__name = "lomo.data.loader"

-- loader(examples, {batch = B, T = n or nil, pad_id = 0, shuffle = true, seed = 0,
--                   drop_last = false, truncate = "left"})
function M.loader(examples, opts)
  local who = "lomo.data.loader"
  if type(examples) ~= "table" or #examples == 0 then fail(who, "examples must be a non-empty array") end
  for i, ex in ipairs(examples) do check_example(ex, i, who) end
  opts = opts or {}
  local B = opts.batch or 1
  if math.tointeger(B) == nil or B <= 0 then fail(who, "batch must be a positive integer") end
  local self = setmetatable({
    examples = examples, B = B, T = opts.T, pad_id = opts.pad_id or 0,
    shuffle = opts.shuffle ~= false, seed = opts.seed or 0, drop_last = opts.drop_last or false,
    truncate = opts.truncate,
  }, Loader)
  if math.tointeger(self.seed) == nil then fail(who, "seed must be an integer") end
  local n = #examples
  self.n_batches = self.drop_last and (n // B) or ((n + B - 1) // B)
  if self.n_batches == 0 then fail(who, "fewer examples (%d) than one batch (%d) with drop_last", n, B) end
  self.rng = rng_mod.new(self.seed)
  self:_start_epoch(1)
  return self
end

function Loader:_start_epoch(epoch)
  self.epoch, self.pos = epoch, 0
  self.epoch_rng_state = self.rng:state()
  if self.shuffle then
    self.order = self.rng:permutation(#self.examples)
  else
    local o = {}
    for i = 1, #self.examples do o[i] = i end
    self.order = o
  end
end

function Loader:batches_per_epoch() return self.n_batches end

-- next(): the next batch {tokens=, targets=, n_tokens= (non-pad), n_targets=, epoch=, index=};
-- after the last batch of an epoch the next epoch starts with a fresh order.
function Loader:next()
  if self.pos >= self.n_batches then self:_start_epoch(self.epoch + 1) end
  local first = self.pos * self.B + 1
  local last = math.min(first + self.B - 1, #self.examples)
  local rows = {}
  local n_tokens, n_targets = 0, 0
  for i = first, last do
    local ex = self.examples[self.order[i]]
    rows[#rows + 1] = ex
    n_tokens = n_tokens + math.min(#ex.input, self.T or #ex.input)
  end
  local tokens, targets = M.pad(rows, {T = self.T, pad_id = self.pad_id, truncate = self.truncate})
  for b = 1, #targets do
    local row = targets[b]
    for t = 1, #row do if row[t] ~= M.IGNORE then n_targets = n_targets + 1 end end
  end
  self.pos = self.pos + 1
  return {tokens = tokens, targets = targets, n_tokens = n_tokens, n_targets = n_targets,
          epoch = self.epoch, index = self.pos}
end

-- state(): a JSON-friendly table; set_state(s) continues exactly where state() was taken.
function Loader:state()
  return {epoch = self.epoch, pos = self.pos, rng = self.epoch_rng_state, seed = self.seed,
          n = #self.examples, batch = self.B}
end

function Loader:set_state(s)
  local who = "lomo.data.loader:set_state"
  if type(s) ~= "table" then fail(who, "state must be a table") end
  if math.tointeger(s.n) ~= #self.examples or math.tointeger(s.batch) ~= self.B then
    fail(who, "state is for %s examples in batches of %s, this loader has %d in batches of %d",
         tostring(s.n), tostring(s.batch), #self.examples, self.B)
  end
  local epoch, pos = math.tointeger(s.epoch), math.tointeger(s.pos)
  if epoch == nil or epoch < 1 or pos == nil or pos < 0 or pos > self.n_batches then
    fail(who, "bad epoch or pos in state")
  end
  self.rng = rng_mod.from_state(s.rng)
  self:_start_epoch(epoch)
  self.pos = pos
end

return M
