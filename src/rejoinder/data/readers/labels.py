"""Labelled texts users bring as JSON lines: a text, its context and its class."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rejoinder.data.io import file_stem
from rejoinder.data.labels import RawLabel
from rejoinder.data.readers.common import Skip, json_lines, optional_strings
from rejoinder.data.report import Report
from rejoinder.dialogue import as_context
from rejoinder.errors import RejoinderError


def read_labels_jsonl(path: str | Path, *, report: Report) -> Iterator[RawLabel]:
    """One labelled text per line: {"context": [turns], "text": "...", "label": "unsafe"}.

    `context` is optional (none, [] or a missing key: the text is said first); its turns
    are strings, {"text", "speaker"} or OpenAI's {"role", "content"} objects, whose
    speaker or role is kept. `label` is any class name ("safe", "unsafe", "toxic", …).
    Optional keys: `id` (else "{file stem}-{line number}") and `group` (texts of one
    group land in one split; else the id). Blank lines are ignored; a line that cannot
    be read is counted under its reason, with its line number in the sample.
    """
    stem = file_stem(Path(path))
    for number, sample, obj in json_lines(path, report, "labelled texts"):
        try:
            yield _labelled(obj, f"{stem}-{number}")
        except Skip as e:
            report.bad(e.reason, sample)


def _labelled(obj: Any, default_id: str) -> RawLabel:
    if not isinstance(obj, Mapping):
        raise Skip("wrong type: line")
    for name in ("text", "label"):
        if name not in obj or obj[name] is None:
            raise Skip(f"missing field: {name}")
        if not isinstance(obj[name], str):
            raise Skip(f"wrong type: {name}")
        if not obj[name].strip():
            raise Skip(f"empty {name}")
    try:
        turns = as_context(obj.get("context"))
    except RejoinderError:  # a turn that is no text, or a context that is no list
        raise Skip("wrong type: context") from None
    ids = optional_strings(obj, ("id", "group"))
    label_id = ids["id"] or default_id
    return RawLabel(
        id=label_id,
        group=ids["group"] or label_id,
        context=[t.text.strip() for t in turns],
        speakers=[t.speaker for t in turns],
        text=obj["text"].strip(),
        label=obj["label"].strip(),
    )
