"""The Spark engine of `rejoinder data build` (PySpark; local mode or a cluster).

It runs the same plain functions as the local engine (parsing, the tree walk, the
filters, the trigram sketch, the split) and only moves records differently: dump
files are read in parallel, comments meet their thread in a shuffle by link_id, each
partition walks its threads, the per-partition trigram sketches are summed, and the
bland pass runs where the dialogues are. Workers need rejoinder installed (or shipped
with --py-files); counts travel back to the driver with the data.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from rejoinder.data.filters import FilterConfig, TrigramSketch
from rejoinder.data.pipeline import (
    SPLITS,
    BuildConfig,
    _ensure_every_split,
    bland_pass,
    check_reddit_source,
    filters_for,
    other_dialogues,
    process_thread,
    read_reddit_file,
    split_of,
)
from rejoinder.data.reddit import RawDialogue
from rejoinder.data.report import Report
from rejoinder.errors import RejoinderError

_REPORT, _ROW, _SKETCH = "report", "row", "sketch"


def _session(master: str | None):
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise RejoinderError(
            "the spark engine needs PySpark: pip install 'rejoinder[spark]' (and Java 17+)"
        ) from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master or "local[*]")
        .appName("rejoinder data build")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.driver.memory", os.environ.get("REJOINDER_SPARK_DRIVER_MEMORY", "2g"))
    )
    try:
        spark = builder.getOrCreate()
    except Exception as e:  # Java missing, a bad master URL, ...
        raise RejoinderError(f"cannot start Spark ({type(e).__name__}: {e})") from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _read_files(config: BuildConfig):
    """A partition function: (kind, path) pairs -> tagged (link_id, record) pairs."""

    def run(items):
        report = Report(explain=config.explain)
        for kind, path in items:
            yield from ((_ROW, pair) for pair in read_reddit_file(path, kind, report))
        yield _REPORT, report

    return run


def _walk(config: BuildConfig, kind: str, use_sketch: bool):
    def run(groups):
        report = Report(explain=config.explain)
        sketch = TrigramSketch() if use_sketch else None
        filters = filters_for(config, kind)
        for link_id, records in groups:
            for raw in process_thread(link_id, records, config, filters, report, sketch):
                yield _ROW, raw
        yield _REPORT, report
        if sketch is not None:
            yield _SKETCH, sketch.table

    return run


def _bland(config: BuildConfig, fconf: FilterConfig, table_bc):
    def run(items):
        report = Report(explain=config.explain)
        sketch = None
        if table_bc is not None:
            sketch = TrigramSketch()
            sketch.table = table_bc.value
        for raw in bland_pass(items, sketch, fconf, report):
            yield _ROW, raw
        yield _REPORT, report

    return run


def _collect_reports(rdd, report: Report) -> None:
    for r in rdd.filter(lambda x: x[0] == _REPORT).map(lambda x: x[1]).collect():
        report.merge(r)


def build_spark(config: BuildConfig, tmp: Path, report: Report) -> dict[str, int]:
    spark = _session(config.master)
    sc = spark.sparkContext
    try:
        return _run(spark, sc, config, tmp, report)
    finally:
        spark.stop()


def _run(spark, sc, config: BuildConfig, tmp: Path, report: Report) -> dict[str, int]:
    plan = [(source, filters_for(config, source.kind)) for source in config.sources]
    bland = [f.config for _, f in plan if "bland" in f.config.enabled]
    sketch = TrigramSketch() if bland else None
    parts = []  # RDDs of (bland_check, RawDialogue)
    for source, filters in plan:
        counted = "bland" in filters.config.enabled
        if source.kind != "reddit":
            # Small corpora: read on the driver, then distribute.
            local = list(other_dialogues(source, filters, report, sketch if counted else None))
            parts.append(sc.parallelize([(counted, raw) for raw in local], 8))
            continue
        comments, submissions = check_reddit_source(source)
        files = [("submissions", p) for p in submissions] + [("comments", p) for p in comments]
        parsed = sc.parallelize(files, len(files)).mapPartitions(_read_files(config)).cache()
        _collect_reports(parsed, report)
        threads = (
            parsed.filter(lambda x: x[0] == _ROW)
            .map(lambda x: x[1])
            .groupByKey(numPartitions=max(8, sc.defaultParallelism * 2))
        )
        walked = threads.mapPartitions(_walk(config, "reddit", counted)).cache()
        _collect_reports(walked, report)
        if counted:
            tables = walked.filter(lambda x: x[0] == _SKETCH).map(lambda x: x[1])
            if not tables.isEmpty():
                sketch.table += tables.treeReduce(lambda a, b: a + b)
        parts.append(walked.filter(lambda x: x[0] == _ROW).map(lambda x, c=counted: (c, x[1])))
        parsed.unpersist()

    table_bc = sc.broadcast(sketch.table) if sketch is not None else None
    fconf = bland[0] if bland else FilterConfig()
    kept = sc.union(parts).mapPartitions(_bland(config, fconf, table_bc)).cache()
    _collect_reports(kept, report)
    rows = kept.filter(lambda x: x[0] == _ROW).map(
        lambda x: (split_of(x[1].group, config.valid, config.test), x[1].to_row())
    )
    return _write(spark, rows, tmp / "data")


def _spark_schema():
    from pyspark.sql.types import ArrayType, StringType, StructField, StructType

    turn = StructType([StructField(n, StringType()) for n in ("text", "speaker", "emotion", "act")])
    return StructType(
        [
            StructField("id", StringType()),
            StructField("source", StringType()),
            StructField("turns", ArrayType(turn)),
            StructField("group", StringType()),
            StructField("meta", StringType()),
        ]
    )


def _write(spark, rows, out: Path) -> dict[str, int]:
    rows = rows.cache()
    counts = {s: 0 for s in SPLITS}
    counts.update(rows.map(lambda x: x[0]).countByValue())
    schema = _spark_schema()
    for split in SPLITS:
        part = rows.filter(lambda x, s=split: x[0] == s).map(lambda x: x[1])
        target = out / split
        df = spark.createDataFrame(part, schema)
        df.coalesce(max(1, min(64, counts[split] // 200_000 + 1))).write.option(
            "compression", "zstd"
        ).parquet(str(target))
        for extra in list(target.iterdir()):  # Hadoop's bookkeeping, not data
            if extra.name.startswith(("_", ".")):
                extra.unlink() if extra.is_file() else shutil.rmtree(extra)
    _ensure_every_split(out)
    return {s: int(counts[s]) for s in SPLITS}


__all__ = ["build_spark", "RawDialogue"]
