"""`rejoinder data build`: sources -> filtered dialogues -> DIR/{train,valid,test}/*.parquet.

The local engine streams in bounded memory. Reddit comments are first spread over
bucket files by thread (a dump is ordered by time, not by thread), then each bucket
is read back whole and walked thread by thread: peak memory follows the largest
bucket, and the number of buckets grows with the dump. Dialogues that pass the
one-pass filters are spooled to disk while a trigram sketch counts the corpus; a
second pass drops the bland ones and writes the splits. Everything is written into a
temporary directory that is renamed into place only when the build succeeds.
"""

from __future__ import annotations

import datetime
import itertools
import json
import marshal
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rejoinder.data.filters import FilterConfig, Filters, TrigramSketch
from rejoinder.data.reddit import (
    RawDialogue,
    RedditOptions,
    parse_comment,
    parse_submission,
    thread_dialogues,
)
from rejoinder.data.report import Report
from rejoinder.dialogue import Dialogue
from rejoinder.errors import RejoinderError

SPLITS = ("train", "valid", "test")
SUB = "\x00submission"  # tags submission records; no comment id can start with NUL
ROWS_PER_GROUP = 20_000
BUCKET_BYTES = 48 << 20  # target bytes of comments per bucket, uncompressed


@dataclass
class Source:
    """One corpus to read: a reader name and its arguments."""

    kind: str
    """reddit, dailydialog, chitchat, jsonl, qa or chatterbot."""
    args: dict[str, Any] = field(default_factory=dict)
    """For reddit: comments (list of paths), submissions (list); dailydialog, jsonl, qa:
    path; chitchat: path (optional); chatterbot: language."""


@dataclass
class BuildConfig:
    """Everything a build needs; manifest.json records it."""

    sources: list[Source]
    out: str
    filters: str | None = None
    """"auto" (default: all for Reddit, none for the others), "all", "none" or a list."""
    filter_options: dict[str, Any] = field(default_factory=dict)
    reddit: RedditOptions = field(default_factory=RedditOptions)
    valid: float = 0.01
    test: float = 0.01
    explain: int = 0
    """Keep this many dropped dialogues per filter in the manifest."""
    force: bool = False
    engine: str = "local"
    master: str | None = None
    """Spark master URL (engine spark): local[*] by default."""

    def __post_init__(self):
        if not self.sources:
            raise RejoinderError("give at least one source to build from")
        if not (0 <= self.valid < 1 and 0 <= self.test < 1 and self.valid + self.test < 1):
            raise RejoinderError("--valid and --test are fractions whose sum is below 1")


def split_of(group: str, valid: float, test: float) -> str:
    """The split of a dialogue group: stable across runs, engines and machines."""
    x = (zlib.crc32(group.encode()) % 1_000_000) / 1_000_000
    if x < test:
        return "test"
    if x < test + valid:
        return "valid"
    return "train"


def filters_for(config: BuildConfig, kind: str) -> Filters:
    spec = config.filters or "auto"
    if spec == "auto":
        spec = "all" if kind == "reddit" else "none"
    return Filters(FilterConfig.parse(spec, **config.filter_options))


def raw_from_dialogue(d: Dialogue) -> RawDialogue:
    def label(name: str) -> list[str | None] | None:
        values = [t.labels.get(name) for t in d.turns]
        return [None if v is None else str(v) for v in values] if any(values) else None

    meta = {k: v for k, v in d.meta.items() if k != "group"}
    return RawDialogue(
        id=d.id,
        source=d.source,
        group=str(d.meta.get("group", d.id)),
        texts=[t.text for t in d.turns],
        speakers=[t.speaker for t in d.turns],
        emotions=label("emotion"),
        acts=label("act"),
        meta=json.dumps(meta, sort_keys=True, ensure_ascii=False) if meta else None,
    )


