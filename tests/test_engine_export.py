"""`rejoinder export --for vllm|llama.cpp`: what serving engines need, in the checkpoint's format.

The invariant: the engine's chat template, rendered and tokenized as the engine does
(`apply_chat_template` on the exported tokenizer), gives the ids rejoinder's format gives
for the same messages. No vLLM or llama.cpp runs here (neither is installed, and no GPU
is needed): the vLLM directory is checked with plain `transformers`, and the GGUF file
is read back with the `gguf` package's own reader.
"""

import json

import numpy as np
import pytest
import torch

from rejoinder import ConversationModel, RejoinderError
from rejoinder.cli import build_parser, main
from rejoinder.export.engines import GGUF_FILE, chat_template, export_for
from rejoinder.generation.config import decoding_config
from rejoinder.modeling import init_checkpoint, load_checkpoint

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# ChatML ended by GPT-2's own special token, for a checkpoint with GPT-2's tokenizer.
CHATML_EOT = CHATML.replace("<|im_end|>", "<|endoftext|>")
SYSTEM = {"role": "system", "content": "Answer in one short sentence."}
PERSONA = "I am a pirate."
"""The persona some checkpoints carry: every export must put it first, as rejoinder does."""
DIALOGUES = [
    ["Hello"],
    ["Hi!", "Hello, how are you?"],
    [SYSTEM, "Hi!", "Hello, how are you?", "Great, thanks. Any plans for tonight?"],
    [SYSTEM],  # the start of a conversation: the reply prompt alone
    ["naïve café? 😀 日本語です", "Ça va. Привет! 👋🏽", "  spaced  out  ", "tab\tand\nnewline"],
    # Text that looks like special tokens of other formats and tokenizers.
    ["<speaker1> [SEP] <s></s> <pad>", "User: hi\nAgent: ho", "<|im_start|>user\nhi"],
    # Roles that do not alternate: an assistant greeting first, two user turns in a row.
    [
        {"role": "assistant", "content": "Welcome! How can I help?"},
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": "Anyone there?"},
    ],
    [SYSTEM, {"role": "developer", "content": "Be kind."}, "   ", "Why?", ""],
]
"""Contexts for a reply, as OpenAI-style messages or bare turns (roles counted back from
the reply, as rejoinder counts them)."""


LINES = ["Hello there, how are you?", "Fine, thanks. And you?", "What are you doing?",
         "Watching a movie with friends.", "Which one?", "The new one about dragons."]  # fmt: skip
CORPUS = LINES * 4
SMALL = {"tokenizer": "bpe:320", "corpus": CORPUS}
"""A byte-level BPE of 320 tokens, for tests where GPT-2's 50,257 only cost time."""


