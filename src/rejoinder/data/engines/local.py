"""The local engine: one machine, bounded memory, one process a core.

Reddit comments are first spread over bucket files by thread (a dump is ordered by
time, not by thread), then each bucket is read back whole and walked thread by thread:
peak memory follows the largest bucket, and the number of buckets grows with the dump.
Dialogues that pass the one-pass filters are spooled to disk while a trigram sketch
counts the corpus; a second pass drops the bland ones and writes the splits. Both
passes spread their files over worker processes.
"""

from __future__ import annotations

import itertools
import marshal
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from rejoinder.data.config import BuildConfig, Source
from rejoinder.data.filters import FilterConfig, TrigramSketch
from rejoinder.data.io import COMPRESSED
from rejoinder.data.readers import source_kind
from rejoinder.data.records import SPLITS, RawDialogue, arrow_schema
from rejoinder.data.reddit import check_reddit_source, link_of, read_reddit_file
from rejoinder.data.report import Report
from rejoinder.data.stages import (
    bland_pass,
    ensure_every_split,
    filters_for,
    other_dialogues,
    plan,
    process_thread,
    split_of,
)

ROWS_PER_GROUP = 20_000
BUCKET_BYTES = 48 << 20
"""Target bytes of comments per bucket, uncompressed: a bucket is held whole in memory."""
EXPANSION = 8
"""About how many times larger a compressed dump is decompressed (for sizing buckets)."""


def run(config: BuildConfig, data_dir: Path, work_dir: Path, report: Report) -> dict[str, int]:
    """Builds the dataset's splits into `data_dir`; buckets and spools go in `work_dir`."""
    workers = os.cpu_count() or 1
    sources, bland = plan(config)
    sketch = TrigramSketch() if bland else None
    spools: list[Path] = []
    for i, (source, filters) in enumerate(sources):
        counted = sketch if "bland" in filters.config.enabled else None
        if source_kind(source.kind).threads:
            spools += reddit_spools(source, config, work_dir, report, counted, workers)
            continue
        spool = Spool(work_dir / f"spool-{i}")
        for raw in other_dialogues(source, filters, report, counted):
            spool.put(raw, counted is not None)
        spool.close()
        spools.append(spool.path)

    # The second pass, split over the workers: each writes its own part files.
    fconf = bland or FilterConfig()
    shares = [spools[i::workers] for i in range(min(workers, len(spools)))]
    tasks = [(share, part, data_dir, config, fconf, sketch) for part, share in enumerate(shares)]
    counts = dict.fromkeys(SPLITS, 0)
    for part_counts, part_report in in_parallel(_finish, tasks, workers):
        report.merge(part_report)
        for split, n in part_counts.items():
            counts[split] += n
    ensure_every_split(data_dir)
    return counts


def reddit_spools(
    source: Source,
    config: BuildConfig,
    work_dir: Path,
    report: Report,
    sketch: TrigramSketch | None,
    workers: int | None = None,
) -> list[Path]:
    """Buckets a source's comments by thread, then walks the buckets in parallel (one
    process a core); returns the spool files of what passed."""
    comments, submissions = check_reddit_source(source.args)
    buckets = Buckets(work_dir, bucket_count(comments + submissions))
    try:
        for kind, paths in (("submissions", submissions), ("comments", comments)):
            for path in paths:
                for link_id, record in read_reddit_file(path, kind, report):
                    buckets.put(link_id, record)
    finally:
        buckets.close()
    workers = max(1, min(workers or os.cpu_count() or 1, len(buckets.paths)))
    shares = [(buckets.paths[i::workers], work_dir / f"spool-reddit-{i}") for i in range(workers)]
    tasks = [(b, sp, config, source.kind, sketch is not None) for b, sp in shares]
    results = in_parallel(_walk_buckets, tasks, workers)
    for _, part, part_sketch in results:
        report.merge(part)
        if sketch is not None:
            sketch.merge(part_sketch)
    return [path for path, _, _ in results]


def _walk_buckets(
    buckets: list[Path], spool_path: Path, config: BuildConfig, kind: str, use_sketch: bool
) -> tuple[Path, Report, TrigramSketch | None]:
    """A worker's share of the threads: buckets in, filtered dialogues spooled out."""
    report = Report(explain=config.explain)
    sketch = TrigramSketch() if use_sketch else None
    filters = filters_for(config, kind)
    spool = Spool(spool_path)
    for path in buckets:
        threads: dict[str, list] = {}
        for chunk in _marshalled_chunks(path):
            for r in chunk:
                threads.setdefault(link_of(r), []).append(r)
        path.unlink()
        for link_id in sorted(threads):
            records = threads.pop(link_id)
            for raw in process_thread(link_id, records, config.reddit, filters, report, sketch):
                spool.put(raw, use_sketch)
    spool.close()
    return spool_path, report, sketch


