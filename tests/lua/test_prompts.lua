-- lomo.prompts
local check = require "check"
local prompts = require "lomo.prompts"

local T = {}

function T.render_substitutes_fields_and_escapes_braces()
  check.eq(prompts.render("Q: {question}\nA: {answer}", {question = "why?", answer = 42}), "Q: why?\nA: 42")
  check.eq(prompts.render("{{literal}} {x}", {x = "y"}), "{literal} y")
  check.eq(prompts.render("{a}{a}{b_2}", {a = "1", b_2 = true}), "11true")
  check.eq(prompts.render("no fields"), "no fields")
  check.raises(function() prompts.render("{missing}", {}) end, "missing field 'missing'")
  check.raises(function() prompts.render("{open", {}) end, "unclosed")
  check.raises(function() prompts.render("close}", {}) end, "unmatched")
  check.raises(function() prompts.render("{bad name}", {}) end, "bad field name")
  check.raises(function() prompts.render(nil) end, "template must be a string")
  check.eq(prompts.fields("{a} {b} {a} {{c}}"), {"a", "b"})
end

function T.superglue_brown_prompts_as_in_the_lomo_paper()
  local rte = prompts.superglue("rte", {premise = "It rains.", hypothesis = "It is wet", label = 0})
  check.eq(rte.source, 'It rains.\nDoes this mean that "It is wet" is true? Yes or No?\nAnswer: ')
  check.eq(rte.choices, {"Yes", "No"})
  check.eq(rte.answer, 1)
  check.eq(rte.target, "Yes")

  local boolq = prompts.superglue("boolq", {passage = "P.", question = "is it", label = true})
  check.eq(boolq.source, "P. is it\nAnswer: ")
  check.eq(boolq.target, "Yes")

  local wic = prompts.superglue("wic", {word = "bank", sentence1 = "S1.", sentence2 = "S2.", label = 0})
  check.eq(wic.source, 'Does the word "bank" have the same meaning in these two sentences? Yes, No?\nS1.\nS2.\nAnswer: ')
  check.eq(wic.target, "No")

  local wsc = prompts.superglue("wsc", {text = "T.", span1_text = "the cat", span2_text = "it", label = 1})
  check.eq(wsc.source, 'T.\nIn the previous sentence, does the pronoun "it" refer to "the cat"? Yes or No?\nAnswer: ')
  check.eq(wsc.answer, 2)

  local mrc = prompts.superglue("multirc", {paragraph = "Par.", question = "Q?", answer = "ans", label = "1"})
  check.eq(mrc.source, 'Par.\nQuestion: Q?\nI found this answer "ans". Is that correct? Yes or No?\nAnswer: ')
  check.eq(mrc.target, "Yes")
end

function T.superglue_copa_is_natural_and_formats_can_be_chosen()
  local c = prompts.superglue("copa", {premise = "The man fell.", question = "cause",
                                       choice1 = "He slipped.", choice2 = "He laughed.", label = 0})
  check.eq(c.source, "The man fell. because ") -- LOMO strips newlines only
  check.eq(c.choices, {"He slipped.", "He laughed."})
  check.eq(c.target, "He slipped.")
  local e = prompts.superglue("copa", {premise = "P.", question = "effect", choice1 = "a", choice2 = "b", label = 1})
  check.eq(e.source, "P. so ")
  check.eq(e.answer, 2)
  local b = prompts.superglue("copa", {premise = "P.", question = "effect", choice1 = "a", choice2 = "b", label = 1},
                              {format = "brown"})
  check.eq(b.source, "P. so \nAnswer: ")
  local n = prompts.superglue("rte", {premise = "P.", hypothesis = "H", label = 1}, {format = "natural"})
  check.eq(n.source, 'P.\nDoes this mean that "H" is true? Yes or No?')
  check.eq(prompts.natural({"x"}, {"one", "two"}), "x\nA. one\nB. two")
end

function T.superglue_errors_name_task_and_field()
  check.raises(function() prompts.superglue("cb", {}) end, "unknown task 'cb'")
  check.raises(function() prompts.superglue("rte", {premise = "p", label = 0}) end, "rte: missing field 'hypothesis'")
  check.raises(function() prompts.superglue("wic", {word = "w", sentence1 = "a", sentence2 = "b", label = 2}) end,
               "wic: field 'label' must be 0..1")
  check.raises(function() prompts.superglue("rte", "row") end, "row must be a table")
  check.raises(function() prompts.superglue("rte", {premise = "p", hypothesis = "h", label = 0}, {format = "x"}) end,
               "unknown format")
