-- The example recipes refuse bad settings by name, before loading a model: each case runs
-- `lomo run examples/<x>/recipe.yaml key=value ...` and reads its exit status and output.
local check = require "check"

local T = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local root = here .. "/../.."

-- path when the file is there, else the test is skipped (reported) saying why it is not
local function present(path, why)
  local f = io.open(path, "rb")
  if not f then check.skip("no " .. path .. " (" .. why .. ")") end
  f:close()
  return path
end

-- the lomo program: LOMO_BUILD_DIR (ctest sets it), else the default build folder
local function program()
  local dir = os.getenv("LOMO_BUILD_DIR") or (root .. "/build")
  return present(dir .. "/bindings/lomo", "build it, or set LOMO_BUILD_DIR")
end

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- runs the program with these arguments and `input` (or nothing) on its standard input
-- (LOMO_TRACEBACK set to `traceback`, default empty: a traceback on every error is the caller's
-- choice); returns the exit code and all it printed
local function run_with_input(input, traceback, ...)
  local args = {"LOMO_TRACEBACK=" .. (traceback or ""), quote(program())}
  for _, a in ipairs({...}) do args[#args + 1] = quote(a) end
  local command = table.concat(args, " ") .. " 2>&1"
  if input then command = "printf '%s' " .. quote(input) .. " | " .. command end
  local p = assert(io.popen(command))
  local out = p:read("a")
  local _, _, code = p:close()
  return code, out
end

local function run_program(traceback, ...) return run_with_input(nil, traceback, ...) end

-- the real model's path, or the test is skipped (reported) when it has not been fetched
local function real_model()
  return present(root .. "/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                 "tests/run.sh and examples/get_smollm2.sh fetch it")
end

-- runs the recipe with overrides
local function run(yaml, ...) return run_program(nil, "run", root .. "/" .. yaml, ...) end

local function refuses(yaml, want, ...)
  local code, out = run(yaml, ...)
  check.truthy(code ~= 0, "exit status 0 for " .. table.concat({...}, " ") .. ":\n" .. out)
  check.truthy(out:find(want, 1, true), ("expected '%s' in:\n%s"):format(want, out))
  check.truthy(not out:find("stack traceback", 1, true), "a settings error came with a traceback:\n" .. out)
  -- no model was loaded or generated from: the model path given is not even there
  check.truthy(not out:find("/no/such/model", 1, true), "the model was opened before the check:\n" .. out)
end

function T.wic_refuses_bad_settings_by_name()
  local bad_model = "model.path=/no/such/model.gguf"
  refuses("examples/wic/recipe.yaml", "recipe.yaml: train.batch must be even with train.balanced",
          "train.batch=3", bad_model)
  refuses("examples/wic/recipe.yaml", "recipe.yaml: train.limit must be a positive integer, got abc",
          "train.limit=abc", bad_model)
  refuses("examples/wic/recipe.yaml", "recipe.yaml: optim.lr must be a number, got fast", "optim.lr=fast", bad_model)
  refuses("examples/wic/recipe.yaml", "/no/such/train.jsonl: not found", "data.train=/no/such/train.jsonl",
          bad_model)
  refuses("examples/wic/recipe.yaml", "prompt.choices must list two answers", "prompt.choices=[yes]", bad_model)
  refuses("examples/wic/recipe.yaml",
          "recipe.yaml: model.checkpointing must be true, false, off, blocks or keep_attention, got sometimes",
          "model.checkpointing=sometimes", bad_model)
  refuses("examples/wic/recipe.yaml",
          "recipe.yaml: model.logits_chunk must be a whole number of vocabulary rows (0: automatic), got -5",
          "model.logits_chunk=-5", bad_model)
end

function T.instruct_refuses_bad_settings_by_name()
  refuses("examples/instruct/recipe.yaml", "recipe.yaml: batch must be an integer of at least 1, got 0",
          "batch=0", "model=/no/such/model.gguf")
  refuses("examples/instruct/recipe.yaml", "recipe.yaml: heldout must be an integer of at least 0, got -2",
          "heldout=-2", "model=/no/such/model.gguf")
  refuses("examples/instruct/recipe.yaml", "recipe.yaml: epochs must be an integer of at least 1, got 0",
          "epochs=0", "model=/no/such/model.gguf")
  refuses("examples/instruct/recipe.yaml", "recipe.yaml: steps must be an integer of at least 1, got abc",
          "steps=abc", "model=/no/such/model.gguf")
  refuses("examples/instruct/recipe.yaml", "recipe.yaml: max_len must be an integer of at least 1, got 0",
          "max_len=0", "model=/no/such/model.gguf")
  refuses("examples/instruct/recipe.yaml", "recipe.yaml: checkpointing must be true, false, off, blocks or",
          "checkpointing=1", "model=/no/such/model.gguf")
  refuses("examples/instruct/recipe.yaml",
          "recipe.yaml: template must be one of chatml, smollm2, llama3, zephyr, got vicuna",
          "template=vicuna", "model=/no/such/model.gguf")
end

-- instruct on conversations: {"messages": [...]} records, mixed with instruction/response ones;
-- a record that does not end with the assistant's reply is named by file and line, alone
function T.instruct_trains_on_conversations()
  local dir = check.tmpdir()
  local convo = '{"messages": [{"role": "user", "content": "Define \\"lamp\\"."}, ' ..
                '{"role": "assistant", "content": "lamp (noun): a device that gives light."}, ' ..
                '{"role": "user", "content": "Shorter."}, {"role": "assistant", "content": "lamp: a light."}]}\n'
  local plain = '{"instruction": "Define \\"cup\\".", "response": "cup (noun): a small bowl for drinking."}\n'
  check.write(dir .. "/good.jsonl", convo .. plain .. convo .. plain)
  check.write(dir .. "/bad.jsonl", plain .. '{"messages": [{"role": "user", "content": "hi"}]}\n' .. plain)
  local code, out = run("examples/instruct/recipe.yaml", "data=" .. dir .. "/bad.jsonl", "model=/no/such/model.gguf")
  check.truthy(code ~= 0 and out:find(dir .. "/bad.jsonl:2: \"messages\" must be a list", 1, true) and
               not out:find("stack traceback", 1, true), "a bad record:\n" .. out)
  real_model()
  code, out = run("examples/instruct/recipe.yaml", "data=" .. dir .. "/good.jsonl", "heldout=1", "steps=1",
                  "batch=2", "generate.max_new_tokens=2", "progress=off", "template=null")
  check.rmtree(dir)
  check.truthy(code == 0 and out:find("held-out response loss", 1, true) and out:find("1 steps", 1, true),
               "training on conversations:\n" .. out)
  -- no template given: the model's own, from the GGUF's chat template
  check.truthy(out:find("template: smollm2, the model's\n", 1, true), "the model's template:\n" .. out)
end

function T.pretrain_refuses_bad_settings_by_name()
  refuses("examples/pretrain/recipe.yaml", "recipe.yaml: model.vocab_size must be 256 (byte tokens)",
          "model.vocab_size=300")
  refuses("examples/pretrain/recipe.yaml", "recipe.yaml: checkpointing must be true, false, off, blocks or",
          "checkpointing=attention")
  refuses("examples/pretrain/recipe.yaml", "recipe.yaml: logits_chunk must be a whole number of vocabulary rows",
          "logits_chunk=many")
end

-- pretrain (AdaLomo, a tied head) with the head's logits in chunks of 64 of the 256 byte tokens: the
-- same held-out bits per byte as with them whole
function T.pretrain_with_the_head_in_chunks_learns_the_same()
  local got, dir = {}, check.tmpdir()
  for _, chunk in ipairs({256, 64}) do
    local code, out = run("examples/pretrain/recipe.yaml", "steps=3", "checkpointing=true", "logits_chunk=" .. chunk,
                          "progress=off", "save_model=false", "out_dir=" .. dir)
    got[#got + 1] = out:match("held%-out bits per byte (%S+ %-> %S+)")
    check.truthy(code == 0 and got[#got], "pretrain, logits_chunk " .. chunk .. ":\n" .. out)
  end
  check.rmtree(dir)
  check.eq(got[2], got[1], "held-out bits per byte, in chunks and whole")
end

function T.overrides_that_cannot_be_applied_are_named()
  refuses("examples/wic/recipe.yaml", "override 'train.batch': expected key=value", "train.batch")
  refuses("examples/wic/recipe.yaml", "override train.batch.x: train.batch is a number, not a mapping",
          "train.batch.x=1")
end

-- every subcommand's --help (or -h, anywhere among its arguments) prints its usage and runs nothing
function T.subcommands_print_their_usage_on_help()
  for _, sub in ipairs({"run", "plan", "convert", "generate", "chat", "perplexity"}) do
    local code, out = run_program(nil, sub, "--help")
    check.truthy(code == 0 and out:find("^usage: lomo " .. sub .. " "), sub .. " --help:\n" .. out)
  end
  -- after other arguments too: nothing is opened (the model path is not there)
  local code, out = run_program(nil, "plan", "/no/such/model.gguf", "--seq", "8", "-h")
  check.truthy(code == 0 and out:find("^usage: lomo plan ") and not out:find("/no/such", 1, true), "plan -h:\n" .. out)
end

-- lomo plan: --checkpointing alone is blocks, =keep_attention is taken, any other mode is one line
-- naming the option; --device cuda plans for a GPU on any machine (what each mode plans: test_bindings.lua's plan_from_config)
function T.plan_takes_checkpointing_modes_and_refuses_others()
  local config = root .. "/tests/fixtures/st/tiny/config.json"
  local code, out = run_program(nil, "plan", config, "--seq", "8", "--checkpointing")
  check.truthy(code == 0 and out:find("checkpointing blocks", 1, true), "plan --checkpointing:\n" .. out)
  code, out = run_program(nil, "plan", config, "--seq", "8", "--checkpointing=keep_attention")
  check.truthy(code == 0 and out:find("checkpointing keep_attention", 1, true), "plan keep_attention:\n" .. out)
  code, out = run_program(nil, "plan", config, "--seq", "8", "--device", "cuda")
  check.truthy(code == 0 and out:find(", on cuda", 1, true), "plan --device cuda, GPU or not:\n" .. out)
  code, out = run_program(nil, "plan", config, "--seq", "8", "--checkpointing=sometimes")
  check.truthy(code ~= 0 and out:find("--checkpointing=sometimes: checkpointing is off, blocks or keep_attention", 1,
               true) and not out:find("stack traceback", 1, true), "an unknown mode:\n" .. out)
  -- the LM head's chunk: said, and taken from --logits-chunk (at most the vocabulary)
  code, out = run_program(nil, "plan", config, "--seq", "8", "--logits-chunk", "16")
  check.truthy(code == 0 and out:find("logits: 16 of the 37 vocabulary rows at a time", 1, true),
               "--logits-chunk 16:\n" .. out)
  code, out = run_program(nil, "plan", config, "--seq", "8", "--checkpointing")
  check.truthy(code == 0 and out:find("logits: all 37 vocabulary rows at once", 1, true), "a small vocabulary:\n" .. out)
  code, out = run_program(nil, "plan", config, "--seq", "8", "--logits-chunk", "0")
  check.truthy(code ~= 0 and out:find("--logits-chunk needs a positive integer, got 0", 1, true), "chunk 0:\n" .. out)
end

-- lomo generate: a reply streamed from the real model (greedy, so always the same), the prompt from
-- the arguments or from standard input; bad options are one line with the usage
function T.generate_replies_and_refuses_bad_options()
  local code, out = run_program(nil, "generate", "/no/such/model.gguf", "--bogus")
  check.truthy(code ~= 0 and out:find("unknown option --bogus", 1, true) and out:find("usage: lomo generate", 1, true),
               "an unknown option:\n" .. out)
  code, out = run_program(nil, "generate", "/no/such/model.gguf", "--system", "S", "hi")
  check.truthy(code ~= 0 and out:find("--system needs --chat", 1, true), "--system alone:\n" .. out)
  code, out = run_program(nil, "generate", "/no/such/model.gguf", "--max-new", "0", "hi")
  check.truthy(code ~= 0 and out:find("--max-new needs a positive integer, got 0", 1, true), "--max-new 0:\n" .. out)
  code, out = run_program(nil, "generate", "/no/such/model.gguf", "--temperature", "hot", "hi")
  check.truthy(code ~= 0 and out:find("--temperature needs a number, got hot", 1, true), "--temperature hot:\n" .. out)
  code, out = run_program(nil, "generate", "/no/such/model.gguf", "hi", "--seed")
  check.truthy(code ~= 0 and out:find("--seed needs a value", 1, true), "--seed without a value:\n" .. out)
  code, out = run_program(nil, "generate", "/no/such/model.gguf", "--chat=bogus", "hi")
  check.truthy(code ~= 0 and out:find("unknown template 'bogus'", 1, true), "--chat=bogus:\n" .. out)
  code, out = run_program(nil, "generate", "/no/such/model.gguf", "hi")
  check.truthy(code ~= 0 and out:find("/no/such/model.gguf", 1, true) and not out:find("stack traceback", 1, true),
               "a missing model:\n" .. out)

  local model = real_model()
  code, out = run_program(nil, "generate", model, "--chat=smollm2", "--max-new", "12", "What is the capital of France?")
  check.truthy(code == 0 and out:find("Paris", 1, true) and out:find("tokens in", 1, true), "a chat reply:\n" .. out)
  -- the weights of a folder (a saved fine-tune has no tokenizer), the tokenizer of the GGUF
  local lomo = check.lomo()
  if not lomo then check.skip("the lomo bindings are not loadable here") end
  local tmp = check.tmpdir()
  local dir = tmp .. "/saved"
  local ctx = lomo.context{threads = 2}
  local m = lomo.load(ctx, model, {dtype = "f32"})
  m:save(dir)
  m:close()
  code, out = run_program(nil, "generate", dir, "--max-new", "2", "hi")
  check.truthy(code ~= 0 and out:find("tokenizer.json", 1, true), "a folder without a tokenizer:\n" .. out)
  code, out = run_with_input("The capital of France is", nil, "generate", dir, "--tokenizer", model, "--max-new", "3")
  check.truthy(code == 0 and out:find("3 tokens in", 1, true) and out:find("stopped by --max-new", 1, true),
               "a prompt from standard input, the tokenizer from --tokenizer:\n" .. out)
  -- the GGUF's tokenizer saved beside the weights: the folder is complete, and replies as the GGUF does
  lomo.tokenizer(model):save(dir)
  local want
  code, want = run_program(nil, "generate", model, "--chat=smollm2", "--max-new", "12", "What is the capital of France?")
  code, out = run_program(nil, "generate", dir, "--chat=smollm2", "--max-new", "12", "What is the capital of France?")
  check.rmtree(tmp)
  check.truthy(code == 0 and out:find("Paris", 1, true), "the saved folder with its tokenizer:\n" .. out)
  check.eq(out:match("^(.-)%d+ tokens in"), want:match("^(.-)%d+ tokens in"), "the same reply as from the GGUF")
end

-- lomo convert: the GGUF as a Hugging Face folder, which replies as the GGUF does
function T.convert_writes_a_complete_folder()
  local code, out = run_program(nil, "convert", "/no/such/model.gguf")
  check.truthy(code ~= 0 and out:find("usage: lomo convert", 1, true), "one argument:\n" .. out)
  code, out = run_program(nil, "convert", "/no/such/model.gguf", "/tmp/x")
  check.truthy(code ~= 0 and out:find("/no/such/model.gguf", 1, true), "a missing model:\n" .. out)
  code, out = run_program(nil, "convert", "/no/such/model.gguf", "/tmp/x", "--dtype", "f8")
  check.truthy(code ~= 0 and out:find('dtype must be "f32", "bf16" or "f16", got "f8"', 1, true), "--dtype f8:\n" .. out)
  -- a SentencePiece GGUF that merges by score: its tokenizer as merges ranked by score, the same ids
  local gguf, spm = root .. "/tests/fixtures/gguf/llama_tied.gguf", check.tmpdir() .. "/spm"
  code, out = run_program(nil, "convert", gguf, spm)
  check.truthy(code == 0 and out:find("34048 parameters in f32, 97 tokens", 1, true), "a score-mode GGUF:\n" .. out)
  local lomo = check.lomo()
  if lomo then
    local a, b = lomo.tokenizer(gguf), lomo.tokenizer(spm)
    for line in io.lines(root .. "/tests/fixtures/tok/corpus.txt") do
      check.eq(b:encode(line, {add_special = true}), a:encode(line, {add_special = true}), line)
    end
  end
  check.rmtree(spm)
  local model = real_model()
  local dir = check.tmpdir() .. "/converted"
  code, out = run_program(nil, "convert", model, dir)
  check.truthy(code == 0 and out:find("134515008 parameters in f32, 49152 tokens", 1, true), "convert:\n" .. out)
  for _, f in ipairs{"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} do
    check.truthy(check.read(dir .. "/" .. f), f .. " written")
  end
  local prompt = "What is the capital of France?"
  local _, want = run_program(nil, "generate", model, "--chat=smollm2", "--max-new", "12", prompt)
  code, out = run_program(nil, "generate", dir, "--chat=smollm2", "--max-new", "12", prompt)
  check.rmtree(dir)
  check.truthy(code == 0, "generate from the converted folder:\n" .. out)
  check.eq(out:match("^(.-)%d+ tokens in"), want:match("^(.-)%d+ tokens in"), "the same reply as from the GGUF")
end

-- lomo perplexity: the text in rows, against transformers on the same rows (4.44, float64, the
-- model converted by lomo convert, by hand: 1670 tokens, mean loss 2.927869)
function T.perplexity_of_a_text()
  local model = real_model()
  local code, out = run_program(nil, "perplexity", model, root .. "/examples/pretrain/lighthouse.txt", "--seq", "256")
  local loss = tonumber(out:match("loss ([%d.]+)"))
  check.truthy(code == 0 and out:find("1670 tokens predicted in 7 rows of up to 256", 1, true), "perplexity:\n" .. out)
  check.near(loss, 2.927869, 2e-4, "the loss transformers gives")
  code, out = run_program(nil, "perplexity", model)
  check.truthy(code ~= 0 and out:find("usage: lomo perplexity", 1, true), "no text:\n" .. out)
  code, out = run_with_input("", nil, "perplexity", model, "-")
  check.truthy(code ~= 0 and out:find("-: fewer than two tokens: nothing to predict", 1, true), "no text:\n" .. out)
  code, out = run_program(nil, "perplexity", model, "/no/such/text.txt")
  check.truthy(code ~= 0 and out:find("/no/such/text.txt", 1, true) and not out:find("traceback", 1, true),
               "a missing text:\n" .. out)
end

-- lomo chat: turns from standard input, each continuing the key/value cache (the positions it
-- holds grow turn by turn), /reset starting again
function T.chat_continues_the_cache_turn_by_turn()
  local code, out = run_program(nil, "chat", "/no/such/model.gguf", "--template", "bogus")
  check.truthy(code ~= 0 and out:find("unknown template 'bogus'", 1, true) and not out:find("/no/such", 1, true),
               "a bad template, before the model loads:\n" .. out)
  code, out = run_with_input("What is the capital of France?\nAnd of Italy?\n/reset\nHi\n", nil, "chat", real_model(),
                             "--template", "smollm2", "--max-new", "24")
  local held = {}
  for n in out:gmatch("(%d+) positions in the cache") do held[#held + 1] = tonumber(n) end
  check.truthy(code == 0 and out:find("Paris", 1, true) and out:find("(a new conversation)", 1, true),
               "a conversation:\n" .. out)
  check.truthy(#held == 3 and held[2] > held[1] + 10 and held[3] < held[2],
               "the cache grows with the second turn and starts again after /reset:\n" .. out)
  code, out = run_program(nil, "chat", "/no/such/model.gguf", "hi")
  check.truthy(code ~= 0 and out:find("usage: lomo chat", 1, true), "a prompt among the arguments:\n" .. out)

  -- a conversation past the model's positions (a copy of it told it has 48) starts again, with why
  local lomo = check.lomo()
  if not lomo then check.skip("the lomo bindings are not loadable here") end
  local tmp = check.tmpdir()
  local ctx = lomo.context{threads = 2}
  local m = lomo.load(ctx, real_model(), {dtype = "f32"})
  m:save(tmp)
  m:close()
  local config = check.read(tmp .. "/config.json")
  local short, edits = config:gsub('"max_position_embeddings":%s*%d+', '"max_position_embeddings": 48')
  check.eq(edits, 1)
  check.write(tmp .. "/config.json", short)
  code, out = run_with_input("What is the capital of France?\nHi\n", nil, "chat", tmp, "--tokenizer", real_model(),
                             "--template", "smollm2", "--max-new", "24")
  check.rmtree(tmp)
  check.truthy(code == 0 and out:find("lomo: lomo.model:decode: decode: positions ", 1, true) and
               out:find("exceed max_position_embeddings 48; a new conversation starts", 1, true) and
               out:find("positions in the cache", 1, true),
               "a conversation past the model's positions:\n" .. out)
end

-- a Llama-3-shaped folder (llama3 RoPE scaling, a Llama 3 tokenizer, random weights): lomo chat
-- and generate run it with Meta's template, each turn continuing the cache
function T.a_llama3_folder_chats()
  local lomo = check.lomo()
  if not lomo then check.skip("the lomo bindings are not loadable here") end
  local dir = check.tmpdir()
  local tokenizer = check.read(root .. "/tests/fixtures/tok/llama3.tokenizer.json")
  check.write(dir .. "/tokenizer.json", tokenizer)
  local tok = lomo.tokenizer(dir .. "/tokenizer.json")
  local ctx = lomo.context{threads = 2}
  local m = lomo.model(ctx, {hidden_size = 32, intermediate_size = 64, num_hidden_layers = 2, num_attention_heads = 4,
                             num_key_value_heads = 2, vocab_size = tok:vocab_size(), max_position_embeddings = 512,
                             rope_theta = 500000, rope_scaling = {rope_type = "llama3", factor = 32,
                             low_freq_factor = 1, high_freq_factor = 4, original_max_position_embeddings = 64}},
                       {seed = 1})
  m:save(dir)
  m:close()
  local turn = tok:encode(require("lomo.prompts").chat({{role = "user", content = "Hi"}},
                          {template = "llama3", add_generation_prompt = true}), {add_special = false})
  local code, out = run_with_input("Hi\nHi\n", nil, "chat", dir, "--template", "llama3", "--max-new", "3")
  local held = {}
  for n in out:gmatch("(%d+) positions in the cache") do held[#held + 1] = tonumber(n) end
  check.truthy(code == 0 and #held == 2, "two turns:\n" .. out)
  -- the first turn is its prompt and 3 tokens, less the last (generated, not yet fed); the second
  -- feeds that token, the end of the turn, and the turn without <|begin_of_text|>
  check.eq(held[1], #turn + 2, "the first turn's positions")
  check.eq(held[2], held[1] + 1 + 1 + (#turn - 1) + 2, "the second turn continues the first")
  code, out = run_program(nil, "generate", dir, "--chat=llama3", "--max-new", "2", "Hi")
  check.truthy(code == 0 and out:find("2 tokens in", 1, true), "generate --chat=llama3:\n" .. out)
  -- without --template the tokenizer's <|start_header_id|> and <|eot_id|> choose llama3
  local _, again = run_with_input("Hi\nHi\n", nil, "chat", dir, "--max-new", "3")
  local held_again = {}
  for n in again:gmatch("(%d+) positions in the cache") do held_again[#held_again + 1] = tonumber(n) end
  check.eq(held_again, held, "the template from the tokenizer")
  check.rmtree(dir)
end

function T.a_fault_in_a_script_keeps_its_traceback()
  local dir = check.tmpdir()
  local script = dir .. "/fault.lua"
  check.write(script, "local t = nil\nreturn t.x\n")
  local code, out = run_program(nil, script)
  check.truthy(code ~= 0 and out:find("fault.lua:2: attempt to index a nil value", 1, true)
               and out:find("stack traceback", 1, true), "a runtime fault without its traceback:\n" .. out)
  -- LOMO_TRACEBACK=1 adds one to a settings error too
  code, out = run_program("1", "run", root .. "/examples/wic/recipe.yaml", "train.batch=3")
  check.truthy(code ~= 0 and out:find("train.batch must be even", 1, true) and out:find("stack traceback", 1, true),
               "LOMO_TRACEBACK=1 without a traceback:\n" .. out)
  check.rmtree(dir)
end

return T
