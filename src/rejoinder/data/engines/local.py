"""The local engine: one machine, bounded memory, one process a core.

Reddit comments are first parsed and spread over bucket files by thread (a dump is
ordered by time, not by thread; engines/reading.py: reader processes parse blocks of
lines), then each bucket is read back whole and walked thread by thread:
peak memory follows the largest bucket, and the number of buckets grows with the dump.
Dialogues that pass the one-pass filters are spooled to disk while a trigram sketch
counts the corpus; a second pass drops the bland ones and writes the splits. Both
passes spread their files over worker processes. The offensive filter's classifier,
when asked for, runs between them in this process alone (`classified`): a torch model
is loaded once and spreads each batch over the cores itself, where one copy a worker
would load it a core's times over.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rejoinder.data.config import BuildConfig, Source
from rejoinder.data.engines.files import (
    Buckets,
    PairWriter,
    SplitWriter,
    Spool,
    bucket_count,
    collector_paused,
    in_parallel,
    marshalled_chunks,
    read_spool,
)
from rejoinder.data.engines.reading import bucket_records, read_dumps
from rejoinder.data.feedback import rand_bucket, rand_buckets, random_pairs
from rejoinder.data.filters import FilterConfig, TrigramSketch
from rejoinder.data.pairs import RawPair
from rejoinder.data.readers import source_kind
from rejoinder.data.records import SPLITS, RawDialogue, dialogue_table
from rejoinder.data.reddit import SUB, check_reddit_source
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
from rejoinder.progress import Progress

WORKERS_VARIABLE = "REJOINDER_WORKERS"


def worker_count() -> int:
    """How many processes a build uses: $REJOINDER_WORKERS, else one a core. The
    dataset's rows are the same with any number; their order and how they are cut into
    part files depend on it."""
    given = os.environ.get(WORKERS_VARIABLE, "").strip()
    if not given:
        return os.cpu_count() or 1
    if not given.isdigit() or int(given) < 1:
        raise RejoinderError(f"{WORKERS_VARIABLE}={given}: give a number of processes, 1 or more")
    return int(given)


def run(
    config: BuildConfig,
    data_dir: Path,
    work_dir: Path,
    report: Report,
    classifier: ClassifierPass | None = None,
) -> dict[str, int]:
    """Builds the dataset's splits into `data_dir`; buckets and spools go in `work_dir`."""
    if config.makes_pairs:
        return run_pairs(config, data_dir, work_dir, report, classifier)
    workers = worker_count()
    sources, bland = plan(config)
    sketch = TrigramSketch() if bland else None
    spools: list[Path] = []
    for i, (source, filters) in enumerate(sources):
        counted = sketch if "bland" in filters.config.enabled else None
        if source_kind(source.kind).threads:
            made = reddit_spools(source, config, work_dir, report, counted, workers)
        else:
            spool = Spool(work_dir / f"spool-{i}")
            for raw in other_dialogues(source, filters, report, counted):
                spool.put(raw.astuple(), counted is not None)
            spool.close()
            made = [spool.path]
        if classifier is not None and filters.config.classifies:
            made = classified(made, classifier, report, RawDialogue, offensive_pass)
        spools += made

    # The second pass, split over the workers: each writes its own part files.
    fconf = bland or FilterConfig()
    shares = [spools[i::workers] for i in range(min(workers, len(spools)))]
    tasks = [(share, part, data_dir, config, fconf) for part, share in enumerate(shares)]
    counts: Counter[str] = Counter(dict.fromkeys(SPLITS, 0))
    finished = in_parallel(_finish, tasks, workers, "filtering and writing", sketch=sketch)
    for part_counts, part_report in finished:
        report.merge(part_report)
        counts.update(part_counts)
    ensure_every_split(data_dir)
    return dict(counts)


