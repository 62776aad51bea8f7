"""The Spark engine (PySpark; local mode or a cluster).

It runs the same stages as the local engine (parsing, the tree walk, the filters, the
trigram sketch, the split) and only moves records differently: dump files are read in
parallel, comments meet their thread in a shuffle by link_id, each partition walks its
threads, the per-partition trigram sketches are merged, and the bland pass runs where
the dialogues are. The offensive filter's classifier, when asked for, runs before it
on each source's records, partition by partition, each partition's Python worker
loading it once (`classified`). Workers need rejoinder installed (or shipped with
--py-files); counts travel back to the driver with the data.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import threading
from pathlib import Path

from rejoinder.data.config import BuildConfig
from rejoinder.data.feedback import rand_bucket, rand_buckets, random_pairs
from rejoinder.data.filters import FilterConfig, TrigramSketch
from rejoinder.data.pairs import RawPair, pair_schema
from rejoinder.data.readers import source_kind
from rejoinder.data.records import SPLITS, arrow_schema
from rejoinder.data.reddit import check_reddit_source, read_reddit_file
from rejoinder.data.report import Report
from rejoinder.data.stages import (
    ClassifierPass,
    bland_pass,
    ensure_every_split,
    feedback_kinds,
    filters_for,
    given_pairs,
    offensive_groups,
    offensive_pass,
    other_dialogues,
    pair_pass,
    pair_targets,
    plan,
    process_thread,
    scored_pair,
    split_of,
    thread_groups,
)
from rejoinder.errors import RejoinderError
from rejoinder.progress import Progress, wanted

# Partitions carry tagged items: the records themselves, and the report (and sketch)
# of the partition, which the driver collects.
_REPORT, _ROW, _SKETCH = "report", "row", "sketch"


def run(
    config: BuildConfig,
    data_dir: Path,
    work_dir: Path,
    report: Report,
    classifier: ClassifierPass | None = None,
) -> dict[str, int]:
    """Builds the dataset's splits into `data_dir` on Spark (`config.master`)."""
    spark = _session(config.master)
    try:
        with StageProgress(spark.sparkContext):
            if config.makes_pairs:
                return _run_pairs(spark, config, data_dir, report, classifier)
            return _run(spark, config, data_dir, report, classifier)
    finally:
        spark.stop()


class StageProgress:
    """Spark's active stage on a terminal (its job's description, tasks done of total),
    polled from the status tracker while the block runs."""

    POLL = 0.2

    def __init__(self, sc):
        self.sc = sc
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self):
        if wanted(sys.stderr):
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def _poll(self) -> None:
        tracker = self.sc.statusTracker()
        progress: Progress | None = None
        shown = None
        while not self.stop.wait(self.POLL):
            try:
                infos = [tracker.getStageInfo(i) for i in tracker.getActiveStageIds()]
            except Exception:  # the context is stopping: nothing more to show
                break
            infos = [i for i in infos if i is not None]
            if not infos:
                continue
            stage = min(infos, key=lambda i: i.stageId)
            if stage.stageId != shown:
                if progress is not None:
                    progress.close()
                description = self.sc.getLocalProperty("spark.job.description") or stage.name
                progress = Progress(f"spark: {description}", total=stage.numTasks, unit="tasks")
                shown = stage.stageId
            progress.update(stage.numCompletedTasks, f"stage {stage.stageId}")
        if progress is not None:
            progress.close()


def spark_schema(schema):
    """The Spark SQL type of a pyarrow schema or type: the parquet schema, written once."""
    import pyarrow as pa
    from pyspark.sql import types as T

    if isinstance(schema, pa.Schema) or pa.types.is_struct(schema):
        fields = [T.StructField(f.name, spark_schema(f.type), f.nullable) for f in schema]
        return T.StructType(fields)
    if pa.types.is_list(schema):
        item = schema.value_field
        return T.ArrayType(spark_schema(item.type), item.nullable)
    if pa.types.is_string(schema):
        return T.StringType()
    if pa.types.is_float64(schema):
        return T.DoubleType()
    raise TypeError(f"no Spark type for the arrow type {schema}")


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


def _walk(config: BuildConfig, kind: str, use_sketch: bool, pairs: bool = False):
    """A partition function: threads -> tagged dialogues that pass (or sibling groups, for
    pairs), report and sketch."""
    walk = thread_groups if pairs else process_thread

    def run(groups):
        report = Report(explain=config.explain)
        sketch = TrigramSketch() if use_sketch else None
        filters = filters_for(config, kind)
        for link_id, records in groups:
            for item in walk(link_id, records, config.reddit, filters, report, sketch):
                yield _ROW, item
        yield _REPORT, report
        if sketch is not None:
            yield _SKETCH, sketch

    return run