def _finish(
    spools: list[Path],
    part: int,
    out: Path,
    config: BuildConfig,
    fconf: FilterConfig,
    sketch: TrigramSketch | None,
) -> tuple[dict[str, int], Report]:
    """A worker's share of the second pass: the bland filter, the split, parquet."""
    report = Report(explain=config.explain)
    writer = SplitWriter(out, part)
    spooled = itertools.chain.from_iterable(read_spool(p) for p in spools)
    for raw in bland_pass(spooled, sketch, fconf, report):
        writer.add(split_of(raw.group, config.valid, config.test), raw.to_row())
    writer.close()
    return writer.counts, report


def in_parallel(fn, tasks: list[tuple], workers: int) -> list:
    """Runs fn(*task) for each task, on up to `workers` processes (forked where possible)."""
    if workers <= 1 or len(tasks) <= 1:
        return [fn(*t) for t in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        return [f.result() for f in [pool.submit(fn, *t) for t in tasks]]


# -- moving records through files ------------------------------------------------------


class Buckets:
    """Comments and submissions spread over files by thread, marshalled in chunks."""

    CHUNK = 2048

    def __init__(self, root: Path, n: int):
        self.paths = [root / f"bucket-{i:04d}" for i in range(n)]
        self.files = [open(p, "wb", buffering=1 << 16) for p in self.paths]  # noqa: SIM115
        self.pending: list[list[tuple]] = [[] for _ in range(n)]

    def put(self, link_id: str, record: tuple) -> None:
        i = zlib.crc32(link_id.encode()) % len(self.files)
        chunk = self.pending[i]
        chunk.append(record)
        if len(chunk) >= self.CHUNK:
            marshal.dump(chunk, self.files[i])
            chunk.clear()

    def close(self) -> None:
        for chunk, f in zip(self.pending, self.files, strict=True):
            if chunk:
                marshal.dump(chunk, f)
            f.close()


def _marshalled_chunks(path: Path) -> Iterator[list]:
    with open(path, "rb") as f:
        while True:
            try:
                yield marshal.load(f)
            except EOFError:
                return


def open_files_allowed() -> int:
    """How many bucket files may be open at once (raising the soft limit where we may)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        return max(16, soft - 128)
    except (ImportError, ValueError, OSError):  # no resource module, or not allowed
        return 512


def bucket_count(paths: list[str]) -> int:
    """Enough buckets that each holds about BUCKET_BYTES of comments."""
    expanded = sum(
        os.path.getsize(p) * (EXPANSION if str(p).lower().endswith(COMPRESSED) else 1)
        for p in paths
    )
    return max(1, min(open_files_allowed(), -(-expanded // BUCKET_BYTES)))


class Spool:
    """Dialogues on disk between the two passes, marshalled in chunks."""

    CHUNK = 2048

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "wb", buffering=1 << 16)  # noqa: SIM115
        self.pending: list[tuple] = []

    def put(self, raw: RawDialogue, bland_check: bool) -> None:
        self.pending.append((bland_check, raw.astuple()))
        if len(self.pending) >= self.CHUNK:
            self._dump()

    def _dump(self) -> None:
        marshal.dump(self.pending, self.file)
        self.pending = []

    def close(self) -> None:
        if self.pending:
            self._dump()
        self.file.close()


def read_spool(path: Path) -> Iterator[tuple[bool, RawDialogue]]:
    """What a Spool wrote, (bland_check, dialogue) in order; the file is removed after."""
    for chunk in _marshalled_chunks(path):
        for check, values in chunk:
            yield check, RawDialogue(*values)
    path.unlink()


class SplitWriter:
    """Parquet files per split, written in row groups."""

    def __init__(self, root: Path, part: int = 0):
        import pyarrow.parquet as pq

        self.schema = arrow_schema()
        self.root, self.part = root, part
        self.rows: dict[str, list[tuple]] = {s: [] for s in SPLITS}
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.counts = {s: 0 for s in SPLITS}

    def add(self, split: str, row: tuple) -> None:
        self.rows[split].append(row)
        self.counts[split] += 1
        if len(self.rows[split]) >= ROWS_PER_GROUP:
            self._flush(split)

    def _flush(self, split: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = self.rows[split]
        if not rows:
            return
        columns = list(zip(*rows, strict=True))
        table = pa.Table.from_arrays(
            [pa.array(col, type=f.type) for col, f in zip(columns, self.schema, strict=True)],
            schema=self.schema,
        )
        if split not in self.writers:
            (self.root / split).mkdir(parents=True, exist_ok=True)
            path = self.root / split / f"part-{self.part:05d}.parquet"
            self.writers[split] = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.writers[split].write_table(table)
        rows.clear()

    def close(self) -> None:
        for split in SPLITS:
            self._flush(split)
            if split in self.writers:
                self.writers[split].close()
