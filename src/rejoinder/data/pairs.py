"""Preference pairs: a context, the reply people preferred and one they did not.

A pairs dataset is laid out as a dialogue dataset is (DIR/{train,valid,test}/*.parquet
plus DIR/manifest.json), with rows of `pair_schema()` and `"kind": "pairs"` in its
manifest, so that no kind of dataset is ever read as another. Rankers learn from
pairs (`--model.objective rank`), DPO tunes a generator on them (`--model.objective
dpo`) and `rejoinder eval-ranker` measures rankers on them.

Kinds, after DialogRPT (Gao et al., 2020): `updown` (more upvotes), `width` (more direct
replies), `depth` (a longer thread below), `human_vs_rand` (the real reply against one
from another thread), `human_vs_machine` (the real reply against one a model sampled),
and `given` (pairs a user brought as JSONL). From people talking to a served model
(`data build feedback`):

- `thumbs`: a reply a user liked against one disliked or regenerated, in one context;
- `rewrite`: the better reply a user wrote against the bot's reply it replaces;
- `judged`: the reply a judge preferred in a turn-mode judging run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rejoinder.data.io import write_part
from rejoinder.errors import RejoinderError

FEEDBACK_KINDS = ("updown", "width", "depth")
"""Kinds made by comparing sibling replies' feedback."""
KINDS = (
    *FEEDBACK_KINDS,
    "human_vs_rand",
    "human_vs_machine",
    "given",
    "thumbs",
    "rewrite",
    "flagged",
    "judged",
)


@dataclass
class RawPair:
    """A pair on its way through a build, and its parquet row."""

    id: str
    kind: str
    group: str
    """The split key: pairs of one group (a Reddit thread) land in one split."""
    context: list[str]
    chosen: str
    rejected: str
    chosen_feedback: float | None = None
    """The feedback value that made the pair (score, direct replies, height below)."""
    rejected_feedback: float | None = None
    source: str = "reddit"
    subreddit: str | None = None

    def astuple(self) -> tuple:
        """The fields in order: `RawPair(*pair.astuple())` is the pair again."""
        return (
            self.id, self.kind, self.group, self.context, self.chosen, self.rejected,
            self.chosen_feedback, self.rejected_feedback, self.source, self.subreddit,
        )  # fmt: skip

    def to_row(self) -> tuple:
        """The parquet row, its values in the order of `pair_schema()`'s columns."""
        return (
            self.id, self.source, self.kind, self.context, self.chosen, self.rejected,
            self.chosen_feedback, self.rejected_feedback, self.group, self.subreddit,
        )  # fmt: skip


def pair_schema():
    """The one schema of a pairs dataset's parquet files."""
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("source", pa.string()),
            ("kind", pa.string()),
            ("context", pa.list_(pa.string())),
            ("chosen", pa.string()),
            ("rejected", pa.string()),
            ("chosen_feedback", pa.float64()),
            ("rejected_feedback", pa.float64()),
            ("group", pa.string()),
            ("subreddit", pa.string()),
        ]
    )


@dataclass(frozen=True)
class Pair:
    """A context (oldest turn first), the preferred reply and the other one."""

    context: tuple[str, ...]
    chosen: str
    rejected: str
    kind: str = "given"
    id: str = ""
    chosen_feedback: float | None = None
    rejected_feedback: float | None = None


def dataset_kind(path: str | Path) -> str:
    """ "dialogues", "pairs", "labels" or "unpaired": what a `rejoinder data build`
    directory holds."""
    root = Path(path)
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise RejoinderError(
            f"{root} is not a dataset directory (no manifest.json); make one with "
            "`rejoinder data build`"
        )
    try:
        return json.loads(manifest.read_text()).get("kind", "dialogues")
    except (ValueError, AttributeError):
        raise RejoinderError(f"{manifest} is not a readable manifest; rebuild {root}") from None


def require_kind(path: str | Path, kind: str, use: str) -> None:
    """Refuses a dataset of another kind, saying how to make the right one."""
    found = dataset_kind(path)
    if found == kind:
        return
    how = {
        "pairs": "build one with `rejoinder data build reddit … --pairs updown,width,depth` or "
        "from a JSONL of context/chosen/rejected (`rejoinder data build pairs PATH`)",
        "dialogues": "build one with `rejoinder data build` without --pairs",
        "labels": "build one from a JSONL of context/text/label "
        "(`rejoinder data build labels PATH --out DIR`)",
        "unpaired": "build one from a JSONL of context/reply/label (`rejoinder data build "
        "unpaired PATH --out DIR`) or from a session database (`rejoinder data build "
        "feedback --db URL --kind unpaired`)",
    }[kind]
    used = {
        "labels": " (labelled texts train classifiers: --model.objective classify)",
        "unpaired": " (unpaired feedback, one rated reply a row: --model.objective kto "
        "learns from it)",
    }.get(found, "")
    raise RejoinderError(f"{path} holds {found}{used}, but {use} needs {kind}; {how}")


def iter_pairs(path: str | Path, split: str, limit: int | None = None) -> Iterator[Pair]:
    """The pairs of one split of a pairs dataset, a batch of rows at a time (at most
    `limit`)."""
    if limit is not None and limit <= 0:
        require_kind(path, "pairs", "reading pairs")
        return
    for i, r in enumerate(iter_raw_pairs(path, split), start=1):
        yield Pair(
            tuple(r.context), r.chosen, r.rejected, r.kind, r.id,
            r.chosen_feedback, r.rejected_feedback,
        )  # fmt: skip
        if i == limit:
            return


def iter_raw_pairs(path: str | Path, split: str) -> Iterator[RawPair]:
    """Every row of one split of a pairs dataset as a `RawPair` (its group, source and
    subreddit included), a batch of rows at a time."""
    import pyarrow.dataset as pads

    require_kind(path, "pairs", "reading pairs")
    folder = Path(path) / split
    if not folder.is_dir():
        return
    for batch in pads.dataset(str(folder), format="parquet").to_batches(batch_size=2048):
        for r in batch.to_pylist():
            yield RawPair(
                r["id"], r["kind"], r["group"], list(r["context"] or ()), r["chosen"],
                r["rejected"], r["chosen_feedback"], r["rejected_feedback"], r["source"],
                r["subreddit"],
            )  # fmt: skip


def read_pairs(path: str | Path, split: str, limit: int | None = None) -> list[Pair]:
    """The pairs of one split of a pairs dataset."""
    return list(iter_pairs(path, split, limit))


def write_pairs(out: Path, split: str, pairs: list[RawPair], part: int = 0) -> None:
    """Writes one parquet file of pairs (the engines write theirs; tests and small tools
    use this)."""
    write_part(out, split, [r.to_row() for r in pairs], pair_schema(), part)
