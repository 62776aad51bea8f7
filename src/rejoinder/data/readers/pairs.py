"""Preference pairs users bring as JSON lines: a context, the reply preferred, the other."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rejoinder.data.io import file_stem
from rejoinder.data.pairs import RawPair
from rejoinder.data.readers.common import (
    Skip,
    context_texts,
    json_lines,
    optional_strings,
    turn_text,
)
from rejoinder.data.report import Report


def read_pairs_jsonl(path: str | Path, *, report: Report) -> Iterator[RawPair]:
    """One pair per line: {"context": [turns] or "one turn", "chosen": "...", "rejected": "..."}.

    Optional keys: `kind` (else "given"), `id` (else "{file stem}-{line number}"),
    `group` (pairs of one group land in one split; else the id), `subreddit`, and
    `chosen_feedback`/`rejected_feedback` (numbers). A context turn may be a string or
    an object with "text" (or OpenAI's "content"). Blank lines are ignored; a line that
    cannot be read is counted under its reason, with its line number in the sample.
    """
    stem = file_stem(Path(path))
    for number, sample, obj in json_lines(path, report, "pairs"):
        try:
            yield _pair(obj, f"{stem}-{number}")
        except Skip as e:
            report.bad(e.reason, sample)


def _pair(obj: Any, default_id: str) -> RawPair:
    if not isinstance(obj, Mapping):
        raise Skip("wrong type: line")
    for name in ("context", "chosen", "rejected"):
        if name not in obj:
            raise Skip(f"missing field: {name}")
    texts = context_texts(obj["context"])
    chosen, rejected = turn_text(obj["chosen"], "chosen"), turn_text(obj["rejected"], "rejected")
    if not chosen or not rejected:
        raise Skip("empty chosen or rejected")
    if chosen == rejected:
        raise Skip("chosen and rejected are the same")
    fields = optional_strings(obj, ("kind", "id", "group", "subreddit"))
    feedback = {}
    for name in ("chosen_feedback", "rejected_feedback"):
        value = obj.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise Skip(f"wrong type: {name}")
        feedback[name] = None if value is None else float(value)
    pair_id = fields["id"] or default_id
    return RawPair(
        id=pair_id,
        kind=fields["kind"] or "given",
        group=fields["group"] or pair_id,
        context=texts,
        chosen=chosen,
        rejected=rejected,
        source="pairs",
        subreddit=fields["subreddit"],
        **feedback,
    )
