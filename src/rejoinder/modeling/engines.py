"""Exports for serving engines: `rejoinder export --for vllm|llama.cpp`.

GPU users who outgrow `rejoinder serve` hand a checkpoint to vLLM or llama.cpp. What
those engines need besides the weights is the conversation format, which they only
take as a Jinja chat template. `chat_template` writes one for each format an engine
can reproduce, so that the ids an engine feeds the model are the ids rejoinder's format
makes for the same messages:

- dialogpt: every turn followed by the end-of-text token; a conversation with no turn
  yet starts from end-of-text;
- template: "User: …\\nAgent: …\\nAgent:" with the format's role prefixes and separator;
- chat-template: the checkpoint's own template, given the messages as rejoinder gives
  them (system messages joined into one system prompt, roles alternating back from
  the reply).

Roles are counted back from the reply as rejoinder counts them, whatever the caller
named them; empty messages are skipped, and system messages are dropped by formats that
have no place for one. Formats whose tokens carry type ids (sep, speaker) and reverse
models cannot be served this way and are refused.

`export_for("vllm", …)` writes a plain Hugging Face directory (safetensors weights,
config, the tokenizer with that template in tokenizer_config.json, a generation config
whose end ids are the format's stop ids and whose sampling defaults are rejoinder's
default preset, a README saying how to serve it); `export_for("llama.cpp", …)` writes
one GGUF file in a directory (with the same template, vocabulary and defaults) for the
families llama.cpp runs that rejoinder makes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rejoinder.errors import RejoinderError
from rejoinder.options import option

ENGINES = ("vllm", "llama.cpp")
DTYPES = ("float32", "float16")
PRESET = "nucleus"
"""The decoding preset `rejoinder serve` samples with by default: the engines' defaults."""
GGUF_FILE = "model.gguf"
GGUF_ARCHS = {"gpt2": "GPT2", "llama": "LLAMA", "mistral": "LLAMA", "qwen2": "QWEN2"}
"""rejoinder's families that llama.cpp runs, and the gguf.MODEL_ARCH each is written as
(Mistral is a Llama to llama.cpp's converter too)."""
ROTATE_HALF = ("llama", "mistral")
"""Families whose q and k rows llama.cpp wants in interleaved rotary pairs."""


@dataclass
class EngineOptions:
    """`rejoinder export --for`: the options of an export for a serving engine."""

    engine: Literal["vllm", "llama.cpp"] | None = option(None, flag="--for")
    """Write what this engine needs to serve the checkpoint directory CKPT, in its format
    (a model directory for vllm, a .gguf file in a directory for llama.cpp)."""
    dtype: Literal["float32", "float16"] | None = None
    """--for: the weights' type (default: the checkpoint's for vllm, float16 for llama.cpp)."""