def read_source(source: Source, report: Report) -> Iterator[Dialogue]:
    """Dialogues of a non-Reddit source, through its reader."""
    from rejoinder.data.readers import READERS

    reader = READERS.get(source.kind)
    if reader is None:
        raise RejoinderError(f"unknown source {source.kind!r}")
    args = dict(source.args)
    if source.kind == "chatterbot":
        return reader(args.pop("language"), report=report, **args)
    return reader(report=report, **args)


def judge(raw: RawDialogue, filters: Filters, report: Report) -> bool:
    """Applies the one-pass filters; counts and (when explaining) keeps what is dropped."""
    name = filters.check(raw.texts, raw.subreddit)
    if name is None:
        return True
    report.drop(name, {"id": raw.id, "turns": raw.texts} if report.explain else None)
    return False


# -- the local engine ------------------------------------------------------------------


class _Buckets:
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


def _open_files_allowed() -> int:
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


def _bucket_count(paths: list[str]) -> int:
    """Enough buckets that each holds about BUCKET_BYTES of comments."""
    # Compressed dumps expand about 8x; plain ones are their own size.
    expanded = sum(
        os.path.getsize(p) * (8 if str(p).endswith((".zst", ".bz2", ".xz", ".gz")) else 1)
        for p in paths
    )
    return max(1, min(_open_files_allowed(), -(-expanded // BUCKET_BYTES)))


def check_reddit_source(source: Source) -> tuple[list[str], list[str]]:
    comments = [str(p) for p in source.args.get("comments") or []]
    submissions = [str(p) for p in source.args.get("submissions") or []]
    if not comments:
        raise RejoinderError("the reddit source needs --comments FILE (a Pushshift RC_ dump)")
    for p in comments + submissions:
        if not Path(p).is_file():
            raise RejoinderError(f"Reddit dump {p} does not exist")
    return comments, submissions


def read_reddit_file(path: str, kind: str, report: Report) -> Iterator[tuple[str, tuple]]:
    """(link_id, record) for each readable line of one dump; kind is "comments" or "submissions".

    A submission record is (SUB, link_id, title, author, subreddit); a comment is a
    Comment tuple. Both engines read through this.
    """
    from rejoinder.data.readers import open_lines

    for line in open_lines(path, report):
        if not line.strip():
            continue
        if kind == "submissions":
            s = parse_submission(line, report)
            if s is not None:
                report.count("submissions read")
                yield s[0], (SUB, *s)
        else:
            report.count("comment lines read")
            c = parse_comment(line, report)
            if c is not None:
                yield c[2], c


def process_thread(
    link_id: str,
    records: Iterable[tuple],
    config: BuildConfig,
    filters: Filters,
    report: Report,
    sketch: TrigramSketch | None,
) -> Iterator[RawDialogue]:
    """One thread's records -> the dialogues that pass the one-pass filters."""
    comments, submission = [], None
    for r in records:
        if r[0] == SUB:
            submission = submission or r[1:]
        else:
            comments.append(r)
    if not comments:
        return
    report.count("threads")
    dialogues, texts = thread_dialogues(link_id, comments, config.reddit, report, submission)
    if sketch is not None:
        sketch.add(texts)
    for raw in dialogues:
        report.count("dialogues in: reddit")
        if judge(raw, filters, report):
            yield raw


def _walk_buckets(
    buckets: list[Path], spool_path: Path, config: BuildConfig, use_sketch: bool
) -> tuple[Path, Report, np.ndarray | None]:
    """A worker's share of the threads: buckets in, filtered dialogues spooled out."""
    report = Report(explain=config.explain)
    sketch = TrigramSketch() if use_sketch else None
    filters = filters_for(config, "reddit")
    spool = _Spool(spool_path)
    for path in buckets:
        threads: dict[str, list] = {}
        for chunk in _marshalled_chunks(path):
            for r in chunk:
                threads.setdefault(r[1] if r[0] == SUB else r[2], []).append(r)
        path.unlink()
        for link_id in sorted(threads):
            for raw in process_thread(
                link_id, threads.pop(link_id), config, filters, report, sketch
            ):
                spool.put(raw, use_sketch)
    spool.close()
    return spool_path, report, sketch.table if sketch is not None else None


def reddit_spools(
    source: Source,
    config: BuildConfig,
    tmp: Path,
    report: Report,
    sketch: TrigramSketch | None,
    workers: int | None = None,
) -> list[Path]:
    """The local engine's Reddit path: bucket comments by thread, then walk the buckets
    in parallel (one process a core); returns the spool files of what passed."""
    comments, submissions = check_reddit_source(source)
    buckets = _Buckets(tmp, _bucket_count(comments + submissions))
    try:
        for kind, paths in (("submissions", submissions), ("comments", comments)):
            for path in paths:
                for link_id, record in read_reddit_file(path, kind, report):
                    buckets.put(link_id, record)
    finally:
        buckets.close()
    workers = max(1, min(workers or os.cpu_count() or 1, len(buckets.paths)))
    shares = [(buckets.paths[i::workers], tmp / f"spool-reddit-{i}") for i in range(workers)]
    use_sketch = sketch is not None
    tasks = [(b, sp, config, use_sketch) for b, sp in shares]
    results = _in_parallel(_walk_buckets, tasks, workers)
    for _, part, table in results:
        report.merge(part)
        if sketch is not None and table is not None:
            sketch.table += table
    return [path for path, _, _ in results]


def other_dialogues(
    source: Source, filters: Filters, report: Report, sketch: TrigramSketch | None
) -> Iterator[RawDialogue]:
    """Dialogues of a non-Reddit source that pass the one-pass filters."""
    for d in read_source(source, report):
        raw = raw_from_dialogue(d)
        report.count(f"dialogues in: {source.kind}")
        if sketch is not None:
            sketch.add(raw.texts)
        if judge(raw, filters, report):
            yield raw


class _Spool:
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
    for chunk in _marshalled_chunks(path):
        for check, values in chunk:
            yield check, RawDialogue(*values)
    path.unlink()


def bland_pass(
    spooled: Iterable[tuple[bool, RawDialogue]],
    sketch: TrigramSketch | None,
    fconf: FilterConfig,
    report: Report,
    batch: int = 4096,
) -> Iterator[RawDialogue]:
    """Drops bland dialogues (those spooled with bland_check) in batches."""
    pending: list[tuple[bool, RawDialogue]] = []

    def flush():
        targets, owners = [], []
        for i, (check, raw) in enumerate(pending):
            if check:
                picked = raw.texts[-1:] if fconf.targets == "last" else raw.texts[1:]
                targets.extend(picked)
                owners.extend([i] * len(picked))
        bland = set()
        if targets and sketch is not None:
            shares = sketch.frequent_share(targets, fconf.bland_count)
            bland = {
                o
                for o, s in zip(owners, shares, strict=True)
                if s is not None and s >= fconf.bland_share
            }
        for i, (_, raw) in enumerate(pending):
            if i in bland:
                report.drop("bland", {"id": raw.id, "turns": raw.texts} if report.explain else None)
            else:
                yield raw
        pending.clear()

    for item in spooled:
        pending.append(item)
        if len(pending) >= batch:
            yield from flush()
    yield from flush()


def arrow_schema():
    import pyarrow as pa

    turn = pa.struct(
        [
            ("text", pa.string()),
            ("speaker", pa.string()),
            ("emotion", pa.string()),
            ("act", pa.string()),
        ]
    )
    return pa.schema(
        [
            ("id", pa.string()),
            ("source", pa.string()),
            ("turns", pa.list_(turn)),
            ("group", pa.string()),
            ("meta", pa.string()),
        ]
    )


class _SplitWriter:
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


def _ensure_every_split(root: Path) -> None:
    """An empty split is still a directory with a readable (empty) parquet file."""
    import pyarrow.parquet as pq

    for split in SPLITS:
        folder = root / split
        if not any(folder.glob("*.parquet")):
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(arrow_schema().empty_table(), folder / "part-00000.parquet")


def _finish(
    spools: list[Path], part: int, out: Path, config: BuildConfig, fconf: FilterConfig, table
) -> tuple[dict[str, int], Report]:
    """A worker's share of the second pass: the bland filter, the split, parquet."""
    report = Report(explain=config.explain)
    sketch = None
    if table is not None:
        sketch = TrigramSketch()
        sketch.table = table
    writer = _SplitWriter(out, part)
    spooled = itertools.chain.from_iterable(read_spool(p) for p in spools)
    for raw in bland_pass(spooled, sketch, fconf, report):
        writer.add(split_of(raw.group, config.valid, config.test), raw.to_row())
    writer.close()
    return writer.counts, report


def _in_parallel(fn, tasks: list[tuple], workers: int) -> list:
    """Runs fn(*task) for each task, on up to `workers` processes (forked where possible)."""
    if workers <= 1 or len(tasks) <= 1:
        return [fn(*t) for t in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        return [f.result() for f in [pool.submit(fn, *t) for t in tasks]]


def _build_local(config: BuildConfig, tmp: Path, report: Report) -> dict[str, int]:
    workers = os.cpu_count() or 1
    plan = [(source, filters_for(config, source.kind)) for source in config.sources]
    bland = [f.config for _, f in plan if "bland" in f.config.enabled]
    sketch = TrigramSketch() if bland else None
    spools: list[Path] = []
    for i, (source, filters) in enumerate(plan):
        counted = sketch if "bland" in filters.config.enabled else None
        if source.kind == "reddit":
            spools += reddit_spools(source, config, tmp, report, counted, workers)
            continue
        spool = _Spool(tmp / f"spool-{i}")
        for raw in other_dialogues(source, filters, report, counted):
            spool.put(raw, counted is not None)
        spool.close()
        spools.append(spool.path)

    # The second pass, split over the workers: each writes its own part files.
    fconf = bland[0] if bland else FilterConfig()
    table = sketch.table if sketch is not None else None
    shares = [spools[i::workers] for i in range(min(workers, len(spools)))]
    tasks = [(share, part, tmp / "data", config, fconf, table) for part, share in enumerate(shares)]
    counts = dict.fromkeys(SPLITS, 0)
    for part_counts, part_report in _in_parallel(_finish, tasks, workers):
        report.merge(part_report)
        for split, n in part_counts.items():
            counts[split] += n
    _ensure_every_split(tmp / "data")
    return counts


def build(config: BuildConfig) -> dict[str, Any]:
    """Builds the dataset; returns the manifest (also written to OUT/manifest.json)."""
    out = Path(config.out)
    if out.exists() and not config.force:
        raise RejoinderError(f"{out} already exists; choose another --out or add --force")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = Report(explain=config.explain)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    started = datetime.datetime.now(datetime.UTC)
    try:
        if config.engine == "spark":
            from rejoinder.data.spark import build_spark

            splits = build_spark(config, tmp, report)
        elif config.engine == "local":
            splits = _build_local(config, tmp, report)
        else:
            raise RejoinderError(f"unknown engine {config.engine!r}; choose local or spark")
        manifest = _manifest(config, report, splits, started)
        data = tmp / "data"
        (data / "manifest.json").write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(data, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _manifest(config: BuildConfig, report: Report, splits: dict[str, int], started) -> dict:
    from rejoinder import __version__

    finished = datetime.datetime.now(datetime.UTC)
    options = {
        "filters": config.filters or "auto",
        "filter_options": config.filter_options,
        "reddit": asdict(config.reddit),
        "valid": config.valid,
        "test": config.test,
        "engine": config.engine,
    }
    manifest = {
        "rejoinder_version": __version__,
        "created": finished.isoformat(timespec="seconds"),
        "seconds": round((finished - started).total_seconds(), 2),
        "sources": [
            {"kind": s.kind, **{k: _jsonable(v) for k, v in s.args.items()}} for s in config.sources
        ],
        "options": options,
        "dialogues": {**splits, "total": sum(splits.values())},
        **report.to_dict(),
    }
    if report.samples:
        manifest["samples"] = {k: v for k, v in sorted(report.samples.items())}
    return manifest


def _jsonable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)
