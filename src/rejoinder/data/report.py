"""Report: what a data build read, kept and skipped, and why. Nothing is dropped silently."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

SAMPLES_PER_REASON = 5


class Report:
    """Counters for one build, merged across workers and written into manifest.json.

    - `bad_input[reason]`: records that could not be read (malformed JSON, a missing
      field, invalid UTF-8, a truncated file, ...), with a few samples of each;
    - `dropped[filter]`: dialogues a named filter removed;
    - `not_made[kind][reason]`: preference pairs of a kind that were not made, and why;
    - `counts[name]`: anything else worth counting (lines read, dialogues out, ...).
    """

    def __init__(self, explain: int = 0):
        self.counts: Counter[str] = Counter()
        self.bad_input: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.unmade: Counter[tuple[str, str]] = Counter()
        self.notes: dict[str, str] = {}
        """Facts about the whole build worth a sentence (a kind of pairs not made, and why)."""
        self.explain = explain
        """How many dropped dialogues to keep per filter (`--explain`)."""
        self.samples: dict[str, list[Any]] = defaultdict(list)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def bad(self, reason: str, sample: Any = None) -> None:
        """Counts one unreadable record under `reason`, keeping a short sample."""
        self.bad_input[reason] += 1
        key = f"bad_input:{reason}"
        if sample is not None and len(self.samples[key]) < SAMPLES_PER_REASON:
            self.samples[key].append(str(sample)[:200])

    def not_made(self, kind: str, reason: str, n: int = 1) -> None:
        """Counts `n` pairs of `kind` not made for `reason`."""
        self.unmade[kind, reason] += n

    def drop(self, filter_name: str, sample: Any = None) -> None:
        """Counts one dialogue removed by `filter_name`; keeps it when explaining."""
        self.dropped[filter_name] += 1
        key = f"dropped:{filter_name}"
        if sample is not None and len(self.samples[key]) < self.explain:
            self.samples[key].append(sample)

    def merge(self, other: Report) -> Report:
        self.counts.update(other.counts)
        self.bad_input.update(other.bad_input)
        self.dropped.update(other.dropped)
        self.unmade.update(other.unmade)
        self.notes.update(other.notes)
        for key, items in other.samples.items():
            limit = self.explain if key.startswith("dropped:") else SAMPLES_PER_REASON
            room = limit - len(self.samples[key])
            self.samples[key].extend(items[: max(room, 0)])
        return self

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "counts": dict(sorted(self.counts.items())),
            "bad_input": dict(sorted(self.bad_input.items())),
            "dropped": dict(sorted(self.dropped.items())),
        }
        if self.unmade:
            not_made: dict[str, dict[str, int]] = {}
            for (kind, reason), n in sorted(self.unmade.items()):
                not_made.setdefault(kind, {})[reason] = n
            out["not_made"] = not_made
        if self.notes:
            out["notes"] = dict(sorted(self.notes.items()))
        return out
