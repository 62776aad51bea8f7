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

from rejoinder.atomic import atomic_directory
from rejoinder.errors import RejoinderError
from rejoinder.formats import Format, format_from_dict, get_format

META_FILE = "rejoinder.json"

SIZES: dict[str, dict[str, int]] = {
    # A two-layer model for tests and demos: the embeddings are most of it.
    "tiny": {"n_layer": 2, "n_embd": 32, "n_head": 2},
    # Sized to train on a laptop CPU in minutes.
    "small": {"n_layer": 4, "n_embd": 256, "n_head": 4},
    # GPT-2's sizes, which are DialoGPT's small, medium and large.
    "124M": {"n_layer": 12, "n_embd": 768, "n_head": 12},
    "345M": {"n_layer": 24, "n_embd": 1024, "n_head": 16},
    "762M": {"n_layer": 36, "n_embd": 1280, "n_head": 20},
}
DIALOGPT_SIZES = {"small": "124M", "medium": "345M", "large": "762M"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rejoinder")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


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

    def _config(self):
        return self.config if self.config is not None else self.model.config

    @property
    def max_positions(self) -> int:
        """The most tokens the model reads at once."""
        c = self._config()
        return int(getattr(c, "n_positions", None) or c.max_position_embeddings)

    @property
    def width(self) -> int:
        """The size of the model's hidden states."""
        c = self._config()
        return int(getattr(c, "hidden_size", None) or c.n_embd)


FAST_GELU = "gelu_pytorch_tanh"


def gpt2_config(size: str, vocab_size: int, n_positions: int = 1024, **overrides):
    """A GPT2Config of a named size (see SIZES) for a vocabulary of `vocab_size`.

    The activation is GPT-2's own tanh GELU, computed by PyTorch's fused kernel
    ("gelu_pytorch_tanh") rather than transformers' five-operation "gelu_new": the same
    function in one kernel instead of five, forward and backward.
    """
    from transformers import GPT2Config

    settings = {"activation_function": FAST_GELU, **overrides}
    return GPT2Config(vocab_size=vocab_size, n_positions=n_positions, **size_dims(size), **settings)


def use_fast_gelu(model) -> None:
    """Swaps GPT-2's "gelu_new" for the fused kernel of the same function, in place.

    Original GPT-2 and DialoGPT checkpoints name "gelu_new"; the two differ only by
    float rounding, and the fused one makes a training step cheaper.
    """
    from transformers.activations import ACT2FN

    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "gpt2" or config.activation_function != "gelu_new":
        return
    for module in model.modules():
        if hasattr(module, "act") and hasattr(module, "c_fc"):
            module.act = ACT2FN[FAST_GELU]
    config.activation_function = FAST_GELU


def is_size(name: str) -> bool:
    """Whether `name` names a size (rather than a checkpoint to start from)."""
    return name in SIZES or re.fullmatch(r"\d+x\d+", name) is not None


def size_dims(size: str) -> dict[str, int]:
    """n_layer, n_embd and n_head of a named size, or of "LxD" (L layers, width D, heads
    of 64 dimensions, e.g. "6x192")."""
    if size in SIZES:
        return SIZES[size]
    m = re.fullmatch(r"(\d+)x(\d+)", size)
    if not m or int(m[1]) < 1 or int(m[2]) < 64 or int(m[2]) % 64:
        raise RejoinderError(
            f"unknown size {size!r}; choose one of {', '.join(SIZES)}, or LxD: L layers of "
            "width D, a multiple of 64 (e.g. 6x192)"
        )
    return {"n_layer": int(m[1]), "n_embd": int(m[2]), "n_head": int(m[2]) // 64}


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
) -> Path:
    """Writes a checkpoint directory atomically: it appears complete or not at all.

    Everything is written to a temporary directory beside `out`, then renamed into
    place, so an interrupted save never leaves a half-written checkpoint at `out`.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise RejoinderError(
            f"{out} already exists and is not empty; choose another --out or remove it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    eos = fmt.stop_ids
    model.generation_config.eos_token_id = eos if len(eos) > 1 else eos[0]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    meta = {
        "rejoinder_version": _version(),
        "format": fmt.to_dict(),
        "tokenizer": {"kind": tokenizer_kind},
        "heads": heads or [],
        "made_by": {
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            **(made_by or {}),
        },
    }
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
    **config_overrides,
) -> Path:
    """A randomly initialised GPT-2 model of `size`, saved as a checkpoint at `out`.

    Args:
        out: the checkpoint directory to write.
        size: one of SIZES: "tiny" (2 layers, for tests), "small", "124M", "345M", "762M".
        tokenizer: "gpt2", "bpe:N" or "char" (the last two learn from `corpus`).
        format: the conversation format the model will be trained in.
        corpus: texts to learn a tokenizer from.
        seed: seeds the random weights, so the same arguments give the same model.
        format_settings: keyword arguments of the format (e.g. {"reverse": True}).
    """
    import torch
    from transformers import GPT2LMHeadModel

    from rejoinder.tokenizers import build_tokenizer

    size_dims(size)  # a clear error for an unknown size, before any work
    tok = build_tokenizer(tokenizer, corpus)
    fmt = get_format(format, tok, **(format_settings or {}))  # may add special tokens
    config = gpt2_config(
        size,
        len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **config_overrides,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    made_by = {"command": "init", "size": size, "seed": seed}
    return save_checkpoint(
        model, tok, fmt, out, made_by=made_by, tokenizer_kind=tokenizer, overwrite=overwrite
    )


def _read_meta(path: Path) -> dict[str, Any]:
    meta_file = path / META_FILE
    if not meta_file.exists():
        # A plain Hugging Face directory (gpt2, DialoGPT): DialoGPT's format fits both.
        return {"format": {"name": "dialogpt"}, "tokenizer": {"kind": "unknown"}, "heads": []}
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
    path_or_name: str | os.PathLike, device: str | None = None, dtype=None, weights: bool = True
) -> Checkpoint:
    """Loads a checkpoint directory, or a model by hub name (`gpt2`, `microsoft/DialoGPT-medium`).

    The model goes to `device` (default: the GPU where there is one, else the CPU).

    A directory without rejoinder.json (an original GPT-2 or DialoGPT download) chats
    in DialoGPT's format. Every way this can fail ends in one RejoinderError naming
    the directory and what is wrong with it.
    """
    name = str(path_or_name)
    path = Path(name)
    load_kwargs = {}
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
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(source, **load_kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=dtype or torch.float32, **load_kwargs
            )
            use_fast_gelu(model)
            config = model.config
        else:  # another backend decodes: the configuration is enough
            model = None
            tok, config = _light_tokenizer_and_config(path, source, load_kwargs)
    except Exception as e:  # transformers raises many kinds for one cause: a bad directory
        if path.is_dir():
            raise RejoinderError(
                f"cannot load the checkpoint in {path}: {type(e).__name__}: {str(e)[:300]}; "
                "the directory is incomplete or corrupt"
            ) from None
        raise RejoinderError(
            f"{name!r} is neither a local checkpoint directory nor a model that could be "
            f"fetched from the hub ({type(e).__name__}); give a directory that exists"
        ) from None
    if meta is None:
        meta = {"format": {"name": "dialogpt"}, "tokenizer": {"kind": "unknown"}, "heads": []}
    if tok.eos_token_id is None:
        raise RejoinderError(f"the tokenizer of {name} has no end-of-text token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    fmt = format_from_dict(meta.get("format", {"name": "dialogpt"}), tok)
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
    return Checkpoint(model, tok, fmt, meta, str(path) if path.is_dir() else name, config)


def _light_tokenizer_and_config(path: Path, source: str, load_kwargs: dict):
    """The tokenizer and configuration, without importing torch where that can be avoided.

    Importing torch costs about 200 MB; a CTranslate2 process does not need it. A
    checkpoint written by rejoinder has a plain `tokenizers` tokenizer and a GPT-2
    config.json, both read here directly; anything else goes through transformers' Auto
    classes.
    """
    tok_config = path / "tokenizer_config.json"
    if path.is_dir() and tok_config.is_file() and (path / "tokenizer.json").is_file():
        kind = json.loads(tok_config.read_text()).get("tokenizer_class")
        if kind in ("TokenizersBackend", "PreTrainedTokenizerFast"):
            from transformers import PreTrainedTokenizerFast

            config = json.loads((path / "config.json").read_text())
            if config.get("model_type") == "gpt2":
                return PreTrainedTokenizerFast.from_pretrained(source), SimpleNamespace(**config)
    from transformers import AutoConfig, AutoTokenizer

    return (
        AutoTokenizer.from_pretrained(source, **load_kwargs),
        AutoConfig.from_pretrained(source, **load_kwargs),
    )
