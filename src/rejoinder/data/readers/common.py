"""What every reader shares: a record it cannot read is skipped and counted, never fatal.

A reader builds each record's `Dialogue` with `build_or_count`: the builder raises
`Skip(reason)` for a record it cannot read, and that record is counted under `reason`
in the report while the reader goes on with the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rejoinder.data.io import existing, load_json, text_lines
from rejoinder.data.report import Report
from rejoinder.dialogue import PERSONA, SYSTEM, Dialogue, Turn, role_of
from rejoinder.errors import RejoinderError

_LABEL_VALUES = (str, int, float, bool, type(None))


class Skip(Exception):
    """A record that cannot be read: `reason` is the report's key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def make_turn(text: Any, speaker: Any, labels: Mapping[str, Any], report: Report) -> Turn | None:
    """A stripped Turn, None for an empty one (counted); Skip for a text that is no text."""
    if text is None:
        report.count("empty turns skipped")
        return None
    if not isinstance(text, str):
        raise Skip("wrong type: text")
    text = text.strip()
    if not text:
        report.count("empty turns skipped")
        return None
    if speaker is not None and not isinstance(speaker, str):
        if not isinstance(speaker, int | float) or isinstance(speaker, bool):
            raise Skip("wrong type: speaker")
        speaker = str(speaker)
    plain = {}
    for key, value in labels.items():
        if isinstance(value, _LABEL_VALUES):
            plain[str(key)] = value
        else:
            report.count("non-scalar turn labels dropped")
    return Turn(text, speaker, plain)


def make_dialogue(
    turns: Iterable[Turn | None], id: str, source: str, meta: Mapping[str, Any]
) -> Dialogue:
    """A Dialogue of the turns that are not None (empty turns, counted by `make_turn`).

    Skip when none is left, when only system turns are, and when dropping an empty turn
    would change who said what: the turn before it has no role, so its role (counted
    back from the reply, alternating) would flip, as would the ones before it.
    """
    kept: list[Turn] = []
    for t in turns:
        if t is not None:
            kept.append(t)
        elif kept and role_of(kept[-1].speaker) is None:
            raise Skip("empty turn after a turn without a role")
    if not kept:
        raise Skip("empty dialogue")
    if all(role_of(t.speaker) in (SYSTEM, PERSONA) for t in kept):
        raise Skip("only system messages")
    return Dialogue(tuple(kept), id, source, dict(meta))


def build_or_count(report: Report, sample: Any, make: Callable[..., Dialogue], *args: Any):
    """`make(*args)`, or None with a counted bad record when the record cannot be read."""
    try:
        return make(*args)
    except Skip as e:
        report.bad(e.reason, sample)
    except RejoinderError as e:  # a check of Turn/Dialogue that the reader did not foresee
        report.bad("invalid dialogue", f"{sample}: {e}")
    return None


def json_lines(path: str | Path, report: Report, what: str) -> Iterator[tuple[int, str, Any]]:
    """(line number, sample, parsed value) for each JSON line of a file of `what`; blank
    lines are skipped and malformed ones counted. A missing path or a directory is a
    `RejoinderError`."""
    path = existing(path)
    if path.is_dir():
        raise RejoinderError(f"{path} is a directory; give a .jsonl file of {what}")
    for number, line in text_lines(path, report):
        if not line.strip():
            continue
        sample = f"{path.name}:{number}: {line[:120]}"
        try:
            yield number, sample, load_json(line, report)
        except (ValueError, RecursionError):
            report.bad("malformed json", sample)


def turn_text(value: Any, name: str) -> str:
    """A line's turn or reply, stripped: a string, or an object with "text" (or OpenAI's
    "content"); Skip("wrong type: NAME") for anything else."""
    if isinstance(value, Mapping):
        value = value.get("text", value.get("content"))
    if not isinstance(value, str):
        raise Skip(f"wrong type: {name}")
    return value.strip()


def context_texts(context: Any) -> list[str]:
    """A line's context (one string or a list of turns) as its non-empty turn texts."""
    turns = [context] if isinstance(context, str) else context
    if not isinstance(turns, list):
        raise Skip("wrong type: context")
    return [t for t in (turn_text(t, "context") for t in turns) if t]


def optional_strings(obj: Mapping[str, Any], names: Iterable[str]) -> dict[str, str | None]:
    """A line's optional string fields (`id`, `group`, `kind`, …): None where missing;
    an integer id or group becomes its string; Skip("wrong type: NAME") for an empty
    string or anything else."""
    out: dict[str, str | None] = {}
    for name in names:
        value = obj.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and name != "kind":
            value = str(value)
        if value is not None and not (isinstance(value, str) and value):
            raise Skip(f"wrong type: {name}")
        out[name] = value
    return out
