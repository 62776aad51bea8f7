"""How the local engine moves records through files: buckets of comments by thread,
spools of dialogues between passes, parquet part files per split, and worker processes."""

from __future__ import annotations

import contextlib
import gc
import marshal
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rejoinder.data.config import BuildConfig
from rejoinder.data.io import COMPRESSED
from rejoinder.data.pairs import RawPair, pair_schema
from rejoinder.data.records import SPLITS, arrow_schema
from rejoinder.data.stages import split_of
from rejoinder.progress import Progress

ROWS_PER_GROUP = 20_000
BUCKET_BYTES = 48 << 20
"""Target bytes of comments per bucket, uncompressed: a bucket is held whole in memory."""
EXPANSION = 8
"""About how many times larger a compressed dump is decompressed (for sizing buckets)."""


class PairWriter:
    """Pairs into parquet files per split, counted per split and per kind ("train/updown")."""

    def __init__(self, root: Path, part: int):
        self.writer = SplitWriter(root, part, pair_schema())
        self.counts: Counter[str] = Counter()

    def add(self, pair: RawPair, config: BuildConfig) -> None:
        split = split_of(pair.group, config.valid, config.test)
        self.writer.add(split, pair.to_row())
        self.counts[f"{split}/{pair.kind}"] += 1

    def close(self) -> None:
        self.writer.close()


_SHARED: list[Any] = []
"""What `in_parallel`'s forked workers inherit instead of receiving it pickled."""


def _with_shared(fn, *task):
    return fn(*task, _SHARED[0])


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pauses the cyclic garbage collector for a pass over records that makes no
    reference cycles (reference counting frees all it makes): the collector would go
    over the hundreds of thousands of records the pass holds again and again."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def in_parallel(fn, tasks: list[tuple], workers: int, phase: str = "working", **shared) -> list:
    """Runs fn(*task) for each task, on up to `workers` processes (forked where possible);
    a terminal shows the phase and how many tasks are done.

    `shared`, one keyword (`sketch=`), is the same value for every task, passed after the
    task's own arguments: forked workers inherit it, where pickling it for each would hold
    a copy in this process and one in each worker (a trigram sketch is 32 MB)."""
    (value,) = shared.values() if shared else (None,)
    with Progress(phase, total=len(tasks), unit="tasks") as progress:
        if workers <= 1 or len(tasks) <= 1:
            results = []
            for t in tasks:
                results.append(fn(*t, *shared.values()))
                progress.advance()
            return results
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        inherits = bool(shared) and method == "fork"
        if inherits:
            _SHARED[:] = [value]
        try:
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                futures = [
                    pool.submit(_with_shared, fn, *t)
                    if inherits
                    else pool.submit(fn, *t, *shared.values())
                    for t in tasks
                ]
                for _ in as_completed(futures):
                    progress.advance()
                return [f.result() for f in futures]
        finally:
            _SHARED.clear()


class Buckets:
    """Records spread over files by key (`human_vs_rand` candidates), marshalled in chunks."""

    CHUNK = 2048

    def __init__(self, root: Path, n: int, prefix: str = "bucket-"):
        self.paths = [root / f"{prefix}{i:04d}" for i in range(n)]
        self.files = [open(p, "wb", buffering=1 << 16) for p in self.paths]  # noqa: SIM115
        self.pending: list[list[tuple]] = [[] for _ in range(n)]

    def put_keyed(self, i: int, record: tuple) -> None:
        """Puts `record` in bucket `i`."""
        chunk = self.pending[i]
        chunk.append(record)
        if len(chunk) >= self.CHUNK:
            write_chunk(self.files[i], chunk)
            chunk.clear()

    def close(self) -> None:
        for chunk, f in zip(self.pending, self.files, strict=True):
            if chunk:
                write_chunk(f, chunk)
            f.close()


def write_chunk(f, value: Any) -> None:
    """Writes `value` (plain data) marshalled, after its length: `marshalled_chunks` reads
    it back. (marshal.load on a file reads it an object at a time, several times slower
    than marshal.loads on the bytes.)"""
    data = marshal.dumps(value)
    f.write(len(data).to_bytes(8, "little"))
    f.write(data)


def marshalled_chunks(path: Path) -> Iterator[Any]:
    """The values `write_chunk` wrote to a file, in order."""
    with open(path, "rb") as f:
        while head := f.read(8):
            yield marshal.loads(f.read(int.from_bytes(head, "little")))


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
    """Records (plain tuples: dialogues, groups, pairs) on disk between two passes,
    marshalled in chunks."""

    CHUNK = 2048

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "wb", buffering=1 << 16)  # noqa: SIM115
        self.pending: list[tuple] = []

    def put(self, values: tuple, bland_check: bool) -> None:
        self.pending.append((bland_check, values))
        if len(self.pending) >= self.CHUNK:
            self._dump()

    def _dump(self) -> None:
        write_chunk(self.file, self.pending)
        self.pending = []

    def close(self) -> None:
        if self.pending:
            self._dump()
        self.file.close()


def read_spool(path: Path, make: Callable[..., Any]) -> Iterator[tuple[bool, Any]]:
    """What a Spool wrote, (bland_check, make(*values)) in order (`tuple` gives the values
    as they are); the file is removed after."""
    for chunk in marshalled_chunks(path):
        for check, values in chunk:
            yield check, values if make is tuple else make(*values)
    path.unlink()


class SplitWriter:
    """Parquet files per split, written in row groups. Rows are tuples in the schema's
    order, or whatever `table` makes a table of `schema` from (`records.dialogue_table`
    takes RawDialogues)."""

    def __init__(self, root: Path, part: int = 0, schema=None, table=None):
        import pyarrow.parquet as pq

        self.schema = schema if schema is not None else arrow_schema()
        self.table = table
        self.root, self.part = root, part
        self.rows: dict[str, list[Any]] = {s: [] for s in SPLITS}
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.counts = {s: 0 for s in SPLITS}

    def add(self, split: str, row: Any) -> None:
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
        if self.table is not None:
            table = self.table(rows)
        else:
            columns = list(zip(*rows, strict=True))
            arrays = [pa.array(c, type=f.type) for c, f in zip(columns, self.schema, strict=True)]
            table = pa.Table.from_arrays(arrays, schema=self.schema)
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
