"""Preference pairs from Reddit feedback: every rule on a hand-built thread, and rand pairs."""

import random

import pytest

from rejoinder.data.feedback import PairOptions, parse_kinds, random_pairs, sibling_groups
from rejoinder.data.filters import FilterConfig, Filters
from rejoinder.data.pairs import RawPair
from rejoinder.data.reddit import RedditOptions, build_thread
from rejoinder.data.report import Report
from rejoinder.data.stages import feedback_kinds, pair_pass
from rejoinder.errors import RejoinderError

HOUR = 3600


def comment(cid, parent, t, score, body=None):
    return (cid, parent, "t3_L", body or f"the reply {cid} is here", f"u_{cid}", "pics", score, t)


# a is the only kept top-level comment (f has a URL); under a, b and c are 100 s apart
# and d two hours after c; e is deleted, so e1 has no context. Below b: b1 (with b11)
# and b2, posted together, with equal scores.
THREAD = [
    comment("a", "t3_L", 0, 10),
    comment("f", "t3_L", 50, 2, "see http://example.com for the answer"),
    comment("b", "t1_a", 100, 5),
    comment("e", "t1_a", 150, 99, "[deleted]"),
    comment("c", "t1_a", 200, 1),
    comment("d", "t1_a", 200 + 2 * HOUR, 50),
    comment("b1", "t1_b", 300, 3),
    comment("b2", "t1_b", 400, 3),
    comment("b11", "t1_b1", 500, 1),
    comment("d1", "t1_d", 7500, 1),
    comment("e1", "t1_e", 7600, 1),
]
TITLE = ("t3_L", "A title", "op", "pics")
KINDS = ("updown", "width", "depth")


def made(options=None, reddit=None, filters="all", kinds=KINDS):
    options = options or PairOptions()
    reddit = reddit or RedditOptions(title=True)
    report = Report()
    thread = build_thread("t3_L", THREAD, reddit, report, TITLE)
    fs = Filters(FilterConfig.parse(filters))
    groups = list(sibling_groups(thread, reddit, fs, report))
    items = list(pair_pass(groups, kinds, options, None, None, report))
    # A pair's id is "{kind}-{chosen id}-{rejected id}".
    pairs = {tuple(p.id.split("-")): p for p in items if isinstance(p, RawPair)}
    return pairs, report, items


def test_siblings_close_in_time_with_a_gap_make_pairs():
    pairs, report, _ = made()
    assert set(pairs) == {
        ("updown", "b", "c"),  # scores 5 > 1
        ("width", "b", "c"),  # b has two direct replies, c none
        ("depth", "b", "c"),  # two replies deep below b (b1, b11), none below c
        ("width", "b1", "b2"),  # b11 below b1; b1 and b2 score the same: no updown pair
        ("depth", "b1", "b2"),
    }
    p = pairs["updown", "b", "c"]
    assert p.context == ["A title", "the reply a is here"]
    assert (p.chosen_feedback, p.rejected_feedback) == (5.0, 1.0)
    assert (pairs["width", "b", "c"].chosen_feedback, pairs["depth", "b", "c"].chosen_feedback) == (
        2.0,
        2.0,
    )
    assert pairs["width", "b1", "b2"].context == [
        "A title",
        "the reply a is here",
        "the reply b is here",
    ]
    assert all(
        p.group == "t3_L" and p.subreddit == "pics" and p.source == "reddit" for p in pairs.values()
    )
    assert len({p.id for p in pairs.values()}) == len(pairs)
    for kind in KINDS:
        # c and d: two hours apart. a (f was filtered), b11, d1: alone under their parent.
        assert report.unmade[kind, "siblings too far apart in time"] == 1
        assert report.unmade[kind, "no sibling"] == 3
    assert report.unmade["updown", "feedback gap too small"] == 1  # b1 and b2
    assert report.dropped == {"url": 1}
    assert report.counts["replies without context"] == 1  # e1, under a deleted comment


