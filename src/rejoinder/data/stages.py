"""The stages of a build that do not care which engine runs them.

Each is a plain function over plain records: the local engine calls them in its
processes, the Spark engine in its partitions, and the dataset comes out the same.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rejoinder.data.config import BuildConfig, Source
from rejoinder.data.feedback import (
    Group,
    PairOptions,
    Reply,
    feedback_pairs,
    replies_of,
    sibling_groups,
)
from rejoinder.data.filters import FilterConfig, Filters, LoadScorer, Scorer, TrigramSketch
from rejoinder.data.pairs import FEEDBACK_KINDS, RawPair, pair_schema
from rejoinder.data.readers import source_kind
from rejoinder.data.records import SPLITS, RawDialogue, arrow_schema
from rejoinder.data.reddit import SUB, RedditOptions, Thread, build_thread, tree_dialogues
from rejoinder.data.report import Report
from rejoinder.dialogue import Dialogue
from rejoinder.errors import RejoinderError


def filter_config(config: BuildConfig, kind: str) -> FilterConfig:
    """The filters' settings on one kind of source ("auto" is the registry's choice for it)."""
    spec = config.filters or "auto"
    if spec == "auto":
        spec = source_kind(kind).filters
    return FilterConfig.parse(spec, **config.filter_options)


def filters_for(config: BuildConfig, kind: str) -> Filters:
    """The filters that run on one kind of source, their word lists loaded."""
    return Filters(filter_config(config, kind))


@dataclass
class ClassifierPass:
    """The offensive filter's classifier as an engine runs it: its settings and the
    function that loads it (`filters.LoadScorer`, from above this package). Pickles, so
    Spark's partitions each load their own."""

    fconf: FilterConfig
    load: LoadScorer

    def scorer(self) -> Scorer:
        return self.load(self.fconf)


def classifier_pass(config: BuildConfig, load: LoadScorer | None) -> ClassifierPass | None:
    """The classifier's pass when a source runs the offensive filter with
    `--offensive-classifier` (None otherwise), its classifier loaded once now: every
    source's filter settings are checked, and a bad classifier refused, before anything
    is read."""
    configs = [filter_config(config, s.kind) for s in config.sources]
    named = configs[0].offensive_classifier  # filter options are the same for every source
    if named is None:
        return None
    running = [c for c in configs if c.classifies]
    if not running:
        kinds = ", ".join(dict.fromkeys(s.kind for s in config.sources))
        raise RejoinderError(
            f"--offensive-classifier {named}: no source runs the offensive filter ({kinds} "
            f"with --filters {config.filters or 'auto'}); add offensive to --filters"
        )
    if load is None:
        raise RejoinderError(
            f"--offensive-classifier {named} needs a loader: build(config, load_classifier="
            "rejoinder.data.commands.offensive_scorer), as `rejoinder data build` does"
        )
    classifier = ClassifierPass(running[0], load)
    classifier.scorer()
    return classifier


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


def _thread(
    link_id: str,
    records: Iterable[tuple],
    options: RedditOptions,
    report: Report,
    sketch: TrigramSketch | None,
) -> Thread | None:
    """One thread's records as its tree (None without comments); every comment's text is
    counted into `sketch` (when given), kept or not."""
    comments, submission = [], None
    for r in records:
        if r[0] == SUB:
            submission = submission or r[1:]
        else:
            comments.append(r)
    if not comments:
        return None
    report.count("threads")
    thread = build_thread(link_id, comments, options, report, submission)
    if sketch is not None:
        sketch.add(thread.text.values())
    return thread


def process_thread(
    link_id: str,
    records: Iterable[tuple],
    options: RedditOptions,
    filters: Filters,
    report: Report,
    sketch: TrigramSketch | None,
) -> Iterator[RawDialogue]:
    """One thread's records -> the dialogues that pass the one-pass filters."""
    thread = _thread(link_id, records, options, report, sketch)
    if thread is None:
        return
    dialogues = tree_dialogues(thread, options, report)
    if dialogues:
        report.count("dialogues in: reddit", len(dialogues))
    for raw in dialogues:
        if judge(raw, filters, report):
            yield raw


def thread_groups(
    link_id: str,
    records: Iterable[tuple],
    options: RedditOptions,
    filters: Filters,
    report: Report,
    sketch: TrigramSketch | None,
) -> Iterator[Group]:
    """One thread's records -> its groups of sibling replies that pass the one-pass filters."""
    thread = _thread(link_id, records, options, report, sketch)
    if thread is not None:
        yield from sibling_groups(thread, options, filters, report)


