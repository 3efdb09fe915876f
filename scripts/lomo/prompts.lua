-- lomo.prompts: `{field}` templates, the SuperGLUE prompts of the LOMO paper, and chat
-- templates (ChatML, as SmolLM2 uses it).

local M = {}

local function fail(who, fmt, ...)
  error(who .. ": " .. string.format(fmt, ...), 3)
end

-- render(template, fields): replaces {name} by tostring(fields.name); {{ and }} are literal
-- braces. A missing field is an error naming it.
function M.render(template, fields)
  local who = "lomo.prompts.render"
  if type(template) ~= "string" then fail(who, "template must be a string") end
  fields = fields or {}
  local out = {}
  local i, n = 1, #template
  while i <= n do
    local c = template:sub(i, i)
    if c == "{" and template:sub(i + 1, i + 1) == "{" then
      out[#out + 1] = "{"
      i = i + 2
    elseif c == "}" and template:sub(i + 1, i + 1) == "}" then
      out[#out + 1] = "}"
      i = i + 2
    elseif c == "{" then
      local j = template:find("}", i + 1, true)
      if not j then fail(who, "unclosed '{' at position %d", i) end
      local name = template:sub(i + 1, j - 1)
      if not name:match("^[%w_%.]+$") then fail(who, "bad field name '{%s}'", name) end
      local v = fields[name]
      if v == nil then fail(who, "missing field '%s'", name) end
      out[#out + 1] = tostring(v)
      i = j + 1
    elseif c == "}" then
      fail(who, "unmatched '}' at position %d", i)
    else
      local j = template:find("[{}]", i) or (n + 1)
      out[#out + 1] = template:sub(i, j - 1)
      i = j
    end
  end
  return table.concat(out)
end

-- fields(template): the field names a template uses, in order of first use.
function M.fields(template)
  local seen, out = {}, {}
  local s = template:gsub("{{", ""):gsub("}}", "")
  for name in s:gmatch("{([%w_%.]+)}") do
    if not seen[name] then seen[name] = true out[#out + 1] = name end
  end
  return out
end

---------------------------------------------------------------------------------------------
-- SuperGLUE, as the LOMO paper prompts it (OpenLMLab/LOMO, src/mydatasets.py and prompts.py).
-- "brown" format: each part on its own line, then "Answer: " and the label's word:
--     source = part1 .. "\n" .. part2 .. "\n" .. "Answer: ",   target = choices[answer]
-- COPA uses the "natural" format, as the paper did: the premise runs straight into the choice.
-- A part is a string or {tag=, text=} (printed "tag: text").
-- Labels are SuperGLUE's 0/1 (booleans accepted); `answer` is the 1-based choice index.

local function label_index(row, task, n_choices)
  local l = row.label
  if l == true then l = 1 elseif l == false then l = 0 end
  if type(l) == "string" then l = tonumber(l) end
  local li = math.tointeger(l)
  if li == nil or li < 0 or li >= n_choices then
    fail("lomo.prompts.superglue", "%s: field 'label' must be 0..%d, got %s", task, n_choices - 1, tostring(row.label))
  end
  return li + 1
end

local function need(row, task, ...)
  for i = 1, select("#", ...) do
    local f = select(i, ...)
    if row[f] == nil then fail("lomo.prompts.superglue", "%s: missing field '%s'", task, f) end
  end
end

M.superglue_tasks = {
  rte = {
    fields = {"premise", "hypothesis"}, choices = {"Yes", "No"},
    parts = function(r) return {r.premise .. '\nDoes this mean that "' .. r.hypothesis .. '" is true? Yes or No?'} end,
  },
  boolq = {
    fields = {"passage", "question"}, choices = {"No", "Yes"},
    parts = function(r) return {r.passage .. " " .. r.question} end,
  },
  wsc = {
    fields = {"text", "span1_text", "span2_text"}, choices = {"No", "Yes"},
    parts = function(r)
      return {r.text .. '\nIn the previous sentence, does the pronoun "' .. r.span2_text ..
              '" refer to "' .. r.span1_text .. '"? Yes or No?'}
    end,
  },
  wic = {
    fields = {"word", "sentence1", "sentence2"}, choices = {"No", "Yes"},
    parts = function(r)
      return {'Does the word "' .. r.word .. '" have the same meaning in these two sentences? Yes, No?\n' ..
              r.sentence1 .. "\n" .. r.sentence2}
    end,
  },
  multirc = {
    fields = {"paragraph", "question", "answer"}, choices = {"No", "Yes"},
    parts = function(r)
      return {r.paragraph, {tag = "Question", text = r.question},
              'I found this answer "' .. r.answer .. '". Is that correct? Yes or No?'}
    end,
  },
  copa = {
    fields = {"premise", "question", "choice1", "choice2"}, format = "natural",
    choices = function(r) return {r.choice1, r.choice2} end,
    parts = function(r)
      return {r.premise .. (r.question == "effect" and " so " or " because ")}
    end,
  },
}

local function part_text(p)
  if type(p) == "table" then
    if p.tag then return p.tag .. ": " .. p.text end
    return p.text
  end
  return p
end

-- brown(parts): the brown-format source for prompt parts.
function M.brown(parts)
  local s = {}
  for i, p in ipairs(parts) do s[i] = part_text(p) .. "\n" end
  return table.concat(s) .. "Answer: "
end

-- natural(parts, choices): the natural-format source (choices listed only when given).
function M.natural(parts, choices)
  local s = {}
  for i, p in ipairs(parts) do s[i] = part_text(p) .. "\n" end
  if choices then
    for i, c in ipairs(choices) do s[#s + 1] = string.char(64 + i) .. ". " .. c .. "\n" end
  end
  return (table.concat(s):gsub("\n+$", ""))
end

-- superglue(task, row [, {format = "brown"|"natural"}]):
--   {source=, target= (the answer's text), choices=, answer= (1-based)}
function M.superglue(task, row, opts)
  local who = "lomo.prompts.superglue"
  local spec = M.superglue_tasks[task]
  if not spec then fail(who, "unknown task '%s' (rte, boolq, wsc, wic, multirc, copa)", tostring(task)) end
  if type(row) ~= "table" then fail(who, "%s: row must be a table", task) end
  need(row, task, table.unpack(spec.fields))
  local choices = spec.choices
  if type(choices) == "function" then choices = choices(row) end
  local answer = label_index(row, task, #choices)
  local parts = spec.parts(row)
  local format = (opts and opts.format) or spec.format or "brown"
  local source
  if format == "brown" then
    source = M.brown(parts)
  elseif format == "natural" then
    source = M.natural(parts)
  else
    fail(who, "unknown format '%s'", tostring(format))
  end
  return {source = source, target = choices[answer], choices = choices, answer = answer}
end

---------------------------------------------------------------------------------------------
-- Chat templates: how each message is written. A turn is open (with the role) .. content ..
-- close .. sep. "chatml": "<|im_start|>role\ncontent<|im_end|>\n"; "smollm2" is ChatML plus
-- SmolLM2's default system message when none is given; "llama3" is Meta's Llama 3 format,
-- "<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>" after "<|begin_of_text|>",
-- each message trimmed as its template does (Llama 3.1 and 3.2 Instruct add a system message
-- with dates of their own: give one with `system` to match them); "zephyr" is Zephyr's and
-- TinyLlama-Chat's "<|role|>\ncontent</s>\n" after "<s>" (the BOS and EOS of the Llama 2 and
-- Mistral tokenizers those models use, written as their training text had them).

M.SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

M.TEMPLATES = {
  chatml = {open = "<|im_start|>%s\n", close = "<|im_end|>", sep = "\n"},
  smollm2 = {open = "<|im_start|>%s\n", close = "<|im_end|>", sep = "\n", system = M.SMOLLM2_SYSTEM},
  llama3 = {open = "<|start_header_id|>%s<|end_header_id|>\n\n", close = "<|eot_id|>", sep = "",
            begin = "<|begin_of_text|>", trim = true},
  zephyr = {open = "<|%s|>\n", close = "</s>", sep = "\n", begin = "<s>"},
}
M.TEMPLATE_NAMES = "chatml, smollm2, llama3, zephyr"   -- for messages

local function template_of(name, who)
  local t = M.TEMPLATES[name or "chatml"]
  if not t then fail(who, "unknown template '%s' (%s)", tostring(name), M.TEMPLATE_NAMES) end
  return t
end

-- template_for(tok): the template for a tokenizer's model, and a note when that is a guess.
-- From the chat template its files give (tok:chat_template(), Jinja lomo does not run) when it is
-- a format lomo has: Llama 3's header and end-of-turn marks -> "llama3"; ChatML's -> "smollm2"
-- when it writes SmolLM2's default system message, else "chatml"; Zephyr's role tags ->
-- "zephyr". Otherwise from the tokenizer's special tokens: "llama3" when it has Llama 3's header
-- and end-of-turn tokens, else "chatml" (the default); then the note says the files' template is
-- one lomo does not know.
function M.template_for(tok)
  local src = tok.chat_template and tok:chat_template() or nil
  if src then
    local function has(s) return src:find(s, 1, true) ~= nil end
    if has("<|start_header_id|>") and has("<|eot_id|>") then return "llama3" end
    if has("<|im_start|>") and has("<|im_end|>") then return has(M.SMOLLM2_SYSTEM) and "smollm2" or "chatml" end
    if has("<|user|>") and has("<|assistant|>") then return "zephyr" end
  end
  local name = (tok:token_to_id("<|start_header_id|>") and tok:token_to_id("<|eot_id|>")) and "llama3" or "chatml"
  if src then
    return name, ("the model's chat template is none lomo knows (%s): %s, by its special tokens"):format(
      M.TEMPLATE_NAMES, name)
  end
  return name
end

-- template(name): the template table ({open, close, sep, begin, system, trim}); an error names
-- the known ones. The end of a turn is t.close .. t.sep.
function M.template(name) return template_of(name, "lomo.prompts.template") end

local function check_messages(messages, who)
  if type(messages) ~= "table" or #messages == 0 then fail(who, "messages must be a non-empty array") end
  for i, msg in ipairs(messages) do
    if type(msg) ~= "table" or type(msg.role) ~= "string" or type(msg.content) ~= "string" then
      fail(who, "message %d must be {role = string, content = string}", i)
    end
  end
end

local function body(t, content)
  return t.trim and content:match("^%s*(.-)%s*$") or content
end

-- The start of a conversation: the template's opening text and the system message (opts.system,
-- else the template's default, unless the first message is the system's own).
local function start(t, first, opts)
  local out = t.begin or ""
  local system = opts.system
  if system == nil then system = t.system end
  if system and not (first and first.role == "system") then
    out = out .. t.open:format("system") .. body(t, system) .. t.close .. t.sep
  end
  return out
end

-- chat(messages, {template = "chatml"|"smollm2"|"llama3"|"zephyr", add_generation_prompt = false,
-- system = s, continues = false}). continues = true writes turns that follow earlier ones
-- (no opening text, no system message): a conversation fed to a key/value cache turn by turn.
function M.chat(messages, opts)
  local who = "lomo.prompts.chat"
  opts = opts or {}
  check_messages(messages, who)
  local t = template_of(opts.template, who)
  local out = {opts.continues and "" or start(t, messages[1], opts)}
  for _, msg in ipairs(messages) do
    out[#out + 1] = t.open:format(msg.role) .. body(t, msg.content) .. t.close .. t.sep
  end
  if opts.add_generation_prompt then out[#out + 1] = t.open:format("assistant") end
  return table.concat(out)
end

-- chat_turns(messages, opts): the conversation as pieces {text =, train =} for lomo.data.segments,
-- train = true on each assistant reply and its end of turn (opts.train = "last": the last reply
-- only), false on everything else: one example trains every reply of a multi-turn conversation.
-- The pieces join to chat(messages, opts) less the separator after the last message, so a
-- conversation of one exchange gives chat_example's prompt and answer.
function M.chat_turns(messages, opts)
  local who = "lomo.prompts.chat_turns"
  opts = opts or {}
  check_messages(messages, who)
  local t = template_of(opts.template, who)
  if opts.train ~= nil and opts.train ~= "all" and opts.train ~= "last" then
    fail(who, "train must be \"all\" or \"last\", got %s", tostring(opts.train))
  end
  local last_reply = 0
  for i, msg in ipairs(messages) do if msg.role == "assistant" then last_reply = i end end
  if last_reply == 0 then fail(who, "no assistant message to train on") end
  local pieces = {}
  local function add(text, train)
    if text == "" then return end
    local prev = pieces[#pieces]
    if prev and prev.train == train then prev.text = prev.text .. text   -- one piece per run
    else pieces[#pieces + 1] = {text = text, train = train} end
  end
  add(opts.continues and "" or start(t, messages[1], opts), false)
  for i, msg in ipairs(messages) do
    local train = msg.role == "assistant" and (opts.train ~= "last" or i == last_reply)
    add(t.open:format(msg.role), false)
    add(body(t, msg.content) .. t.close, train)
    if i < #messages then add(t.sep, false) end
  end
  return pieces
end

-- chat_example(messages, opts): {prompt=, answer=} for training on the last message, which
-- must be the assistant's: the prompt ends with the assistant's header, the answer is the reply
-- and the template's end of turn ("<|im_end|>", SmolLM2's EOS too; "<|eot_id|>"). Feed it to
-- lomo.data.example with eos = false.
function M.chat_example(messages, opts)
  local who = "lomo.prompts.chat_example"
  check_messages(messages, who)
  opts = opts or {}
  local t = template_of(opts.template, who)
  local last = messages[#messages]
  if last.role ~= "assistant" then fail(who, "the last message must be the assistant's") end
  local prompt
  if #messages == 1 then
    prompt = start(t, nil, opts) .. t.open:format("assistant")
  else
    local head, o = {}, {}
    for i = 1, #messages - 1 do head[i] = messages[i] end
    for k, v in pairs(opts) do o[k] = v end
    o.add_generation_prompt = true
    prompt = M.chat(head, o)
  end
  return {prompt = prompt, answer = body(t, last.content) .. t.close}
end

return M
