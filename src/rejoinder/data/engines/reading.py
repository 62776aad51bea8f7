"""How the local engine reads Reddit dumps: lines parsed in parallel, comments bucketed by thread.

This process decompresses each dump and hands its lines out in blocks of about
`BLOCK_BYTES`, numbered in the order of the dump, to reader processes (one a core).
A reader parses a block and appends its records to its own bucket files, one chunk
`(block number, records)` per bucket the block touches. A bucket is then all readers'
files for it, their chunks put back in block order (`bucket_records`): the records of a
thread come out in the order of the dump, whichever reader parsed them, so the build is
the same with any number of readers. Each block's report comes back too and is merged
in block order, so the samples of bad lines are the ones a single reader keeps.

Only blocks waiting for a reader (two a reader) and the readers' pending chunks are in
memory, never the dump.
"""

from __future__ import annotations

import io
import itertools
import os
import queue
import time
import traceback
import zlib
from collections.abc import Iterator
from pathlib import Path

from rejoinder.data.engines.files import marshalled_chunks, write_chunk
from rejoinder.data.reddit import parse_lines
from rejoinder.data.report import Report
from rejoinder.errors import RejoinderError
from rejoinder.progress import Progress, amount

BLOCK_BYTES = 1 << 20
"""About how many decompressed bytes of lines a reader gets at a time."""
_WAIT = 0.5  # seconds between checks that the readers are still alive


def bucket_files(work_dir: Path, buckets: int, readers: int) -> list[list[Path]]:
    """For each bucket, the readers' files that may hold its records."""
    return [[work_dir / f"bucket-{b:04d}-{r:03d}" for r in range(readers)] for b in range(buckets)]


def bucket_records(files: list[Path], keep: bool = False) -> Iterator[tuple]:
    """A bucket's records in the order of the dumps, from its readers' files (removed
    after, unless `keep`): all of them are in memory at once, as the walk needs them."""
    chunks: list[tuple[int, list]] = []
    for path in files:
        if path.exists():  # else that reader got no record of this bucket
            chunks += marshalled_chunks(path)
            if not keep:
                path.unlink()
    chunks.sort(key=lambda c: c[0])  # stable: one block's chunks are in one file, in order
    for _, records in chunks:
        yield from records


class _Reader:
    """One reader's bucket files, opened as blocks first touch them."""

    def __init__(self, work_dir: Path, buckets: int, index: int):
        self.work_dir, self.buckets, self.index = work_dir, buckets, index
        self.files: dict[int, io.BufferedWriter] = {}

    def parse(self, number: int, kind: str, block: bytes, explain: int) -> Report:
        report = Report(explain=explain)
        n, per_bucket = self.buckets, {}
        crc = zlib.crc32
        for link_id, record in parse_lines(io.BytesIO(block), kind, report):
            b = crc(link_id.encode()) % n
            if b in per_bucket:
                per_bucket[b].append(record)
            else:
                per_bucket[b] = [record]
        for b, records in per_bucket.items():
            f = self.files.get(b)
            if f is None:
                path = self.work_dir / f"bucket-{b:04d}-{self.index:03d}"
                f = self.files[b] = open(path, "wb", buffering=1 << 16)  # noqa: SIM115
            write_chunk(f, (number, records))
        return report

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def _reader_process(index, work_dir, buckets, explain, tasks, results) -> None:
    """A reader process: blocks in from `tasks` until None, each block's report out."""
    try:
        reader = _Reader(work_dir, buckets, index)
        while (task := tasks.get()) is not None:
            number, kind, block = task
            results.put((number, reader.parse(number, kind, block, explain)))
        reader.close()
        results.put((None, index))
    except BaseException:  # noqa: BLE001 - the main process raises it
        results.put(("error", traceback.format_exc()))