def export_for(
    engine: str,
    checkpoint_dir: str | os.PathLike,
    out: str | os.PathLike,
    force: bool = False,
    dtype: str | None = None,
) -> Path:
    """Writes the directory `out` that `engine` ("vllm" or "llama.cpp") serves the
    checkpoint from, in the checkpoint's conversation format; see the module docstring.

    An adapter directory (LoRA) is merged into its base first. `out` appears complete or
    not at all; an existing one is replaced only with `force`.
    """
    from rejoinder.atomic import atomic_directory
    from rejoinder.modeling.checkpoint import load_checkpoint

    if engine not in ENGINES:
        raise RejoinderError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if dtype not in (None, *DTYPES):
        raise RejoinderError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    source, out = Path(checkpoint_dir), Path(out)
    if source.is_file():
        raise RejoinderError(
            f"{source} is a file; --for exports a checkpoint directory (make one from a "
            "Lightning checkpoint with `rejoinder export CKPT --out DIR` first)"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise RejoinderError(
            f"{out} already exists and is not empty; choose another --out or pass --force"
        )
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise RejoinderError(f"--out {out} is the checkpoint itself; choose another directory")
    ckpt = load_checkpoint(source, device="cpu")
    check_exportable(ckpt.format, engine, source)
    if engine == "llama.cpp":
        check_gguf(ckpt, source)
    template = chat_template(ckpt.format)
    check_template(ckpt.format, template, engine)
    with atomic_directory(out) as tmp:
        if engine == "vllm":
            _write_vllm(ckpt, template, tmp, dtype)
        else:
            _write_gguf(ckpt, template, tmp / GGUF_FILE, dtype or "float16")
        (tmp / "README.md").write_text(readme(engine, ckpt, out), encoding="utf-8")
    return out


def check_exportable(fmt, engine: str, where: Any = "the checkpoint") -> None:
    """Refuses a format `engine` cannot reproduce from a chat template, saying why."""
    if fmt.reverse:
        raise RejoinderError(
            f"{where} is a reverse (backward) model: it reads conversations last turn "
            "first to score sources for MMI reranking, and writes no replies. Export the "
            "forward model, and rerank with `rejoinder serve --reverse DIR`"
        )
    if fmt.uses_token_types:
        raise RejoinderError(
            f"{where} talks in the {fmt.name} format, which gives every token a type id "
            f"(token_type_ids); {engine} builds a prompt from a chat template as text and "
            "has no way to pass them to the model. Serve it with `rejoinder serve`, or "
            "fine-tune in the dialogpt, template or chat-template format to export it"
        )
    if fmt.name not in ("dialogpt", "template", "chat-template"):
        raise RejoinderError(f"the {fmt.name} format has no chat template for {engine}")


# -- the chat template ------------------------------------------------------------------


def _lit(text: str) -> str:
    """A Jinja string literal of `text` (Jinja reads Python's backslash escapes)."""
    return json.dumps(text, ensure_ascii=False)


def _collect(system: str = "") -> str:
    """Jinja that reads `messages` as rejoinder's `as_context` and `Format` do: the turns
    (non-empty text of any role but system/developer), the system messages' text joined
    (or `system`, the format's own prompt), and `last`, the index of the latest turn of
    the reply's side (the assistant's), counting back from the reply."""
    return (
        f"{{%- set ns = namespace(turns=[], systems=[], system={_lit(system)}) -%}}"
        "{%- for m in messages -%}{%- if m['content'] is string and m['content'] | trim -%}"
        "{%- if m['role'] in ['system', 'developer'] -%}"
        "{%- set ns.systems = ns.systems + [m['content']] -%}"
        "{%- else -%}{%- set ns.turns = ns.turns + [m['content']] -%}{%- endif -%}"
        "{%- endif -%}{%- endfor -%}"
        "{%- if ns.systems -%}{%- set ns.system = ns.systems | join('\\n\\n') -%}{%- endif -%}"
        "{%- set prompt = add_generation_prompt is defined and add_generation_prompt -%}"
        "{%- set last = ns.turns | length - (0 if prompt else 1) -%}"
    )


def chat_template(fmt) -> str:
    """A Jinja chat template that lays out OpenAI-style messages as `fmt` lays out turns.

    With `add_generation_prompt`, the rendering is what `fmt.encode` makes for the
    reply; without, a conversation that ends with the assistant's turn renders as
    `fmt.training_example` does (both as text: see `check_exportable` for the formats
    that have none).
    """
    from rejoinder.formats import ChatTemplateFormat, DialoGPTFormat, TemplateFormat

    bot = "(last - loop.index0) % 2 == 0"
    if isinstance(fmt, DialoGPTFormat):
        return (
            _collect()
            + "{%- for t in ns.turns -%}{{ t ~ eos_token }}{%- endfor -%}"
            + "{%- if prompt and not ns.turns -%}{{ eos_token }}{%- endif -%}"
        )
    if isinstance(fmt, TemplateFormat):
        user, agent, sep = _lit(fmt.user), _lit(fmt.bot), _lit(fmt.separator)
        return (
            _collect()
            + "{%- for t in ns.turns -%}"
            + f"{{{{ ({agent} if {bot} else {user}) ~ ' ' ~ t ~ {sep} }}}}"
            + f"{{%- endfor -%}}{{%- if prompt -%}}{{{{ {agent} }}}}{{%- endif -%}}"
        )
    if isinstance(fmt, ChatTemplateFormat):
        # The checkpoint's own template, rendered on the messages rejoinder renders it on.
        return (
            _collect(fmt.system or "")
            + "{%- set ns.messages = [{'role': 'system', 'content': ns.system}] "
            + "if ns.system else [] -%}"
            + "{%- for t in ns.turns -%}{%- set ns.messages = ns.messages + "
            + f"[{{'role': 'assistant' if {bot} else 'user', 'content': t}}] -%}}"
            + "{%- endfor -%}{%- set messages = ns.messages -%}"
            + "{{ '' }}"  # a variable tag ends the preamble: trim_blocks leaves what follows
            + (fmt.template or fmt.tokenizer.chat_template)
        )
    raise RejoinderError(f"the {fmt.name} format has no chat template")


PROBES = [["Hello"], ["Hi!", "Hello, how are you?"], ["(Hi) there.", "...Hello!", "Why?"]]
"""Conversations an export must lay out exactly as rejoinder does, before it is written."""


def check_template(fmt, template: str, engine: str = "the engine") -> None:
    """Refuses a format whose layout an engine cannot reproduce from `template`.

    An engine renders the whole prompt as one text and tokenizes it at once, where
    rejoinder tokenizes each turn and each marker apart: a separator such as "\\n\\n"
    is one token alone but two before a role name, and the ids then differ.
    """
    tok = fmt.tokenizer
    for turns in PROBES:
        for generation in (True, False):
            n = len(turns) if generation else len(turns) - 1
            messages = [
                {"role": "assistant" if (n - i) % 2 == 0 else "user", "content": t}
                for i, t in enumerate(turns)
            ]
            want = (fmt.encode if generation else fmt.training_example)(turns).input_ids
            got = tok.apply_chat_template(
                messages, chat_template=template, add_generation_prompt=generation,
                return_dict=False,
            )  # fmt: skip
            if got != want:
                raise RejoinderError(
                    f"{engine} tokenizes a prompt as one text, and this {fmt.name} format's "
                    f"markers then become other tokens: {tok.decode(want)!r} is "
                    f"{want} to rejoinder but {got} to the engine. Train in a format whose "
                    'markers stand apart (e.g. the template format with separator "\\n")'
                )


# -- generation defaults and the README --------------------------------------------------


def generation_defaults(fmt) -> dict[str, Any]:
    """What an engine's generation config says: the format's end ids and stop strings,
    and the sampling of rejoinder's default preset (top_k 0: no cut, as rejoinder)."""
    from rejoinder.generation.config import decoding_config

    config = decoding_config(PRESET)
    tok = fmt.tokenizer
    out = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": fmt.stop_ids,
        "pad_token_id": tok.pad_token_id,
        "do_sample": config.do_sample,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "top_k": config.top_k or 0,
        "max_new_tokens": config.max_new_tokens,
    }
    if fmt.stop_strings:
        out["stop_strings"] = fmt.stop_strings
    return out