def run_pairs(
    config: BuildConfig,
    data_dir: Path,
    work_dir: Path,
    report: Report,
    classifier: ClassifierPass | None = None,
) -> dict[str, int]:
    """Builds a pairs dataset: sibling groups spooled by thread walks, then the bland
    pass and the pairing, then `human_vs_rand` pairing bucket by bucket."""
    workers = worker_count()
    sources, bland = plan(config)
    sketch = TrigramSketch() if bland else None
    spools: list[tuple[Path, str, tuple[str, ...]]] = []  # (spool, source kind, pair kinds)
    for i, (source, filters) in enumerate(sources):
        counted = sketch if "bland" in filters.config.enabled else None
        classifies = classifier is not None and filters.config.classifies
        if source_kind(source.kind).threads:
            read = Report(explain=config.explain)
            paths = reddit_spools(source, config, work_dir, read, counted, workers, pairs=True)
            kinds, why = feedback_kinds(config.pair_kinds, config.pair_options, read, source.kind)
            report.merge(read).notes.update(why)
            if classifies:
                paths = classified(paths, classifier, report, tuple, offensive_groups)
            spools += [(p, source.kind, kinds) for p in paths]
            continue
        spool = Spool(work_dir / f"spool-{i}")
        for pair in given_pairs(source, filters, report, counted):
            spool.put(pair.astuple(), counted is not None)
        spool.close()
        paths = [spool.path]
        if classifies:
            judged = functools.partial(offensive_pass, targets=scored_pair(classifier.fconf))
            paths = classified(paths, classifier, report, RawPair, judged)
        spools += [(p, source.kind, ()) for p in paths]

    fconf = bland or FilterConfig()
    wants_rand = any("human_vs_rand" in kinds for _, _, kinds in spools)
    buckets = rand_buckets(report.counts["replies in: reddit"]) if wants_rand else 0
    shares = [spools[i::workers] for i in range(min(workers, len(spools)))]
    tasks = [
        (share, part, data_dir, work_dir, config, fconf, buckets)
        for part, share in enumerate(shares)
    ]
    counts: Counter[str] = Counter()
    rand_files: list[list[Path]] = [[] for _ in range(buckets)]
    paired = in_parallel(_finish_pairs, tasks, workers, "pairing", sketch=sketch)
    for part_counts, part_report, files in paired:
        report.merge(part_report)
        counts.update(part_counts)
        for b, path in enumerate(files):
            rand_files[b].append(path)
    if wants_rand:
        tasks = [(files, len(shares) + b, data_dir, config) for b, files in enumerate(rand_files)]
        for part_counts, part_report in in_parallel(
            _rand_pairs, tasks, workers, "pairing with replies from other threads"
        ):
            report.merge(part_report)
            counts.update(part_counts)
    ensure_every_split(data_dir, pairs=True)
    return dict(counts)


