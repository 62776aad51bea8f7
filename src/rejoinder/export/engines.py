"""Exports for serving engines: `rejoinder export --for vllm|llama.cpp`.

GPU users who outgrow `rejoinder serve` hand a checkpoint to vLLM or llama.cpp. What
those engines need besides the weights is the conversation format, which they only
take as a Jinja chat template: `chat_templates` writes one for each format an engine
can reproduce (dialogpt, template, chat-template) and checks that the ids an engine
feeds the model are the ids rejoinder's format makes for the same messages. Formats
whose tokens carry type ids (sep, speaker) and reverse models cannot be served this way
and are refused.

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
from rejoinder.export.chat_templates import PROBES, chat_template, check_template
from rejoinder.options import option

ENGINES = ("vllm", "llama.cpp")
DTYPES = ("float32", "float16")
PRESET = "nucleus"
"""The decoding preset `rejoinder serve` samples with by default: the engines' defaults."""
GGUF_FILE = "model.gguf"


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
    from rejoinder.atomic import atomic_directory, check_out
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
    check_out(out, force, source)
    ckpt = load_checkpoint(source, device="cpu")
    check_exportable(ckpt.format, engine, source)
    if engine == "llama.cpp":
        from rejoinder.export.gguf import check_gguf

        check_gguf(ckpt, source)
    template = chat_template(ckpt.format)
    check_template(ckpt.format, template, engine)
    with atomic_directory(out) as tmp:
        if engine == "vllm":
            _write_vllm(ckpt, template, tmp, dtype)
        else:
            from rejoinder.export.gguf import write_gguf

            write_gguf(ckpt, template, tmp / GGUF_FILE, dtype or "float16", generation_defaults)
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


def prompt_ends_in_eos(fmt) -> bool:
    """Whether the prompt for a reply ends with the end-of-text id, as every dialogpt
    prompt does: llama-cpp-python's chat API then replies with nothing."""
    eos = fmt.tokenizer.eos_token_id
    return any(fmt.encode(turns).input_ids[-1:] == [eos] for turns in PROBES)


def llama_cpp_python_note(fmt, gguf: Path, n_ctx: int) -> list[str]:
    """README lines on llama-cpp-python's chat API, which replies with nothing to a prompt
    ending in end-of-text, and its workaround (both checked with llama-cpp-python itself
    by scripts/check_llama_cpp.py)."""
    eos = fmt.tokenizer.eos_token
    return [
        "",
        "llama-cpp-python (0.3.x) replies with nothing through its chat API "
        "(`Llama.create_chat_completion`, and llama_cpp.server's /v1/chat/completions: "
        "`completion_tokens: 0`, `finish_reason: stop`). The chat handler it makes from the "
        f"file's template stops when the last id it is handed is {eos}, and it is handed the "
        f"ids before the token just sampled: a prompt that ends with {eos}, as every "
        f"{fmt.name} prompt does, stops before the first token. llama-server is not affected. "
        f"In Python, give Llama the same template without that check ({eos} still ends the "
        "reply):",
        "",
        "    from llama_cpp import Llama",
        "    from llama_cpp.llama_chat_format import Jinja2ChatFormatter",
        "",
        f'    llm = Llama(model_path="{gguf}", n_ctx={n_ctx})',
        "    eos = llm.detokenize([llm.token_eos()], special=True).decode()",
        "    llm.chat_handler = Jinja2ChatFormatter(",
        '        template=llm.metadata["tokenizer.chat_template"], eos_token=eos, bos_token=eos,',
        "        stop_token_ids=None,",
        "    ).to_chat_handler()",
        "",
        "or call `create_completion` on the prompt the template renders (llama_cpp.server: "
        "/v1/completions).",
    ]


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
        if prompt_ends_in_eos(fmt):
            serve += llama_cpp_python_note(fmt, out / GGUF_FILE, ckpt.max_positions)
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
        f"does, each in its role. {system}."
        + (f' The persona "{fmt.persona}" comes first, as in rejoinder.' if fmt.persona else "")
        + f" A reply ends at {stops}.",
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
        "- Trim the reply: rejoinder strips the spaces around a reply"
        + (" (this format's replies begin with one)." if fmt.name == "template" else "."),
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