def readme(engine: str, ckpt, out: Path) -> str:
    """How to serve the export, and what rejoinder does that the engine will not."""
    from rejoinder.generation.config import decoding_config

    fmt, tok = ckpt.format, ckpt.tokenizer
    config = decoding_config(PRESET)
    budget = min(ckpt.max_positions - config.max_new_tokens, fmt.max_tokens or ckpt.max_positions)
    stops = ", ".join(f"{tok.convert_ids_to_tokens(i)} ({i})" for i in fmt.stop_ids)
    if engine == "vllm":
        serve = [f"    vllm serve {out} --max-model-len {ckpt.max_positions}"]
        files = "tokenizer_config.json's chat_template; defaults in generation_config.json"
    else:
        serve = [
            f"    llama-server -m {out / GGUF_FILE} --jinja -c {ckpt.max_positions}",
            "",
            "--jinja renders the file's own template; without it llama.cpp picks a built-in "
            "one that looks alike, and lays the messages out otherwise.",
        ]
        files = f"tokenizer.chat_template in {GGUF_FILE}; defaults in general.sampling.*"
    system = (
        "A system message is the template's system prompt"
        + (f' (without one, "{fmt.system}")' if getattr(fmt, "system", None) else "")
        if fmt.name == "chat-template"
        else f"The {fmt.name} format has no place for a system message: it is dropped"
    )
    lines = [
        f"# {out.name}: a rejoinder checkpoint for {engine}",
        "",
        f"Exported by `rejoinder export --for {engine}` from `{ckpt.path}`, which talks in "
        f"rejoinder's `{fmt.name}` format ({json.dumps(fmt.settings(), ensure_ascii=False)}).",
        "",
        "Serve it, and talk to it through the OpenAI chat API (/v1/chat/completions):",
        "",
        *serve,
        "",
        f"The chat template ({files}) lays out user and assistant messages as rejoinder "
        f"does, roles counted back from the reply. {system}. A reply ends at {stops}.",
        "",
        f"Sampling defaults are rejoinder's `{PRESET}` preset: temperature "
        f"{config.temperature}, top_p {config.top_p}, no top-k cut, at most "
        f"{config.max_new_tokens} new tokens; a request's own values override them"
        + (" (in llama.cpp releases that read general.sampling.*)." if engine != "vllm" else "."),
        "",
        "What rejoinder does that the engine will not:",
        "",
    ]
    if fmt.stop_strings:
        lines.append(
            "- End replies at text: send "
            f'`"stop": {json.dumps(fmt.stop_strings, ensure_ascii=False)}` with every '
            "request (this format ends a turn in plain text, which no end id marks)."
        )
    lines += [
        f"- Cut the history: rejoinder keeps the most recent whole turns that fit in {budget} "
        "tokens (the model's positions less the reply's, or the format's budget); the engine "
        "refuses or cuts a longer prompt anywhere. Drop the oldest turns in the client.",
        "- Keep special-token text as text: a message containing the text of a special token "
        f"({', '.join(tok.all_special_tokens)}) becomes that token in the engine, where "
        "rejoinder encodes it as plain text (so that nobody can type a turn boundary).",
        "- Rerank (MMI, reply rankers) and reply from extra heads: only the default LM head "
        "is exported.",
        "",
    ]
    return "\n".join(lines)


