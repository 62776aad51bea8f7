"""Preference pairs from Reddit's feedback, after DialogRPT (Gao et al., 2020).

Sibling replies to one context (the path above them, as for dialogues) become pairs
when they were posted close in time and their feedback differs enough: `updown`
compares their scores, `width` their numbers of direct replies, `depth` the height of
the thread below them. `human_vs_rand` pairs each real reply with a reply from another
thread. Three stages, each a plain function that both engines call:

1. `sibling_groups`: a thread's tree -> groups of sibling replies that pass the one-pass
   filters (each reply judged with its context, as the last turn of a dialogue);
2. `feedback_pairs`: the groups' replies, after the bland pass (`stages.pair_pass`) ->
   pairs of time-adjacent siblings, and each reply as a candidate for `human_vs_rand`;
3. `random_pairs`: the candidates of one bucket (`rand_bucket`) -> each paired with the
   next candidate from another thread in an order fixed by their ids.

Every pair not made is counted, by kind and reason (`Report.not_made`).
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from rejoinder.data.filters import Filters
from rejoinder.data.pairs import FEEDBACK_KINDS, RawPair
from rejoinder.data.reddit import RedditOptions, Thread
from rejoinder.data.report import Report
from rejoinder.errors import RejoinderError

REDDIT_KINDS = (*FEEDBACK_KINDS, "human_vs_rand")
"""The kinds `data build reddit --pairs` makes."""
RAND_BUCKET = 100_000
"""About how many candidates share a bucket of `human_vs_rand` pairing."""
MAX_RAND_BUCKETS = 256
RAND_REACH = 64
"""How far along the order `random_pairs` looks for a reply from another thread."""


@dataclass
class PairOptions:
    """Which sibling replies make a pair (DialogRPT's rules; its values by default)."""

    max_hours_apart: float | None = 1.0
    """Siblings posted more than this many hours apart make no pair (DialogRPT's
    max_hr_gap, 1): early replies collect more feedback just by being early."""
    updown_gap: int = 1
    """updown pairs need scores at least this far apart. DialogRPT trained on every pair
    whose feedback differs (its min_score_gap, 1) and tested on gaps of 20 (updown) and
    4 (width, depth); every pair keeps both values, so a stricter test set can be chosen
    later."""
    width_gap: int = 1
    """width pairs need numbers of direct replies at least this far apart (DialogRPT: 1
    to train, 4 to test)."""
    depth_gap: int = 1
    """depth pairs need threads below at least this many replies deeper (DialogRPT: 1 to
    train, 4 to test)."""

    def __post_init__(self):
        if self.max_hours_apart is not None and self.max_hours_apart < 0:
            raise RejoinderError("--max-hours-apart must be 0 or more")
        for kind in FEEDBACK_KINDS:
            if getattr(self, f"{kind}_gap") < 1:
                raise RejoinderError(f"--{kind}-gap must be at least 1 (equal feedback is no pair)")


def parse_kinds(spec: str) -> tuple[str, ...]:
    """`--pairs updown,width` -> ("updown", "width"); a kind Reddit cannot make is refused."""
    kinds = tuple(dict.fromkeys(k.strip() for k in spec.split(",") if k.strip()))
    for kind in kinds:
        if kind in REDDIT_KINDS:
            continue
        how = {
            "human_vs_machine": "; add them to a pairs dataset with `rejoinder data negatives`",
            "given": "; a JSONL of your own pairs is the source `pairs PATH`",
        }.get(kind, "")
        raise RejoinderError(
            f"--pairs {spec}: Reddit makes no {kind!r} pairs; choose among "
            f"{', '.join(REDDIT_KINDS)}{how}"
        )
    if not kinds:
        raise RejoinderError(f"--pairs needs at least one kind: {', '.join(REDDIT_KINDS)}")
    return kinds


# A group of siblings as it travels between stages (marshal- and pickle-friendly):
# (link_id, subreddit, parent, context texts, [(id, text, created, score, width, height)])
Group = tuple[str, str, str, list[str], list[tuple]]


def sibling_groups(
    thread: Thread, options: RedditOptions, filters: Filters, report: Report
) -> Iterator[Group]:
    """The thread's replies grouped by what they reply to, each group with its context.

    A reply is kept when its context has a turn, context and reply together have between
    `min_depth` and `max_depth` turns, and the one-pass filters pass them as a dialogue
    whose last turn is the reply. Top-level replies have the title as context (--title).
    """
    heights = thread.heights()
    by_parent: dict[str, list[str]] = {}
    for root in thread.roots:
        if root in heights:
            by_parent.setdefault(thread.nodes[root][1], []).append(root)
    for cid in thread.order:
        if cid in thread.children:
            by_parent[f"t1_{cid}"] = thread.children[cid]
    for parent, replies in by_parent.items():
        first = replies[0]
        if parent.startswith("t1_") and parent[3:] in thread.text:
            path = thread.path(parent[3:])
            context = [t for t, _ in thread.prefix(path[0])] + [thread.text[i] for i in path]
        else:
            context = [t for t, _ in thread.prefix(first)]
        kept = []
        for cid in replies:
            c = thread.nodes[cid]
            reply = thread.text[cid]
            turns = len(context) + 1
            if not context:
                report.count("replies without context")
                continue
            if turns < options.min_depth:
                report.count("replies shorter than min depth")
                continue
            if options.max_depth is not None and turns > options.max_depth:
                report.count("replies deeper than max depth")
                continue
            report.count("replies in: reddit")
            name = filters.check([*context, reply], c[5])
            if name is not None:
                sample = {"id": f"reddit-{cid}", "turns": [*context, reply]}
                report.drop(name, sample if report.explain else None)
                continue
            width = len(thread.children.get(cid, ()))
            kept.append((cid, reply, c[7], c[6], width, heights[cid]))
        if kept:
            yield (thread.link_id, thread.nodes[first][5], parent, context, kept)


class Reply(NamedTuple):
    """One reply of a group, as the bland pass and the pairing see it."""

    id: str
    texts: list[str]
    """Its context and itself, as a dialogue: what the bland pass judges."""
    parent: str
    link_id: str
    subreddit: str
    created: int | None
    score: int | None
    width: int
    height: int

    def feedback(self, kind: str) -> int | None:
        return {"updown": self.score, "width": self.width, "depth": self.height}[kind]


def replies_of(groups: Iterable[Group]) -> Iterator[Reply]:
    """The groups' replies one by one, siblings next to each other, oldest first."""
    for link_id, subreddit, parent, context, replies in groups:
        for cid, text, created, score, width, height in replies:
            yield Reply(
                cid, [*context, text], parent, link_id, subreddit, created, score, width, height
            )


def feedback_pairs(
    replies: Iterable[Reply], kinds: tuple[str, ...], options: PairOptions, report: Report
) -> Iterator[RawPair | tuple]:
    """Feedback pairs of replies (siblings next to each other, as `replies_of` gives them
    and the bland pass keeps them), and, when `kinds` has human_vs_rand, each reply as a
    candidate tuple for `random_pairs`.

    Each reply is paired with its next sibling in time, as DialogRPT did: pairs stay
    close in time, and their number linear in the number of siblings.
    """
    feedback = [k for k in kinds if k in FEEDBACK_KINDS]
    rand = "human_vs_rand" in kinds
    for _, siblings in itertools.groupby(replies, key=lambda r: (r.link_id, r.parent)):
        siblings = list(siblings)
        if rand:
            for r in siblings:
                yield (r.id, r.link_id, r.subreddit, r.texts)
        if not feedback:
            continue
        if len(siblings) == 1:
            for kind in feedback:
                report.not_made(kind, "no sibling")
            continue
        for a, b in itertools.pairwise(siblings):
            yield from _pair(a, b, feedback, options, report)


def _pair(
    a: Reply, b: Reply, kinds: list[str], options: PairOptions, report: Report
) -> Iterator[RawPair]:
    """The pairs two time-adjacent siblings make, one a kind at most."""
    limit = options.max_hours_apart
    why = None
    if a.texts[-1] == b.texts[-1]:  # two "lol"s: no preference between them
        why = "siblings with the same text"
    elif limit is not None and (a.created is None or b.created is None):
        why = "no created_utc in the dump"
    elif limit is not None and abs(b.created - a.created) > limit * 3600:
        why = "siblings too far apart in time"
    if why is not None:
        for kind in kinds:
            report.not_made(kind, why)
        return
    for kind in kinds:
        fa, fb = a.feedback(kind), b.feedback(kind)
        if fa is None or fb is None:
            report.not_made(kind, "no score in the dump")
            continue
        if abs(fa - fb) < getattr(options, f"{kind}_gap"):
            report.not_made(kind, "feedback gap too small")
            continue
        chosen, rejected = (a, b) if fa > fb else (b, a)
        yield RawPair(
            id=f"{kind}-{chosen.id}-{rejected.id}",
            kind=kind,
            group=a.link_id,
            context=a.texts[:-1],
            chosen=chosen.texts[-1],
            rejected=rejected.texts[-1],
            chosen_feedback=float(max(fa, fb)),
            rejected_feedback=float(min(fa, fb)),
            source="reddit",
            subreddit=a.subreddit,
        )


def rand_key(reply_id: str) -> int:
    """A reply's place in the `human_vs_rand` order: a hash of its id, the same everywhere."""
    return zlib.crc32(f"rand:{reply_id}".encode())


def rand_buckets(candidates: int) -> int:
    """How many buckets `human_vs_rand` pairing uses for this many candidates (both engines
    count the same candidates, so they make the same buckets)."""
    return max(1, min(MAX_RAND_BUCKETS, -(-candidates // RAND_BUCKET)))


def rand_bucket(reply_id: str, buckets: int) -> int:
    return rand_key(reply_id) % buckets


def random_pairs(candidates: Iterable[tuple], report: Report) -> Iterator[RawPair]:
    """`human_vs_rand` pairs: each candidate (id, link_id, subreddit, texts) against the
    reply of the next candidate from another thread (and with another text), in the
    order of `rand_key`.

    The order depends on the ids alone, so any engine, any partitioning and any run pair
    the same replies.
    """
    ordered = sorted(candidates, key=lambda c: (rand_key(c[0]), c[0]))
    n = len(ordered)
    for i, (rid, link_id, subreddit, texts) in enumerate(ordered):
        ahead = (ordered[(i + k) % n] for k in range(1, min(n, RAND_REACH + 1)))
        other = next((c for c in ahead if c[1] != link_id and c[3][-1] != texts[-1]), None)
        if other is None:
            report.not_made("human_vs_rand", "no reply from another thread")
            continue
        yield RawPair(
            id=f"human_vs_rand-{rid}-{other[0]}",
            kind="human_vs_rand",
            group=link_id,
            context=texts[:-1],
            chosen=texts[-1],
            rejected=other[3][-1],
            source="reddit",
            subreddit=subreddit,
        )
