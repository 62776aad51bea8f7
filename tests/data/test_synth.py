"""The synthetic Pushshift dump: format, order, determinism and the injected phenomena."""

from __future__ import annotations

import io
import json
import re
import statistics
from collections import Counter
from pathlib import Path

import pytest

from rejoinder.errors import RejoinderError
from rejoinder.testing import reddit as synth
from rejoinder.testing.__main__ import main
from rejoinder.testing.bodies import lexicon
from rejoinder.testing.reddit import BLAND_REPLIES, BLOCKED_SUBREDDITS, synth_reddit

N = 20_000
GONE = ("[deleted]", "[removed]")
COMMENT_FIELDS = {
    "id": str,
    "parent_id": str,
    "link_id": str,
    "body": str,
    "author": str,
    "subreddit": str,
    "score": int,
    "created_utc": int,
}
SUBMISSION_FIELDS = {
    "id": str,
    "title": str,
    "selftext": str,
    "subreddit": str,
    "author": str,
    "score": int,
    "created_utc": int,
    "num_comments": int,
}


def read_lines(path: Path) -> list[str]:
    if path.name.endswith(".zst"):
        import zstandard

        with open(path, "rb") as f:
            reader = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(f)
            return io.TextIOWrapper(reader, encoding="utf-8").read().splitlines()
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    summary = synth_reddit(N, d / "RC.zst", submissions_out=d / "RS.zst", seed=7)
    comments = [json.loads(line) for line in read_lines(d / "RC.zst")]
    submissions = [json.loads(line) for line in read_lines(d / "RS.zst")]
    return summary, comments, submissions


def near(count: int, rate: float, n: int = N, slack: float = 0.35) -> bool:
    """`count` is within `slack` (relative) of `rate * n`."""
    return abs(count - rate * n) <= slack * rate * n


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = synth_reddit(3000, tmp_path / "a.zst", seed=3)
    b = synth_reddit(3000, tmp_path / "b.zst", submissions_out=tmp_path / "s.zst", seed=3)
    synth_reddit(3000, tmp_path / "c.zst", seed=4)
    assert (tmp_path / "a.zst").read_bytes() == (tmp_path / "b.zst").read_bytes()
    assert (tmp_path / "a.zst").read_bytes() != (tmp_path / "c.zst").read_bytes()
    assert {k: v for k, v in a.items() if k != "submissions"} == {
        k: v for k, v in b.items() if k != "submissions"
    }
    synth_reddit(3000, tmp_path / "d.zst", submissions_out=tmp_path / "t.zst", seed=3)
    assert (tmp_path / "s.zst").read_bytes() == (tmp_path / "t.zst").read_bytes()


def test_plain_output_matches_compressed(tmp_path):
    synth_reddit(2000, tmp_path / "RC.zst", submissions_out=tmp_path / "RS.ndjson", seed=1)
    synth_reddit(2000, tmp_path / "RC.ndjson", seed=1)
    plain = tmp_path / "RC.ndjson"
    assert plain.read_bytes()[:1] == b"{"
    assert read_lines(plain) == read_lines(tmp_path / "RC.zst")
    assert len(read_lines(plain)) == 2000
    assert json.loads(read_lines(tmp_path / "RS.ndjson")[0])["id"]


def test_tiny_and_empty(tmp_path):
    assert synth_reddit(0, tmp_path / "e.zst")["comments"] == 0
    assert read_lines(tmp_path / "e.zst") == []
    for n in (1, 2, 5):
        synth_reddit(n, tmp_path / f"{n}.ndjson", seed=n)
        assert len(read_lines(tmp_path / f"{n}.ndjson")) == n
    with pytest.raises(RejoinderError, match="0 or more"):
        synth_reddit(-1, tmp_path / "x.zst")
    with pytest.raises(RejoinderError, match="must be an int"):
        synth_reddit(2.5, tmp_path / "x.zst")


def test_count_fields_and_types(dump):
    summary, comments, _ = dump
    assert len(comments) == N == summary["comments"]
    for c in comments:
        assert set(c) == set(COMMENT_FIELDS)
        for key, kind in COMMENT_FIELDS.items():
            assert type(c[key]) is kind, (key, c)
        assert re.fullmatch(r"[0-9a-z]+", c["id"])
        assert re.fullmatch(r"t[13]_[0-9a-z]+", c["parent_id"])
        assert re.fullmatch(r"t3_[0-9a-z]+", c["link_id"])