# -- vLLM ---------------------------------------------------------------------------------


def _write_vllm(ckpt, template: str, tmp: Path, dtype: str | None) -> None:
    import torch
    from transformers import GenerationConfig

    from rejoinder.modeling.checkpoint import META_FILE

    model, tok, fmt = ckpt.model, ckpt.tokenizer, ckpt.format
    if dtype:
        model.to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(**generation_defaults(fmt))
    model.save_pretrained(tmp)  # safetensors
    tok.save_pretrained(tmp)
    # The template inside tokenizer_config.json (not a side file that older readers miss),
    # and a tokenizer class every transformers release knows.
    settings_file = tmp / "tokenizer_config.json"
    settings = json.loads(settings_file.read_text(encoding="utf-8"))
    settings.update(chat_template=template, tokenizer_class="PreTrainedTokenizerFast")
    settings_file.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    (tmp / "chat_template.jinja").unlink(missing_ok=True)
    # rejoinder reads the directory back in the same format (the template the format
    # renders, not the wrapper written for the engine).
    saved = fmt.to_dict()
    if fmt.name == "chat-template":
        saved["template"] = fmt.template or tok.chat_template
    meta = {**ckpt.meta, "format": saved, "heads": []}
    meta["made_by"] = {"command": "export", "for": "vllm", "from": str(ckpt.path)}
    meta.pop("lora", None)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


# -- llama.cpp ----------------------------------------------------------------------------


