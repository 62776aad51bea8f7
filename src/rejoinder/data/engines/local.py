"""The local engine: one machine, bounded memory, one process a core.

Reddit comments are first spread over bucket files by thread (a dump is ordered by
time, not by thread), then each bucket is read back whole and walked thread by thread:
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
import time
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
    in_parallel,
    marshalled_chunks,
    read_spool,
)
from rejoinder.data.feedback import rand_bucket, rand_buckets, random_pairs
from rejoinder.data.filters import FilterConfig, TrigramSketch
from rejoinder.data.pairs import RawPair
from rejoinder.data.readers import source_kind
from rejoinder.data.records import SPLITS, RawDialogue
from rejoinder.data.reddit import check_reddit_source, link_of, read_reddit_file
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
from rejoinder.progress import Progress, amount


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
    workers = os.cpu_count() or 1
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
    tasks = [(share, part, data_dir, config, fconf, sketch) for part, share in enumerate(shares)]
    counts: Counter[str] = Counter(dict.fromkeys(SPLITS, 0))
    for part_counts, part_report in in_parallel(_finish, tasks, workers, "filtering and writing"):
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
    workers = os.cpu_count() or 1
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
        (share, part, data_dir, work_dir, config, fconf, sketch, buckets)
        for part, share in enumerate(shares)
    ]
    counts: Counter[str] = Counter()
    rand_files: list[list[Path]] = [[] for _ in range(buckets)]
    for part_counts, part_report, files in in_parallel(_finish_pairs, tasks, workers, "pairing"):
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
    buckets = Buckets(work_dir, bucket_count(comments + submissions))
    try:
        read_dumps(files, report, buckets.put)
    finally:
        buckets.close()
    workers = max(1, min(workers or os.cpu_count() or 1, len(buckets.paths)))
    shares = [(buckets.paths[i::workers], work_dir / f"spool-reddit-{i}") for i in range(workers)]
    tasks = [(b, sp, config, source.kind, sketch is not None, pairs) for b, sp in shares]
    results = in_parallel(_walk_buckets, tasks, workers, "walking threads")
    for _, part, part_sketch in results:
        report.merge(part)
        if sketch is not None:
            sketch.merge(part_sketch)
    return [path for path, _, _ in results]


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


def read_dumps(files: list[tuple[str, str]], report: Report, put) -> None:
    """Reads (kind, path) dumps in order, `put(link_id, record)` for each record, showing
    the compressed bytes read of the total on a terminal."""
    total = sum(os.path.getsize(p) for _, p in files)
    done = {"bytes": 0, "lines": 0}  # of the files before this one
    with Progress("reading dumps", total=total, unit="B") as progress:
        for kind, path in files:
            seen = [0]

            def shown(lines: int, position: int, kind=kind, seen=seen) -> None:
                seen[0] = lines
                rate = (done["lines"] + lines) / max(time.monotonic() - progress.started, 1e-9)
                progress.update(done["bytes"] + position, f"{amount(rate)} lines/s ({kind})")

            for link_id, record in read_reddit_file(path, kind, report, shown):
                put(link_id, record)
            done["lines"] += seen[0]
            done["bytes"] += os.path.getsize(path)
            progress.update(done["bytes"])


def _walk_buckets(
    buckets: list[Path],
    spool_path: Path,
    config: BuildConfig,
    kind: str,
    use_sketch: bool,
    pairs: bool = False,
) -> tuple[Path, Report, TrigramSketch | None]:
    """A worker's share of the threads: buckets in, filtered dialogues (or sibling groups)
    spooled out."""
    report = Report(explain=config.explain)
    sketch = TrigramSketch() if use_sketch else None
    filters = filters_for(config, kind)
    walk = thread_groups if pairs else process_thread
    spool = Spool(spool_path)
    for path in buckets:
        threads: dict[str, list] = {}
        for chunk in marshalled_chunks(path):
            for r in chunk:
                threads.setdefault(link_of(r), []).append(r)
        path.unlink()
        for link_id in sorted(threads):
            records = threads.pop(link_id)
            for item in walk(link_id, records, config.reddit, filters, report, sketch):
                spool.put(item if pairs else item.astuple(), use_sketch)
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
    spooled = itertools.chain.from_iterable(read_spool(p, RawDialogue) for p in spools)
    for raw in bland_pass(spooled, sketch, fconf, report):
        writer.add(split_of(raw.group, config.valid, config.test), raw.to_row())
    writer.close()
    return writer.counts, report


def _finish_pairs(
    spools: list[tuple[Path, str, tuple[str, ...]]],
    part: int,
    out: Path,
    work_dir: Path,
    config: BuildConfig,
    fconf: FilterConfig,
    sketch: TrigramSketch | None,
    buckets: int,
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
