"""The stages of a build that do not care which engine runs them.

Each is a plain function over plain records: the local engine calls them in its
processes, the Spark engine in its partitions, and the dataset comes out the same.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from rejoinder.data.config import BuildConfig, Source
from rejoinder.data.filters import FilterConfig, Filters, TrigramSketch
from rejoinder.data.readers import source_kind
from rejoinder.data.records import SPLITS, RawDialogue, arrow_schema
from rejoinder.data.reddit import SUB, RedditOptions, thread_dialogues
from rejoinder.data.report import Report
from rejoinder.dialogue import Dialogue


def filters_for(config: BuildConfig, kind: str) -> Filters:
    """The filters that run on one kind of source ("auto" is the registry's choice for it)."""
    spec = config.filters or "auto"
    if spec == "auto":
        spec = source_kind(kind).filters
    return Filters(FilterConfig.parse(spec, **config.filter_options))


def plan(config: BuildConfig) -> tuple[list[tuple[Source, Filters]], FilterConfig | None]:
    """Each source with its filters, and the bland filter's settings (None: no source runs it).

    The bland filter needs the trigram counts of every source it runs on, so an engine
    counts those sources into one sketch before the bland pass.
    """
    sources = [(source, filters_for(config, source.kind)) for source in config.sources]
    bland = [f.config for _, f in sources if "bland" in f.config.enabled]
    return sources, bland[0] if bland else None


def split_of(group: str, valid: float, test: float) -> str:
    """The split of a dialogue group: stable across runs, engines and machines."""
    x = (zlib.crc32(group.encode()) % 1_000_000) / 1_000_000
    if x < test:
        return "test"
    if x < test + valid:
        return "valid"
    return "train"


def judge(raw: RawDialogue, filters: Filters, report: Report) -> bool:
    """Applies the one-pass filters; counts and (when explaining) keeps what is dropped."""
    name = filters.check(raw.texts, raw.subreddit)
    if name is None:
        return True
    report.drop(name, {"id": raw.id, "turns": raw.texts} if report.explain else None)
    return False


def process_thread(
    link_id: str,
    records: Iterable[tuple],
    options: RedditOptions,
    filters: Filters,
    report: Report,
    sketch: TrigramSketch | None,
) -> Iterator[RawDialogue]:
    """One thread's records -> the dialogues that pass the one-pass filters.

    Every comment's text is counted into `sketch` (when given), kept or not.
    """
    comments, submission = [], None
    for r in records:
        if r[0] == SUB:
            submission = submission or r[1:]
        else:
            comments.append(r)
    if not comments:
        return
    report.count("threads")
    dialogues, texts = thread_dialogues(link_id, comments, options, report, submission)
    if sketch is not None:
        sketch.add(texts)
    for raw in dialogues:
        report.count("dialogues in: reddit")
        if judge(raw, filters, report):
            yield raw


def read_source(source: Source, report: Report) -> Iterator[Dialogue]:
    """Dialogues of a source that its reader reads (any kind but threads)."""
    return source_kind(source.kind).read(report=report, **source.args)


def other_dialogues(
    source: Source, filters: Filters, report: Report, sketch: TrigramSketch | None
) -> Iterator[RawDialogue]:
    """Dialogues of a source read by its reader that pass the one-pass filters."""
    for d in read_source(source, report):
        raw = RawDialogue.from_dialogue(d)
        report.count(f"dialogues in: {source.kind}")
        if sketch is not None:
            sketch.add(raw.texts)
        if judge(raw, filters, report):
            yield raw


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


def ensure_every_split(root: Path) -> None:
    """An empty split is still a directory with a readable (empty) parquet file."""
    import pyarrow.parquet as pq

    for split in SPLITS:
        folder = root / split
        if not any(folder.glob("*.parquet")):
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(arrow_schema().empty_table(), folder / "part-00000.parquet")