def test_sorted_by_time_and_parents_come_first(dump):
    summary, comments, _ = dump
    times = [c["created_utc"] for c in comments]
    assert times == sorted(times)
    all_ids = {c["id"] for c in comments}
    created = {}
    orphans = 0
    for c in comments:
        kind, _, parent = c["parent_id"].partition("_")
        if kind == "t3":
            assert c["parent_id"] == c["link_id"]
        elif parent not in all_ids:
            orphans += 1
        else:
            assert parent in created, c  # the parent is earlier in the file
            assert created[parent] < c["created_utc"]
        created.setdefault(c["id"], c["created_utc"])
    assert orphans == summary["orphans"]
    assert near(orphans, synth.RATE_ORPHAN, slack=0.8)


def test_ids_unique_apart_from_duplicates(dump):
    summary, comments, _ = dump
    counts = Counter(c["id"] for c in comments)
    twice = [i for i, k in counts.items() if k == 2]
    assert max(counts.values()) == 2
    assert len(twice) == summary["duplicates"] == N - summary["unique_ids"]
    assert near(len(twice), synth.RATE_DUPLICATE, slack=0.8)
    # A duplicate is the same comment again, right after it.
    for a, b in zip(comments, comments[1:], strict=False):
        if a["id"] == b["id"]:
            assert {k: v for k, v in a.items() if k != "score"} == {
                k: v for k, v in b.items() if k != "score"
            }


def test_injected_phenomena_at_their_rates(dump):
    summary, comments, _ = dump
    bodies = [c["body"] for c in comments]
    lex = lexicon()

    n_deleted = sum(b == "[deleted]" for b in bodies)
    n_removed = sum(b == "[removed]" for b in bodies)
    assert near(n_deleted + n_removed, synth.RATE_DELETED + synth.RATE_REMOVED, slack=0.2)
    assert n_deleted > 0 and n_removed > 0
    assert all(c["author"] == "[deleted]" for c in comments if c["body"] in GONE)
    authors_gone = sum(c["author"] == "[deleted]" for c in comments)
    assert authors_gone > n_deleted + n_removed

    assert near(sum(b in BLAND_REPLIES for b in bodies), synth.RATE_BLAND, slack=0.2)
    assert near(summary["non_english"], synth.RATE_NON_ENGLISH)

    urls = sum(bool(re.search(r"https?://|www\.", b)) for b in bodies)
    with_url = synth.RATE_URL + synth.RATE_BRACKETS * synth.MARKDOWN_LINK_SHARE
    assert near(urls, with_url)
    links = sum(bool(re.search(r"\[[^\]]+\]\(https?://", b)) for b in bodies)
    assert near(links, synth.RATE_BRACKETS * synth.MARKDOWN_LINK_SHARE, slack=0.5)
    brackets = sum("[" in b for b in bodies if b not in GONE)
    assert near(brackets, synth.RATE_BRACKETS)

    repeated = re.compile(r"\b(\w+)(?:\s+\1\b){2,}", re.IGNORECASE)
    n_repeated = sum(bool(repeated.search(b)) for b in bodies)
    assert near(n_repeated, synth.RATE_REPEAT)
    assert abs(n_repeated - summary["repeated_word"]) <= 0.05 * summary["repeated_word"]

    profane = lex["profane"]
    n_offensive = sum(any(t in profane for t in re.findall("[a-z]+", b.lower())) for b in bodies)
    assert near(n_offensive, synth.RATE_OFFENSIVE, slack=0.5)
    assert abs(n_offensive - summary["offensive"]) <= 0.05 * summary["offensive"]

    assert near(sum(bool(re.search(r"&(amp|gt|lt);", b)) for b in bodies), synth.RATE_HTML)
    assert near(summary["markdown"], synth.RATE_MARKDOWN)
    assert any("**" in b for b in bodies) and any("\n\n" in b for b in bodies)
    n_long = sum(len(b.split()) >= 300 for b in bodies)
    assert n_long == summary["long"] and 5 <= n_long <= 100

    scores = [c["score"] for c in comments]
    assert near(sum(s <= 0 for s in scores), synth.RATE_LOW_SCORE, slack=0.25)
    assert any(s < 0 for s in scores) and max(scores) > 100


