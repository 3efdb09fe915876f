-- Tests of the lomo bindings: error paths (bad arguments, closed handles, bad
-- YAML, missing files, wrong token ids), json and yaml, and a tiny end-to-end
-- run (random model, forward, LOMO steps, save/load, optimizer state).
-- Self-contained: returns a table of named test functions; a test fails by raising.
local lomo = require "lomo"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local fixtures = here .. "/../fixtures"

local T = {}

-- ---- helpers ----

-- the shared assertions (tests/lua/check.lua), under the short names these tests use
local check = require "check"
local fails, eq, near, truthy = check.raises, check.eq, check.near, check.truthy

local function tmpname(suffix)
  local p = os.tmpname()
  os.remove(p)
  return p .. (suffix or "")
end

local function write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function remove_dir(dir)
  for _, f in ipairs{"config.json", "model.safetensors"} do os.remove(dir .. "/" .. f) end
  os.remove(dir)
end

local CFG = {hidden_size = 16, intermediate_size = 32, num_hidden_layers = 2, num_attention_heads = 2,
             num_key_value_heads = 1, vocab_size = 32, max_position_embeddings = 64}

local function tiny(ctx, opts)
  return lomo.model(ctx, CFG, opts or {seed = 7})
end

-- a repeating pattern the model can learn: next token = (token + 3) % 32
local function batch()
  local tokens, targets = {}, {}
  for b = 1, 2 do
    local row, tgt = {}, {}
    for t = 1, 8 do
      local id = (b * 5 + t * 3) % 32
      row[t] = id
      tgt[t] = (id + 3) % 32
    end
    tgt[1] = -100
    tokens[b], targets[b] = row, tgt
  end
  return tokens, targets
end

-- ---- module ----

function T.module_fields()
  eq(lomo.version, "0.5.0", "lomo.version")
  eq(type(lomo.path), "string", "lomo.path")
  truthy(package.path:find(lomo.path .. "/?.lua", 1, true), "scripts/ on package.path")
  truthy(lomo.clock() > 0, "clock")
  truthy(lomo.peak_rss() > 0, "peak_rss")
  eq(type(lomo.interrupted()), "boolean", "interrupted")
end

function T.atomic_write()
  local p = tmpname(".txt")
  lomo.atomic_write(p, "one\0two")
  eq(read_file(p), "one\0two", "contents")
  lomo.atomic_write(p, "three")
  eq(read_file(p), "three", "rewritten")
  os.remove(p)
  fails(lomo.atomic_write, "/nonexistent/dir/x", "/nonexistent/dir/x", "s")
end

-- ---- bad arguments ----

function T.bad_context_arguments()
  fails(lomo.context, "threads", {threads = -1})
  fails(lomo.context, "unknown option 'thread'", {thread = 2})
  fails(lomo.context, "'threads' must be an integer", {threads = "two"})
  fails(lomo.context, "memory_limit must be 0", {memory_limit = -1})
end

-- a context's memory_limit: a model that does not fit is refused by name, and one that fits runs
function T.context_memory_limit()
  local small = lomo.context{memory_limit = 1000}
  fails(lomo.model, "memory_limit of 1000 bytes", small, CFG)
  small:close()
  local ctx = lomo.context{memory_limit = 1 << 30}
  local m = lomo.model(ctx, CFG)
  truthy(ctx:memory().current.total > 0, "a model within the limit")
  m:close()
  ctx:close()
end

