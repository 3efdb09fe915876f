-- cli.lua: the Lua half of the `lomo` program (embedded at build time):
-- `lomo run`, `lomo plan`, `lomo generate`, `lomo chat` and how the REPL shows values.
local lomo = require "lomo"

local M = {}

-- ---- lomo run recipe.yaml [key=value ...] ----

local function split_key(key)
  if key == "" or key:find("%.%.") or key:sub(1, 1) == "." or key:sub(-1) == "." then
    error(("override '%s': expected a dotted key such as optim.lr"):format(key), 0)
  end
  local parts = {}
  for p in key:gmatch("[^.]+") do parts[#parts + 1] = p end
  return parts
end

-- a numeric part indexes a list that already exists
local function index_of(t, part)
  local n = tonumber(part)
  if n and math.type(n) == "integer" and t[1] ~= nil then return n end
  return part
end

function M.apply_override(cfg, spec)
  local key, text = spec:match("^([^=]+)=(.*)$")
  if not key then error(("override '%s': expected key=value"):format(spec), 0) end
  local value = text
  if text ~= "" then value = lomo.yaml.decode(text, "override " .. key) end
  local parts = split_key(key)
  local t = cfg
  for i = 1, #parts - 1 do
    local k = index_of(t, parts[i])
    local nxt = t[k]
    if nxt == nil then
      nxt = {}
      t[k] = nxt
    elseif type(nxt) ~= "table" then
      error(("override %s: %s is a %s, not a mapping"):format(key, table.concat(parts, ".", 1, i), type(nxt)), 0)
    end
    t = nxt
  end
  t[index_of(t, parts[#parts])] = value
end

M.run_usage = "usage: lomo run recipe.yaml [key=value ...]\n" ..
  "  runs the recipe the YAML names (recipe: path/to/recipe.lua) with the YAML as its config;\n" ..
  "  each key=value sets one setting (a.b.c=value for nested ones) over the file's"

-- `lomo SUBCOMMAND --help`: the subcommand's usage, on stdout
function M.print_usage(name)
  io.stdout:write(M[name .. "_usage"], "\n")
end

function M.run(yaml, ...)
  if not yaml then error(M.run_usage, 0) end
  local cfg = lomo.yaml.load(yaml)
  if type(cfg) ~= "table" then error(yaml .. ": expected a mapping at the top level", 0) end
  for i = 1, select("#", ...) do M.apply_override(cfg, (select(i, ...))) end
  local recipe = cfg.recipe
  if type(recipe) ~= "string" then error(yaml .. ": needs a 'recipe: path/to/recipe.lua' entry", 0) end
  local dir = yaml:match("^(.*)/[^/]*$") or "."
  if recipe:sub(1, 1) ~= "/" then recipe = dir .. "/" .. recipe end
  local chunk, err = loadfile(recipe)
  if not chunk then error(err, 0) end
  local fn = chunk()
  if type(fn) ~= "function" then
    error(("%s: a recipe returns a function(config), got a %s"):format(recipe, type(fn)), 0)
  end
  return fn(cfg, {yaml = yaml, dir = dir, recipe = recipe})
end

-- ---- options of the subcommands ----

-- args -> opt: spec[name] is "int" (positive), "number", "string" or "flag" for --name; a value
-- follows as the next argument or after "=", a flag may take "=value" too; anything else not
-- starting with "-" is positional, in order at opt[1], opt[2], ...
local function parse_options(args, spec, usage)
  local opt, i = {}, 1
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^%-%-([%w_-]+)=(.*)$")
    name = name or a:match("^%-%-([%w_-]+)$")
    if name then
      local kind = spec[name]
      if not kind then error("unknown option " .. a .. "\n" .. usage, 0) end
      local v = inline
      if kind == "flag" then
        v = v or true
      elseif v == nil then
        i = i + 1
        v = args[i]
        if v == nil then error(a .. " needs a value\n" .. usage, 0) end
      end
      if kind == "int" then
        local n = math.tointeger(tonumber(v))
        if not n or n <= 0 then error(("--%s needs a positive integer, got %s"):format(name, v), 0) end
        v = n
      elseif kind == "number" then
        local n = tonumber(v)
        if not n then error(("--%s needs a number, got %s"):format(name, v), 0) end
        v = n
      end
      opt[name] = v
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      error("unknown option " .. a .. "\n" .. usage, 0)
    else
      opt[#opt + 1] = a
    end
    i = i + 1
  end
  return opt
end

-- A runtime error here (a missing file, a bad setting, a conversation past the model's positions)
-- is about the user's input, not a fault in a script: without the script position Lua put before
-- it, it is shown alone, without a traceback.
local function without_position(err) return (tostring(err):gsub("^[^%s:]+:%d+: ", "")) end

local function call(f, ...)
  local r = table.pack(pcall(f, ...))
  if not r[1] then error(without_position(r[2]), 0) end
  return table.unpack(r, 2, r.n)
end

-- ---- lomo plan <model> --seq N --batch B --dtype bf16 [--checkpointing[=keep_attention]] [--logits-chunk N]
--      [--device cuda] ----

local function size(n)
  if n >= 10 * 2^30 then return ("%.1f GiB"):format(n / 2^30) end
  return ("%.1f MiB"):format(n / 2^20)
end

M.plan_usage = "usage: lomo plan <model.gguf | hf-folder | config.json> --seq N [--batch B] " ..
               "[--dtype f32|bf16|f16] [--checkpointing[=blocks|keep_attention]] [--logits-chunk N] " ..
               "[--device cpu|cuda]"

function M.plan(...)
  local opt = parse_options({...}, {seq = "int", batch = "int", dtype = "string", device = "string",
                                    checkpointing = "flag", ["logits-chunk"] = "int"}, M.plan_usage)
  if opt[2] then error("one model only (got " .. opt[1] .. " and " .. opt[2] .. ")", 0) end
  opt.model, opt.batch, opt.dtype = opt[1], opt.batch or 1, opt.dtype or "f32"
  if opt.checkpointing == true then opt.checkpointing = "blocks" end
  if opt.checkpointing and not require("lomo.util").CHECKPOINTING_MODES[opt.checkpointing] then
    error("--checkpointing=" .. opt.checkpointing .. ": checkpointing is off, blocks or keep_attention\n" ..
          M.plan_usage, 0)
  end
  if not opt.model or not opt.seq then error(M.plan_usage, 0) end
  local p = call(lomo.plan, {model = opt.model, seq = opt.seq, batch = opt.batch, dtype = opt.dtype,
                             checkpointing = opt.checkpointing, logits_chunk = opt["logits-chunk"],
                             device = opt.device})
  print(("memory plan for %s: batch %d x seq %d, %s weights, checkpointing %s, on %s"):format(
    opt.model, opt.batch, opt.seq, opt.dtype, opt.checkpointing or "off", p.device))
  local rows = p.logits_chunk < p.vocab_size and ("%d of the %d vocabulary rows at a time"):format(p.logits_chunk,
               p.vocab_size) or ("all %d vocabulary rows at once"):format(p.vocab_size)
  print(("the LM head's logits: %s (--logits-chunk N; by default %d under checkpointing, all without)")
        :format(rows, lomo.LOGITS_CHUNK))
  local cols = {"weights", "activations", "gradients", "optimizer", "scratch", "total"}
  local line = {("%-10s"):format("")}
  for _, c in ipairs(cols) do line[#line + 1] = ("%12s"):format(c) end
  print(table.concat(line))
  for _, name in ipairs{"inference", "lomo", "lomo-clip", "adalomo", "sgd", "adamw"} do
    line = {("%-10s"):format(name)}
    for _, c in ipairs(cols) do line[#line + 1] = ("%12s"):format(size(p[name][c])) end
    print(table.concat(line))
  end
  print(("generation (lomo chat, lomo generate): a key/value cache of %s per 1024 positions, beyond inference's")
        :format(size(1024 * p.kv_cache_per_position)))
  return p
end

-- ---- lomo convert <model> <folder>: a GGUF (or a folder) as a Hugging Face folder ----

M.convert_usage = "usage: lomo convert <model.gguf | hf-folder> <out-folder> [--dtype f32|bf16|f16] " ..
                  "[--tokenizer PATH]\n  writes config.json, model.safetensors, tokenizer.json and " ..
                  "tokenizer_config.json:\n  a folder transformers loads (a GGUF's quantized weights are " ..
                  "stored dequantized, exactly in f32, the default)"

function M.convert(...)
  local opt = parse_options({...}, {dtype = "string", tokenizer = "string"}, M.convert_usage)
  if not opt[1] or not opt[2] or opt[3] then error(M.convert_usage, 0) end
  local ctx = call(lomo.context, {threads = 2, device = "cpu"})
  local m = call(lomo.load, ctx, opt[1], {dtype = opt.dtype or "f32"})
  local tok = call(lomo.tokenizer, ctx, opt.tokenizer or opt[1])
  -- a tokenizer tokenizer.json cannot express (a text at two ids, a token that is not UTF-8)
  -- leaves the weights still worth writing: said first, then the model
  local ok, err = pcall(tok.save, tok, opt[2])
  if not ok then
    io.stderr:write(("lomo: the tokenizer is not written: %s\n  (lomo chat and generate take it with " ..
                     "--tokenizer %s)\n"):format(without_position(err), opt.tokenizer or opt[1]))
  end
  call(m.save, m, opt[2])
  print(("%s -> %s: %d parameters in %s, %s"):format(opt[1], opt[2], m:num_weights(), opt.dtype or "f32",
                                                     ok and tok:vocab_size() .. " tokens" or "no tokenizer"))
  tok:close()
  m:close()
  ctx:close()
end

-- ---- lomo generate and lomo chat: replies streamed through the key/value cache ----

-- what load_for_generation reads (lomo perplexity takes these too), then the sampling options
local MODEL_SPEC = {dtype = "string", device = "string", threads = "int", tokenizer = "string"}
local SAMPLING_SPEC = {system = "string", ["max-new"] = "int", temperature = "number", ["top-p"] = "number",
                       seed = "int"}
local SAMPLING_USAGE = "[--system TEXT] [--max-new N] [--temperature T] [--top-p P] [--seed S] " ..
                       "[--tokenizer PATH] [--dtype f32|bf16|f16] [--device cpu|cuda] [--threads N]\n" ..
                       "  the tokenizer is the model's own unless --tokenizer names one (a .gguf, a folder or\n" ..
                       "  a tokenizer.json: a fine-tuned model saved from a GGUF has none of its own)"

-- the option specs joined
local function spec_of(...)
  local spec = {}
  for _, part in ipairs({...}) do for k, v in pairs(part) do spec[k] = v end end
  return spec
end

local function load_for_generation(path, opt)
  local ctx = call(lomo.context, {threads = opt.threads, device = opt.device})
  local m = call(lomo.load, ctx, path, {dtype = opt.dtype or "f32"})
  return m, call(lomo.tokenizer, ctx, opt.tokenizer or path)
end

-- An on_token for lomo.eval.generate that prints the reply as it grows, and finish(out), which
-- prints what is left and ends the line. The whole reply is decoded again each time: a character
-- may take several tokens to complete.
local function streamer(tok)
  local shown = 0
  local function show(out)
    local sofar = tok:decode(out, {skip_special = true})
    io.write(sofar:sub(shown + 1))
    io.flush()
    shown = #sofar
  end
  return function(_, out) show(out) end, function(out)
    show(out)
    io.write("\n")
    shown = 0
  end
end

local function timing(n, seconds, why, extra)
  io.stderr:write(("%d tokens in %.2f s (%.1f ms a token), stopped by %s%s\n"):format(
    n, seconds, n > 0 and 1e3 * seconds / n or 0, why == "stop" and "the end token" or "--max-new", extra or ""))
end

-- The model's chat template (prompts.template_for); a guess is said on stderr.
local function template_noted(prompts, tok)
  local name, note = prompts.template_for(tok)
  if note then io.stderr:write("lomo: ", note, "\n") end
  return name
end

M.generate_usage = "usage: lomo generate <model.gguf | hf-folder> [prompt ...] " ..
                   "[--chat[=chatml|smollm2|llama3|zephyr]] " .. SAMPLING_USAGE ..
                   "\n  the prompt is the words after the model, or standard input when there are none;" ..
                   "\n  --chat alone takes the model's template (its chat template's format, else its" ..
                   "\n  tokenizer's special tokens: llama3 or chatml)"

-- Prints the reply as it is generated, then a line of timing to stderr.
function M.generate(...)
  local eval, prompts = require "lomo.eval", require "lomo.prompts"
  local opt = parse_options({...}, spec_of(MODEL_SPEC, SAMPLING_SPEC, {chat = "flag"}), M.generate_usage)
  local path = opt[1]
  if not path then error(M.generate_usage, 0) end
  local text = table.concat(opt, " ", 2)
  if #opt < 2 then text = io.read("a") or "" end
  if opt.chat and opt.chat ~= true then call(prompts.template, opt.chat) end   -- a bad name, before loading
  if opt.system and not opt.chat then error("--system needs --chat\n" .. M.generate_usage, 0) end
  local m, tok = load_for_generation(path, opt)
  -- --chat alone: the model's template
  local template = opt.chat
  if template == true then template = template_noted(prompts, tok) end
  if template then
    text = call(prompts.chat, {{role = "user", content = text}},
                {template = template, system = opt.system, add_generation_prompt = true})
  end
  local on_token, finish = streamer(tok)
  local t0 = lomo.clock()
  local reply, why, ids = eval.generate_text(m, tok, text, {
    bos = not template and tok.add_bos, stop = template and eval.chat_stops(tok, template) or nil,
    max_new_tokens = opt["max-new"] or 128, temperature = opt.temperature or 0, top_p = opt["top-p"],
    seed = opt.seed or 0, on_token = on_token})
  finish(ids)
  timing(#ids, lomo.clock() - t0, why)
  m:close()
  return reply
end

M.chat_usage = "usage: lomo chat <model.gguf | hf-folder> [--template chatml|smollm2|llama3|zephyr] " ..
               SAMPLING_USAGE ..
               "\n  a conversation on standard input, a line a turn; /reset starts a new one;" ..
               "\n  without --template, the model's (its chat template's format, else its tokenizer's" ..
               "\n  special tokens: llama3 or chatml)"

-- A conversation: each turn's tokens join the key/value cache after the earlier turns', so a turn
-- costs its own tokens only. The template's end of turn (ChatML's <|im_end|>, Llama 3's <|eot_id|>)
-- stops a reply; the next turn feeds it first, since a stop token never enters the cache.
function M.chat(...)
  local eval, prompts, rng = require "lomo.eval", require "lomo.prompts", require "lomo.rng"
  local opt = parse_options({...}, spec_of(MODEL_SPEC, SAMPLING_SPEC, {template = "string"}), M.chat_usage)
  local path = opt[1]
  if not path or opt[2] then error(M.chat_usage, 0) end
  if opt.template then call(prompts.template, opt.template) end   -- a bad template, before loading
  local m, tok = load_for_generation(path, opt)
  local template = opt.template or template_noted(prompts, tok)
  local t = prompts.template(template)
  local stop = eval.chat_stops(tok, template)
  local r = rng.new(opt.seed or 0)
  local on_token, finish = streamer(tok)
  local pos, pending = 0, {}   -- positions the cache holds; ids generated but not yet in it
  io.stderr:write("> ")
  for line in io.lines() do
    if line == "/reset" then
      pos, pending = 0, {}
      print("(a new conversation)")
    elseif line:match("%S") then
      local text = call(prompts.chat, {{role = "user", content = line}}, {
        template = template, system = opt.system, continues = pos > 0, add_generation_prompt = true})
      if pos > 0 then text = t.close .. t.sep .. text end   -- the end of the last reply, never fed
      local ids = {}
      for _, id in ipairs(pending) do ids[#ids + 1] = id end
      for _, id in ipairs(tok:encode(text, {add_special = false})) do ids[#ids + 1] = id end
      local t0 = lomo.clock()
      local ok, out, why, held = pcall(eval.generate, m, ids, {
        pos = pos, stop = stop, max_new_tokens = opt["max-new"] or 256, temperature = opt.temperature or 0,
        top_p = opt["top-p"], rng = r, on_token = on_token})
      if ok then
        finish(out)
        pending = held < pos + #ids + #out and {out[#out]} or {}
        timing(#out, lomo.clock() - t0, why, (", %d positions in the cache"):format(held))
        pos = held
      else
        io.write("\n")
        io.stderr:write(("lomo: %s; a new conversation starts\n"):format(without_position(out)))
        pos, pending = 0, {}
      end
    end
    io.stderr:write("> ")
  end
  io.stderr:write("\n")
  m:close()
end

-- ---- lomo perplexity <model> <text>: how well the model predicts a text ----

M.perplexity_usage = "usage: lomo perplexity <model.gguf | hf-folder> <text-file | -> [--seq N] [--batch B] " ..
                     "[--tokenizer PATH] [--dtype f32|bf16|f16] [--device cpu|cuda] [--threads N]\n" ..
                     "  the text in rows of N tokens (default 512; the last row shorter), each scored from its " ..
                     "start\n  without the rows before it: every token but the first is predicted once"

function M.perplexity(...)
  local data, eval = require "lomo.data", require "lomo.eval"
  local opt = parse_options({...}, spec_of(MODEL_SPEC, {seq = "int", batch = "int"}), M.perplexity_usage)
  if not opt[1] or not opt[2] or opt[3] then error(M.perplexity_usage, 0) end
  local text = opt[2] == "-" and (io.read("a") or "") or call(data.read_text, opt[2])
  local m, tok = load_for_generation(opt[1], opt)
  local T = opt.seq or 512
  -- as the tokenizer's users read a text: with its BOS first where it adds one (Llama's)
  local rows = data.chunk(tok:encode(text, {add_special = true}), T, {tail = true})
  if #rows == 0 then error(opt[2] .. ": fewer than two tokens: nothing to predict", 0) end
  local ppl, nll, count = call(eval.perplexity, m, rows, {batch = opt.batch or 4})
  print(("%s: %d tokens predicted in %d rows of up to %d: loss %.4f, perplexity %.3f"):format(
    opt[2], count, #rows, T, nll, ppl))
  m:close()
  return ppl, nll, count
end

-- ---- the REPL's view of values ----

local function show(v, depth, seen)
  if type(v) == "string" then return (("%q"):format(v):gsub("\\\n", "\\n")) end
  if type(v) ~= "table" or getmetatable(v) and getmetatable(v).__tostring then return tostring(v) end
  if seen[v] then return "{...}" end
  if depth > 3 then return "{...}" end
  seen[v] = true
  local parts, n = {}, #v
  for i = 1, math.min(n, 20) do parts[#parts + 1] = show(v[i], depth + 1, seen) end
  if n > 20 then parts[#parts + 1] = ("... (%d items)"):format(n) end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then return a < b end
    return type(a) < type(b)
  end)
  for i, k in ipairs(keys) do
    if i > 40 then parts[#parts + 1] = ("... (%d keys)"):format(#keys); break end
    local ks = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. show(k, 3, seen) .. "]"
    parts[#parts + 1] = ks .. " = " .. show(v[k], depth + 1, seen)
  end
  seen[v] = nil
  return "{" .. table.concat(parts, ", ") .. "}"
end

function M.show(...)
  local out = {}
  for i = 1, select("#", ...) do out[i] = show((select(i, ...)), 1, {}) end
  print(table.concat(out, "\t"))
end

return M
