-- lomo.data, lomo.rng and lomo.util
local check = require "check"
local fake = require "fake"
local data = require "lomo.data"
local rng = require "lomo.rng"
local util = require "lomo.util"

local T = {}

local function with_file(content, fn)
  local dir = check.tmpdir()
  local path = dir .. "/f"
  check.write(path, content)
  local ok, err = pcall(fn, path, dir)
  check.rmtree(dir)
  if not ok then error(err, 0) end
end

-- rng --------------------------------------------------------------------------------------

function T.rng_matches_reference_xoshiro128ss()
  -- the reference C implementation from state {1, 2, 3, 4}
  local r = rng.from_state({1, 2, 3, 4})
  local want = {11520, 0, 5927040, 70819200, 2031721883, 1637235492}
  for i = 1, #want do check.eq(r:next32(), want[i], "output " .. i) end
end

function T.rng_splitmix64_reference()
  local x, a = rng.splitmix64(0)
  check.eq(a, 0xe220a8397b1dcdaf)
  local _, b = rng.splitmix64(x)
  check.eq(b, 7960286522194355700)
end

function T.rng_same_seed_same_stream_and_state_round_trip()
  local a, b = rng.new(42), rng.new(42)
  for _ = 1, 100 do check.eq(a:next32(), b:next32()) end
  local st = a:state()
  local x = {}
  for i = 1, 20 do x[i] = a:random(1000) end
  local c = rng.from_state(fake.json.decode(fake.json.encode(st)))
  for i = 1, 20 do check.eq(c:random(1000), x[i]) end
  check.truthy(rng.new(1):next32() ~= rng.new(2):next32(), "different seeds differ")
  -- float state values (as some JSON decoders give) are accepted
  local d = rng.from_state({st[1] + 0.0, st[2] + 0.0, st[3] + 0.0, st[4] + 0.0})
  check.eq(d:state(), st)
end

function T.rng_ranges_and_uniformity()
  local r = rng.new(7)
  local counts = {0, 0, 0, 0, 0, 0}
  for _ = 1, 6000 do
    local v = r:random(6)
    check.truthy(v >= 1 and v <= 6 and math.type(v) == "integer")
    counts[v] = counts[v] + 1
  end
  for i = 1, 6 do check.truthy(counts[i] > 850 and counts[i] < 1150, "face " .. i .. ": " .. counts[i]) end
  for _ = 1, 1000 do
    local f = r:random()
    check.truthy(f >= 0 and f < 1)
    local v = r:random(-3, 3)
    check.truthy(v >= -3 and v <= 3)
  end
  check.eq(r:random(5, 5), 5)
  check.raises(function() r:random(3, 2) end, "empty interval")
  check.raises(function() r:random(1.5) end, "integers")
  check.raises(function() rng.new("x") end, "seed must be an integer")
  check.raises(function() rng.from_state({1, 2, 3}) end, "4 integers")
  check.raises(function() rng.from_state({0, 0, 0, 0}) end, "all-zero")
  check.raises(function() rng.from_state({-1, 0, 0, 0}) end, "element 1")
end

function T.rng_permutation_and_derive()
  local p = rng.new(3):permutation(50)
  local seen = {}
  for _, v in ipairs(p) do seen[v] = true end
  for i = 1, 50 do check.truthy(seen[i], "missing " .. i) end
  check.eq(rng.new(3):permutation(50), p)
  check.eq(rng.derive(5, 1), rng.derive(5, 1))
  check.truthy(rng.derive(5, 1) ~= rng.derive(5, 2))
end

-- readers ----------------------------------------------------------------------------------

