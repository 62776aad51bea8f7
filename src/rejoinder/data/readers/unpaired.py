"""Unpaired feedback users bring as JSON lines: a reply, its context, and whether it is
desirable."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rejoinder.data.io import file_stem
from rejoinder.data.readers.common import (
    Skip,
    context_texts,
    json_lines,
    optional_strings,
    turn_text,
)
from rejoinder.data.report import Report
from rejoinder.data.unpaired import RawUnpaired

LABELS = {"desirable": True, "undesirable": False, "true": True, "false": False}
"""Label strings (case ignored) and what they mean; JSON's true/false and 1/0 too."""


def read_unpaired_jsonl(path: str | Path, *, report: Report) -> Iterator[RawUnpaired]:
    """One rated reply per line: {"context": [turns], "reply": "...", "label": true}.

    `label` is true or false, "desirable" or "undesirable", or 1 or 0. `context` is
    optional (none, [] or a missing key: the reply is said first); its turns are strings
    or objects with "text" (or OpenAI's "content"). Optional keys: `kind` (else "given"),
    `id` (else "{file stem}-{line number}") and `group` (rows of one group land in one
    split; else the id). Blank lines are ignored; a line that cannot be read is counted
    under its reason, with its line number in the sample.
    """
    stem = file_stem(Path(path))
    for number, sample, obj in json_lines(path, report, "unpaired feedback"):
        try:
            yield _row(obj, f"{stem}-{number}")
        except Skip as e:
            report.bad(e.reason, sample)


def desirable_of(value: Any) -> bool:
    """A label as a bool; `Skip` for anything that is not one of the accepted spellings.

    >>> desirable_of("Desirable"), desirable_of(0), desirable_of(True)
    (True, False, True)
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in LABELS:
        return LABELS[value.strip().lower()]
    if value is None:
        raise Skip("missing field: label")
    raise Skip("unknown label")


def _row(obj: Any, default_id: str) -> RawUnpaired:
    if not isinstance(obj, Mapping):
        raise Skip("wrong type: line")
    for name in ("reply", "label"):
        if name not in obj:
            raise Skip(f"missing field: {name}")
    desirable = desirable_of(obj["label"])
    texts = context_texts(obj.get("context") or [])
    reply = turn_text(obj["reply"], "reply")
    if not reply:
        raise Skip("empty reply")
    fields = optional_strings(obj, ("kind", "id", "group"))
    row_id = fields["id"] or default_id
    return RawUnpaired(
        id=row_id,
        kind=fields["kind"] or "given",
        group=fields["group"] or row_id,
        context=texts,
        reply=reply,
        desirable=desirable,
    )