def _merge_sketches(tagged, sketch: TrigramSketch) -> None:
    """Merges the partitions' sketches into `sketch`."""
    # Each partition's sketch arrives as its own unpickled copy: merging in place is safe.
    sketches = tagged.filter(lambda x: x[0] == _SKETCH).map(lambda x: x[1])
    if not sketches.isEmpty():
        sketch.merge(sketches.treeReduce(lambda a, b: a.merge(b)))


def _bland(config: BuildConfig, fconf: FilterConfig, sketch_bc):
    """A partition function: (bland_check, dialogue) pairs -> tagged dialogues kept, report."""

    def run(items):
        report = Report(explain=config.explain)
        sketch = sketch_bc.value if sketch_bc is not None else None
        for raw in bland_pass(items, sketch, fconf, report):
            yield _ROW, raw
        yield _REPORT, report

    return run


def classified(items, classifier: ClassifierPass, config: BuildConfig, report: Report, judged):
    """(bland_check, item) pairs through the offensive classifier's pass (`judged`:
    `stages.offensive_pass` or `offensive_groups`), each partition scoring its own with
    the classifier its worker loaded; the pairs that pass."""

    def run(part):
        part_report = Report(explain=config.explain)
        scorer = classifier.scorer()
        for entry in judged(part, scorer, classifier.fconf, part_report):
            yield _ROW, entry
        yield _REPORT, part_report

    items.context.setJobDescription("offensive classifier")
    tagged = items.mapPartitions(run).cache()
    _collect_reports(tagged, report)
    return tagged.filter(lambda x: x[0] == _ROW).map(lambda x: x[1])


def _threads(sc, source, config: BuildConfig, report: Report):
    """A reddit source's records grouped by thread: (link_id, records) pairs."""
    comments, submissions = check_reddit_source(source.args)
    files = [("submissions", p) for p in submissions] + [("comments", p) for p in comments]
    sc.setJobDescription("reading dumps")
    parsed = sc.parallelize(files, len(files)).mapPartitions(_read_files(config)).cache()
    _collect_reports(parsed, report)
    return (
        parsed.filter(lambda x: x[0] == _ROW)
        .map(lambda x: x[1])
        .groupByKey(numPartitions=max(8, sc.defaultParallelism * 2))
    )


def _collect_reports(rdd, report: Report) -> None:
    for r in rdd.filter(lambda x: x[0] == _REPORT).map(lambda x: x[1]).collect():
        report.merge(r)


def _run(
    spark, config: BuildConfig, data_dir: Path, report: Report, classifier: ClassifierPass | None
) -> dict[str, int]:
    sc = spark.sparkContext
    sources, bland = plan(config)
    sketch = TrigramSketch() if bland else None
    parts = []  # RDDs of (bland_check, RawDialogue)
    for source, filters in sources:
        counted = "bland" in filters.config.enabled
        if not source_kind(source.kind).threads:
            # Small corpora: read on the driver, then distribute.
            local = list(other_dialogues(source, filters, report, sketch if counted else None))
            part = sc.parallelize([(counted, raw) for raw in local], 8)
        else:
            threads = _threads(sc, source, config, report)
            sc.setJobDescription("walking threads")
            walked = threads.mapPartitions(_walk(config, source.kind, counted)).cache()
            _collect_reports(walked, report)
            if counted:
                _merge_sketches(walked, sketch)
            part = walked.filter(lambda x: x[0] == _ROW).map(lambda x, c=counted: (c, x[1]))
        if classifier is not None and filters.config.classifies:
            part = classified(part, classifier, config, report, offensive_pass)
        parts.append(part)

    sketch_bc = sc.broadcast(sketch) if sketch is not None else None
    fconf = bland or FilterConfig()
    sc.setJobDescription("filtering bland dialogues")
    kept = sc.union(parts).mapPartitions(_bland(config, fconf, sketch_bc)).cache()
    _collect_reports(kept, report)
    rows = kept.filter(lambda x: x[0] == _ROW).map(
        lambda x: (split_of(x[1].group, config.valid, config.test), x[1].to_row())
    )
    return _write(spark, rows, data_dir)


def _write(spark, rows, out: Path, schema=None, pairs: bool = False) -> dict[str, int]:
    """Writes (split, row) items as each split's parquet files; returns the rows per split."""
    spark.sparkContext.setJobDescription("writing parquet")
    rows = rows.cache()
    counts = {s: 0 for s in SPLITS}
    counts.update(rows.map(lambda x: x[0]).countByValue())
    schema = spark_schema(schema if schema is not None else arrow_schema())
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
    ensure_every_split(out, pairs=pairs)
    return {s: int(counts[s]) for s in SPLITS}


# -- preference pairs -------------------------------------------------------------------