function T.lines_strip_crlf()
  with_file("a\r\nb\n\nc", function(path)
    local got = {}
    for l, n in data.lines(path) do got[#got + 1] = n .. ":" .. l end
    check.eq(got, {"1:a", "2:b", "3:", "4:c"})
  end)
  check.raises(function() data.lines("/nonexistent/x") end, "/nonexistent/x")
  check.raises(function() data.lines(42) end, "path must be a string")
end

function T.jsonl_with_decoder_and_errors_name_file_and_line()
  with_file('{"a": 1}\n\n  \n{"a": 2, "s": "x"}\n', function(path)
    local recs = {}
    for rec, n in data.jsonl(path, fake.json.decode) do recs[#recs + 1] = {rec.a, n} end
    check.eq(recs, {{1, 1}, {2, 4}})
  end)
  with_file('{"a": 1}\n{"a": oops}\n', function(path)
    local it = data.jsonl(path, fake.json.decode)
    it()
    local err = check.raises(it, path .. ":2: invalid JSON")
    check.truthy(err:find("unexpected", 1, true), err)
  end)
  check.raises(function() data.jsonl("x", 5) end, "decode must be a function")
end

function T.jsonl_default_decoder_is_lomo_json()
  local lomo = check.lomo()
  with_file('{"a": [1, 2]}\n', function(path)
    if lomo then
      local rec = data.jsonl(path)()
      check.eq(rec.a[2], 2)
    else
      check.raises(function() data.jsonl(path) end, "no JSON decoder")
    end
  end)
end

function T.csv_rfc4180()
  local text = 'name,text,n\r\n' ..
               'a,"hello, world",1\r\n' ..
               'b,"say ""hi""",2\n' ..
               'c,"two\nlines",3\n' ..
               '\n' ..
               'd,,4\n' ..
               'e,"",5'
  with_file(text, function(path)
    local recs = data.collect(data.csv(path))
    check.eq(#recs, 5)
    check.eq(recs[1], {name = "a", text = "hello, world", n = "1"})
    check.eq(recs[2].text, 'say "hi"')
    check.eq(recs[3].text, "two\nlines")
    check.eq(recs[4], {name = "d", text = "", n = "4"})
    check.eq(recs[5].text, "")
  end)
  with_file("\239\187\191id,v\n1,2\n", function(path)
    check.eq(data.collect(data.csv(path)), {{id = "1", v = "2"}}, "BOM dropped")
  end)
  with_file("\239\187\191{}\n", function(path)
    check.eq(data.lines(path)(), "{}", "BOM dropped")
  end)
  with_file("x;y\n1;2\n", function(path)
    local recs = data.collect(data.csv(path, {header = false, sep = ";"}))
    check.eq(recs, {{"x", "y"}, {"1", "2"}})
  end)
end

function T.csv_errors_name_file_and_line()
  with_file('a,b\n1,2\n3\n', function(path)
    local it = data.csv(path)
    it()
    check.raises(it, path .. ":3: expected 2 fields, found 1")
  end)
  with_file('a,b\n1,"open\nstill open\n', function(path)
    check.raises(function() data.collect(data.csv(path)) end, path .. ":2: unterminated quoted field")
  end)
  with_file('a\nx"y\n', function(path)
    check.raises(function() data.collect(data.csv(path)) end, "quote inside an unquoted field")
  end)
  check.raises(function() data.csv("x", {sep = '"'}) end, "sep must be one character")
end

function T.text_streams_in_chunks()
  with_file(string.rep("abcdefghij", 5), function(path)
    local parts = data.collect(data.text(path, {chunk = 16}))
    check.eq(#parts, 4)
    check.eq(table.concat(parts), string.rep("abcdefghij", 5))
    check.eq(data.read_text(path), string.rep("abcdefghij", 5))
  end)
  check.raises(function() data.text("x", {chunk = 0}) end, "chunk")
end

-- shuffles and splits ----------------------------------------------------------------------

function T.shuffle_is_a_reproducible_permutation()
  local t = {}
  for i = 1, 30 do t[i] = "x" .. i end
  local a, b = data.shuffle(t, 11), data.shuffle(t, 11)
  check.eq(a, b)
  local c = data.shuffle(t, 12)
  local same = true
  for i = 1, 30 do if a[i] ~= c[i] then same = false end end
  check.truthy(not same, "seeds 11 and 12 give the same order")
  local seen = {}
  for _, v in ipairs(a) do seen[v] = (seen[v] or 0) + 1 end
  for i = 1, 30 do check.eq(seen["x" .. i], 1) end
  check.eq(t[1], "x1", "the input is not modified")
  -- known orders, pinned so that a change of the PRNG or the shuffle shows up
  check.eq(data.shuffle({1, 2, 3, 4, 5, 6, 7, 8}, 0), {2, 4, 5, 7, 1, 3, 8, 6})
  check.eq(data.shuffle({1, 2, 3, 4, 5, 6, 7, 8}, 2024), {4, 6, 8, 1, 2, 5, 3, 7})
  check.eq(data.shuffle({1, 2, 3, 4, 5}, 0), data.shuffle({1, 2, 3, 4, 5}, rng.new(0)))
  check.raises(function() data.shuffle(t, 1.5) end, "seed must be an integer")
end

function T.split_by_ratio_and_count_is_disjoint_and_reproducible()
  local t = {}
  for i = 1, 100 do t[i] = i end
  local tr, ev = data.split(t, {eval = 0.2, seed = 5})
  check.eq(#tr, 80)
  check.eq(#ev, 20)
  local seen = {}
  for _, v in ipairs(tr) do seen[v] = "train" end
  for _, v in ipairs(ev) do
    check.truthy(seen[v] == nil, "shared item " .. v)
    seen[v] = "eval"
  end
  for i = 1, 100 do check.truthy(seen[i], "lost " .. i) end
  for i = 2, #ev do check.truthy(ev[i] > ev[i - 1], "eval keeps file order") end
  local tr2, ev2 = data.split(t, {eval = 0.2, seed = 5})
  check.eq(tr2, tr)
  check.eq(ev2, ev)
  local _, ev3 = data.split(t, {eval = 0.2, seed = 6})
  check.truthy(table.concat(ev3, ",") ~= table.concat(ev, ","))
  local _, e4 = data.split(t, {eval = 7, seed = 1})
  check.eq(#e4, 7)
  check.raises(function() data.split(t, {eval = 101}) end, "outside")
  check.raises(function() data.split(t, {eval = 1.5}) end, "ratio")
end

-- tokenization and masking -----------------------------------------------------------------

function T.example_masks_the_prompt()
  local tok = fake.tokenizer()
  local ex = data.example(tok, "ab", "cd")
  -- full sequence: bos a b c d eos = 256 97 98 99 100 257
  check.eq(ex.input, {256, 97, 98, 99, 100})
  check.eq(ex.target, {-100, -100, 99, 100, 257})
  check.eq(data.count_targets(ex), 3)
  local ex2 = data.example(tok, "ab", "cd", {bos = false, eos = false})
  check.eq(ex2.input, {97, 98, 99})
  check.eq(ex2.target, {-100, 99, 100})
  local ex3 = data.example(tok, "ab", "cd", {train_on_prompt = true})
  check.eq(ex3.target, {97, 98, 99, 100, 257})
  -- no prompt: plain language modelling
  local ex4 = data.example(tok, nil, "xyz", {bos = false})
  check.eq(ex4.input, {120, 121, 122})
  check.eq(ex4.target, {121, 122, 257})
  -- max_len cuts the prompt from the left; the answer survives
  local ex5 = data.example(tok, "abcdef", "g", {max_len = 3})
  check.eq(ex5.input, {101, 102, 103})
  check.eq(ex5.target, {-100, 103, 257})
  -- a tokenizer with a BOS it does not add (SmolLM2's): none by default, one when asked
  local quiet = fake.tokenizer{add_bos = false}
  check.eq(data.example(quiet, "ab", "cd").input, {97, 98, 99, 100})
  check.eq(data.example(quiet, "ab", "cd", {bos = true}).input, {256, 97, 98, 99, 100})
  check.raises(function() data.example(fake.tokenizer{bos = false}, "a", "b", {bos = true}) end, "bos requested")
  -- the rule every encoder shares (data.example, eval.choices_example, eval.generate_text)
  check.eq({data.wants_bos(tok), data.wants_bos(quiet), data.wants_bos(quiet, {bos = true}),
            data.wants_bos(tok, {bos = false}), data.wants_bos(tok, {})}, {true, false, true, false, true})
  check.raises(function() data.example(fake.tokenizer{eos = false}, "a", "b") end, "eos requested")
  check.raises(function() data.example(tok, 5, "b") end, "prompt must be a string")
  check.raises(function() data.example(nil, "a", "b") end, "tokenizer expected")
end

function T.segments_target_the_train_pieces_only()
  local tok = fake.tokenizer()
  -- "ab" (no loss) "cd" (loss) "e" (no loss) "f" (loss)
  local ex = data.segments(tok, {{text = "ab", train = false}, {text = "cd", train = true},
                                 {text = "e", train = false}, {text = "f", train = true}})
  check.eq(ex.input, {97, 98, 99, 100, 101})
  check.eq(ex.target, {-100, 99, 100, -100, 102})
  -- two pieces are data.example's prompt and answer
  local two = data.segments(tok, {{text = "ab"}, {text = "cd", train = true}}, {bos = true, eos = true})
  check.eq(two, data.example(tok, "ab", "cd"), "as example")
  local cut = data.segments(tok, {{text = "abcdef"}, {text = "g", train = true}}, {max_len = 3})
  check.eq(cut, data.example(tok, "abcdef", "g", {bos = false, eos = false, max_len = 3}), "max_len keeps the end")
  check.raises(function() data.segments(tok, {}) end, "non-empty array")
  check.raises(function() data.segments(tok, {"ab"}) end, "pieces[1] must be {text =, train =}")
  check.raises(function() data.segments(tok, {{text = 3}}) end, "pieces[1].text must be a string")
  check.raises(function() data.segments(fake.tokenizer{bos = false}, {{text = "a"}}, {bos = true}) end, "bos requested")
end

function T.pad_right_with_ignored_targets_and_truncation()
  local exs = {{input = {1, 2, 3}, target = {2, 3, 4}}, {input = {5}, target = {6}}}
  local tokens, targets = data.pad(exs, {pad_id = 0})
  check.eq(tokens, {{1, 2, 3}, {5, 0, 0}})
  check.eq(targets, {{2, 3, 4}, {6, -100, -100}})
  tokens, targets = data.pad(exs, {T = 2, pad_id = 9})
  check.eq(tokens, {{2, 3}, {5, 9}})
  check.eq(targets, {{3, 4}, {6, -100}})
  tokens = data.pad(exs, {T = 2, truncate = "right"})
  check.eq(tokens[1], {1, 2})
  check.raises(function() data.pad(exs, {T = 2, truncate = "error"}) end, "more than T = 2")
  check.raises(function() data.pad({{input = {1}, target = {}}}) end, "example 1: input has 1 ids, target 0")
  check.raises(function() data.pad({{input = {1}}}) end, "example 1 must be")
end

function T.pack_and_chunk()
  local exs = {{input = {1, 2, 3}, target = {2, 3, -100}}, {input = {4, 5}, target = {5, 6}},
               {input = {7, 8, 9}, target = {8, 9, 10}}}
  local rows = data.pack(exs, {T = 3, pad_id = 0})
  check.eq(#rows, 3)
  check.eq(rows[1], {input = {1, 2, 3}, target = {2, 3, -100}})
  check.eq(rows[2], {input = {4, 5, 7}, target = {5, 6, 8}})
  check.eq(rows[3], {input = {8, 9, 0}, target = {9, 10, -100}})
  local c = data.chunk({10, 11, 12, 13, 14, 15, 16, 17}, 3)
  check.eq(c, {{input = {10, 11, 12}, target = {11, 12, 13}}, {input = {13, 14, 15}, target = {14, 15, 16}}})
  -- the tail kept: 17 is predicted from 16 in a row of one
  local t = data.chunk({10, 11, 12, 13, 14, 15, 16, 17}, 3, {tail = true})
  check.eq(t[3], {input = {16}, target = {17}})
  check.eq(#t, 3)
  check.eq(#data.chunk({10, 11, 12, 13, 14, 15, 16}, 3, {tail = true}), 2, "no tail left: two rows")
  check.eq(data.chunk({10}, 3, {tail = true}), {}, "one token predicts nothing")
  check.raises(function() data.pack(exs, {}) end, "T must be")
end

-- loader -----------------------------------------------------------------------------------

local function numbered(n)
  local exs = {}
  for i = 1, n do exs[i] = {input = {i, i}, target = {i, -100}} end
  return exs
end

local function ids_of(batch)
  local out = {}
  for b = 1, #batch.tokens do out[b] = batch.tokens[b][1] end
  return out
end

function T.loader_covers_every_example_once_per_epoch()
  local l = data.loader(numbered(10), {batch = 3, seed = 1})
  check.eq(l:batches_per_epoch(), 4)
  local epochs = {{}, {}}
  for _ = 1, 8 do
    local b = l:next()
    for _, id in ipairs(ids_of(b)) do epochs[b.epoch][#epochs[b.epoch] + 1] = id end
  end
  for e = 1, 2 do
    check.eq(#epochs[e], 10)
    local seen = {}
    for _, id in ipairs(epochs[e]) do seen[id] = true end
    for i = 1, 10 do check.truthy(seen[i], "epoch " .. e .. " lacks " .. i) end
  end
  check.truthy(table.concat(epochs[1], ",") ~= table.concat(epochs[2], ","), "each epoch reshuffles")
  local b = data.loader(numbered(5), {batch = 2, shuffle = false}):next()
  check.eq(ids_of(b), {1, 2})
  check.eq(b.n_tokens, 4)
  check.eq(b.n_targets, 2)
  check.eq(data.loader(numbered(5), {batch = 2, drop_last = true}):batches_per_epoch(), 2)
end

function T.loader_state_resumes_exactly_through_json()
  for _, stop in ipairs({0, 2, 4, 5, 9}) do
    local a = data.loader(numbered(10), {batch = 3, seed = 9, T = 4})
    for _ = 1, stop do a:next() end
    local st = fake.json.decode(fake.json.encode(a:state()))
    local want = {}
    for i = 1, 7 do want[i] = a:next() end
    local b = data.loader(numbered(10), {batch = 3, seed = 9, T = 4})
    b:set_state(st)
    for i = 1, 7 do check.eq(b:next(), want[i], "stop " .. stop .. ", batch " .. i) end
  end
end

function T.loader_errors()
  check.raises(function() data.loader({}, {}) end, "non-empty array")
  check.raises(function() data.loader(numbered(3), {batch = 0}) end, "batch must be")
  check.raises(function() data.loader(numbered(3), {batch = 4, drop_last = true}) end, "fewer examples")
  local l = data.loader(numbered(4), {batch = 2})
  local st = l:state()
  check.raises(function() data.loader(numbered(5), {batch = 2}):set_state(st) end, "state is for 4 examples")
  st.pos = 99
  check.raises(function() l:set_state(st) end, "bad epoch or pos")
end

-- util -------------------------------------------------------------------------------------

function T.util_atomic_write_mkdir_join()
  local dir = check.tmpdir()
  local ok, err = pcall(function()
    local sub = dir .. "/a b/c'd"
    util.mkdir_p(sub)
    util.atomic_write(sub .. "/f.txt", "one")
    util.atomic_write(sub .. "/f.txt", "two")
    check.eq(check.read(sub .. "/f.txt"), "two")
    check.truthy(not util.exists(sub .. "/f.txt.tmp"), "no temp file left")
    check.raises(function() util.atomic_write(dir .. "/missing/f", "x") end, "missing")
    check.eq(util.join("a", "b"), "a/b")
    check.eq(util.join("a/", "b"), "a/b")
    check.eq(util.join("a", "/b"), "/b")
    check.eq(util.dirname("/x/y/z.lua"), "/x/y")
    check.eq(util.dirname("z.lua"), ".")
    util.remove_tree(dir .. "/a b")
    check.truthy(not util.exists(sub .. "/f.txt"))
    check.raises(function() util.json({encode = 1}, "who") end, "who: json must be a table")
  end)
  check.rmtree(dir)
  if not ok then error(err, 0) end
end

return T