def test_english_bodies_pass_a_top_words_filter_and_foreign_ones_do_not(dump):
    import wordfreq

    summary, comments, _ = dump
    top50 = set(wordfreq.top_n_list("en", 50))
    lengths, missing = [], 0
    for c in comments:
        body = c["body"]
        if body in GONE or body in BLAND_REPLIES:
            continue
        words = set(re.findall(r"[a-z']+", body.lower()))
        lengths.append(len(body.split()))
        missing += not words & top50
    # The non-English bodies and a few short English ones.
    assert summary["non_english"] <= missing <= summary["non_english"] + 0.03 * N
    assert any(re.search("[\u0400-\u04ff]", c["body"]) for c in comments)  # Cyrillic
    assert any(re.search("[\u4e00-\u9fff]", c["body"]) for c in comments)  # CJK
    assert 1 in lengths and max(lengths) >= 300 and 5 <= statistics.median(lengths) <= 20


def test_bland_replies_are_frequent_enough_for_trigram_filters():
    trigrams = [b for b in BLAND_REPLIES if len(b.split()) >= 3]
    assert len(trigrams) >= 10
    # About 8% of comments over this many replies: each > 1,000 times per million.
    assert synth.RATE_BLAND / len(BLAND_REPLIES) * 1_000_000 > 1000


def test_subreddits_blocked_share_and_skew(dump):
    summary, comments, submissions = dump
    by_thread = {c["link_id"]: c["subreddit"] for c in comments}
    for c in comments:
        assert by_thread[c["link_id"]] == c["subreddit"]
    blocked = sum(s in BLOCKED_SUBREDDITS for s in by_thread.values())
    assert blocked == summary["blocked_threads"]
    assert near(blocked, synth.RATE_BLOCKED_THREADS, n=len(by_thread), slack=0.5)
    ranked = Counter(s for s in by_thread.values() if s not in BLOCKED_SUBREDDITS).most_common()
    assert ranked[0][1] > 5 * ranked[len(ranked) // 2][1]
    assert not set(BLOCKED_SUBREDDITS) & set(synth.SUBREDDITS)


def test_thread_sizes_heavy_tailed_and_trees_deep(dump):
    summary, comments, _ = dump
    sizes = Counter(c["link_id"] for c in comments).values()
    assert len(sizes) == summary["threads"]
    assert statistics.median(sizes) <= 2
    assert max(sizes) >= 100 * statistics.median(sizes)
    depth = {}
    for c in comments:
        kind, _, parent = c["parent_id"].partition("_")
        depth[c["id"]] = 1 if kind == "t3" else depth.get(parent, 1) + 1
    d = Counter(depth.values())
    assert d[1] > d[2] > d[3] > d[4] and max(d) >= 10
    assert sum(k for depth_, k in d.items() if depth_ <= 6) > 0.9 * len(depth)


def test_submissions_one_row_per_thread(dump):
    summary, comments, submissions = dump
    assert len(submissions) == summary["threads"] == summary["submissions"]
    for s in submissions:
        assert set(s) == set(SUBMISSION_FIELDS)
        for key, kind in SUBMISSION_FIELDS.items():
            assert type(s[key]) is kind, (key, s)
    assert [s["created_utc"] for s in submissions] == sorted(s["created_utc"] for s in submissions)
    by_id = {s["id"]: s for s in submissions}
    assert len(by_id) == len(submissions)
    links = Counter()
    for c in comments:
        links[c["link_id"]] += 1
        sub = by_id[c["link_id"].removeprefix("t3_")]
        assert sub["subreddit"] == c["subreddit"]
        assert sub["created_utc"] < c["created_utc"]
    assert set(links) == {"t3_" + i for i in by_id}
    # num_comments counts distinct comments: duplicate lines are not counted twice.
    distinct = Counter(c["link_id"] for c in {c["id"]: c for c in comments}.values())
    assert all(by_id[link[3:]]["num_comments"] == k for link, k in distinct.items())


def test_the_command_line_writes_what_the_function_writes(tmp_path, capsys):
    out, subs = tmp_path / "RC.zst", tmp_path / "RS.zst"
    assert (
        main(["synth-reddit", "--comments", "500", "--out", str(out), "--submissions", str(subs)])
        == 0
    )
    first, second = capsys.readouterr().out.splitlines()
    assert first == f"wrote 500 comments to {out}"
    summary = synth_reddit(500, tmp_path / "again.zst", submissions_out=tmp_path / "s.zst")
    assert json.loads(second) == summary
    assert out.read_bytes() == (tmp_path / "again.zst").read_bytes()
    assert main(["synth-reddit", "--comments", "0", "--out", str(out)]) == 2
    assert "--comments must be at least 1" in capsys.readouterr().err
