"""Labelled texts: a text in its context, and the class a person gave it.

A labels dataset is laid out as the other kinds are (DIR/{train,valid,test}/*.parquet
plus DIR/manifest.json), with rows of `label_schema()` and `"kind": "labels"` in its
manifest, so that it is never read as dialogues or pairs, nor they as it. Classifiers
learn from it (`rejoinder train --model.objective classify`), a safety classifier first
of all ("safe" and "unsafe", or any classes a person chose); `rejoinder eval-safety`
measures them on its test split. The manifest counts each label per split, and
`labels_of` gives the classes from it without reading the rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rejoinder.data.io import write_part
from rejoinder.data.pairs import require_kind
from rejoinder.dialogue import Turn
from rejoinder.errors import RejoinderError

KIND = "labels"
"""The manifest's kind of a labels dataset."""


@dataclass
class RawLabel:
    """A labelled text on its way through a build, and its parquet row."""

    id: str
    group: str
    """The split key: texts of one group land in one split."""
    context: list[str]
    speakers: list[str | None]
    """Each context turn's speaker or role (None where it named none)."""
    text: str
    label: str
    source: str = "labels"

    def to_row(self) -> tuple:
        """The parquet row, its values in the order of `label_schema()`'s columns."""
        pairs = zip(self.context, self.speakers, strict=True)
        turns = [{"text": t, "speaker": s} for t, s in pairs]
        return (self.id, self.source, turns, self.text, self.label, self.group)


def label_schema():
    """The one schema of a labels dataset's parquet files."""
    import pyarrow as pa

    turn = pa.struct([("text", pa.string()), ("speaker", pa.string())])
    return pa.schema(
        [
            ("id", pa.string()),
            ("source", pa.string()),
            ("context", pa.list_(turn)),
            ("text", pa.string()),
            ("label", pa.string()),
            ("group", pa.string()),
        ]
    )


@dataclass
class LabelledText:
    """A text, the turns before it (oldest first; none for a text said first) and its
    label."""

    context: list[Turn | str]
    text: str
    label: str
    id: str = ""


def iter_labels(path: str | Path, split: str = "train") -> Iterator[LabelledText]:
    """The labelled texts of one split of a labels dataset, a batch of rows at a time."""
    import pyarrow.dataset as pads

    require_kind(path, KIND, "reading labelled texts")
    folder = Path(path) / split
    if not folder.is_dir():
        return
    for batch in pads.dataset(str(folder), format="parquet").to_batches(batch_size=2048):
        for r in batch.to_pylist():
            context = [Turn(t["text"], t["speaker"]) for t in r["context"] or ()]
            yield LabelledText(context, r["text"], r["label"], r["id"])


def read_labels(path: str | Path, split: str = "train") -> list[LabelledText]:
    """The labelled texts of one split of a labels dataset (`data build labels`)."""
    return list(iter_labels(path, split))


def labels_of(path: str | Path) -> list[str]:
    """The dataset's classes, sorted: every label its manifest counts, in any split."""
    require_kind(path, KIND, "reading its labels")
    manifest = Path(path) / "manifest.json"
    counts = json.loads(manifest.read_text()).get("labels")
    if not isinstance(counts, dict):
        raise RejoinderError(f"{manifest} counts no labels; rebuild {path}")
    return sorted(counts)


def write_labels(out: Path, split: str, rows: list[RawLabel], part: int = 0) -> None:
    """Writes one parquet file of labelled texts (the build writes its own; tests and
    small tools use this)."""
    write_part(out, split, [r.to_row() for r in rows], label_schema(), part)
