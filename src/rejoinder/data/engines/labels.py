"""A labels build, the same on every engine: labelled texts read, split, written; an
unpaired build (rated replies, for KTO) the same way.

A labels file is what people labelled, thousands of lines rather than a dump, so one
process reads it whichever engine was asked for (Spark would spend longer starting than
the build takes). No filter runs on it: the texts a safety classifier must learn are
the very ones the offensive filter drops, as the undesirable replies KTO learns from.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rejoinder.data.config import BuildConfig
from rejoinder.data.engines.files import SplitWriter
from rejoinder.data.labels import label_schema
from rejoinder.data.readers import source_kind
from rejoinder.data.records import SPLITS
from rejoinder.data.report import Report
from rejoinder.data.stages import split_of
from rejoinder.data.unpaired import LABELS, unpaired_schema


def run(
    config: BuildConfig, data_dir: Path, work_dir: Path, report: Report, classifier=None
) -> dict[str, int]:
    """Writes the splits of labelled texts (or unpaired rows) into `data_dir`; returns
    counts per "split/label" (desirable or undesirable for unpaired rows, both counted
    even when none). The offensive filter's `classifier` has nothing to do here."""
    unpaired = config.makes_unpaired
    schema = unpaired_schema() if unpaired else label_schema()
    writer = SplitWriter(data_dir, 0, schema)
    counts: Counter[str] = Counter()
    if unpaired:
        counts.update({f"{s}/{label}": 0 for s in SPLITS for label in LABELS})
    what = "replies" if unpaired else "texts"
    for source in config.sources:
        for item in source_kind(source.kind).read(report=report, **source.args):
            report.count(f"{what} in: {source.kind}")
            split = split_of(item.group, config.valid, config.test)
            writer.add(split, item.to_row())
            counts[f"{split}/{item.label}"] += 1
    writer.close()
    _every_split(data_dir, schema)
    return dict(counts)


def _every_split(root: Path, schema) -> None:
    """An empty split is still a directory with a readable (empty) parquet file."""
    import pyarrow.parquet as pq

    for split in SPLITS:
        folder = root / split
        if not any(folder.glob("*.parquet")):
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(schema.empty_table(), folder / "part-00000.parquet")