def reddit_spools(
    source: Source,
    config: BuildConfig,
    work_dir: Path,
    report: Report,
    sketch: TrigramSketch | None,
    workers: int | None = None,
    pairs: bool = False,
) -> list[Path]:
    """Buckets a source's comments by thread, then walks the buckets in parallel (one
    process a core); returns the spool files of what passed: dialogues, or sibling groups
    (`pairs`)."""
    comments, submissions = check_reddit_source(source.args)
    files = [("submissions", p) for p in submissions] + [("comments", p) for p in comments]
    workers = workers or worker_count()
    buckets = read_dumps(files, report, work_dir, bucket_count(comments + submissions), workers)
    workers = max(1, min(workers, len(buckets)))
    # Part i holds what buckets i, i + workers, ... make, thread by thread in the order
    # of their link ids. The last buckets, fewer than the workers, would leave some idle:
    # each worker walks a run of their threads instead, long enough to even out the work
    # (`_cuts`), and the runs go back in order into their parts' spools (and reports), so
    # the parts are what they would have been.
    whole = len(buckets) - len(buckets) % workers
    split = buckets[whole:]
    cuts = _cuts(buckets, whole, workers)
    counting = sketch is not None
    tasks = [
        (buckets[i:whole:workers], split, cuts, i, work_dir, config, source.kind, counting, pairs)
        for i in range(workers)
    ]
    results = in_parallel(_walk_buckets, tasks, workers, "walking threads")
    for part, (spool, part_report, _, part_sketch) in enumerate(results):
        report.merge(part_report)
        if part < len(split):
            with open(spool, "ab") as out:
                for _, _, runs, _ in results:
                    run_spool, run_report = runs[part]
                    report.merge(run_report)
                    with open(run_spool, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
                    run_spool.unlink()
        if sketch is not None:
            sketch.merge(part_sketch)
    for path in itertools.chain.from_iterable(split):
        path.unlink(missing_ok=True)
    return [spool for spool, _, _, _ in results]


def classified(
    spools: list[Path],
    classifier: ClassifierPass,
    report: Report,
    make: Callable[..., Any],
    judged: Callable[..., Iterator[tuple[bool, Any]]],
) -> list[Path]:
    """The offensive classifier's pass over spools, in this process: what passes is
    spooled again (`make` reads a spooled item; `judged` is `stages.offensive_pass` or
    `offensive_groups`). A terminal shows the targets scored."""
    kept_paths = []
    with Progress("offensive classifier", unit="targets") as progress:
        loaded = classifier.scorer()

        def scorer(pairs):
            scores = loaded(pairs)
            progress.advance(len(pairs))
            return scores

        for path in spools:
            kept = Spool(path.with_name(f"{path.name}-kept"))
            for check, item in judged(read_spool(path, make), scorer, classifier.fconf, report):
                kept.put(item if make is tuple else item.astuple(), check)
            kept.close()
            kept_paths.append(kept.path)
    return kept_paths


def _cuts(buckets: list[list[Path]], whole: int, workers: int) -> list[int]:
    """Where the split buckets, one after the other (in bytes of their files), are cut
    into the workers' runs: each worker gets about as much to walk in all."""
    size = [sum(p.stat().st_size for p in files if p.exists()) for files in buckets]
    own = [sum(size[i:whole:workers]) for i in range(workers)]
    total = sum(size[whole:])
    level = (sum(own) + total) / workers
    wants = [max(0.0, level - o) for o in own]
    scale = total / sum(wants) if sum(wants) else 0.0
    ends = itertools.accumulate(int(w * scale) for w in wants[:-1])
    return [0, *(min(e, total) for e in ends), total]


def _walk_buckets(
    buckets: list[list[Path]],
    split: list[list[Path]],
    cuts: list[int],
    part: int,
    work_dir: Path,
    config: BuildConfig,
    kind: str,
    use_sketch: bool,
    pairs: bool,
) -> tuple[Path, Report, list[tuple[Path, Report]], TrigramSketch | None]:
    """A worker's share of the threads: its part's buckets in, filtered dialogues (or
    sibling groups) spooled out, then its run of each split bucket's threads (those
    between `cuts[part]` and `cuts[part + 1]`), each spooled and reported on its own."""
    with collector_paused():
        return _walk(buckets, split, cuts, part, work_dir, config, kind, use_sketch, pairs)


def _walk(buckets, split, cuts, part, work_dir, config, kind, use_sketch, pairs):
    sketch = TrigramSketch() if use_sketch else None
    filters = filters_for(config, kind)
    walk = thread_groups if pairs else process_thread

    def walked(threads: dict[str, list], link_ids: list[str], spool: Spool, report: Report):
        for link_id in link_ids:
            for item in walk(link_id, threads.pop(link_id), config.reddit, filters, report, sketch):
                spool.put(item if pairs else item.astuple(), use_sketch)

    report = Report(explain=config.explain)
    spool = Spool(work_dir / f"spool-reddit-{part}")
    for files in buckets:
        threads = _threads(bucket_records(files))
        walked(threads, sorted(threads), spool, report)
    spool.close()
    runs = []
    start = 0  # where this bucket starts among the split buckets' bytes
    for b, files in enumerate(split):
        size = sum(p.stat().st_size for p in files if p.exists())
        threads = _threads(bucket_records(files, keep=True))
        link_ids = sorted(threads)
        # A thread goes to the run its first record falls in, the bucket's bytes spread
        # evenly over its records.
        before = itertools.accumulate((len(threads[i]) for i in link_ids), initial=0)
        total = sum(len(r) for r in threads.values())
        low, high = cuts[part], cuts[part + 1]
        mine = [
            i
            for i, n in zip(link_ids, before, strict=False)
            if low <= start + n * size // total < high
        ]
        start += size
        run_report = Report(explain=config.explain)
        run_spool = Spool(work_dir / f"spool-reddit-{part}-split-{b}")
        walked(threads, mine, run_spool, run_report)
        run_spool.close()
        runs.append((run_spool.path, run_report))
    return spool.path, report, runs, sketch


def _threads(records) -> dict[str, list]:
    """Records by thread (`link_of`, inlined: a bucket has a hundred thousand records)."""
    threads: dict[str, list] = {}
    for r in records:
        link_id = r[1] if r[0] == SUB else r[2]
        if link_id in threads:
            threads[link_id].append(r)
        else:
            threads[link_id] = [r]
    return threads


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
    writer = SplitWriter(out, part, table=dialogue_table)
    spooled = itertools.chain.from_iterable(read_spool(p, RawDialogue) for p in spools)
    with collector_paused():
        for raw in bland_pass(spooled, sketch, fconf, report):
            writer.add(split_of(raw.group, config.valid, config.test), raw)
        writer.close()
    return writer.counts, report


def _finish_pairs(
    spools: list[tuple[Path, str, tuple[str, ...]]],
    part: int,
    out: Path,
    work_dir: Path,
    config: BuildConfig,
    fconf: FilterConfig,
    buckets: int,
    sketch: TrigramSketch | None,
) -> tuple[Counter[str], Report, list[Path]]:
    """A worker's share of the pairing: the bland filter, pairs of siblings (or given
    pairs) written, and `human_vs_rand` candidates spread over bucket files."""
    report = Report(explain=config.explain)
    writer = PairWriter(out, part)
    rand = Buckets(work_dir, buckets, prefix=f"rand-{part}-")
    try:
        for path, kind, kinds in spools:
            if source_kind(kind).threads:
                groups = (values for _, values in read_spool(path, tuple))
                checked = fconf if "bland" in filters_for(config, kind).config.enabled else None
                items = pair_pass(groups, kinds, config.pair_options, sketch, checked, report)
            else:
                given = read_spool(path, RawPair)
                items = bland_pass(given, sketch, fconf, report, targets=pair_targets(fconf))
            for item in items:
                if isinstance(item, RawPair):
                    writer.add(item, config)
                else:
                    rand.put_keyed(rand_bucket(item[0], buckets), item)
    finally:
        rand.close()
        writer.close()
    return writer.counts, report, rand.paths


def _rand_pairs(
    files: list[Path], part: int, out: Path, config: BuildConfig
) -> tuple[Counter[str], Report]:
    """One bucket of `human_vs_rand` candidates, paired and written."""
    report = Report(explain=config.explain)
    candidates = []
    for path in files:
        for chunk in marshalled_chunks(path):
            candidates.extend(chunk)
        path.unlink()
    writer = PairWriter(out, part)
    for pair in random_pairs(candidates, report):
        writer.add(pair, config)
    writer.close()
    return writer.counts, report
