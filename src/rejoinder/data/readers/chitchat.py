"""The BYU Chit-Chat Challenge corpus, as the `chitchat-dataset` package ships it."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rejoinder.data.io import existing, load_json
from rejoinder.data.readers.common import Skip, build_or_count, make_dialogue
from rejoinder.data.report import Report
from rejoinder.dialogue import Dialogue, Turn
from rejoinder.errors import RejoinderError


def read_chitchat(path: str | Path | None = None, *, report: Report) -> Iterator[Dialogue]:
    """The BYU Chit-Chat corpus (the `chitchat-dataset` package's dataset.json).

    Consecutive messages from one sender, in one message group or across groups, are one
    turn, their texts joined with a space; the speaker is the sender's id. The meta holds
    the conversation's prompt, start time and ratings (rating_witty, ...) when present.
    """
    if path is None:
        spec = importlib.util.find_spec("chitchat_dataset")
        if spec is None or not spec.origin:
            raise RejoinderError(
                "the Chit-Chat corpus is not installed: pip install chitchat-dataset, "
                "or give the path of its dataset.json"
            )
        path = Path(spec.origin).parent / "dataset.json"
    path = existing(path)
    if path.is_dir():
        if not (path / "dataset.json").is_file():
            raise RejoinderError(f"{path} holds no dataset.json (the Chit-Chat corpus)")
        path = path / "dataset.json"
    try:
        data = load_json(path.read_bytes().decode("utf-8-sig"), report)
    except UnicodeDecodeError:
        report.bad("invalid utf-8", str(path))
        return
    except (ValueError, RecursionError) as e:
        report.bad("malformed json", f"{path}: {e}")
        return
    if not isinstance(data, Mapping):
        report.bad("wrong type: dataset", f"{path}: a {type(data).__name__}, not an object")
        return
    for cid, conv in data.items():
        d = build_or_count(report, cid, _chitchat, str(cid), conv, report)
        if d is not None:
            yield d


def _chitchat(cid: str, conv: Any, report: Report) -> Dialogue:
    if not isinstance(conv, Mapping):
        raise Skip("wrong type: conversation")
    if "messages" not in conv:
        raise Skip("missing field: messages")
    groups = conv["messages"]
    if not isinstance(groups, list):
        raise Skip("wrong type: messages")
    speakers: list[str] = []
    texts: list[list[str]] = []
    for group in groups:
        if not isinstance(group, list):
            raise Skip("wrong type: message group")
        for message in group:
            if not isinstance(message, Mapping):
                raise Skip("wrong type: message")
            if "text" not in message:
                raise Skip("missing field: text")
            if "sender" not in message:
                raise Skip("missing field: sender")
            text, sender = message["text"], message["sender"]
            if text is not None and not isinstance(text, str):
                raise Skip("wrong type: text")
            if not isinstance(sender, str | int) or isinstance(sender, bool):
                raise Skip("wrong type: sender")
            text = (text or "").strip()
            if not text:
                report.count("empty turns skipped")
                continue
            sender = str(sender)
            if speakers and speakers[-1] == sender:
                texts[-1].append(text)
            else:
                speakers.append(sender)
                texts.append([text])
    turns = [Turn(" ".join(parts), speaker) for speaker, parts in zip(speakers, texts, strict=True)]
    meta: dict[str, Any] = {}
    for key in ("prompt", "start"):
        if isinstance(conv.get(key), str):
            meta[key] = conv[key]
    ratings = conv.get("ratings")
    if isinstance(ratings, Mapping):
        for key, value in ratings.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                meta[f"rating_{key}"] = value
    return make_dialogue(turns, f"chitchat-{cid}", "chitchat", meta)
