"""Dialogues as JSON lines: lists of turns, {"turns": ...} or OpenAI-style {"messages": ...}."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rejoinder.data.io import file_stem
from rejoinder.data.readers.common import (
    Skip,
    build_or_count,
    json_lines,
    make_dialogue,
    make_turn,
)
from rejoinder.data.report import Report
from rejoinder.dialogue import Dialogue, Turn

_SCALARS = (str, int, float, bool)


def read_jsonl(path: str | Path, *, report: Report) -> Iterator[Dialogue]:
    """One dialogue per line, in any of three shapes:

    - a list of strings: ["Hi", "Hello!"];
    - {"turns": [...]} with strings or {"text", "speaker", other labels} objects;
    - {"messages": [{"role", "content"}, ...]} (OpenAI's chat format; role -> speaker;
      "system" messages become the dialogue's system prompt, meta["system"], which a
      chat template renders).

    An object's `id` (else "{file stem}-{line number}") and `source` (else "jsonl") are
    used; its other keys with a string, number or boolean value go into the meta.
    Blank lines are ignored. .gz, .zst, .bz2 and .xz files are decompressed on the fly.
    """
    stem = file_stem(Path(path))
    for number, sample, obj in json_lines(path, report, "dialogues"):
        d = build_or_count(report, sample, _jsonl, obj, stem, number, report)
        if d is not None:
            yield d


def _jsonl(obj: Any, stem: str, number: int, report: Report) -> Dialogue:
    default_id = f"{stem}-{number}"
    if isinstance(obj, list):
        return make_dialogue(_jsonl_turns(obj, report), default_id, "jsonl", {})
    if not isinstance(obj, Mapping):
        raise Skip("wrong type: line")
    if "turns" in obj:
        if not isinstance(obj["turns"], list):
            raise Skip("wrong type: turns")
        turns = _jsonl_turns(obj["turns"], report)
    elif "messages" in obj:
        if not isinstance(obj["messages"], list):
            raise Skip("wrong type: messages")
        turns, system = _jsonl_messages(obj["messages"], report)
    else:
        raise Skip("missing field: turns")
    id = obj.get("id")
    if id is None or id == "":
        id = default_id
    elif isinstance(id, int) and not isinstance(id, bool):
        id = str(id)
    elif not isinstance(id, str):
        raise Skip("wrong type: id")
    source = obj.get("source")
    if source is None or source == "":
        source = "jsonl"
    elif not isinstance(source, str):
        raise Skip("wrong type: source")
    meta = {"system": system} if "messages" in obj and system else {}
    for key, value in obj.items():
        if key in ("id", "source", "turns", "messages"):
            continue
        if isinstance(value, _SCALARS):
            meta[key] = value
        else:
            report.count("non-scalar meta keys dropped")
    return make_dialogue(turns, id, source, meta)


def _jsonl_turns(items: list[Any], report: Report) -> list[Turn | None]:
    turns = []
    for item in items:
        if item is None or isinstance(item, str):
            turns.append(make_turn(item, None, {}, report))
        elif isinstance(item, Mapping):
            if "text" in item:
                text_key, speaker_key = "text", "speaker"
            elif "content" in item:
                text_key, speaker_key = "content", "role"
            else:
                raise Skip("missing field: text")
            labels = {k: v for k, v in item.items() if k not in (text_key, speaker_key)}
            turns.append(make_turn(item[text_key], item.get(speaker_key), labels, report))
        else:
            raise Skip("wrong type: turn")
    return turns


def _jsonl_messages(messages: list[Any], report: Report) -> tuple[list[Turn | None], str]:
    """The turns of OpenAI-style messages, and the text of their system messages."""
    turns, system = [], []
    for message in messages:
        if not isinstance(message, Mapping):
            raise Skip("wrong type: message")
        if "role" not in message:
            raise Skip("missing field: role")
        if "content" not in message:
            raise Skip("missing field: content")
        role, content = message["role"], message["content"]
        if not isinstance(role, str):
            raise Skip("wrong type: role")
        if role == "system":
            if isinstance(content, str) and content.strip():
                system.append(content.strip())
                report.count("system messages kept as the system prompt")
            continue
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
            parts = [
                p["text"]
                for p in content
                if isinstance(p, Mapping) and p.get("type", "text") == "text" and "text" in p
            ]
            if not all(isinstance(p, str) for p in parts):
                raise Skip("wrong type: content")
            content = " ".join(p.strip() for p in parts if p.strip())
        elif content is not None and not isinstance(content, str):
            raise Skip("wrong type: content")
        labels = {k: v for k, v in message.items() if k not in ("role", "content")}
        turns.append(make_turn(content, role, labels, report))
    return turns, "\n".join(system)