def pair_pass(
    groups: Iterable[Group],
    kinds: tuple[str, ...],
    options: PairOptions,
    sketch: TrigramSketch | None,
    fconf: FilterConfig | None,
    report: Report,
) -> Iterator[RawPair | tuple]:
    """Groups -> the bland filter on each reply (when `fconf` is given) -> feedback pairs,
    and candidates for `random_pairs` (see `feedback.feedback_pairs`)."""
    replies: Iterable = replies_of(groups)
    if fconf is not None:
        replies = bland_pass(((True, r) for r in replies), sketch, fconf, report)
    return feedback_pairs(replies, kinds, options, report)


def feedback_kinds(
    kinds: tuple[str, ...], options: PairOptions, read: Report, where: str
) -> tuple[str, dict[str, str]]:
    """The kinds a source's comments can make, and why each other one cannot.

    `read` holds the counts of reading the source: a dump whose comments all lack
    `score` makes no updown pairs, one whose comments all lack `created_utc` no
    feedback pairs within a time window. When no kind is left, a `RejoinderError` says so.
    """
    parsed = read.counts["comments parsed"]
    missing = {f: parsed > 0 and read.counts[f"comments without {f}"] == parsed
               for f in ("score", "created_utc")}  # fmt: skip
    why: dict[str, str] = {}
    for kind in kinds:
        timed = options.max_hours_apart is not None
        if kind in FEEDBACK_KINDS and missing["created_utc"] and timed:
            why[kind] = (
                f"no comment of {where} has created_utc, so siblings' times cannot be "
                "compared (--max-hours-apart)"
            )
        elif kind == "updown" and missing["score"]:
            why[kind] = f"no comment of {where} has a score"
    left = tuple(k for k in kinds if k not in why)
    if not left:
        reasons = "; ".join(f"{k}: {w}" for k, w in why.items())
        raise RejoinderError(
            f"no pairs of the kinds asked for can be made ({reasons}); ask for other kinds "
            f"with --pairs (human_vs_rand needs neither field), or use a dump that has them"
        )
    return left, why


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


def dialogue_targets(texts: list[str], fconf: FilterConfig) -> list[str]:
    """The turns the target checks judge: the last, or every response (`--targets`)."""
    return texts[-1:] if fconf.targets == "last" else texts[1:]


def given_pairs(
    source: Source, filters: Filters, report: Report, sketch: TrigramSketch | None
) -> Iterator[RawPair]:
    """Pairs of a source read by its reader (JSONL pairs) that pass the one-pass filters,
    each reply judged with the context as a dialogue."""
    for pair in source_kind(source.kind).read(report=report, **source.args):
        report.count(f"pairs in: {source.kind}")
        if sketch is not None:
            sketch.add([*pair.context, pair.chosen, pair.rejected])
        for reply in (pair.chosen, pair.rejected):
            name = filters.check([*pair.context, reply], pair.subreddit)
            if name is not None:
                sample = {"id": pair.id, "turns": _turns(pair)} if report.explain else None
                report.drop(name, sample)
                break
        else:
            yield pair


def pair_targets(fconf: FilterConfig) -> Callable[[RawPair], list[str]]:
    """What the bland filter judges of a given pair: both replies (and the context's
    responses, with --targets responses)."""
    return lambda p: [*dialogue_targets([*p.context, p.chosen], fconf)[:-1], p.chosen, p.rejected]


def scored_targets(texts: list[str], fconf: FilterConfig) -> list[tuple[list[str], str]]:
    """The targets as the classifier reads them: each with the turns before it."""
    start = max(len(texts) - 1, 0) if fconf.targets == "last" else 1
    return [(texts[:i], texts[i]) for i in range(start, len(texts))]


def scored_pair(fconf: FilterConfig) -> Callable[[RawPair], list[tuple[list[str], str]]]:
    """What the classifier judges of a given pair: both replies in the context (and the
    context's responses, with --targets responses), as `pair_targets` for bland."""
    return lambda p: [
        *scored_targets([*p.context, p.chosen], fconf)[:-1],
        (p.context, p.chosen),
        (p.context, p.rejected),
    ]