def blocks(path: str, report: Report, shown=None) -> Iterator[bytes]:
    """A dump's lines (as `io.open_lines` yields them: truncated or corrupt files are
    counted in `report`) joined into blocks of about BLOCK_BYTES; `shown(lines,
    position)` hears after each block how far into the file it is."""
    from rejoinder.data.io import Lines

    lines = Lines(path, report)
    it = iter(lines)
    seen = 0
    step = max(16, BLOCK_BYTES >> 11)  # lines taken at a time: a few for small blocks
    while True:
        # Lines are taken a slice at a time, to keep the loop in C; a block ends at a
        # line's end.
        pending, size = [], 0
        while size < BLOCK_BYTES:
            got = list(itertools.islice(it, step))
            if not got:
                break
            pending += got
            size += sum(map(len, got))
        if not pending:
            return
        seen += len(pending)
        yield b"".join(pending)
        if shown is not None:
            shown(seen, lines.position())


def read_dumps(
    files: list[tuple[str, str]],
    report: Report,
    work_dir: Path,
    buckets: int,
    readers: int,
) -> list[list[Path]]:
    """Reads (kind, path) dumps in order into `buckets` buckets by thread, `readers`
    processes parsing (this one alone when 1); returns each bucket's files
    (`bucket_records` reads them). A terminal shows the compressed bytes read of the total."""
    readers = max(1, readers)
    total = sum(os.path.getsize(p) for _, p in files)
    with Progress("reading dumps", total=total, unit="B") as progress:
        numbered = _numbered_blocks(files, report, progress)
        if readers == 1:
            reader = _Reader(work_dir, buckets, 0)
            try:
                for number, kind, block in numbered:
                    report.merge(reader.parse(number, kind, block, report.explain))
            finally:
                reader.close()
        else:
            _in_readers(numbered, report, work_dir, buckets, readers)
        progress.update(total)
    return bucket_files(work_dir, buckets, readers)


def _numbered_blocks(files, report: Report, progress: Progress) -> Iterator[tuple[int, str, bytes]]:
    done = {"bytes": 0, "lines": 0}  # of the files before this one
    number = 0
    for kind, path in files:
        seen = [0]

        def shown(lines: int, position: int, kind=kind, seen=seen) -> None:
            seen[0] = lines
            rate = (done["lines"] + lines) / max(time.monotonic() - progress.started, 1e-9)
            progress.update(done["bytes"] + position, f"{amount(rate)} lines/s ({kind})")

        for block in blocks(path, report, shown):
            yield number, kind, block
            number += 1
        done["lines"] += seen[0]
        done["bytes"] += os.path.getsize(path)


def _in_readers(numbered, report: Report, work_dir: Path, buckets: int, readers: int) -> None:
    """Hands the blocks to reader processes; merges their reports in block order."""
    import multiprocessing

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    tasks = context.Queue(maxsize=2 * readers)
    results = context.Queue()
    procs = [
        context.Process(
            target=_reader_process,
            args=(i, work_dir, buckets, report.explain, tasks, results),
            daemon=True,
        )
        for i in range(readers)
    ]
    for p in procs:
        p.start()
    waiting: dict[int, Report] = {}  # reports that came before an earlier block's
    merged = [0]  # the next block whose report is merged
    finished = set()

    def take(block: bool) -> bool:
        """Takes one result (waiting a little when `block`); False when none came."""
        try:
            number, value = results.get(timeout=_WAIT) if block else results.get_nowait()
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RejoinderError(f"a reader process died (exit code {dead[0]})") from None
            return False
        if number == "error":
            raise RejoinderError(f"a reader process failed:\n{value}")
        if number is None:
            finished.add(value)
            return True
        waiting[number] = value
        while merged[0] in waiting:
            report.merge(waiting.pop(merged[0]))
            merged[0] += 1
        return True

    def put(task) -> None:
        while True:
            try:
                tasks.put(task, timeout=_WAIT)
                break
            except queue.Full:  # the readers are busy: take what they finished
                while take(False):
                    pass
        while take(False):
            pass

    try:
        for task in numbered:
            put(task)
        for _ in procs:
            put(None)
        while len(finished) < readers:
            take(True)
        for p in procs:
            p.join()
    finally:
        stopped = [p for p in procs if p.is_alive()]
        for p in stopped:  # only after a failure: the readers have ended otherwise
            p.terminate()
        if stopped:  # blocks left in the queue would keep this process from exiting
            tasks.cancel_join_thread()
        tasks.close()
        results.close()