end

function T.chatml_and_smollm2_templates()
  local msgs = {{role = "user", content = "Hi"}, {role = "assistant", content = "Hello!"}}
  check.eq(prompts.chat(msgs),
           "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n")
  -- SmolLM2's template adds its default system message when the first message is not one
  check.eq(prompts.chat({{role = "user", content = "Hi"}}, {template = "smollm2", add_generation_prompt = true}),
           "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n" ..
           "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
  check.eq(prompts.chat({{role = "system", content = "S"}, {role = "user", content = "U"}}, {template = "smollm2"}),
           "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n")
  check.eq(prompts.chat({{role = "user", content = "U"}}, {system = "Be brief."}),
           "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nU<|im_end|>\n")
  check.raises(function() prompts.chat({}) end, "non-empty array")
  check.raises(function() prompts.chat({{role = "user"}}) end, "message 1 must be")
  check.raises(function() prompts.chat(msgs, {template = "llama"}) end, "unknown template 'llama'")
end

-- Expected strings: Meta's Llama 3 Instruct chat template rendered by jinja2 as transformers
-- renders it (trim_blocks, lstrip_blocks, bos_token "<|begin_of_text|>"), by hand.
function T.llama3_template()
  check.eq(prompts.chat({{role = "system", content = "Be brief. "}, {role = "user", content = "  Hi\n"}},
                        {template = "llama3", add_generation_prompt = true}),
           "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" ..
           "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
  local msgs = {{role = "user", content = "2+2?"}, {role = "assistant", content = " 4\n"}}
  local full = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>" ..
               "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"
  check.eq(prompts.chat(msgs, {template = "llama3"}), full)
  local ex = prompts.chat_example(msgs, {template = "llama3"})
  check.eq(ex.answer, "4<|eot_id|>", "the answer ends the turn")
  check.eq(ex.prompt .. ex.answer, full, "prompt + answer is the chat")
  -- a turn that continues a conversation: no <|begin_of_text|>, no system message
  check.eq(prompts.chat({{role = "user", content = "Next"}},
                        {template = "llama3", system = "S", continues = true, add_generation_prompt = true}),
           "<|start_header_id|>user<|end_header_id|>\n\nNext<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
  check.eq(prompts.chat({{role = "user", content = "Hi"}}, {template = "smollm2", continues = true}),
           "<|im_start|>user\nHi<|im_end|>\n", "smollm2 continued: no default system message")
  local t = prompts.template("llama3")
  check.eq(t.close .. t.sep, "<|eot_id|>", "the end of a turn")
  check.raises(function() prompts.template("vicuna") end, "unknown template 'vicuna' (chatml, smollm2, llama3, zephyr)")
end

-- Expected strings: TinyLlama-1.1B-Chat-v1.0's chat template (Zephyr's format) rendered by jinja2
-- as transformers renders it (trim_blocks, lstrip_blocks, eos_token "</s>"), with the "<s>" the
-- tokenizer puts first when the rendered text is encoded, as the model card's pipeline does.
function T.zephyr_template()
  check.eq(prompts.chat({{role = "system", content = "Be brief."}, {role = "user", content = "Hi"}},
                        {template = "zephyr", add_generation_prompt = true}),
           "<s><|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n")
  local msgs = {{role = "user", content = "Hi"}, {role = "assistant", content = "Hello!"}}
  check.eq(prompts.chat(msgs, {template = "zephyr"}), "<s><|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n")
  local ex = prompts.chat_example(msgs, {template = "zephyr"})
  check.eq(ex.answer, "Hello!</s>", "the answer ends with the EOS")
  check.eq(ex.prompt .. ex.answer .. "\n", prompts.chat(msgs, {template = "zephyr"}), "prompt + answer is the chat")
end

-- A tokenizer as template_for reads one: its chat template (nil: none) and its special tokens.
local function fake_tokenizer(src, tokens)
  return {chat_template = function() return src end, token_to_id = function(_, s) return (tokens or {})[s] end}
end

-- The model's template: its chat template's format when lomo has it (sources as the models'
-- tokenizer_config.json or GGUF give them, shortened), else its special tokens, with a note
function T.template_for_reads_the_models_chat_template()
  local llama3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = " ..
                 "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + " ..
                 "'<|eot_id|>' %}{{ content }}{% endfor %}"
  local smollm2 = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ " ..
                  "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face" ..
                  "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + " ..
                  "'<|im_end|>' + '\n'}}{% endfor %}"
  local chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + " ..
                 "'<|im_end|>' + '\n'}}{% endfor %}"
  local tinyllama = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + " ..
                    "message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ " ..
                    "'<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}{% endfor %}"
  local mistral = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + " ..
                  "message['content'] + ' [/INST]' }}{% endif %}{% endfor %}"
  local llama3_tokens = {["<|start_header_id|>"] = 1, ["<|eot_id|>"] = 2}
  local cases = {
    {llama3, nil, "llama3"}, {smollm2, nil, "smollm2"}, {chatml, nil, "chatml"}, {tinyllama, nil, "zephyr"},
    {nil, llama3_tokens, "llama3"}, {nil, nil, "chatml"},
  }
  for i, c in ipairs(cases) do
    local name, note = prompts.template_for(fake_tokenizer(c[1], c[2]))
    check.eq(name, c[3], "case " .. i)
    check.eq(note, nil, "case " .. i .. ": no note")
  end
  -- a format lomo does not have: the special tokens choose, and the note says so
  local name, note = prompts.template_for(fake_tokenizer(mistral))
  check.eq(name, "chatml")
  check.truthy(note and note:find("none lomo knows (chatml, smollm2, llama3, zephyr): chatml", 1, true), note)
  name, note = prompts.template_for(fake_tokenizer(mistral, llama3_tokens))
  check.eq(name, "llama3", "by the special tokens")
  check.truthy(note, "a guess is said")
end

function T.chat_turns_train_every_reply()
  local msgs = {{role = "system", content = "S"}, {role = "user", content = "q1"}, {role = "assistant", content = "a1"},
                {role = "user", content = "q2"}, {role = "assistant", content = "a2"}}
  for _, template in ipairs{"chatml", "smollm2", "llama3"} do
    local pieces = prompts.chat_turns(msgs, {template = template})
    local text, trained = {}, {}
    for _, p in ipairs(pieces) do
      text[#text + 1] = p.text
      if p.train then trained[#trained + 1] = p.text end
    end
    local t = prompts.template(template)
    local full = prompts.chat(msgs, {template = template})
    check.eq(table.concat(text) .. t.sep, full, template .. ": the pieces are the chat")
    check.eq(trained, {"a1" .. t.close, "a2" .. t.close}, template .. ": the replies are trained")
  end
  local last = prompts.chat_turns(msgs, {train = "last"})
  local n = 0
  for _, p in ipairs(last) do if p.train then n = n + 1; check.eq(p.text, "a2<|im_end|>") end end
  check.eq(n, 1, "train = last: one piece")
  -- one exchange: chat_example's prompt and answer
  local one = {{role = "user", content = "2+2?"}, {role = "assistant", content = "4"}}
  local ex = prompts.chat_example(one, {template = "smollm2"})
  local pieces = prompts.chat_turns(one, {template = "smollm2"})
  check.eq(pieces, {{text = ex.prompt, train = false}, {text = ex.answer, train = true}}, "as chat_example")
  check.raises(function() prompts.chat_turns({{role = "user", content = "q"}}) end, "no assistant message")
  check.raises(function() prompts.chat_turns(one, {train = "first"}) end, "train must be \"all\" or \"last\"")
end

function T.chat_example_splits_prompt_and_answer()
  local ex = prompts.chat_example({{role = "user", content = "2+2?"}, {role = "assistant", content = "4"}})
  check.eq(ex.prompt, "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
  check.eq(ex.answer, "4<|im_end|>")
  local full = prompts.chat({{role = "user", content = "2+2?"}, {role = "assistant", content = "4"}})
  check.eq(ex.prompt .. ex.answer .. "\n", full, "prompt + answer is the chat")
  local ex2 = prompts.chat_example({{role = "user", content = "q"}, {role = "assistant", content = "a"}},
                                   {template = "smollm2"})
  check.truthy(ex2.prompt:find("^<|im_start|>system\nYou are a helpful AI assistant named SmolLM"), ex2.prompt)
  check.raises(function() prompts.chat_example({{role = "user", content = "q"}}) end, "last message must be the assistant's")
end

return T
