"""What the command line's verbs share: argument groups, reading a corpus, loading a
model as the flags say. Imports stay inside the functions: `rejoinder --help` must not
wait for torch."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rejoinder.errors import RejoinderError


def quiet_libraries() -> None:
    """Silences transformers' progress bars and advice: the CLI prints what matters."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def read_corpus(path: str | None) -> list[str] | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise RejoinderError(f"corpus file {path} does not exist")
    lines = [
        line
        for line in p.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    ]
    if not lines:
        raise RejoinderError(f"corpus file {path} has no text")
    return lines


def format_settings(args) -> dict:
    settings = {}
    for item in getattr(args, "format_option", None) or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise RejoinderError(f"--format-option takes key=value, got {item!r}")
        try:
            settings[key] = json.loads(raw)
        except json.JSONDecodeError:
            settings[key] = raw
    if getattr(args, "reverse", False):
        settings["reverse"] = True
    return settings


def load_model(args):
    from rejoinder.generation import ConversationModel

    return ConversationModel.from_pretrained(
        args.model,
        reverse=getattr(args, "reverse", None),
        device=getattr(args, "device", None),
        backend=getattr(args, "backend", "torch"),
        compute_type=getattr(args, "compute_type", "int8"),
        rankers=rankers_of(args),
        safety=safety_of(args),
    )


def safety_args(p: argparse.ArgumentParser) -> None:
    """The safety policy's options (`rejoinder.safety.SafetyConfig`), in a group."""
    from rejoinder.options import add_options
    from rejoinder.safety import SafetyConfig

    add_options(p.add_argument_group("safety"), SafetyConfig)


def safety_of(args):
    """The safety settings of a verb that takes them; for one that does not (eval,
    inspect), the policy is off: what is measured is the model's own replies."""
    from rejoinder.options import from_args
    from rejoinder.safety import SafetyConfig

    if not hasattr(args, "safety_threshold"):
        return SafetyConfig(no_safety=True)
    return from_args(SafetyConfig, args)


def rankers_of(args) -> dict[str, str]:
    """--ranker NAME=DIR (or DIR, named after its folder), repeatable."""
    out = {}
    for item in getattr(args, "ranker", None) or []:
        name, sep, path = item.partition("=")
        name, path = (name, path) if sep else (Path(item).name, item)
        if not name or not path:
            raise RejoinderError(f"--ranker takes NAME=DIR, got {item!r}")
        out[name] = path
    return out


def format_args(p: argparse.ArgumentParser) -> None:
    from rejoinder.formats import FORMATS

    p.add_argument(
        "--format",
        default="dialogpt",
        choices=list(FORMATS),
        help="conversation format (default: dialogpt)",
    )
    p.add_argument(
        "--format-option",
        action="append",
        metavar="KEY=VALUE",
        help="a setting of the format, e.g. sep_token=<sep> (repeatable)",
    )
    p.add_argument("--reverse", action="store_true", help="reverse turn order (backward model)")


def tokenizer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tokenizer",
        default="gpt2",
        metavar="KIND",
        help="gpt2 (GPT-2's BPE, offline), bpe:N (learnt from --corpus) or char",
    )
    p.add_argument(
        "--corpus", metavar="FILE", help="text file, a line per text, for bpe:N and char"
    )


def out_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "ctranslate2"],
        help="decode with PyTorch (default) or CTranslate2 (fast on CPU)",
    )
    p.add_argument("--compute-type", default="int8", help="CTranslate2: int8 (default), float32, …")


def model_args(p: argparse.ArgumentParser, reverse: bool = True) -> None:
    p.add_argument("model", metavar="DIR", help="checkpoint directory (or hub name)")
    if reverse:
        reranker_args(p)
    backend_args(p)


def reranker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reverse", metavar="DIR", help="a reverse model, for MMI reranking")
    p.add_argument(
        "--ranker",
        action="append",
        metavar="NAME=DIR",
        help="a reply ranker for reranking (repeatable), e.g. updown=DIR",
    )
