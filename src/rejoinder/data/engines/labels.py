"""A labels build, the same on every engine: labelled texts read, split, written.

A labels file is what people labelled, thousands of lines rather than a dump, so one
process reads it whichever engine was asked for (Spark would spend longer starting than
the build takes). No filter runs on it: the texts a safety classifier must learn are
the very ones the offensive filter drops.
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


def run(
    config: BuildConfig, data_dir: Path, work_dir: Path, report: Report, classifier=None
) -> dict[str, int]:
    """Writes the splits of labelled texts into `data_dir`; returns counts per
    "split/label". The offensive filter's `classifier` has nothing to do here."""
    writer = SplitWriter(data_dir, 0, label_schema())
    counts: Counter[str] = Counter()
    for source in config.sources:
        for item in source_kind(source.kind).read(report=report, **source.args):
            report.count(f"texts in: {source.kind}")
            split = split_of(item.group, config.valid, config.test)
            writer.add(split, item.to_row())
            counts[f"{split}/{item.label}"] += 1
    writer.close()
    _every_split(data_dir)
    return dict(counts)


def _every_split(root: Path) -> None:
    """An empty split is still a directory with a readable (empty) parquet file."""
    import pyarrow.parquet as pq

    for split in SPLITS:
        folder = root / split
        if not any(folder.glob("*.parquet")):
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(label_schema().empty_table(), folder / "part-00000.parquet")
