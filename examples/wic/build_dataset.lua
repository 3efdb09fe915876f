#!/usr/bin/env lua5.4
-- Builds a WiC-style word-in-context dataset from WordNet 3.0's example sentences: two example
-- sentences that use the same word; does the word have the same sense in both?
--
--   lua5.4 examples/wic/build_dataset.lua [--wordnet DIR] [--out DIR] [--seed N]
--          [--heldout-frac F] [--max-per-lemma K] [--max-words W] [--pos nvar] [--negatives far|any]
--
-- Reads the data.* files Debian's wordnet-base installs (/usr/share/wordnet). A synset line is
--   offset lex_filenum ss_type w_cnt(hex) {word lex_id} p_cnt {ptr} [frames] | gloss
-- and the gloss is the definition followed by its examples, each in double quotes. A sense of a
-- word is a synset (any part of speech) that lists the word and has an example sentence using it
-- (the word or an inflection of it for that part of speech: WordNet's own morphy rules and
-- exception lists decide).
--
-- Construction, per word (a single lower-case word; its noun, verb, adjective and adverb synsets
-- are all senses of it):
--   * same sense (label true): two different example sentences of one synset.
--   * different sense (label false): one example sentence from each of two synsets of the word
--     that sit in different WordNet lexicographer files (noun.artifact, noun.act, verb.motion,
--     adj.all, ...). With the default --negatives far, pairs across parts of speech come first
--     (a noun use and a verb use of a word are different senses: "a long run" / "run a
--     business"), then pairs of one part of speech in different lexicographer files; two senses
--     in the same lexicographer file (fine distinctions such as the WiC benchmark's, which a
--     135M model did not learn from a thousand pairs: 49% held-out accuracy) are never used.
--     --negatives pos keeps only pairs across parts of speech; --negatives any also allows
--     senses in one lexicographer file, as the original builder did.
--   Each word gives as many true as false pairs (n = min(#true, #false, --max-per-lemma)), so
--   the word alone never predicts the label, and both splits are exactly balanced in total.
--   Each pair records both sentences' parts of speech and the form of the word they use
--   ("form1", "form2"), which the recipe marks in the prompt.
--
-- Train and held-out never share a sentence: words that share a sentence form one group, and a
-- group goes to one split whole, so held-out words are also unseen in training (stricter than
-- needed: only sentences must not be shared). The script checks this on its output.
-- Output: DIR/train.jsonl and DIR/heldout.jsonl, one
--   {"word", "sentence1", "sentence2", "label", "form1", "form2", "pos1", "pos2"}
-- per line. Same seed, same WordNet: byte-identical files. Pure Lua 5.4, no modules.

local opts = {
  wordnet = "/usr/share/wordnet",
  out = nil,
  seed = 1234,
  heldout_frac = 0.3,
  max_per_lemma = 4,
  max_words = 30,
  pos = "nvar",
  negatives = "far",
}

local function die(msg)
  io.stderr:write("build_dataset.lua: ", msg, "\n")
  os.exit(1)
end

local function usage()
  io.write([[
usage: lua5.4 examples/wic/build_dataset.lua [options]
  --wordnet DIR        WordNet dict directory (default /usr/share/wordnet)
  --out DIR            output directory (default: data/ next to this script)
  --seed N             shuffling seed (default 1234)
  --heldout-frac F     fraction of pairs held out (default 0.3)
  --max-per-lemma K    at most K true and K false pairs per lemma (default 4)
  --max-words W        skip example sentences longer than W words (default 30)
  --pos LETTERS        parts of speech to use, from n v a r (default nvar)
  --negatives MODE     different-sense pairs: pos (only senses of different parts of speech),
                       far (default: senses in different lexicographer files, other parts of
                       speech first) or any (any two senses)
]])
end

do
  local i = 1
  local numeric = { seed = "integer", heldout_frac = "number", max_per_lemma = "integer",
                    max_words = "integer" }
  while i <= #arg do
    local a = arg[i]
    if a == "-h" or a == "--help" then usage() os.exit(0) end
    local key = a:match("^%-%-([%w%-]+)$")
    if not key then die("unexpected argument '" .. a .. "' (try --help)") end
    key = key:gsub("%-", "_")
    if opts[key] == nil and key ~= "out" then die("unknown option --" .. key:gsub("_", "-")) end
    local v = arg[i + 1]
    if v == nil then die("option --" .. key:gsub("_", "-") .. " needs a value") end
    if numeric[key] then
      local n = tonumber(v)
      if not n or (numeric[key] == "integer" and math.type(n) ~= "integer") then
        die("option --" .. key:gsub("_", "-") .. ": expected " .. numeric[key] .. ", got '" .. v .. "'")
      end
      v = n
    end
    opts[key] = v
    i = i + 2
  end
  if not (opts.heldout_frac > 0 and opts.heldout_frac < 1) then die("--heldout-frac must be in (0, 1)") end
  if opts.max_per_lemma < 1 then die("--max-per-lemma must be at least 1") end
  if not opts.pos:match("^[nvar]+$") then die("--pos takes letters from n, v, a, r") end
  if not ({pos = true, far = true, any = true})[opts.negatives] then die("--negatives takes pos, far or any") end
  if not opts.out then
    local here = (arg[0] or ""):match("^(.*)/[^/]*$") or "."
    opts.out = here .. "/data"
  end
end

-- splitmix64 on Lua's wrapping 64-bit integers: deterministic on every platform.
local function rng(seed)
  local s = seed
  return function(n) -- uniform integer in [1, n]
    s = s + 0x9E3779B97F4A7C15
    local z = s
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    z = z ~ (z >> 31)
    return (z >> 1) % n + 1
  end
end

local function shuffle(t, rand)
  for i = #t, 2, -1 do
    local j = rand(i)
    t[i], t[j] = t[j], t[i]
  end
  return t
end

-- WordNet's morphy: suffix detachment rules per part of speech, plus the exception lists.
local rules = {
  n = { {"s", ""}, {"ses", "s"}, {"xes", "x"}, {"zes", "z"}, {"ches", "ch"}, {"shes", "sh"},
        {"men", "man"}, {"ies", "y"} },
  v = { {"s", ""}, {"ies", "y"}, {"es", "e"}, {"es", ""}, {"ed", "e"}, {"ed", ""},
        {"ing", "e"}, {"ing", ""} },
  a = { {"er", ""}, {"est", ""}, {"er", "e"}, {"est", "e"} },
  r = {},
}
local exc_file = { n = "noun.exc", v = "verb.exc", a = "adj.exc", r = "adv.exc" }
local data_file = { n = "data.noun", v = "data.verb", a = "data.adj", r = "data.adv" }

local function read_exceptions(pos)
  local path = opts.wordnet .. "/" .. exc_file[pos]
  local f, err = io.open(path, "r")
  if not f then die(err .. " (install Debian's wordnet-base, or pass --wordnet DIR)") end
  local exc = {}
  for line in f:lines() do
    local words = {}
    for w in line:gmatch("%S+") do words[#words + 1] = w end
    if #words >= 2 then
      local bases = exc[words[1]] or {}
      for k = 2, #words do bases[#bases + 1] = words[k] end
      exc[words[1]] = bases
    end
  end
  f:close()
  return exc
end

-- Every base form a surface word could be an inflection of (the word itself included).
local function base_forms(word, pos, exc)
  local out = { [word] = true }
  for _, b in ipairs(exc[word] or {}) do out[b] = true end
  for _, r in ipairs(rules[pos]) do
    local suf, rep = r[1], r[2]
    if #word > #suf + 1 and word:sub(-#suf) == suf then
      local stem = word:sub(1, -#suf - 1)
      out[stem .. rep] = true
      -- stopped -> stop, running -> run, bigger -> big: a doubled final consonant
      if rep == "" and #stem >= 3 and stem:sub(-1) == stem:sub(-2, -2) and stem:sub(-1):match("[^aeiou]") then
        out[stem:sub(1, -2)] = true
      end
    end
  end
  return out
end

-- Lower-case words of a sentence; hyphenated compounds stay whole, a possessive 's is dropped.
local function words_of(sentence)
  local ws = {}
  for w in sentence:lower():gmatch("[%a][%a'%-]*") do
    w = w:gsub("'s$", ""):gsub("'$", "")
    ws[#ws + 1] = w
  end
  return ws
end

local function normalize(sentence)
  return sentence:lower():gsub("%s+", " ")
end

-- Parse one data.* file: synsets in file order, each {id =, lex = lexicographer file number,
-- lemmas = {...}, examples = {...}}.
local function read_synsets(pos)
  local path = opts.wordnet .. "/" .. data_file[pos]
  local f, err = io.open(path, "r")
  if not f then die(err .. " (install Debian's wordnet-base, or pass --wordnet DIR)") end
  local synsets = {}
  local lineno = 0
  for line in f:lines() do
    lineno = lineno + 1
    if line:sub(1, 2) ~= "  " then -- the license header's lines start with two spaces
      local head, gloss = line:match("^(.-)%s|%s(.*)$")
      if not head then die(path .. ":" .. lineno .. ": no gloss separator '|'") end
      local fields = {}
      for w in head:gmatch("%S+") do fields[#fields + 1] = w end
      local w_cnt = tonumber(fields[4] or "", 16)
      if not w_cnt or #fields < 4 + 2 * w_cnt then die(path .. ":" .. lineno .. ": bad word count") end
      local lemmas = {}
      for k = 0, w_cnt - 1 do
        -- adjective markers: "long(a)"; lex ids are not needed
        local lemma = fields[5 + 2 * k]:gsub("%(%a+%)$", ""):lower()
        if not lemma:find("[_%-%.']") and lemma:match("^%a+$") then lemmas[#lemmas + 1] = lemma end
      end
      local examples = {}
      for ex in gloss:gmatch('"([^"]+)"') do
        ex = ex:gsub("^%s+", ""):gsub("%s+$", "")
        local ws = words_of(ex)
        if #ws >= 3 and #ws <= opts.max_words then examples[#examples + 1] = { text = ex, words = ws } end
      end
      if #lemmas > 0 and #examples > 0 then
        synsets[#synsets + 1] = { id = pos .. fields[1], lex = tonumber(fields[2]), lemmas = lemmas,
                                  examples = examples }
      end
    end
  end
  f:close()
  return synsets
end

-- word -> { key = word, word =, senses = { {id =, pos =, lex =, examples = {{text =, form =}...}} } }
-- A word's senses come from every part of speech asked for (a noun use and a verb use of "run"
-- are two senses of "run").
local lemmas, lemma_keys = {}, {}
for pos in ("nvar"):gmatch(".") do
  if opts.pos:find(pos, 1, true) then
    local exc = read_exceptions(pos)
    local forms_cache = {}
    for _, ss in ipairs(read_synsets(pos)) do
      for _, lemma in ipairs(ss.lemmas) do
        local uses = {}
        for _, ex in ipairs(ss.examples) do
          for _, w in ipairs(ex.words) do
            local forms = forms_cache[w]
            if not forms then forms = base_forms(w, pos, exc) forms_cache[w] = forms end
            if forms[lemma] then uses[#uses + 1] = { text = ex.text, form = w } break end
          end
        end
        if #uses > 0 then
          local key = lemma
          local entry = lemmas[key]
          if not entry then
            entry = { key = key, word = lemma, senses = {} }
            lemmas[key] = entry
            lemma_keys[#lemma_keys + 1] = key
          end
          entry.senses[#entry.senses + 1] = { id = ss.id, pos = pos, lex = ss.lex, examples = uses }
        end
      end
    end
  end
end
table.sort(lemma_keys)

-- Pairs per word, balanced: n true and n false, n = min(#true, #false, max_per_lemma). The
-- false pairs are drawn from the farthest tier first: other part of speech (tier 1), same part
-- of speech but another lexicographer file (tier 2), same lexicographer file (tier 3, only with
-- --negatives any).
local rand = rng(opts.seed)
local per_lemma = {} -- array of {key =, pairs = {...}}
local tier_count = { 0, 0, 0 }
for _, key in ipairs(lemma_keys) do
  local e = lemmas[key]
  if #e.senses >= 2 then
    local same, diff = {}, { {}, {}, {} }
    for a = 1, #e.senses do
      local sa = e.senses[a]
      local xa = sa.examples
      for i = 1, #xa do
        for j = i + 1, #xa do same[#same + 1] = { xa[i], xa[j], sa.pos, sa.pos } end
      end
      for b = a + 1, #e.senses do
        local sb = e.senses[b]
        local tier = sa.pos ~= sb.pos and 1 or (sa.lex ~= sb.lex and 2 or 3)
        if tier == 1 or (tier == 2 and opts.negatives ~= "pos") or opts.negatives == "any" then
          for _, s1 in ipairs(xa) do
            for _, s2 in ipairs(sb.examples) do
              local d = diff[tier]
              d[#d + 1] = { s1, s2, sa.pos, sb.pos, tier = tier }
            end
          end
        end
      end
    end
    -- identical sentences can sit in two synsets; a pair of one sentence with itself says nothing
    local function keep(list)
      local out = {}
      for _, p in ipairs(list) do
        if normalize(p[1].text) ~= normalize(p[2].text) then out[#out + 1] = p end
      end
      return out
    end
    same = keep(same)
    shuffle(same, rand)
    local all_diff = {}
    for tier = 1, 3 do
      local d = shuffle(keep(diff[tier]), rand)
      for _, p in ipairs(d) do all_diff[#all_diff + 1] = p end
    end
    local n = math.min(#same, #all_diff, opts.max_per_lemma)
    if n > 0 then
      local out = {}
      for k = 1, n do
        out[#out + 1] = { word = e.word, pair = same[k], label = true }
        out[#out + 1] = { word = e.word, pair = all_diff[k], label = false }
        tier_count[all_diff[k].tier] = tier_count[all_diff[k].tier] + 1
      end
      per_lemma[#per_lemma + 1] = { key = key, pairs = out }
    end
  end
end

-- Group lemmas that share a sentence (union-find over sentences), so a sentence's group lands
-- in one split.
local parent = {}
local function find(x)
  while parent[x] ~= x do
    parent[x] = parent[parent[x]]
    x = parent[x]
  end
  return x
end
local owner = {} -- normalized sentence -> lemma key
for _, l in ipairs(per_lemma) do
  parent[l.key] = l.key
  for _, p in ipairs(l.pairs) do
    for s = 1, 2 do
      local t = normalize(p.pair[s].text)
      if owner[t] then
        local ra, rb = find(owner[t]), find(l.key)
        if ra ~= rb then
          if ra < rb then parent[rb] = ra else parent[ra] = rb end
        end
      else
        owner[t] = l.key
      end
    end
  end
end
local groups, group_list = {}, {}
for _, l in ipairs(per_lemma) do
  local r = find(l.key)
  if not groups[r] then
    groups[r] = { root = r, lemmas = {}, n = 0 }
    group_list[#group_list + 1] = groups[r]
  end
  local g = groups[r]
  g.lemmas[#g.lemmas + 1] = l
  g.n = g.n + #l.pairs
end
table.sort(group_list, function(a, b) return a.root < b.root end)
shuffle(group_list, rand)

local total = 0
for _, g in ipairs(group_list) do total = total + g.n end
local train, heldout = {}, {}
local held_n = 0
for _, g in ipairs(group_list) do
  local dest
  g.heldout = held_n < opts.heldout_frac * total
  if g.heldout then dest = heldout held_n = held_n + g.n else dest = train end
  for _, l in ipairs(g.lemmas) do
    for _, p in ipairs(l.pairs) do dest[#dest + 1] = p end
  end
end

-- The check the split promises, done on the output itself.
local in_train = {}
for _, p in ipairs(train) do
  in_train[normalize(p.pair[1].text)] = true
  in_train[normalize(p.pair[2].text)] = true
end
for _, p in ipairs(heldout) do
  if in_train[normalize(p.pair[1].text)] or in_train[normalize(p.pair[2].text)] then
    die("internal error: a held-out sentence is also in train: " .. p.pair[1].text)
  end
end

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local named = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\t'] = '\\t', ['\r'] = '\\r' }
    return named[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function write_split(name, list)
  shuffle(list, rand)
  local lines = {}
  local pos = 0
  for _, p in ipairs(list) do
    local s1, s2, p1, p2 = p.pair[1], p.pair[2], p.pair[3], p.pair[4]
    if rand(2) == 2 then s1, s2, p1, p2 = s2, s1, p2, p1 end
    if p.label then pos = pos + 1 end
    lines[#lines + 1] = string.format('{"word": %s, "sentence1": %s, "sentence2": %s, "label": %s, ' ..
      '"form1": %s, "form2": %s, "pos1": "%s", "pos2": "%s"}\n',
      json_string(p.word), json_string(s1.text), json_string(s2.text), tostring(p.label),
      json_string(s1.form), json_string(s2.form), p1, p2)
  end
  local path = opts.out .. "/" .. name .. ".jsonl"
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "w")
  if not f then die(err) end
  f:write(table.concat(lines))
  assert(f:close())
  local ok, rerr = os.rename(tmp, path)
  if not ok then die(rerr) end
  io.write(string.format("%s: %d pairs (%d same sense, %d different)\n", path, #list, pos, #list - pos))
  return #list
end

if not os.rename(opts.out, opts.out) then
  local ok = os.execute("mkdir -p '" .. opts.out:gsub("'", "'\\''") .. "'")
  if not ok then die("cannot create " .. opts.out) end
end
local ntrain = write_split("train", train)
local nheld = write_split("heldout", heldout)
local nlemma_train, nlemma_held = 0, 0
for _, g in ipairs(group_list) do
  if g.heldout then nlemma_held = nlemma_held + #g.lemmas else nlemma_train = nlemma_train + #g.lemmas end
end
io.write(string.format("%d words (%d train, %d held out), seed %d; different-sense pairs: %d across " ..
  "parts of speech, %d across lexicographer files, %d within one\n",
  #per_lemma, nlemma_train, nlemma_held, opts.seed, tier_count[1], tier_count[2], tier_count[3]))
if ntrain < 1000 or nheld < 500 then
  die(string.format("too few pairs (%d train, %d held out; want 1000 and 500): raise --max-per-lemma",
    ntrain, nheld))
end