def messages(context) -> list[dict]:
    """OpenAI messages for a context: mappings as they are, strings as user and assistant
    turns alternating back from the reply."""
    turns = [t for t in context if isinstance(t, str) and t.strip()]
    out, k = [], 0
    for t in context:
        if isinstance(t, dict):
            out.append(t)
            continue
        if not t.strip():  # an empty message is no turn, whatever its role
            out.append({"role": "user", "content": t})
            continue
        out.append({"role": "assistant" if (len(turns) - k) % 2 == 0 else "user", "content": t})
        k += 1
    return out


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    """A Llama directory as a hub download has it: a ChatML template whose markers are
    special tokens, and no rejoinder.json (so it talks in its chat template)."""
    from transformers import AutoModelForCausalLM

    from rejoinder.modeling.architectures import model_config
    from rejoinder.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    config = model_config("llama", "tiny", len(tok), eos_token_id=tok.eos_token_id,
                          initializer_range=0.5)  # fmt: skip
    config.num_key_value_heads = 1  # grouped-query attention: k has fewer heads than q
    out = tmp_path_factory.mktemp("chat") / "smol"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def checkpoints(make_checkpoint, chat_dir):
    """One checkpoint of each format that engines serve; GPT-2's vocabulary where its
    merges matter (markers next to text), the small one where they don't."""
    return {
        "dialogpt": make_checkpoint("dialogpt"),
        "dialogpt-256": make_checkpoint("dialogpt", max_tokens=256, persona=PERSONA, **SMALL),
        "template": make_checkpoint("template"),
        "template-qa": make_checkpoint("template", user="Q:", bot="A:", persona=PERSONA, **SMALL),
        "chat-template": make_checkpoint(
            "chat-template", template=CHATML_EOT, system="Be brief.", persona=PERSONA, **SMALL
        ),
        "chat-dir": chat_dir,
    }


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory):
    """Each checkpoint exported for vLLM once: {name: (its rejoinder model, the export,
    the export's tokenizer as AutoTokenizer reads it)}."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("vllm")
    made = {}

    def get(name):
        if name not in made:
            out = export_for("vllm", checkpoints[name], root / name)
            made[name] = (
                load_checkpoint(checkpoints[name]),
                out,
                AutoTokenizer.from_pretrained(out),
            )
        return made[name]

    return get


@pytest.mark.parametrize("name", ["dialogpt", "dialogpt-256", "template", "template-qa",
                                  "chat-template", "chat-dir"])  # fmt: skip
def test_the_exported_template_renders_rejoinders_ids(name, exported):
    ckpt, _, tok = exported(name)
    fmt = ckpt.format
    specials = [s for s in tok.all_special_tokens if s]
    checked = 0
    for context in DIALOGUES:
        said = messages(context)
        if any(s in m["content"] for m in said for s in specials):
            continue  # special-token text: see test_special_token_text_is_the_one_difference
        checked += 1
        prompt = tok.apply_chat_template(said, add_generation_prompt=True, tokenize=True,
                                         return_dict=False)  # fmt: skip
        assert prompt == fmt.encode(said).input_ids, (name, context, tok.decode(prompt))
        # A finished conversation is a training example, as the model learnt it.
        done = [*said, {"role": "assistant", "content": "Sure, why not?"}]
        whole = tok.apply_chat_template(done, tokenize=True, return_dict=False)
        assert whole == fmt.training_example(done).input_ids, (name, context, tok.decode(whole))
    assert checked >= len(DIALOGUES) - 1  # only chat-dir's <|im_start|> is a special token


def test_the_prompt_is_what_the_model_sees(checkpoints, exported):
    # ConversationModel.encode (what chat and serve feed the model) on the same messages.
    _, _, tok = exported("chat-dir")
    bot = ConversationModel.from_pretrained(checkpoints["chat-dir"])
    said = messages(DIALOGUES[-1])
    prompt = tok.apply_chat_template(said, add_generation_prompt=True, return_dict=False)
    assert prompt == bot.encode(said).input_ids
    # System and developer messages are one system prompt; empty messages are no turns.
    assert tok.decode(prompt) == ("<|im_start|>system\nAnswer in one short sentence.\n\n"
                                  "Be kind.<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n"
                                  "<|im_start|>assistant\n")  # fmt: skip


def test_a_format_without_a_system_prompt_drops_it_and_one_with_keeps_its_own(exported):
    for name, kept in [("dialogpt", False), ("template", False), ("chat-template", True)]:
        _, _, tok = exported(name)
        plain = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                        add_generation_prompt=True)  # fmt: skip
        told = tok.apply_chat_template([SYSTEM, {"role": "user", "content": "Hi"}],
                                       tokenize=False, add_generation_prompt=True)  # fmt: skip
        assert (plain != told) == kept
        assert ("Be brief." in plain) == kept  # the format's own prompt, when none is sent
        assert ("Be brief." in told) is False


def test_special_token_text_is_the_one_difference(exported):
    # An engine tokenizes the rendered prompt with its special tokens recognised, so a
    # user who types "<|endoftext|>" sends that token; rejoinder keeps it as text. The
    # README says so; here the difference is pinned down to exactly that.
    ckpt, out, tok = exported("dialogpt")
    said = [{"role": "user", "content": "a <|endoftext|> b"}]
    engine = tok.apply_chat_template(said, add_generation_prompt=True, return_dict=False)
    ours = ckpt.format.encode(said).input_ids
    assert engine.count(tok.eos_token_id) == 2 and ours.count(tok.eos_token_id) == 1
    assert tok.decode(engine) == tok.decode(ours)
    assert "<|endoftext|>" in (out / "README.md").read_text()


def test_the_vllm_directory_is_a_plain_model_that_replies_as_rejoinder(exported):
    from transformers import AutoModelForCausalLM, GenerationConfig

    from rejoinder.generation.backends import Job
    from rejoinder.generation.backends.torch import TorchBackend

    nucleus = decoding_config("nucleus")
    for name in ["dialogpt", "chat-dir"]:
        ckpt, out, _ = exported(name)
        files = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "README.md"}  # fmt: skip
        assert files <= {p.name for p in out.iterdir()}
        settings = json.loads((out / "tokenizer_config.json").read_text())
        assert settings["chat_template"] == chat_template(ckpt.format)
        gen = GenerationConfig.from_pretrained(out)
        assert gen.eos_token_id == ckpt.format.stop_ids
        assert (gen.do_sample, gen.top_p, gen.temperature, gen.max_new_tokens) == (
            nucleus.do_sample,
            nucleus.top_p,
            nucleus.temperature,
            nucleus.max_new_tokens,
        )
        assert gen.top_k == 0  # no cut, as rejoinder samples
        assert "vllm serve" in (out / "README.md").read_text()
        model = AutoModelForCausalLM.from_pretrained(out).eval()
        backend = TorchBackend(ckpt.model, ckpt.tokenizer, ckpt.format.stop_ids)
        greedy = decoding_config("greedy", max_new_tokens=8)
        for context in (["Hello"], ["Hi!", "Hello, how are you?"]):
            prompt = ckpt.format.encode(context)
            [[ours]] = backend.generate(Job.of(ckpt.format, [prompt], greedy))
            ids = torch.tensor([prompt.input_ids])
            theirs = model.generate(ids, do_sample=False, max_new_tokens=8,
                                    attention_mask=torch.ones_like(ids))  # fmt: skip
            assert theirs[0, ids.shape[1] :].tolist() == ours, (name, context)


def test_rejoinder_reads_the_vllm_directory_in_the_same_format(exported):
    ckpt, out, _ = exported("template-qa")
    again = load_checkpoint(out)
    assert again.format.to_dict() == ckpt.format.to_dict()
    meta = json.loads((out / "rejoinder.json").read_text())
    assert meta["made_by"]["for"] == "vllm"
    readme = (out / "README.md").read_text()
    assert '"stop": ["Q:", "A:", "\\n"]' in readme  # text stops the engine must be sent
    assert "most recent whole turns that fit in 960 tokens" in readme


# -- GGUF ---------------------------------------------------------------------------------


def gguf_field(reader, key):
    field = reader.get_field(key)
    return None if field is None else field.contents()


def rotate_pairs(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order for q and k: each head's two rotary halves interleaved."""
    d = weight.shape[0] // heads
    order = [h * d + half * (d // 2) + i for h in range(heads) for i in range(d // 2)
             for half in (0, 1)]  # fmt: skip
    return weight[order]


def expected_tensors(ckpt) -> dict[str, np.ndarray]:
    """What convert_hf_to_gguf.py writes for these weights, worked out independently."""
    import gguf

    config = ckpt.model.config
    state = {k: v.float().numpy() for k, v in ckpt.model.state_dict().items()}
    if config.model_type == "gpt2":
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, config.n_layer)
        # GPT-2's Conv1D stores (in, out); every other framework, llama.cpp too, (out, in).
        conv1d = ("c_attn.weight", "c_proj.weight", "c_fc.weight")
        state = {k: v.T if k.endswith(conv1d) else v for k, v in state.items()}
    else:
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
        for k in state:
            if k.endswith("q_proj.weight"):
                state[k] = rotate_pairs(state[k], config.num_attention_heads)
            if k.endswith("k_proj.weight"):
                state[k] = rotate_pairs(state[k], config.num_key_value_heads)
        state.pop("lm_head.weight")  # tied: llama.cpp reads the token embeddings
    return {names.get_name(k, try_suffixes=(".weight", ".bias")): v for k, v in state.items()}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A GPT-2 and a Llama checkpoint with a small byte-level BPE: a GGUF file's vocabulary
    of 50,257 tokens takes seconds to read back, one of 320 none. The Llama one has a
    ChatML template ended by a special token of its own, as a hub chat model has."""
    from transformers import AutoModelForCausalLM

    from rejoinder.modeling.architectures import model_config
    from rejoinder.tokenizers import train_bpe

    root = tmp_path_factory.mktemp("small")
    gpt2 = init_checkpoint(root / "gpt2", **SMALL)
    tok = train_bpe(CORPUS, 320)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    config = model_config("llama", "tiny", len(tok), eos_token_id=tok.eos_token_id)
    config.num_key_value_heads = 1  # grouped-query attention: k has fewer heads than q
    AutoModelForCausalLM.from_config(config).save_pretrained(root / "llama")
    tok.save_pretrained(root / "llama")
    return {"gpt2": gpt2, "llama": root / "llama"}


@pytest.mark.parametrize("arch, dtype", [("gpt2", "float16"), ("llama", "float32")])
def test_the_gguf_file_holds_the_weights_vocabulary_and_template(arch, dtype, small, tmp_path):
    # No llama.cpp binary is available here: the file is checked field by field and
    # tensor by tensor against what llama.cpp's own converter would write.
    import gguf

    out = export_for("llama.cpp", small[arch], tmp_path / "gguf", dtype=dtype)
    ckpt = load_checkpoint(small[arch])
    config, tok = ckpt.model.config, ckpt.tokenizer
    reader = gguf.GGUFReader(out / GGUF_FILE)
    assert gguf_field(reader, "general.architecture") == arch
    assert gguf_field(reader, f"{arch}.context_length") == 1024
    assert gguf_field(reader, f"{arch}.embedding_length") == 32
    assert gguf_field(reader, f"{arch}.block_count") == 2
    assert gguf_field(reader, f"{arch}.attention.head_count") == 2
    if arch == "llama":
        assert gguf_field(reader, "llama.attention.head_count_kv") == 1
        assert gguf_field(reader, "llama.rope.dimension_count") == 16
        assert gguf_field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)
        end = tok.convert_tokens_to_ids("<|im_end|>")
        assert gguf_field(reader, "tokenizer.ggml.eot_token_id") == end
        assert ckpt.format.name == "chat-template"
    else:
        assert gguf_field(reader, "gpt2.attention.layer_norm_epsilon") == pytest.approx(1e-5)
    assert gguf_field(reader, "tokenizer.chat_template") == chat_template(ckpt.format)
    assert gguf_field(reader, "tokenizer.ggml.model") == "gpt2"
    assert gguf_field(reader, "tokenizer.ggml.pre") == "gpt-2"
    assert gguf_field(reader, "tokenizer.ggml.add_bos_token") is False
    assert gguf_field(reader, "tokenizer.ggml.eos_token_id") == tok.eos_token_id
    tokens = gguf_field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == config.vocab_size
    assert tokens == tok.convert_ids_to_tokens(list(range(config.vocab_size)))
    types = gguf_field(reader, "tokenizer.ggml.token_type")
    special = set(tok.all_special_ids)
    assert types == [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                     for i in range(config.vocab_size)]  # fmt: skip
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    assert gguf_field(reader, "tokenizer.ggml.merges") == [" ".join(m) for m in merges]
    assert gguf_field(reader, "general.sampling.top_p") == pytest.approx(0.9)
    assert gguf_field(reader, "general.sampling.min_p") == 0  # llama.cpp's own is 0.05
    f16 = dtype == "float16"
    assert gguf_field(reader, "general.file_type") == (
        gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32
    )
    want = expected_tensors(ckpt)
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(want)
    assert set(got) <= {gguf.TENSOR_NAMES[t].format(bid=b) + s for t in
                        gguf.MODEL_TENSORS[getattr(gguf.MODEL_ARCH, arch.upper())]
                        for b in range(2) for s in (".weight", ".bias")}  # fmt: skip
    for tname, value in want.items():
        # As the converter: matrices in the file's type; norms, biases and GPT-2's
        # position embeddings in float32 whatever it is.
        matrix = value.ndim == 2 and tname != "position_embd.weight"
        kind = "F16" if f16 and matrix else "F32"
        assert got[tname].tensor_type.name == kind, tname
        data = np.asarray(got[tname].data).reshape(value.shape)
        np.testing.assert_array_equal(data, value.astype(data.dtype), err_msg=tname)
    readme = (out / "README.md").read_text()
    assert "llama-server" in readme
    # A dialogpt prompt ends in end-of-text, which llama-cpp-python's chat API stops on
    # before its first token (scripts/check_llama_cpp.py shows it): the README says how
    # to avoid it; a chat template's prompt does not, and its README does not bother.
    assert ("stop_token_ids=None" in readme) == (arch == "gpt2")


# -- refusals and the command line ---------------------------------------------------------


def test_formats_and_models_an_engine_cannot_serve_are_refused(make_checkpoint, tmp_path):
    cases = [
        ("vllm", make_checkpoint("sep", **SMALL), "type id .token_type_ids.*rejoinder serve"),
        ("vllm", make_checkpoint("dialogpt", reverse=True, **SMALL),
         "reverse .backward. model.*Export the forward model"),
        ("vllm", make_checkpoint("template", separator="\n\n"),
         "tokenizes a prompt as one text.*separator"),
        # Markers that are no special tokens merge with the text beside them ("!<|").
        ("vllm", make_checkpoint("chat-template", template=CHATML),
         "chat-template format's markers then become other tokens"),
        ("llama.cpp", init_checkpoint(tmp_path / "neox", arch="gpt-neox", **SMALL),
         "gpt-neox model; the llama.cpp export writes gpt2, llama, mistral, qwen2"),
        ("llama.cpp", make_checkpoint("dialogpt", tokenizer="char", corpus=["你好吗", "我很好"]),
         "not a byte-level BPE"),
    ]  # fmt: skip
    for engine, ckpt, message in cases:
        with pytest.raises(RejoinderError, match=message):
            export_for(engine, ckpt, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_the_cli_exports_for_an_engine_and_keeps_the_old_form(small, tmp_path, capsys):
    from safetensors.torch import load_file

    ckpt = small["gpt2"]
    out = tmp_path / "served"
    assert main(["export", "--for", "vllm", str(ckpt), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert main(["export", "--for", "vllm", str(ckpt), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "--for", "vllm", str(ckpt), "--out", str(out), "--force",
                 "--dtype", "float16"]) == 0  # fmt: skip
    assert load_file(out / "model.safetensors")["transformer.wte.weight"].dtype == torch.float16
    assert main(["export", "--for", "llama.cpp", str(ckpt / "model.safetensors"),
                 "--out", str(tmp_path / "g")]) == 2  # fmt: skip
    assert "is a file" in capsys.readouterr().err
    old = build_parser().parse_args(["export", "run.ckpt", "--out", "dir", "--merge"])
    assert (old.engine, old.ckpt, old.merge, old.dtype) == (None, "run.ckpt", True, None)


def test_an_adapter_directory_is_merged_first(small, tmp_path):
    from safetensors.torch import load_file

    from rejoinder.modeling import save_checkpoint
    from rejoinder.modeling.lora import LoraOptions, apply_lora

    base = small["gpt2"]
    ckpt = load_checkpoint(base)
    options = LoraOptions(r=2)
    model = apply_lora(ckpt.model, options, "gpt2")
    with torch.no_grad():  # B starts at zero: make the adapter change something
        for key, p in model.named_parameters():
            if "lora_B" in key:
                p.normal_(0, 0.5)
    adapter = save_checkpoint(model, ckpt.tokenizer, ckpt.format, tmp_path / "adapter",
                              lora={**options.to_dict(), "base": str(base)})  # fmt: skip
    out = export_for("vllm", adapter, tmp_path / "merged")
    assert not (out / "adapter_config.json").exists()
    merged = model.merge_and_unload().state_dict()
    exported = load_file(out / "model.safetensors")
    assert set(exported) == set(merged) - {"lm_head.weight"}  # tied to the embeddings
    assert all(torch.equal(exported[k], merged[k]) for k in exported)
    key = "transformer.h.0.attn.c_attn.weight"
    assert not torch.equal(exported[key], load_file(base / "model.safetensors")[key])