function T.bad_model_arguments()
  local ctx = lomo.context()
  fails(lomo.model, "lomo.context", {}, CFG)
  fails(lomo.model, "config must be a table", ctx, "cfg")
  local c = {}
  for k, v in pairs(CFG) do c[k] = v end
  c.intermediate_size = nil
  fails(lomo.model, "'intermediate_size' is missing", ctx, c)
  c.intermediate_size = 2.5
  fails(lomo.model, "'intermediate_size' must be an integer", ctx, c)
  c.intermediate_size = 32
  c.num_attention_heads = 3   -- 16 is not divisible by 3
  fails(lomo.model, "num_attention_heads", ctx, c)
  fails(lomo.model, "dtype must be", ctx, CFG, {dtype = "f8"})
  fails(lomo.model, "unknown option 'dtypes'", ctx, CFG, {dtypes = "f32"})
  fails(lomo.model, "field 'checkpointing' must be a boolean or \"off\", \"blocks\" or \"keep_attention\", got number",
        ctx, CFG, {checkpointing = 1})
  fails(lomo.model, "got \"attention\"", ctx, CFG, {checkpointing = "attention"})
  local m = tiny(ctx)
  fails(m.forward, "tokens must be an array", m, "abc")
  fails(m.forward, "tokens[2] has 2 ids", m, {{1, 2, 3}, {1, 2}})
  fails(m.forward, "targets has 1 rows, tokens have 2", m, {{1, 2}, {3, 4}}, {{1, 2}})
  fails(m.get, "no parameter named 'nope'", m, "nope")
  fails(m.set, "has 16 values, got 2", m, "model.norm.weight", {1, 2})
  fails(lomo.optimizer, "name must be", m, {name = "adam"})
  fails(lomo.optimizer, "unknown option 'lr'", m, {lr = 0.1})
  local opt = lomo.optimizer(m)
  local tokens, targets = batch()
  fails(opt.step, "lr must be", opt, tokens, targets, -1)
  fails(opt.step, "lr must be a number, got nil", opt, tokens, targets)
  fails(lomo.plan, "needs 'config'", {seq = 8})
  fails(lomo.plan, "'seq' must be a positive integer", {config = CFG})
  m:close()
  ctx:close()
end

function T.wrong_token_ids()
  local ctx = lomo.context()
  local m = tiny(ctx)
  fails(m.forward, "tokens[1][2] = 32 is outside the vocabulary [0, 32)", m, {{1, 32, 3}})
  fails(m.forward, "tokens[1][1] = -1 is outside", m, {{-1, 2}})
  fails(m.forward, "tokens[1][2] must be an integer token id", m, {{1, 1.5}})
  fails(m.forward, "targets[1][1] = -5 is outside the vocabulary [0, 32) and not -100", m, {{1, 2}}, {{-5, 2}})
  fails(m.next_logits, "ids[1][1] = 99", m, {99})
  local opt = lomo.optimizer(m)
  fails(opt.step, "tokens[1][1] = 40", opt, {{40}}, {{1}}, 0.1)
  eq(opt:steps(), 0, "no step taken")
  -- the model is still usable after all those errors
  truthy(m:forward({{1, 2}}, {{2, 3}}) > 0, "loss")
  m:close()
end

-- ---- closed handles ----

function T.closed_handles()
  local ctx = lomo.context()
  local m = tiny(ctx)
  local opt = lomo.optimizer(m)
  opt:close()
  opt:close()   -- idempotent
  fails(opt.steps, "lomo.optimizer: use after close", opt)
  eq(tostring(opt), "lomo.optimizer (closed)", "tostring")
  m:close()
  m:close()
  fails(m.config, "lomo.model: use after close", m)
  fails(m.forward, "lomo.model: use after close", m, {{1}})
  fails(lomo.optimizer, "lomo.model: use after close", m)
  ctx:close()
  fails(ctx.memory, "lomo.context: use after close", ctx)
  fails(lomo.model, "lomo.context: use after close", ctx, CFG)
  local tok = lomo.tokenizer(fixtures .. "/tok/gpt2.tokenizer.json")
  tok:close()
  fails(tok.encode, "lomo.tokenizer: use after close", tok, "hi")
  fails(function() return tok.bos end, "lomo.tokenizer: use after close")
end

function T.close_order_is_free()
  -- a context closed before its model, a model before its optimizer: nothing dangles
  local ctx = lomo.context()
  local m = tiny(ctx)
  local opt = lomo.optimizer(m)
  ctx:close()
  local tokens, targets = batch()
  truthy(opt:step(tokens, targets, 0.01).loss > 0, "step with the context handle closed")
  m:close()
  fails(opt.step, "its lomo.model was closed", opt, tokens, targets, 0.01)
  fails(opt.save, "its lomo.model was closed", opt, tmpname())
  eq(opt:steps(), 1, "steps still readable")
  opt:close()
end

function T.to_be_closed_variables()
  local ctx = lomo.context()
  local escaped
  do
    local m <close> = tiny(ctx)
    escaped = m
    truthy(m:config().hidden_size == 16, "open inside the block")
  end
  fails(escaped.config, "lomo.model: use after close", escaped)
  collectgarbage()
  collectgarbage()
end

function T.optimizer_on_closed_model()
  local ctx = lomo.context()
  local m = tiny(ctx)
  m:close()
  fails(lomo.optimizer, "lomo.model: use after close", m, {name = "adamw"})
  fails(lomo.optimizer, "bad argument #1", "model")
end

-- ---- missing files ----