_CANDIDATE = "candidate"


def _pairing(config: BuildConfig, kinds, fconf: FilterConfig | None, sketch_bc):
    """A partition function: sibling groups -> tagged pairs, candidates and the report."""

    def run(groups):
        report = Report(explain=config.explain)
        sketch = sketch_bc.value if sketch_bc is not None else None
        for item in pair_pass(groups, kinds, config.pair_options, sketch, fconf, report):
            yield (_ROW, item) if isinstance(item, RawPair) else (_CANDIDATE, item)
        yield _REPORT, report

    return run


def _given(config: BuildConfig, fconf: FilterConfig, sketch_bc):
    """A partition function: (bland_check, given pair) -> tagged pairs kept, report."""

    def run(items):
        report = Report(explain=config.explain)
        sketch = sketch_bc.value if sketch_bc is not None else None
        for pair in bland_pass(items, sketch, fconf, report, targets=pair_targets(fconf)):
            yield _ROW, pair
        yield _REPORT, report

    return run


def _rand(config: BuildConfig):
    """A partition function: buckets of candidates -> tagged human_vs_rand pairs, report."""

    def run(buckets):
        report = Report(explain=config.explain)
        for _, candidates in buckets:
            for pair in random_pairs(candidates, report):
                yield _ROW, pair
        yield _REPORT, report

    return run


def _run_pairs(
    spark, config: BuildConfig, data_dir: Path, report: Report, classifier: ClassifierPass | None
) -> dict[str, int]:
    sc = spark.sparkContext
    sources, bland = plan(config)
    sketch = TrigramSketch() if bland else None
    walked = []  # (groups RDD, pair kinds, bland checked)
    given = []  # RDDs of (bland_check, RawPair)
    for source, filters in sources:
        counted = "bland" in filters.config.enabled
        classifies = classifier is not None and filters.config.classifies
        if not source_kind(source.kind).threads:
            local = list(given_pairs(source, filters, report, sketch if counted else None))
            items = sc.parallelize([(counted, p) for p in local], 8)
            if classifies:
                judged = functools.partial(offensive_pass, targets=scored_pair(classifier.fconf))
                items = classified(items, classifier, config, report, judged)
            given.append(items)
            continue
        read = Report(explain=config.explain)
        threads = _threads(sc, source, config, read)
        kinds, why = feedback_kinds(config.pair_kinds, config.pair_options, read, source.kind)
        report.merge(read).notes.update(why)
        sc.setJobDescription("walking threads")
        tagged = threads.mapPartitions(_walk(config, source.kind, counted, pairs=True)).cache()
        _collect_reports(tagged, report)
        if counted:
            _merge_sketches(tagged, sketch)
        groups = tagged.filter(lambda x: x[0] == _ROW).map(lambda x: x[1])
        if classifies:
            checked = groups.map(lambda g: (True, g))
            groups = classified(checked, classifier, config, report, offensive_groups)
            groups = groups.map(lambda x: x[1])
        walked.append((groups, kinds, counted))

    sketch_bc = sc.broadcast(sketch) if sketch is not None else None
    fconf = bland or FilterConfig()
    sc.setJobDescription("pairing siblings")
    parts = [
        groups.mapPartitions(_pairing(config, kinds, fconf if counted else None, sketch_bc))
        for groups, kinds, counted in walked
    ]
    parts += [items.mapPartitions(_given(config, fconf, sketch_bc)) for items in given]
    tagged = sc.union(parts).cache() if parts else sc.parallelize([])
    _collect_reports(tagged, report)
    pairs = tagged.filter(lambda x: x[0] == _ROW).map(lambda x: x[1])
    if any("human_vs_rand" in kinds for _, kinds, _ in walked):
        buckets = rand_buckets(report.counts["replies in: reddit"])
        sc.setJobDescription("pairing with replies from other threads")
        rand = (
            tagged.filter(lambda x: x[0] == _CANDIDATE)
            .map(lambda x: (rand_bucket(x[1][0], buckets), x[1]))
            .groupByKey(numPartitions=max(1, min(buckets, sc.defaultParallelism * 2)))
            .mapPartitions(_rand(config))
            .cache()
        )
        _collect_reports(rand, report)
        pairs = pairs.union(rand.filter(lambda x: x[0] == _ROW).map(lambda x: x[1]))
    keyed = pairs.map(lambda p: (split_of(p.group, config.valid, config.test), p)).cache()
    counts = {
        f"{s}/{k}": int(n)
        for (s, k), n in keyed.map(lambda x: (x[0], x[1].kind)).countByValue().items()
    }
    _write(spark, keyed.map(lambda x: (x[0], x[1].to_row())), data_dir, pair_schema(), pairs=True)
    return counts
