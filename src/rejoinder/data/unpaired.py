"""Unpaired feedback: a reply in its context, and whether people found it desirable.

KTO (`rejoinder train --model.objective kto`) learns from such rows, one reply at a
time, where DPO needs two replies to one context: a thumbs up or down is feedback of
this kind, and most of what users say of a served model is. An unpaired dataset is laid
out as the other kinds are (DIR/{train,valid,test}/*.parquet plus DIR/manifest.json),
with rows of `unpaired_schema()` and `"kind": "unpaired"` in its manifest, which counts
desirable and undesirable replies per split. It is never read as pairs, nor pairs as
it, except by KTO, which reads a pairs dataset as unpaired rows (each chosen reply
desirable, each rejected one undesirable) as the KTO paper and TRL do:
`read_unpaired(…, from_pairs=True)`.

Kinds: `given` (rows a user brought as JSONL, `data build unpaired`) and, from a session
database (`data build feedback --kind unpaired`), `thumbs` (a rated reply), `regenerated`
(a reply replaced by regenerating, and not liked), `rewrite` (a better reply a user
wrote) and `flagged` (a reply the safety policy stopped).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rejoinder.data.io import write_part
from rejoinder.data.pairs import dataset_kind, iter_pairs, require_kind

KIND = "unpaired"
"""The manifest's kind of an unpaired dataset."""
LABELS = ("desirable", "undesirable")
"""What the manifest counts per split."""


@dataclass
class RawUnpaired:
    """A rated reply on its way through a build, and its parquet row."""

    id: str
    kind: str
    group: str
    """The split key: rows of one group (a session) land in one split."""
    context: list[str]
    reply: str
    desirable: bool
    source: str = "unpaired"

    @property
    def label(self) -> str:
        """ "desirable" or "undesirable": what the manifest counts it under."""
        return LABELS[0] if self.desirable else LABELS[1]

    def to_row(self) -> tuple:
        """The parquet row, its values in the order of `unpaired_schema()`'s columns."""
        return (
            self.id, self.source, self.kind, self.context, self.reply, self.desirable,
            self.group,
        )  # fmt: skip


def unpaired_schema():
    """The one schema of an unpaired dataset's parquet files."""
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("source", pa.string()),
            ("kind", pa.string()),
            ("context", pa.list_(pa.string())),
            ("reply", pa.string()),
            ("desirable", pa.bool_()),
            ("group", pa.string()),
        ]
    )


@dataclass(frozen=True)
class Unpaired:
    """A context (oldest turn first), a reply, and whether it is desirable."""

    context: tuple[str, ...]
    reply: str
    desirable: bool
    group: str = ""
    kind: str = "given"
    id: str = ""


def iter_unpaired(
    path: str | Path, split: str, limit: int | None = None, *, from_pairs: bool = False
) -> Iterator[Unpaired]:
    """The rows of one split of an unpaired dataset (at most `limit`), a batch of rows at
    a time. With `from_pairs`, a pairs dataset is read too: each pair gives its chosen
    reply as a desirable row and its rejected one as an undesirable row (KTO's use of
    paired data; `limit` counts rows)."""
    if from_pairs and dataset_kind(path) == "pairs":
        rows = _from_pairs(path, split)
    else:
        require_kind(path, KIND, "reading unpaired feedback")
        rows = _rows(path, split)
    if limit is not None and limit <= 0:
        return
    for i, row in enumerate(rows, start=1):
        yield row
        if i == limit:
            return


def read_unpaired(
    path: str | Path, split: str, limit: int | None = None, *, from_pairs: bool = False
) -> list[Unpaired]:
    """The rows of one split of an unpaired dataset (`data build unpaired`); see
    `iter_unpaired`."""
    return list(iter_unpaired(path, split, limit, from_pairs=from_pairs))


def _rows(path: str | Path, split: str) -> Iterator[Unpaired]:
    import pyarrow.dataset as pads

    folder = Path(path) / split
    if not folder.is_dir():
        return
    for batch in pads.dataset(str(folder), format="parquet").to_batches(batch_size=2048):
        for r in batch.to_pylist():
            yield Unpaired(
                tuple(r["context"] or ()), r["reply"], bool(r["desirable"]), r["group"],
                r["kind"], r["id"],
            )  # fmt: skip


def _from_pairs(path: str | Path, split: str) -> Iterator[Unpaired]:
    for p in iter_pairs(path, split):
        group = p.id  # both rows of a pair in one split, as the pair was
        yield Unpaired(p.context, p.chosen, True, group, p.kind, f"{p.id}-chosen")
        yield Unpaired(p.context, p.rejected, False, group, p.kind, f"{p.id}-rejected")


def write_unpaired(out: Path, split: str, rows: list[RawUnpaired], part: int = 0) -> None:
    """Writes one parquet file of unpaired rows (the build writes its own; tests and
    small tools use this)."""
    write_part(out, split, [r.to_row() for r in rows], unpaired_schema(), part)
