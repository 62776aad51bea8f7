"""The `chatterbot-corpus` package's conversations, one language at a time."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rejoinder.data.io import repair_surrogates
from rejoinder.data.readers.common import Skip, build_or_count, make_dialogue, make_turn
from rejoinder.data.report import Report
from rejoinder.dialogue import Dialogue
from rejoinder.errors import RejoinderError


def chatterbot_languages() -> list[str]:
    """The languages of the installed chatterbot-corpus package (its data folders)."""
    return sorted(p.name for p in corpus_root().iterdir() if p.is_dir())


def corpus_root() -> Path:
    """The installed package's data folder, which holds a folder of .yml files per language."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.origin:
        raise RejoinderError(
            "the ChatterBot corpus is not installed: pip install chatterbot-corpus"
        )
    root = Path(spec.origin).parent / "data"
    if not root.is_dir():
        raise RejoinderError(f"the chatterbot-corpus package has no data folder at {root}")
    return root


def read_chatterbot(language: str, *, report: Report) -> Iterator[Dialogue]:
    """The conversations of one language of the `chatterbot-corpus` package.

    Every conversation of every data/{language}/*.yml file is a dialogue (meta category =
    the file's stem). Numbers become text; nulls are empty turns. The language is matched
    case-insensitively; an unknown one raises RejoinderError listing those available.
    """
    import yaml

    root = corpus_root()
    available = chatterbot_languages()
    matches = [name for name in available if name.lower() == str(language).strip().lower()]
    if not matches:
        raise RejoinderError(
            f"no chatterbot corpus for the language {language!r}; available: {', '.join(available)}"
        )
    name = matches[0]
    folder = root / name
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".yml", ".yaml"))
    if not files:
        raise RejoinderError(f"{folder} holds no .yml files")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for file in files:
        category = file.stem
        try:
            data = yaml.load(file.read_bytes().decode("utf-8-sig"), Loader=loader)
            data = repair_surrogates(data, report)
        except UnicodeDecodeError:
            report.bad("invalid utf-8", str(file))
            continue
        except yaml.YAMLError as e:
            report.bad("malformed yaml", f"{file}: {e}")
            continue
        if not isinstance(data, Mapping) or "conversations" not in data:
            report.bad("missing field: conversations", str(file))
            continue
        conversations = data["conversations"]
        if not isinstance(conversations, list):
            report.bad("wrong type: conversations", str(file))
            continue
        for i, conv in enumerate(conversations):
            sample = f"{file.name}[{i}]: {conv!r:.120}"
            id = f"chatterbot-{name}-{category}-{i}"
            d = build_or_count(report, sample, _chatterbot, conv, id, category, report)
            if d is not None:
                yield d


def _chatterbot(conv: Any, id: str, category: str, report: Report) -> Dialogue:
    if not isinstance(conv, list):
        raise Skip("wrong type: conversation")
    turns = []
    for item in conv:
        if isinstance(item, int | float) and not isinstance(item, bool):
            item = str(item)
        elif isinstance(item, bool):
            item = str(item).lower()  # YAML 1.1 reads yes/no/on/off as booleans
        elif item is not None and not isinstance(item, str):
            raise Skip("wrong type: turn")
        turns.append(make_turn(item, None, {}, report))
    return make_dialogue(turns, id, "chatterbot", {"category": category})