function T.missing_files()
  local ctx = lomo.context()
  fails(lomo.load, "/nonexistent/model.gguf", ctx, "/nonexistent/model.gguf")
  fails(lomo.load, "No such file", ctx, "/nonexistent/hf_folder")
  fails(lomo.tokenizer, "/nonexistent/tokenizer.json", "/nonexistent/tokenizer.json")
  fails(lomo.yaml.load, "/nonexistent/config.yaml", "/nonexistent/config.yaml")
  fails(lomo.plan, "/nonexistent/m.gguf", {model = "/nonexistent/m.gguf", seq = 8})
  local m = tiny(ctx)
  local opt = lomo.optimizer(m)
  fails(opt.load, "lomo.optimizer:load", opt, "/nonexistent/opt.state")
  -- a file that is not a model
  local p = tmpname(".gguf")
  write_file(p, "not a gguf file at all")
  fails(lomo.load, "lomo.load", ctx, p)
  os.remove(p)
end

-- ---- YAML ----

function T.yaml_values()
  local y = lomo.yaml.decode([[
name: run1
lr: 1e-4
steps: 100
ratio: .5
big: 0x10
flag: true
word: no
quoted: "1"
empty:
list: [a, 2, null, 3.5]
base: &base {seed: 1, batch: 4}
child:
  <<: *base
  batch: 8
text: |
  two
  lines
]])
  eq(y.name, "run1", "string")
  eq(y.lr, 1e-4, "1e-4 is a number")
  eq(math.type(y.steps), "integer", "integer")
  eq(y.ratio, 0.5, "float")
  eq(y.big, 16, "hex")
  eq(y.flag, true, "bool")
  eq(y.word, "no", "'no' stays a string")
  eq(y.quoted, "1", "quoted")
  eq(y.empty, nil, "null in a mapping is absent")
  eq(#y.list, 4, "list length")
  eq(y.list[3], lomo.json.null, "null in a list")
  eq(y.child.seed, 1, "merge key")
  eq(y.child.batch, 8, "merge does not override")
  eq(y.text, "two\nlines\n", "literal block")
  eq(lomo.yaml.decode(""), nil, "empty document")
  eq(lomo.yaml.decode("- !!str 12\n- !!float 3\n")[2], 3.0, "tags")
end

function T.bad_yaml_names_file_and_line()
  local p = tmpname(".yaml")
  write_file(p, "model: x\noptim:\n  lr: [1, 2\nsteps: 3\n")
  local err = fails(lomo.yaml.load, p, p)
  truthy(err:find(p .. ":4:", 1, true) or err:find(p .. ":3:", 1, true), "line number in: " .. err)
  write_file(p, "a: 1\nb: 2\na: 3\n")
  fails(lomo.yaml.load, p .. ":3:1: duplicate key 'a'", p)
  write_file(p, "a: *nope\n")
  fails(lomo.yaml.load, "unknown alias *nope", p)
  write_file(p, "a: 1\n---\nb: 2\n")
  fails(lomo.yaml.load, "a second document", p)
  os.remove(p)
  fails(lomo.yaml.decode, "cfg:2:", "a: 1\n  b: 2\n", "cfg")
  fails(lomo.yaml.decode, "!!int value is not an integer", "a: !!int x\n")
end

-- ---- JSON ----

function T.json_round_trips()
  local values = {
    {a = 1, b = 2.5, c = "x\n\"y\"\0z", d = true, e = false, f = {1, 2, {3}}, g = {h = {}}},
    {1, -2, 3.25, 1e300, -0.1, math.maxinteger, math.mininteger},
    "ünïcødé ✓", 42, 0.1, {},
  }
  for i, v in ipairs(values) do
    local s = lomo.json.encode(v)
    local back = lomo.json.decode(s)
    eq(lomo.json.encode(back), s, "round trip " .. i)
  end
  local back = lomo.json.decode(lomo.json.encode{x = 3, y = 3.0})
  eq(math.type(back.x), "integer", "integer stays integer")
  eq(math.type(back.y), "float", "float stays float")
  eq(lomo.json.encode(0.1), "0.1", "shortest round-trip reals")
  eq(lomo.json.decode("0.1"), 0.1, "decode real")
  eq(lomo.json.encode(lomo.json.decode("[]")), "[]", "empty array round-trips")
  eq(lomo.json.encode(lomo.json.decode("{}")), "{}", "empty object round-trips")
  eq(lomo.json.decode("null"), lomo.json.null, "null")
  eq(tostring(lomo.json.null), "null", "tostring(null)")
  eq(lomo.json.encode({b = 1, a = 2}), '{"a":2,"b":1}', "sorted keys")
  eq(lomo.json.encode({[1] = "a", [3] = "c"}), '{"1":"a","3":"c"}', "sparse tables are objects")
  truthy(lomo.json.encode({a = {1}}, {indent = 2}):find("\n", 1, true), "indent")
end

function T.json_errors()
  fails(lomo.json.decode, "line 1 column", "{\"a\": }")
  fails(lomo.json.decode, "line 3", "[1,\n2,\n}")
  fails(lomo.json.encode, "at .f: cannot encode a function", {f = print})
  fails(lomo.json.encode, "JSON has no inf or nan", {1, 0 / 0})
  local t = {}
  t.self = t
  fails(lomo.json.encode, "nested too deeply", t)
  fails(lomo.json.encode, "not valid UTF-8", "\xff\xfe")
end

-- ---- tokenizer ----

function T.tokenizer_round_trip()
  local tok = lomo.tokenizer(fixtures .. "/tok/gpt2.tokenizer.json")
  local ids = tok:encode("Hello world")
  truthy(#ids >= 2, "ids")
  eq(tok:decode(ids), "Hello world", "decode")
  truthy(tok:vocab_size() > 0, "vocab size")
  eq(tok:token_to_id(tok:id_to_token(ids[1])), ids[1], "token_to_id")
  eq(tok:id_to_token(-1), nil, "id out of range")
  fails(tok.decode, "ids[1] = -3 is outside the vocabulary", tok, {-3})
  fails(tok.encode, "unknown option 'special'", tok, "x", {special = true})
  truthy(tostring(tok):find("lomo.tokenizer", 1, true), "tostring")
end

-- the llama3 chat template's marks are single special tokens of a Llama 3 tokenizer, and its
-- text carries the one BOS (encoded without the tokenizer's own, as lomo chat and generate do)
function T.llama3_template_with_a_llama3_tokenizer()
  local prompts = require "lomo.prompts"
  local tok = lomo.tokenizer(fixtures .. "/tok/llama3.tokenizer.json")
  local t = prompts.template("llama3")
  for _, mark in ipairs{t.begin, t.close, "<|start_header_id|>", "<|end_header_id|>"} do
    eq(#tok:encode(mark, {add_special = false}), 1, mark .. " is one token")
  end
  local text = prompts.chat({{role = "user", content = "Hi"}}, {template = "llama3", add_generation_prompt = true})
  local ids = tok:encode(text, {add_special = false})
  eq(ids[1], tok.bos, "starts with the BOS")
  local n = 0
  for _, id in ipairs(ids) do n = n + (id == tok.bos and 1 or 0) end
  eq(n, 1, "one BOS")
  eq(tok:decode(ids, {skip_special = false}), text, "decodes to the text")
  eq(prompts.template_for(tok), "llama3", "a Llama 3 tokenizer points to its template")
  eq(tok.add_bos, true, "Llama 3 starts a text with its BOS")
  eq(lomo.tokenizer(fixtures .. "/tok/smollm2.tokenizer.json").add_bos, false, "SmolLM2 does not")
  eq(prompts.template_for(lomo.tokenizer(fixtures .. "/tok/smollm2.tokenizer.json")), "chatml", "SmolLM2's: ChatML")
  local stops = require("lomo.eval").chat_stops(tok, "llama3")
  eq(stops[#stops], tok:token_to_id("<|eot_id|>"), "a reply stops at the end of its turn")
  truthy(stops[1] == tok.eos and tok.eos ~= stops[#stops], "and at the EOS")
end

-- the zephyr template's BOS and EOS are single special tokens of a Llama 2 tokenizer, its role tags
-- plain text, and its text carries the one BOS; the model's chat template comes from
-- tokenizer_config.json beside tokenizer.json and points template_for to zephyr
function T.zephyr_template_with_a_llama2_tokenizer()
  local prompts = require "lomo.prompts"
  local dir = tmpname("_zephyr")
  assert(os.execute("mkdir -p '" .. dir .. "'"))
  write_file(dir .. "/tokenizer.json", read_file(fixtures .. "/tok/llama2.tokenizer.json"))
  local tmpl = "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\\n' + " ..
               "message['content'] + eos_token }}{% else %}{{ '<|assistant|>\\n' + message['content'] + eos_token }}" ..
               "{% endif %}{% endfor %}"
  write_file(dir .. "/tokenizer_config.json", '{"bos_token": "<s>", "eos_token": "</s>", "chat_template": "' ..
             tmpl .. '"}')
  local tok = lomo.tokenizer(dir .. "/tokenizer.json")
  eq(tok:chat_template(), (tmpl:gsub("\\n", "\n")), "the chat template, as the JSON string reads")
  eq(prompts.template_for(tok), "zephyr", "its format")
  local t = prompts.template("zephyr")
  eq(tok:encode(t.begin, {add_special = false})[1], tok.bos, "<s> is the BOS")
  eq(tok:encode(t.close, {add_special = false})[1], tok.eos, "</s> is the EOS")
  local text = prompts.chat({{role = "user", content = "Hi"}}, {template = "zephyr", add_generation_prompt = true})
  local ids = tok:encode(text, {add_special = false})
  local n = 0
  for _, id in ipairs(ids) do n = n + (id == tok.bos and 1 or 0) end
  eq(ids[1], tok.bos, "starts with the BOS")
  eq(n, 1, "one BOS")
  eq(require("lomo.eval").chat_stops(tok, "zephyr")[1], tok.eos, "a reply stops at the EOS")
  eq(lomo.tokenizer(fixtures .. "/tok/llama2.tokenizer.json"):chat_template(), nil, "no config beside it: none")
  tok:close()
  os.remove(dir .. "/tokenizer.json")
  os.remove(dir .. "/tokenizer_config.json")
  os.remove(dir)
end

-- ---- end to end ----

function T.forward_logprobs_and_next_logits()
  local ctx = lomo.context{threads = 1}
  local m = tiny(ctx)
  local tokens, targets = batch()
  local loss = m:forward(tokens, targets)
  eq(m:forward(tokens), nil, "no targets, no loss")
  local lp = m:token_logprobs(tokens, targets)
  local sum, n = 0, 0
  for b = 1, #lp do
    for t = 1, #lp[b] do
      if targets[b][t] ~= -100 then sum, n = sum + lp[b][t], n + 1
      else eq(lp[b][t], 0, "ignored position") end
    end
  end
  near(-sum / n, loss, 1e-5, "mean -logprob is the loss")
  -- next_logits: the last position's log-softmax agrees with token_logprobs
  local row = tokens[1]
  local logits = m:next_logits(row)
  eq(#logits, 32, "V logits")
  local mx = -math.huge
  for _, z in ipairs(logits) do mx = math.max(mx, z) end
  local se = 0
  for _, z in ipairs(logits) do se = se + math.exp(z - mx) end
  local target = targets[1][#row]
  near(logits[target + 1] - mx - math.log(se), lp[1][#row], 1e-4, "next-token log p")
  -- batched, sequences of different lengths: each as if alone (a prefix of row 2 ends early)
  local short = {}
  for t = 1, 5 do short[t] = tokens[2][t] end
  local both = m:next_logits({row, short})
  eq(#both, 2, "one logits table per sequence")
  local alone = m:next_logits(short)
  for v = 1, 32 do
    near(both[1][v], logits[v], 1e-5, "batched row 1, logit " .. v)
    near(both[2][v], alone[v], 1e-5, "batched short row, logit " .. v)
  end
  fails(m.next_logits, "ids[2] is empty", m, {row, {}})
  fails(m.next_logits, "ids[2][1] = 40 is outside the vocabulary", m, {row, {40}})
  local mem = ctx:memory()
  truthy(mem.current.weights > 0 and mem.peak.total >= mem.current.total, "memory")
  ctx:reset_peak()
  m:close()
end

function T.decode_with_the_key_value_cache()
  local ctx = lomo.context{threads = 1}
  local m = tiny(ctx)
  local tokens = batch()
  local row = tokens[1]
  -- a prompt, then one token a call: each call's logits are next_logits of the prefix
  local prompt = {}
  for t = 1, 4 do prompt[t] = row[t] end
  local z = m:decode(prompt)
  for t = 4, #row do
    local prefix = {}
    for u = 1, t do prefix[u] = row[u] end
    local want = m:next_logits(prefix)
    eq(#z, 32, "V logits")
    for v = 1, 32 do near(z[v], want[v], 1e-4, ("position %d, logit %d"):format(t, v)) end
    if t < #row then z = m:decode({row[t + 1]}, t) end
  end
  -- rows of one length decode together, one table each
  local both = m:decode({{row[1], row[2]}, {tokens[2][1], tokens[2][2]}})
  eq(#both, 2, "one logits table per row")
  local again = m:decode({row[1], row[2]})
  for v = 1, 32 do near(both[1][v], again[v], 1e-5, "row 1 alone, logit " .. v) end
  fails(m.decode, "does not continue the cache", m, {row[3]}, 5)
  fails(m.decode, "pos must be >= 0", m, {row[3]}, -1)
  fails(m.decode, "ids[1][1] = 40 is outside the vocabulary", m, {40})
  m:decode({row[3]}, 2)
  local opt = lomo.optimizer(m, {name = "lomo"})
  opt:step(tokens, (select(2, batch())), 0.01)
  fails(m.decode, "the weights changed", m, {row[4]}, 3)
  m:decode_reset()
  fails(m.decode, "does not continue the cache", m, {row[1]}, 1)
  m:close()
end

function T.params_get_set()
  local ctx = lomo.context()
  local m = tiny(ctx)
  local ps = m:params()
  local seen = {}
  for _, p in ipairs(ps) do seen[p.kind] = true end
  truthy(seen.linear and seen.norm and seen.embedding, "kinds")
  local w = m:get("model.norm.weight")
  eq(#w, 16, "numel")
  for i = 1, #w do w[i] = i / 8 end
  m:set("model.norm.weight", w)
  local back = m:get("model.norm.weight")
  for i = 1, #w do eq(back[i], w[i], "value " .. i) end
  eq(m:config().num_key_value_heads, 1, "config")
  m:close()
end

function T.lomo_steps_lower_the_loss()
  local ctx = lomo.context{threads = 1}
  local m = tiny(ctx)
  local opt = lomo.optimizer(m, {name = "lomo", clip_grad_norm = 1.0})
  local tokens, targets = batch()
  local first, last
  for i = 1, 8 do
    local r = opt:step(tokens, targets, 0.05)
    eq(r.skipped, false, "skipped")
    truthy(r.grad_norm and r.grad_norm > 0, "grad_norm measured with clipping")
    first = first or r.loss
    last = r.loss
  end
  truthy(last < first * 0.95, ("loss falls: %g -> %g"):format(first, last))
  eq(opt:steps(), 8, "steps")
  m:close()
end

function T.profile_counts_the_ops_of_a_step()
  local ctx = lomo.context{threads = 1}
  local m = tiny(ctx)
  local opt = lomo.optimizer(m, {name = "lomo"})
  local tokens, targets = batch()
  opt:step(tokens, targets, 0.05)
  eq(ctx:profile_stats().matmul.calls, 0, "counted before profiling was on")
  ctx:profile(true)
  opt:step(tokens, targets, 0.05)
  local s = ctx:profile_stats()
  local layers = m:config().num_hidden_layers
  eq(s.linear_update.calls, 7 * layers + (m:config().tie_word_embeddings and 0 or 1), "fused updates")
  truthy(s.matmul.flops > 0 and s.matmul.seconds >= 0, "matmul flops and time")
  truthy(s.attention_bwd.calls == layers, "attention backwards")
  ctx:profile(false)
  opt:step(tokens, targets, 0.05)
  eq(ctx:profile_stats().linear_update.calls, s.linear_update.calls, "counted after profiling was off")
  ctx:profile_reset()
  eq(ctx:profile_stats().matmul.calls, 0, "reset")
  fails(function() ctx:profile("yes") end, "boolean expected")
  m:close()
end

function T.save_load_round_trip()
  local ctx = lomo.context{threads = 1}
  local m = tiny(ctx, {seed = 3})
  local tokens, targets = batch()
  local opt = lomo.optimizer(m, {name = "sgd"})
  opt:step(tokens, targets, 0.1)
  local dir = tmpname("_model")
  m:save(dir)
  truthy(read_file(dir .. "/config.json"), "config.json written")
  local m2 = lomo.load(ctx, dir)
  near(m2:forward(tokens, targets), m:forward(tokens, targets), 1e-6, "same loss after reload")
  local a, b = m:get("model.layers.1.mlp.up_proj.weight"), m2:get("model.layers.1.mlp.up_proj.weight")
  for i = 1, #a do
    if a[i] ~= b[i] then error("weight " .. i .. " differs after reload") end
  end
  eq(m2:config().hidden_size, 16, "config after reload")
  local m3 = lomo.load(ctx, dir, {dtype = "bf16"})
  eq(m3:params()[1].dtype, "bf16", "loaded as bf16")
  m2:close()
  m3:close()
  remove_dir(dir)
  m:close()
end

function T.rope_scaling_config()
  local ctx = lomo.context{threads = 1}
  local cfg = {}
  for k, v in pairs(CFG) do cfg[k] = v end
  cfg.rope_scaling = {rope_type = "llama3", factor = 8, low_freq_factor = 1, high_freq_factor = 4,
                      original_max_position_embeddings = 16}
  local m = lomo.model(ctx, cfg, {seed = 3})
  local rs = m:config().rope_scaling
  eq(rs.rope_type, "llama3", "rope_type")
  eq(rs.factor, 8, "factor")
  eq(rs.original_max_position_embeddings, 16, "original_max_position_embeddings")
  -- the scaling changes the forward (positions up to 8 turn the low frequencies)
  local plain = tiny(ctx, {seed = 3})
  local tokens, targets = batch()
  local a, b = m:forward(tokens, targets), plain:forward(tokens, targets)
  truthy(a ~= b, "scaled and plain losses differ")
  local dir = tmpname("_model")
  m:save(dir)
  truthy(read_file(dir .. "/config.json"):find('"rope_type": "llama3"', 1, true), "written to config.json")
  local m2 = lomo.load(ctx, dir)
  eq(m2:config().rope_scaling.high_freq_factor, 4, "read back")
  eq(m2:forward(tokens, targets), a, "same loss after reload")
  m2:close()
  remove_dir(dir)
  eq(plain:config().rope_scaling, nil, "no scaling: no rope_scaling field")
  cfg.rope_scaling = {rope_type = "yarn", factor = 2}
  fails(function() lomo.model(ctx, cfg) end, "\"yarn\" is not one of default, linear, llama3")
  cfg.rope_scaling = {rope_type = "linear", factor = "2x"}
  fails(function() lomo.model(ctx, cfg) end, "rope_scaling: config field 'factor' must be a number")
  cfg.rope_scaling = {rope_type = "linear"}
  fails(function() lomo.model(ctx, cfg) end, "rope_scaling.factor")
  cfg.rope_scaling = "linear"
  fails(function() lomo.model(ctx, cfg) end, "'rope_scaling' must be a table")
  cfg.rope_scaling = {factor = 2}
  fails(function() lomo.model(ctx, cfg) end, "'rope_scaling.rope_type' must be a string, got nil")
  m:close()
  plain:close()
end

function T.optimizer_state_exact_resume()
  local ctx = lomo.context{threads = 1}
  local tokens, targets = batch()
  local m = tiny(ctx, {seed = 5})
  local opt = lomo.optimizer(m, {name = "adalomo"})
  for _ = 1, 3 do opt:step(tokens, targets, 0.01) end
  local dir, state = tmpname("_ckpt"), tmpname(".optim")
  m:save(dir)
  opt:save(state)
  local want = {}
  for i = 1, 2 do want[i] = opt:step(tokens, targets, 0.01).loss end

  local m2 = lomo.load(ctx, dir)
  local opt2 = lomo.optimizer(m2, {name = "adalomo"})
  opt2:load(state)
  eq(opt2:steps(), 3, "steps restored")
  for i = 1, 2 do near(opt2:step(tokens, targets, 0.01).loss, want[i], 1e-6, "resumed loss " .. i) end
  -- a state file for another optimizer is refused
  local opt3 = lomo.optimizer(m2, {name = "adamw"})
  fails(opt3.load, "lomo.optimizer:load", opt3, state)
  os.remove(state)
  remove_dir(dir)
  m:close()
  m2:close()
end

function T.plan_from_config()
  local p = lomo.plan{config = CFG, seq = 8, batch = 2}
  truthy(p.weights > 0 and p.activations > 0, "plan sizes")
  truthy(p.adamw.total > p.lomo.total, "adamw needs more than lomo")
  truthy(p.adamw.optimizer > 0 and p.lomo.optimizer == 0, "optimizer state")
  eq(p.inference.gradients, 0, "inference keeps no gradients")
  -- checkpointing: blocks keep the least; keeping attention sits between blocks and off
  local off = p.lomo.activations
  local blocks = lomo.plan{config = CFG, seq = 8, batch = 2, checkpointing = true}.lomo.activations
  local keep = lomo.plan{config = CFG, seq = 8, batch = 2, checkpointing = "keep_attention"}.lomo.activations
  truthy(blocks < keep and keep < off, ("activations: blocks %d < keep_attention %d < off %d"):format(blocks, keep, off))
  eq(lomo.plan{config = CFG, seq = 8, batch = 2, checkpointing = "blocks"}.lomo.activations, blocks, "\"blocks\" = true")
  eq(lomo.plan{config = CFG, seq = 8, batch = 2, checkpointing = "off"}.lomo.activations, off, "\"off\" = false")
  -- a GPU's plan needs no GPU: the same weights, smaller attention statistics (test_plan checks each category)
  local gpu = lomo.plan{config = CFG, seq = 8, batch = 2, device = "cuda"}
  eq(gpu.device, "cuda", "planned for cuda")
  eq(lomo.plan{config = CFG, seq = 8, batch = 2, device = "cpu"}.device, "cpu", "planned for cpu")
  eq(gpu.weights, p.weights, "cuda weights")
  truthy(gpu.activations < p.activations, ("cuda activations %d < cpu %d"):format(gpu.activations, p.activations))
  -- the LM head's logits a chunk of the vocabulary at a time: 16 of 32 rows keep half the logits
  local whole = lomo.plan{config = CFG, seq = 8, batch = 2, logits_chunk = 32}.lomo.activations
  local half = lomo.plan{config = CFG, seq = 8, batch = 2, logits_chunk = 16}.lomo.activations
  eq(whole - half, 2 * 8 * 16 * 4, "16 of 32 vocabulary rows of logits for 16 positions")
  eq(off, whole, "without checkpointing the logits are whole")
  eq(lomo.plan{config = CFG, seq = 8, batch = 2, logits_chunk = 16}.logits_chunk, 16, "the plan's chunk")
  eq(lomo.plan{config = CFG, seq = 8, checkpointing = true}.logits_chunk, 32, "at most the vocabulary")
  eq(lomo.LOGITS_CHUNK, 8192, "the default chunk under checkpointing")
  fails(lomo.plan, "field 'logits_chunk' must be 0 (automatic) or a number of vocabulary rows, got -1",
        {config = CFG, seq = 8, logits_chunk = -1})
end

-- A model with the head in chunks trains to the same losses as one with the whole vocabulary.
function T.logits_chunk_trains_the_same()
  local ctx = lomo.context()
  local tokens, targets = batch()
  local losses = {}
  for i, chunk in ipairs({0, 16}) do
    local m = lomo.model(ctx, CFG, {seed = 3, logits_chunk = chunk})
    local opt = lomo.optimizer(m, {clip_grad_norm = 1.0})
    for s = 1, 3 do losses[#losses + 1] = opt:step(tokens, targets, 0.05).loss end
    m:close()
  end
  for s = 1, 3 do near(losses[3 + s], losses[s], 1e-5, "step " .. s .. " loss, chunked vs whole") end
  truthy(losses[3] < losses[1], "it trains")
  fails(lomo.model, "field 'logits_chunk' must be an integer", ctx, CFG, {logits_chunk = 1.5})
  fails(lomo.model, "field 'logits_chunk' must be 0 (automatic) or a number of vocabulary rows, got 1099511627776",
        ctx, CFG, {logits_chunk = 1 << 40})
end

-- Each checkpointing mode gives the same loss and weights, bit for bit, and can be switched on a live model.
function T.checkpointing_modes()
  local ctx = lomo.context()
  local tokens, targets = batch()
  local ref
  for _, mode in ipairs({false, true, "keep_attention", "off"}) do
    local m = tiny(ctx)
    m:set_checkpointing(mode)
    local opt = lomo.optimizer(m, {clip_grad_norm = 1.0})
    local losses = {}
    for s = 1, 2 do losses[s] = opt:step(tokens, targets, 0.05).loss end
    local w = m:get("model.layers.0.self_attn.q_proj.weight")
    if not ref then ref = {losses = losses, w = w}
    else
      eq(losses[2], ref.losses[2], "loss with checkpointing " .. tostring(mode))
      for i = 1, #w do
        if w[i] ~= ref.w[i] then error(("checkpointing %s: q_proj[%d] differs"):format(tostring(mode), i)) end
      end
    end
    m:close()
  end
  local m = tiny(ctx)
  fails(m.set_checkpointing, "argument must be a boolean or", m, 2)
  m:close()
end

function T.tostring_and_help()
  local ctx = lomo.context()
  local m = tiny(ctx)
  truthy(tostring(m):find("lomo.model (2 layers", 1, true), "model tostring")
  truthy(tostring(ctx):find("lomo.context", 1, true), "ctx tostring")
  m:close()
  eq(tostring(m), "lomo.model (closed)", "closed tostring")
end

return T
