"""Checkpoint directories: a Hugging Face model directory plus `rejoinder.json`.

A checkpoint holds `config.json`, `model.safetensors`, `generation_config.json`, the
tokenizer files and `rejoinder.json`, which records the conversation format with its
settings, the tokenizer kind, any extra heads and how the checkpoint was made.
`transformers.AutoModelForCausalLM.from_pretrained(dir)` loads it as it is.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rejoinder.atomic import atomic_directory, check_out
from rejoinder.errors import RejoinderError
from rejoinder.formats import Format, format_from_dict, get_format
from rejoinder.modeling.architectures import (
    arch_of,
    model_config,
    positions,
    size_dims,
    takes_token_types,
    use_fast_gelu,
    width,
)
from rejoinder.modeling.lora import adapter_base, is_adapter, merge
from rejoinder.version import __version__

META_FILE = "rejoinder.json"

DIALOGPT_SIZES = {"small": "124M", "medium": "345M", "large": "762M"}


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model, its tokenizer, its format and rejoinder.json."""

    model: Any
    tokenizer: Any
    format: Format
    meta: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    config: Any = None
    """The model's configuration (there even when the weights were not loaded)."""
    has_meta: bool = True
    """Whether the directory has rejoinder.json: a model trained (or made) in its format.
    A plain Hugging Face directory has none, and may be fine-tuned in any format."""

    @property
    def max_positions(self) -> int:
        """The most tokens the model reads at once."""
        return positions(self.config if self.config is not None else self.model.config)

    @property
    def width(self) -> int:
        """The size of the model's hidden states."""
        return width(self.config if self.config is not None else self.model.config)


def save_checkpoint(
    model,
    tokenizer,
    fmt: Format,
    out: str | os.PathLike,
    *,
    made_by: dict[str, Any] | None = None,
    tokenizer_kind: str = "gpt2",
    heads: list[dict[str, Any]] | None = None,
    overwrite: bool = False,
    write_extra=None,
    lora: dict[str, Any] | None = None,
    ranks: bool = False,
    classifies: bool = False,
) -> Path:
    """Writes a checkpoint directory atomically: it appears complete or not at all.

    Everything is written to a temporary directory beside `out`, then renamed into
    place, so an interrupted save never leaves a half-written checkpoint at `out`.
    A PEFT `model` writes its adapter only; `lora` (its options and `base`) then says
    which model it adapts. A ranker (`ranks`) and a text classifier (`classifies`,
    `rejoinder.modeling.classifier`) are marked as such in rejoinder.json.
    """
    out = check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not (ranks or classifies):  # they generate nothing, and have no generation config
        eos = fmt.stop_ids
        model.generation_config.eos_token_id = eos if len(eos) > 1 else eos[0]
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.bos_token_id = tokenizer.bos_token_id
    meta = {
        "rejoinder_version": __version__,
        "format": fmt.to_dict(),
        "tokenizer": {"kind": tokenizer_kind},
        "heads": heads or [],
        "made_by": {
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            **(made_by or {}),
        },
    }
    meta.update({"ranks": True} if ranks else {"classifies": True} if classifies else {})
    if lora:
        meta["lora"] = lora
        model.peft_config["default"].base_model_name_or_path = lora["base"]
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if write_extra is not None:  # e.g. the extra heads, inside the same atomic rename
            write_extra(tmp)
    return out