def offensive_pass(
    spooled: Iterable[tuple[bool, Any]],
    scorer: Scorer,
    fconf: FilterConfig,
    report: Report,
    batch: int = 512,
    targets: Callable[[Any], list[tuple[list[str], str]]] | None = None,
) -> Iterator[tuple[bool, Any]]:
    """Drops the items with a target the classifier flags (a probability of being unsafe
    above `offensive_threshold`) as "offensive"; the others go on as they came, with
    their bland_check.

    An item is a dialogue, or anything with `id` and `texts`, judged as one; `targets`
    gives the (context, text) pairs to judge otherwise (a pair's replies). The scorer
    gets `batch` targets or more a call (the last call, what is left), each distinct
    one once; empty targets are not asked about.
    """
    pending: list[tuple[bool, Any, list[tuple[list[str], str]]]] = []

    def flush():
        asked: dict[tuple[tuple[str, ...], str], int] = {}
        owners = [[asked.setdefault((tuple(c), t), len(asked)) for c, t in p] for *_, p in pending]
        scores = scorer([(list(c), t) for c, t in asked]) if asked else []
        for (check, item, _), mine in zip(pending, owners, strict=True):
            if any(scores[i] > fconf.offensive_threshold for i in mine):
                sample = {"id": item.id, "turns": _turns(item)} if report.explain else None
                report.drop("offensive", sample)
            else:
                yield check, item
        pending.clear()

    size = 0
    for check, item in spooled:
        picked = targets(item) if targets else scored_targets(item.texts, fconf)
        pending.append((check, item, [(c, t) for c, t in picked if t.strip()]))
        size += len(pending[-1][2])
        if size >= batch:
            yield from flush()
            size = 0
    yield from flush()


def offensive_groups(
    spooled: Iterable[tuple[bool, Group]], scorer: Scorer, fconf: FilterConfig, report: Report
) -> Iterator[tuple[bool, Group]]:
    """(bland_check, sibling group) pairs without the replies the classifier flags, each
    reply judged with its context as `sibling_groups` judges it; a group left without
    replies is gone."""
    replies = ((check, r) for check, group in spooled for r in replies_of([group]))
    kept = offensive_pass(replies, scorer, fconf, report)
    for (link_id, parent), same in itertools.groupby(kept, lambda e: (e[1].link_id, e[1].parent)):
        entries: list[tuple[bool, Reply]] = list(same)
        first = entries[0][1]
        siblings = [(r.id, r.texts[-1], r.created, r.score, r.width, r.height) for _, r in entries]
        yield entries[0][0], (link_id, first.subreddit, parent, first.texts[:-1], siblings)


def bland_pass(
    spooled: Iterable[tuple[bool, Any]],
    sketch: TrigramSketch | None,
    fconf: FilterConfig,
    report: Report,
    batch: int = 4096,
    targets: Callable[[Any], list[str]] | None = None,
) -> Iterator[Any]:
    """Drops bland items (those spooled with bland_check) in batches.

    An item is a dialogue, or anything with `id` and `texts`, judged as one; `targets`
    picks the texts to judge otherwise (a pair's two replies).
    """
    pending: list[tuple[bool, Any]] = []

    def flush():
        targets_, owners = [], []
        for i, (check, raw) in enumerate(pending):
            if check:
                picked = targets(raw) if targets else dialogue_targets(raw.texts, fconf)
                targets_.extend(picked)
                owners.extend([i] * len(picked))
        bland = set()
        if targets_ and sketch is not None:
            shares = sketch.frequent_share(targets_, fconf.bland_count)
            bland = {
                o
                for o, s in zip(owners, shares, strict=True)
                if s is not None and s >= fconf.bland_share
            }
        for i, (_, raw) in enumerate(pending):
            if i in bland:
                sample = {"id": raw.id, "turns": _turns(raw)} if report.explain else None
                report.drop("bland", sample)
            else:
                yield raw
        pending.clear()

    for item in spooled:
        pending.append(item)
        if len(pending) >= batch:
            yield from flush()
    yield from flush()


def _turns(item: Any) -> list[str]:
    if isinstance(item, RawPair):
        return [*item.context, f"chosen: {item.chosen}", f"rejected: {item.rejected}"]
    return item.texts


def ensure_every_split(root: Path, pairs: bool = False) -> None:
    """An empty split is still a directory with a readable (empty) parquet file."""
    import pyarrow.parquet as pq

    schema = pair_schema() if pairs else arrow_schema()
    for split in SPLITS:
        folder = root / split
        if not any(folder.glob("*.parquet")):
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(schema.empty_table(), folder / "part-00000.parquet")
