"""The dataset's records: a dialogue on its way through a build, and the parquet rows it becomes.

A built dataset is DIR/{train,valid,test}/*.parquet plus DIR/manifest.json. Every row has
the schema of `arrow_schema()`; `read_dialogues` reads a split back as `Dialogue`s, which
is all that training and evaluation ever see of it.
"""

from __future__ import annotations

import itertools
import json
import operator
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rejoinder.dialogue import Dialogue, Turn

SPLITS = ("train", "valid", "test")
TURN_FIELDS = ("text", "speaker", "emotion", "act")


@dataclass
class RawDialogue:
    """A dialogue before it becomes a parquet row: what every engine passes around."""

    id: str
    source: str
    group: str
    """The split key: dialogues of one group (a Reddit thread) land in one split."""
    texts: list[str]
    speakers: list[str | None]
    subreddit: str | None = None
    emotions: list[str | None] | None = None
    acts: list[str | None] | None = None
    meta: str | None = None
    """Other facts as a JSON object string."""

    @classmethod
    def from_dialogue(cls, d: Dialogue) -> RawDialogue:
        """A reader's `Dialogue` as a record; its meta's "group", if any, is the split key."""

        def label(name: str) -> list[str | None] | None:
            values = [t.labels.get(name) for t in d.turns]
            return [None if v is None else str(v) for v in values] if any(values) else None

        meta = {k: v for k, v in d.meta.items() if k != "group"}
        return cls(
            id=d.id,
            source=d.source,
            group=str(d.meta.get("group", d.id)),
            texts=[t.text for t in d.turns],
            speakers=[t.speaker for t in d.turns],
            emotions=label("emotion"),
            acts=label("act"),
            meta=json.dumps(meta, sort_keys=True, ensure_ascii=False) if meta else None,
        )

    def astuple(self) -> tuple:
        """The fields in order (dataclasses.astuple deep-copies, which is slow)."""
        return (
            self.id, self.source, self.group, self.texts, self.speakers, self.subreddit,
            self.emotions, self.acts, self.meta,
        )  # fmt: skip

    def to_row(self) -> tuple:
        """The parquet row, its values in the order of `arrow_schema()`'s columns."""
        n = len(self.texts)
        emotions = self.emotions or [None] * n
        acts = self.acts or [None] * n
        turns = [
            {"text": t, "speaker": s, "emotion": e, "act": a}
            for t, s, e, a in zip(self.texts, self.speakers, emotions, acts, strict=True)
        ]
        return (self.id, self.source, turns, self.group, self.meta)


def arrow_schema():
    """The one schema of a dataset's parquet files (the Spark engine derives its own from it)."""
    import pyarrow as pa

    turn = pa.struct([(name, pa.string()) for name in TURN_FIELDS])
    return pa.schema(
        [
            ("id", pa.string()),
            ("source", pa.string()),
            ("turns", pa.list_(turn)),
            ("group", pa.string()),
            ("meta", pa.string()),
        ]
    )


def dialogue_table(dialogues: list[RawDialogue]):
    """Dialogues as a table of `arrow_schema()`: the table their `to_row()`s make, built a
    column at a time (converting rows of turn dicts costs a build more than its parsing)."""
    import pyarrow as pa

    schema = arrow_schema()
    turn = schema.field("turns").type
    chain = itertools.chain.from_iterable

    def labels(name: str) -> pa.Array:
        return strings(chain(getattr(d, name) or [None] * len(d.texts) for d in dialogues))

    turns = pa.StructArray.from_arrays(
        [
            strings(chain(d.texts for d in dialogues)),
            strings(chain(d.speakers for d in dialogues)),
            labels("emotions"),
            labels("acts"),
        ],
        fields=list(turn.value_type),
    )
    ends = list(itertools.accumulate((len(d.texts) for d in dialogues), initial=0))
    columns = [
        strings(d.id for d in dialogues),
        strings(d.source for d in dialogues),
        pa.ListArray.from_arrays(_offsets(ends), turns, type=turn),
        strings(d.group for d in dialogues),
        strings(d.meta for d in dialogues),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def strings(values: Iterable[str | None]):
    """A pyarrow string array of `values`, made from its buffers: `pyarrow.array` would
    first import pandas, a fifth of a second in every process that writes parquet."""
    import numpy as np
    import pyarrow as pa

    values = list(values)
    n = len(values)
    nulls = values.count(None)
    if nulls == n:
        return pa.nulls(n, pa.string())
    valid = None
    present = values
    if nulls:
        valid = np.fromiter(map(operator.is_not, values, itertools.repeat(None)), bool, n)
        present = list(itertools.compress(values, valid))
    joined = "".join(present)
    data = joined.encode()
    # A string's length in UTF-8 is its length, unless it is not ASCII.
    encoded = present if len(data) == len(joined) else map(str.encode, present)
    lengths = np.zeros(n, np.int64)
    lengths[valid if valid is not None else slice(None)] = np.fromiter(
        map(len, encoded), np.int64, len(present)
    )
    if len(data) >= 1 << 31:  # more than 32-bit offsets can hold
        return pa.array(values, pa.string())
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    buffers = [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.string(), n, buffers, null_count=nulls)


def _offsets(ends: list[int]):
    import numpy as np
    import pyarrow as pa

    return pa.Array.from_buffers(
        pa.int32(), len(ends), [None, pa.py_buffer(np.array(ends, np.int32))]
    )


def dialogue_from_row(row: Mapping[str, Any]) -> Dialogue | None:
    """A parquet row (as a dict) as a `Dialogue`; None when no turn has text."""
    turns = []
    for t in row["turns"]:
        if not t["text"] or not t["text"].strip():
            continue
        labels = {k: t[k] for k in ("emotion", "act") if t.get(k) is not None}
        turns.append(Turn(t["text"], t.get("speaker"), labels))
    if not turns:
        return None
    meta = json.loads(row["meta"]) if row.get("meta") else {}
    return Dialogue(tuple(turns), row["id"], row["source"], meta)


def iter_dialogues(path: str | Path, split: str, limit: int | None = None) -> Iterator[Dialogue]:
    """The dialogues of one split of a `rejoinder data build` directory, read a batch of
    rows at a time (at most `limit` rows), so that a split is never all in memory as
    Python objects at once."""
    import pyarrow.dataset as pads

    from rejoinder.data.pairs import require_kind

    root = Path(path)
    require_kind(root, "dialogues", "reading dialogues")
    folder = root / split
    if not folder.is_dir():
        return
    left = limit
    for batch in pads.dataset(str(folder), format="parquet").to_batches(batch_size=2048):
        rows = batch.to_pylist()
        if left is not None:
            rows, left = rows[:left], left - min(left, len(rows))
        for row in rows:
            d = dialogue_from_row(row)
            if d is not None:
                yield d
        if left == 0:
            return


def read_dialogues(path: str | Path, split: str, limit: int | None = None) -> list[Dialogue]:
    """The dialogues of one split of a `rejoinder data build` directory."""
    return list(iter_dialogues(path, split, limit))