def init_checkpoint(
    out: str | os.PathLike,
    size: str = "tiny",
    tokenizer: str = "gpt2",
    format: str = "dialogpt",
    corpus: list[str] | None = None,
    seed: int = 0,
    format_settings: dict[str, Any] | None = None,
    overwrite: bool = False,
    arch: str = "gpt2",
    **config_overrides,
) -> Path:
    """A randomly initialised model of family `arch` and `size`, saved at `out`.

    Args:
        out: the checkpoint directory to write.
        size: one of SIZES: "tiny" (2 layers, for tests), "small", "124M", "345M",
            "762M", or LxD.
        tokenizer: "gpt2", "bpe:N" or "char" (the last two learn from `corpus`).
        format: the conversation format the model will be trained in.
        corpus: texts to learn a tokenizer from.
        seed: seeds the random weights, so the same arguments give the same model.
        format_settings: keyword arguments of the format (e.g. {"reverse": True}).
        arch: gpt2 (default), llama, qwen2, mistral or gpt-neox.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from rejoinder.tokenizers import build_tokenizer

    size_dims(size)  # a clear error for an unknown size, before any work
    config = model_config(arch, size, 8)  # and for an unknown architecture
    tok = build_tokenizer(tokenizer, corpus)
    fmt = get_format(format, tok, **(format_settings or {}))  # may add special tokens
    check_token_types(fmt, config)
    config = model_config(
        arch,
        size,
        len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **config_overrides,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    made_by = {"command": "init", "arch": arch, "size": size, "seed": seed}
    return save_checkpoint(
        model, tok, fmt, out, made_by=made_by, tokenizer_kind=tokenizer, overwrite=overwrite
    )


def check_token_types(fmt: Format, config) -> None:
    """Refuses a format with token types for a model that takes none."""
    if fmt.uses_token_types and not takes_token_types(config):
        raise RejoinderError(
            f"the {fmt.name} format gives every token a type, which only GPT-2 models take "
            f"(this one is {arch_of(config)}); use dialogpt, template or chat-template"
        )


def _read_meta(path: Path) -> dict[str, Any] | None:
    """rejoinder.json, or None for a plain Hugging Face directory."""
    meta_file = path / META_FILE
    if not meta_file.exists():
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RejoinderError(
            f"{meta_file} is not valid JSON ({e}); the checkpoint is corrupt"
        ) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("format", {}), dict):
        raise RejoinderError(f"{meta_file} does not describe a rejoinder checkpoint")
    return meta


def _looks_like_hub_name(name: str) -> bool:
    parts = name.split("/")
    if len(parts) > 2 or not all(p and not p.startswith(".") for p in parts):
        return False
    # "runs/model" whose "runs" folder exists here is a local path that is missing.
    return len(parts) == 1 or not Path(parts[0]).is_dir()


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers at all: saves a minute of retries when offline."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _cached_on_this_machine(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an odd name or cache layout: treat as not cached
        return False


def load_checkpoint(
    path_or_name: str | os.PathLike,
    device: str | None = None,
    dtype=None,
    weights: bool = True,
    ranker: bool | None = False,
) -> Checkpoint:
    """Loads a checkpoint directory, or a model by hub name (`gpt2`, `microsoft/DialoGPT-medium`).

    The model goes to `device` (default: the GPU where there is one, else the CPU).

    A directory without rejoinder.json chats in its tokenizer's chat template where it
    has one, else in DialoGPT's format (an original GPT-2 or DialoGPT download). An
    adapter directory (LoRA) loads its base and merges the adapter into it. With
    `ranker`, the checkpoint must be a reply ranker (`rejoinder.modeling.ranker`), and
    without, it must not be (None: either, with weights=False only). Every way this can
    fail ends in one RejoinderError naming the directory and what is wrong.
    """
    name = str(path_or_name)
    path = Path(name)
    load_kwargs = {}
    if path.is_dir() and is_adapter(path):
        if ranker:
            raise RejoinderError(f"{path} is a LoRA adapter of a generator, not a reply ranker")
        return _load_adapter(path, device, dtype)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise RejoinderError(
                f"{path} is not a checkpoint directory (no config.json); make one with "
                "`rejoinder init` or `rejoinder import-dialogpt`"
            )
        meta = _read_meta(path)
        source = str(path)
    elif path.exists():
        raise RejoinderError(f"{path} is a file, not a checkpoint directory")
    elif _looks_like_hub_name(name):
        meta, source = None, name
        online = _hub_reachable()
        load_kwargs["local_files_only"] = not online
        if not online and not _cached_on_this_machine(name):
            raise RejoinderError(
                f"{name!r} is not a local directory, and the model hub cannot be reached to "
                "fetch it; give a checkpoint directory (or a model downloaded before)"
            )
    else:
        raise RejoinderError(f"checkpoint directory {path} does not exist")

    try:
        if weights:
            import torch
            from transformers import (
                AutoConfig,
                AutoModelForCausalLM,
                AutoModelForSequenceClassification,
                AutoTokenizer,
            )

            config = AutoConfig.from_pretrained(source, **load_kwargs)
            _check_role(name, config, meta, ranker)
            tok = _plain_tokenizer(path, source)
            if tok is None:
                tok = AutoTokenizer.from_pretrained(source, **load_kwargs)
            auto = AutoModelForSequenceClassification if ranker else AutoModelForCausalLM
            model = auto.from_pretrained(
                source, config=config, dtype=dtype or torch.float32, **load_kwargs
            )
            use_fast_gelu(model)
            config = model.config
        else:  # another backend decodes: the configuration is enough
            model = None
            tok, config = _light_tokenizer_and_config(path, source, load_kwargs)
            _check_role(name, config, meta, ranker)
    except RejoinderError:
        raise
    except Exception as e:  # transformers raises many kinds for one cause: a bad directory
        if "Unrecognized configuration class" in str(e):
            kind = re.search(r"configuration class <class '[\w.]*?(\w+)Config'>", str(e))
            raise RejoinderError(
                f"{name} holds a {kind[1] if kind else 'model'} model, which is not a causal "
                "language model; rejoinder needs one (GPT-2, Llama, Qwen2, Mistral, "
                "GPT-NeoX, …)"
            ) from None
        if path.is_dir():
            raise RejoinderError(
                f"cannot load the checkpoint in {path}: {type(e).__name__}: {str(e)[:300]}; "
                "the directory is incomplete or corrupt"
            ) from None
        raise RejoinderError(
            f"{name!r} is neither a local checkpoint directory nor a model that could be "
            f"fetched from the hub ({type(e).__name__}); give a directory that exists"
        ) from None
    has_meta = meta is not None
    if meta is None:
        meta = {"format": {"name": default_format(tok, config)}, "tokenizer": {"kind": "unknown"}}
        meta["heads"] = []
    if tok.eos_token_id is None:
        raise RejoinderError(f"the tokenizer of {name} has no end-of-text token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    fmt = format_from_dict(meta.get("format", {"name": "dialogpt"}), tok)
    check_token_types(fmt, config)
    if len(tok) > config.vocab_size:
        raise RejoinderError(
            f"the tokenizer of {name} has {len(tok)} tokens but the model only "
            f"{config.vocab_size} embeddings; the checkpoint is corrupt"
        )
    if model is not None:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            model.to(device)
        except (RuntimeError, AssertionError, ValueError) as e:
            raise RejoinderError(f"cannot put the model on device {device!r}: {e}") from None
        model.eval()
    where = str(path) if path.is_dir() else name
    return Checkpoint(model, tok, fmt, meta, where, config, has_meta)


def is_ranker(config, meta: dict[str, Any] | None) -> bool:
    """Whether a checkpoint scores replies (`rejoinder.modeling.ranker`) rather than
    writes them."""
    if meta and meta.get("ranks"):
        return True
    architectures = getattr(config, "architectures", None) or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


def _check_role(name: str, config, meta: dict[str, Any] | None, ranker: bool | None) -> None:
    """Refuses a ranker where a generator is wanted, and the reverse."""
    if ranker is None or is_ranker(config, meta) == ranker:
        return
    if not ranker and (meta or {}).get("classifies"):
        raise RejoinderError(
            f"{name} is a text classifier: it labels texts but does not write them. Use it "
            "as --safety-classifier, and give a generator here"
        )
    if ranker:
        raise RejoinderError(
            f"{name} is a generator, not a reply ranker; train a ranker with `rejoinder "
            "train --model.objective rank` or convert DialogRPT's with `rejoinder "
            "import-dialogrpt`"
        )
    raise RejoinderError(
        f"{name} is a reply ranker: it scores replies but does not write them. Use it "
        "with `rejoinder rank` or as a --ranker, and give a generator here"
    )


def _load_adapter(path: Path, device, dtype) -> Checkpoint:
    """An adapter directory: its base model loaded, the adapter merged into it."""
    meta = _read_meta(path)
    base = load_checkpoint(adapter_base(path, meta), device=device, dtype=dtype)
    model = merge(base.model, path)
    tok = base.tokenizer
    if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tok = _plain_tokenizer(path, str(path))
        if tok is None:
            tok = AutoTokenizer.from_pretrained(str(path))
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
    fmt = format_from_dict(meta["format"], tok) if meta else base.format
    return Checkpoint(model, tok, fmt, meta or base.meta, str(path), model.config, meta is not None)


def default_format(tokenizer, config) -> str:
    """The format of a directory that has no rejoinder.json: its tokenizer's chat template
    where it has one, and DialoGPT's for GPT-2 and DialoGPT (which have none)."""
    if arch_of(config) != "gpt2" and getattr(tokenizer, "chat_template", None):
        return "chat-template"
    return "dialogpt"