def test_the_time_window_and_the_gaps_are_options():
    pairs, report, _ = made(PairOptions(max_hours_apart=3))
    assert ("updown", "d", "c") in pairs and ("width", "d", "c") in pairs
    assert report.unmade["depth", "siblings too far apart in time"] == 0
    pairs, report, _ = made(PairOptions(updown_gap=5, width_gap=2, depth_gap=3))
    assert set(pairs) == {("width", "b", "c")}  # updown 4 < 5, depth 2 < 3, width b1-b2 1 < 2
    assert report.unmade["updown", "feedback gap too small"] == 2
    assert report.unmade["depth", "feedback gap too small"] == 2
    with pytest.raises(RejoinderError, match="--width-gap must be at least 1"):
        PairOptions(width_gap=0)


def test_filters_and_the_extractor_options_apply_to_context_and_reply():
    pairs, report, _ = made(filters="none")
    assert ("updown", "a", "f") in pairs  # f is back: 50 s after a, scores 10 > 2
    _, report, _ = made(reddit=RedditOptions(title=True, max_depth=3))
    assert report.counts["replies deeper than max depth"] == 4  # b1, b2, d1 (4 turns), b11 (5)
    pairs, report, _ = made(reddit=RedditOptions(title=False))
    assert ("updown", "b", "c") in pairs and pairs["updown", "b", "c"].context == [
        "the reply a is here"
    ]
    assert report.counts["replies without context"] == 3  # a and f, without a title; e1
    pairs, _, _ = made(reddit=RedditOptions(title=True, min_score=2))
    assert ("updown", "b", "c") not in pairs  # c scores 1: below min score, so b stands alone


def test_human_vs_rand_candidates_are_every_kept_reply():
    _, _, items = made(kinds=("human_vs_rand",))
    ids = sorted(c[0] for c in items if not isinstance(c, RawPair))
    assert ids == ["a", "b", "b1", "b11", "b2", "c", "d", "d1"]
    assert all(isinstance(c, tuple) for c in items)


def test_random_pairs_take_replies_from_other_threads_in_an_order_of_the_ids():
    candidates = [
        (f"r{i}", f"t3_{i % 7}", "pics", [f"context {i}", f"reply {i}"]) for i in range(60)
    ]
    report = Report()
    pairs = list(random_pairs(candidates, report))
    assert len(pairs) == 60 and not report.unmade
    thread_of = {c[3][-1]: c[1] for c in candidates}
    for p in pairs:
        assert p.kind == "human_vs_rand" and thread_of[p.rejected] != p.group
        assert thread_of[p.chosen] == p.group and p.context == [f"context {p.chosen.split()[1]}"]
    shuffled = candidates[:]
    random.Random(0).shuffle(shuffled)
    assert list(random_pairs(shuffled, Report())) == pairs  # any engine, any partitioning
    alone = Report()
    assert list(random_pairs([c for c in candidates if c[1] == "t3_0"], alone)) == []
    assert alone.unmade["human_vs_rand", "no reply from another thread"] == 9


def test_kinds_are_checked_and_missing_feedback_fields_named():
    assert parse_kinds("updown, depth,updown") == ("updown", "depth")
    with pytest.raises(RejoinderError, match="data negatives"):
        parse_kinds("human_vs_machine")
    with pytest.raises(RejoinderError, match="no 'likes' pairs; choose among updown, width"):
        parse_kinds("updown,likes")
    read = Report()
    read.count("comments parsed", 4)
    read.count("comments without score", 4)
    kinds, why = feedback_kinds(("updown", "width"), PairOptions(), read, "RC.ndjson")
    assert kinds == ("width",) and "no comment of RC.ndjson has a score" in why["updown"]
    read.count("comments without created_utc", 4)
    with pytest.raises(RejoinderError, match="created_utc.*human_vs_rand needs neither"):
        feedback_kinds(("updown", "width"), PairOptions(), read, "RC.ndjson")
    kinds, _ = feedback_kinds(("width",), PairOptions(max_hours_apart=None), read, "RC.ndjson")
    assert kinds == ("width",)  # no time window: no need of created_utc