def check_gguf(ckpt, where: Any = "the checkpoint") -> None:
    """Refuses a model or tokenizer this GGUF writer does not write, naming what it does."""
    import importlib.util

    from rejoinder.modeling.architectures import arch_of

    if importlib.util.find_spec("gguf") is None:
        raise RejoinderError(
            "the llama.cpp export writes GGUF with the gguf package, which is missing: "
            "pip install 'rejoinder[engines]'"
        )
    config = ckpt.model.config
    arch = arch_of(config)
    if arch not in GGUF_ARCHS:
        raise RejoinderError(
            f"{where} is a {arch} model; the llama.cpp export writes "
            f"{', '.join(GGUF_ARCHS)} models. Export it --for vllm, or serve it with "
            "`rejoinder serve`"
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if arch != "gpt2" and (rope.get("rope_type") or rope.get("type") or "default") != "default":
        raise RejoinderError(f"{where} scales its rotary embeddings, which this export cannot")
    if arch == "gpt2" and getattr(config, "scale_attn_by_inverse_layer_idx", False):
        raise RejoinderError(f"{where} scales attention by layer, which llama.cpp's GPT-2 does not")
    window = getattr(config, "sliding_window", None)
    if arch == "mistral" and window and window < ckpt.max_positions:
        raise RejoinderError(
            f"{where} attends within a sliding window of {window} tokens, which llama.cpp's "
            "llama architecture does not; export it --for vllm"
        )
    spec = json.loads(ckpt.tokenizer.backend_tokenizer.to_str())
    pre = spec.get("pre_tokenizer") or {}
    if (
        (spec.get("model") or {}).get("type") != "BPE"
        or pre.get("type") != "ByteLevel"
        or pre.get("add_prefix_space")
        or spec.get("normalizer")
    ):
        raise RejoinderError(
            f"the tokenizer of {where} is not a byte-level BPE like GPT-2's, the only kind "
            "this export writes for llama.cpp (rejoinder's gpt2 and bpe:N tokenizers); "
            "export it --for vllm"
        )


def _file_type(name: str, array, dtype: str):
    """The GGML type of a tensor: llama.cpp's converter keeps norms, biases, 1-D tensors
    and position embeddings in float32, whatever the file's type."""
    import gguf

    if (
        dtype == "float32"
        or array.ndim <= 1
        or not name.endswith(".weight")
        or name.endswith("_norm.weight")
        or name.startswith("position_embd")
    ):
        return gguf.GGMLQuantizationType.F32
    return gguf.GGMLQuantizationType.F16


def rotary_pairs(weight, heads: int):
    """q or k rows from Hugging Face's rotate-half order to llama.cpp's adjacent pairs."""
    per = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, per, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_tensors(model):
    """(llama.cpp's name, float32 array) for each of `model`'s weights, laid out as
    llama.cpp's convert_hf_to_gguf.py lays them out."""
    import gguf

    from rejoinder.modeling.architectures import arch_of

    config = model.config
    arch = arch_of(config)
    layers = config.num_hidden_layers
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, GGUF_ARCHS[arch]), layers)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    tied = getattr(config, "tie_word_embeddings", False)
    for key, tensor in model.state_dict().items():
        if key.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")):
            continue  # buffers, not weights
        if key == "lm_head.weight" and tied and arch != "gpt2":
            continue  # llama.cpp reads the token embeddings when the output is missing
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise RejoinderError(f"cannot name weight {key!r} of this {arch} model for llama.cpp")
        array = tensor.detach().float().cpu()
        if arch == "gpt2" and key.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            array = array.T  # GPT-2's Conv1D keeps (in, out); llama.cpp wants (out, in)
        if arch in ROTATE_HALF and key.endswith(("q_proj.weight", "q_proj.bias")):
            array = rotary_pairs(array, heads)
        if arch in ROTATE_HALF and key.endswith(("k_proj.weight", "k_proj.bias")):
            array = rotary_pairs(array, kv_heads)
        yield name, array.contiguous().numpy()


def _hyperparameters(writer, config, arch: str, positions: int) -> None:
    from rejoinder.modeling.architectures import width

    writer.add_context_length(positions)
    writer.add_embedding_length(width(config))
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    if arch == "gpt2":
        writer.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
        writer.add_layer_norm_eps(config.layer_norm_epsilon)
        return
    head_dim = getattr(config, "head_dim", None) or width(config) // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_vocab_size(config.vocab_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count_kv(
        getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    )
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)


def _vocabulary(writer, fmt, vocab_size: int) -> None:
    """GPT-2's BPE as llama.cpp reads it: tokens, their types, merges, special ids."""
    import gguf

    tok = fmt.tokenizer
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [gguf.TokenType.UNUSED] * vocab_size
    added = tok.added_tokens_decoder
    for token, i in tok.get_vocab().items():
        tokens[i] = token
        if i not in added:
            types[i] = gguf.TokenType.NORMAL
        else:
            types[i] = gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    if tok.bos_token_id is not None:
        writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    if tok.pad_token_id is not None:
        writer.add_pad_token_id(tok.pad_token_id)
    end = getattr(fmt, "end_of_turn", None)
    if end is not None and end != tok.eos_token_id:
        writer.add_eot_token_id(end)  # the chat template's end of a turn (<|im_end|>)
    # rejoinder's formats put no BOS before a conversation, and nor must the engine.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def _write_gguf(ckpt, template: str, path: Path, dtype: str) -> None:
    import gguf

    from rejoinder.modeling.architectures import arch_of

    model, fmt = ckpt.model, ckpt.format
    arch = arch_of(model.config)
    kind = getattr(gguf.MODEL_ARCH, GGUF_ARCHS[arch])
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[kind])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(Path(str(ckpt.path)).name)
    f16 = dtype == "float16"
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _hyperparameters(writer, model.config, arch, ckpt.max_positions)
    _vocabulary(writer, fmt, model.config.vocab_size)
    writer.add_chat_template(template)
    defaults = generation_defaults(fmt)
    writer.add_sampling_temp(defaults["temperature"])
    writer.add_sampling_top_p(defaults["top_p"])
    writer.add_sampling_top_k(defaults["top_k"])
    for name, array in gguf_tensors(model):
        kind = _file_type(name, array, dtype)
        data = array.astype("float16" if kind == gguf.GGMLQuantizationType.F16 else "float32")
        writer.add_tensor(name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