def _plain_tokenizer(path: Path, source: str):
    """The tokenizer of a directory whose tokenizer.json is the whole tokenizer (as
    rejoinder writes them), or None for another kind.

    AutoTokenizer would pick a family's class by the model type (Qwen2's for a qwen2
    model made with GPT-2's vocabulary), whose own pre-tokenizer and normaliser replace
    the file's and split text otherwise than the model learnt.
    """
    tok_config = path / "tokenizer_config.json"
    if not (path.is_dir() and tok_config.is_file() and (path / "tokenizer.json").is_file()):
        return None
    kind = json.loads(tok_config.read_text()).get("tokenizer_class")
    if kind not in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        return None
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(source)


def _light_tokenizer_and_config(path: Path, source: str, load_kwargs: dict):
    """The tokenizer and configuration, without importing torch where that can be avoided.

    Importing torch costs about 200 MB; a CTranslate2 process does not need it. A
    checkpoint written by rejoinder has a plain `tokenizers` tokenizer and a GPT-2
    config.json, both read here directly; anything else goes through transformers' Auto
    classes.
    """
    tok = _plain_tokenizer(path, source)
    if tok is not None:
        config = json.loads((path / "config.json").read_text())
        if config.get("model_type") == "gpt2":
            return tok, SimpleNamespace(**config)
    from transformers import AutoConfig, AutoTokenizer

    if tok is None:
        tok = AutoTokenizer.from_pretrained(source, **load_kwargs)
    return tok, AutoConfig.from_pretrained(source, **load_kwargs)
