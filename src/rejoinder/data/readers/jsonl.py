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
from rejoinder.dialogue import ASSISTANT, SYSTEM_ROLES, USER, Dialogue, Turn

_SCALARS = (str, int, float, bool)


def read_jsonl(path: str | Path, *, report: Report) -> Iterator[Dialogue]:
    """One dialogue per line, in any of four shapes:

    - a list of strings: ["Hi", "Hello!"] (no roles: they alternate back from the last
      turn, the reply);
    - {"turns": [...]} with strings or {"text", "speaker", other labels} objects (a
      speaker "user", "assistant", "system" or "persona" is that role; another name is
      a person's, whose role alternates);
    - {"messages": [{"role", "content"}, ...]} (OpenAI's chat format): user and
      assistant messages are turns in their roles; system (and developer) messages
      become the dialogue's system prompt, meta["system"], which a chat template
      renders, wherever they stand (those after the first turn are counted);
    - {"conversations": [{"from", "value"}, ...]} (ShareGPT's): "human" is the user,
      "gpt" the assistant, "system" the system prompt.

    A message of another role (tool, function) skips its dialogue ("unknown role"), as
    does one of only system messages, and an empty turn after a turn without a role
    (dropping it would swap who said what); other empty turns are dropped and counted.
    An object's `id` (else "{file stem}-{line number}") and `source` (else "jsonl") are
    used; its other keys with a string, number or boolean value go into the meta (a
    "persona" there is the dialogue's persona). Blank lines are ignored. .gz, .zst, .bz2
    and .xz files are decompressed on the fly.
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
    system = ""
    if "turns" in obj:
        if not isinstance(obj["turns"], list):
            raise Skip("wrong type: turns")
        turns = _jsonl_turns(obj["turns"], report)
    elif "messages" in obj:
        if not isinstance(obj["messages"], list):
            raise Skip("wrong type: messages")
        turns, system = _jsonl_messages(obj["messages"], report)
    elif "conversations" in obj:
        if not isinstance(obj["conversations"], list):
            raise Skip("wrong type: conversations")
        turns, system = _jsonl_messages(_sharegpt(obj["conversations"]), report)
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
    meta = {"system": system} if system else {}
    for key, value in obj.items():
        if key in ("id", "source", "turns", "messages", "conversations"):
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


_SHAREGPT = {"human": "user", "gpt": "assistant", "system": "system"}


def _sharegpt(items: list[Any]) -> list[Any]:
    """ShareGPT's {"from", "value"} turns as OpenAI messages (other senders keep their
    name, which `_jsonl_messages` refuses as an unknown role)."""
    out = []
    for item in items:
        if not isinstance(item, Mapping) or "from" not in item or "value" not in item:
            raise Skip("missing field: from/value")
        if not isinstance(item["from"], str):
            raise Skip("wrong type: from")
        out.append({"role": _SHAREGPT.get(item["from"], item["from"]), "content": item["value"]})
    return out


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
        if role in SYSTEM_ROLES:
            if isinstance(content, str) and content.strip():
                system.append(content.strip())
                report.count("system messages kept as the system prompt")
                if turns:
                    report.count("system messages after the first turn moved to the prompt")
            continue
        if role not in (USER, ASSISTANT):
            raise Skip("unknown role")
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
    if system and not any(turns):
        raise Skip("only system messages")
    return turns, "\n".join(system)
