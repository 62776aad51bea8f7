import json

import pytest

from rejoinder.data.reddit import (
    RedditOptions,
    check_reddit_source,
    link_of,
    parse_comment,
    read_reddit_file,
    thread_dialogues,
)
from rejoinder.data.report import Report
from rejoinder.errors import RejoinderError


def comment(cid, parent, body="words here", t=0, score=1, author=None, link="t3_L"):
    return (cid, parent, link, body, author or f"u_{cid}", "pics", score, t)


def line(**fields):
    base = {
        "id": "c1", "parent_id": "t3_L", "link_id": "t3_L", "body": "hi there",
        "author": "me", "subreddit": "pics", "score": 3, "created_utc": 100,
    }  # fmt: skip
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_parse_comment_and_its_bad_inputs():
    report = Report()
    assert parse_comment(line(), report) == ("c1", "t3_L", "t3_L", "hi there", "me", "pics", 3, 100)
    # Pushshift has numbers as strings and floats in places: accepted.
    assert parse_comment(line(score="7", created_utc=1.5e9), report)[6:] == (7, 1_500_000_000)
    assert parse_comment(line(author="[deleted]"), report)[4] is None
    bad = [
        (b'{"id": "x", ', "malformed json"),
        (b'{"id": "\xff\xfe"}', "invalid utf-8"),
        (b"[1, 2]", "not a json object"),
        (line(body=...), "missing field: body"),
        (line(body=5), "wrong type: body"),
        (line(score="many"), "wrong type: score"),
        (line(parent_id="x_1"), "wrong type: parent_id or link_id"),
    ]
    for raw, _ in bad:
        assert parse_comment(raw, report) is None
    assert dict(report.bad_input) == {reason: 1 for _, reason in bad}


THREAD = [
    comment("a", "t3_L", "Top comment", t=1),
    comment("b", "t1_a", "Reply to a", t=2),
    comment("c", "t1_b", "Reply to b", t=3),
    comment("d", "t1_a", "Another reply to a", t=4),
    comment("e", "t1_a", "[deleted]", t=5),
    comment("f", "t1_e", "Reply under a deleted comment", t=6),
    comment("g", "t1_gone", "An orphan", t=7),
    comment("h", "t1_g", "Reply to the orphan", t=8),
    comment("a", "t3_L", "A duplicate id", t=9),
    comment("x", "t1_y", "In a cycle", t=10),
    comment("y", "t1_x", "In a cycle too", t=11),
    comment("z", "t1_z", "Its own parent", t=12),
]


def paths(options=None, submission=None):
    report = Report()
    dialogues, texts = thread_dialogues(
        "t3_L", THREAD, options or RedditOptions(), report, submission
    )
    return {d.id: d.texts for d in dialogues}, report, texts


def test_root_to_leaf_paths():
    got, report, texts = paths()
    assert got == {
        "reddit-c": ["Top comment", "Reply to a", "Reply to b"],
        "reddit-d": ["Top comment", "Another reply to a"],
        "reddit-h": ["An orphan", "Reply to the orphan"],
    }
    assert report.bad_input["duplicate comment id"] == 1
    assert report.bad_input["parent cycle"] == 3  # x, y and z: reached by no root
    assert report.counts["comments deleted or removed"] == 1
    assert report.counts["orphan comments"] == 1
    assert report.counts["paths shorter than min depth"] == 1  # f alone
    assert "[deleted]" not in texts and "Reply under a deleted comment" in texts


def test_extractor_options():
    got, _, _ = paths(RedditOptions(min_depth=1))
    assert got["reddit-f"] == ["Reply under a deleted comment"]
    got, _, _ = paths(RedditOptions(leaves_only=False))
    assert set(got) == {"reddit-b", "reddit-c", "reddit-d", "reddit-h"}
    got, _, _ = paths(RedditOptions(max_depth=2))
    assert got["reddit-b"] == ["Top comment", "Reply to a"] and "reddit-c" not in got
    got, report, _ = paths(RedditOptions(min_score=2))  # every comment scores 1
    # All but the duplicate and the deleted one (counted as deleted first).
    assert got == {} and report.counts["comments below min score"] == len(THREAD) - 2
    got, report, _ = paths(RedditOptions(max_turn_words=2, min_depth=1))
    assert got == {"reddit-a": ["Top comment"], "reddit-g": ["An orphan"]}
    assert report.counts["comments over max turn words"] == 8


def test_title_comes_first_for_top_level_paths_only():
    got, _, _ = paths(RedditOptions(title=True), ("t3_L", "A &amp; title", "op", "pics"))
    assert got["reddit-c"][0] == "A & title"
    assert got["reddit-h"][0] == "An orphan"  # an orphan's path has no known root


def test_every_dialogue_has_speakers_and_its_thread_as_group():
    report = Report()
    dialogues, _ = thread_dialogues("t3_L", THREAD, RedditOptions(), report)
    for d in dialogues:
        assert d.group == "t3_L" and d.subreddit == "pics"
        assert len(d.speakers) == len(d.texts)


def test_options_are_checked():
    with pytest.raises(ValueError, match="min_depth"):
        RedditOptions(min_depth=0)
    with pytest.raises(ValueError, match="max_depth"):
        RedditOptions(min_depth=3, max_depth=2)


def test_dump_files_give_records_keyed_by_their_thread(tmp_path):
    comments, submissions = tmp_path / "RC.ndjson", tmp_path / "RS.ndjson"
    comments.write_bytes(line() + b"\n\n" + line(id="c2", parent_id="t1_c1") + b"\n{oops\n")
    submissions.write_text(json.dumps({"id": "L", "title": "A title", "subreddit": "pics"}))
    args = {"comments": [comments], "submissions": [submissions]}
    assert check_reddit_source(args) == ([str(comments)], [str(submissions)])
    report = Report()
    pairs = [
        *read_reddit_file(str(submissions), "submissions", report),
        *read_reddit_file(str(comments), "comments", report),
    ]
    assert [link for link, _ in pairs] == ["t3_L"] * 3
    assert all(link_of(record) == link for link, record in pairs)
    assert report.counts == {"submissions read": 1, "comment lines read": 3, "comments parsed": 2}
    assert report.bad_input == {"malformed json": 1}
    with pytest.raises(RejoinderError, match="needs --comments"):
        check_reddit_source({"submissions": [submissions]})
    with pytest.raises(RejoinderError, match="does not exist"):
        check_reddit_source({"comments": [tmp_path / "nope.zst"]})


def test_a_lone_surrogate_is_repaired_and_the_thread_kept(tmp_path):
    # Valid JSON, invalid Unicode: as real dumps hold it. orjson refuses such lines.
    parent = line(body="broken \\ud800 text").replace(b"\\\\ud800", b"\\ud800")
    reply = line(id="c2", parent_id="t1_c1", body="a reply to it", created_utc=200)
    pair = line(id="c3", body="a real pair \\ud83d\\ude00").replace(b"\\\\u", b"\\u")
    dump = tmp_path / "RC.ndjson"
    dump.write_bytes(b"\n".join([parent, reply, pair]) + b"\n")
    report = Report()
    records = [r for _, r in read_reddit_file(str(dump), "comments", report)]
    assert [r[3] for r in records] == [
        "broken \ufffd text",
        "a reply to it",
        "a real pair \U0001f600",
    ]
    assert report.counts["texts with lone surrogates repaired"] == 1 and not report.bad_input
    dialogues, _ = thread_dialogues("t3_L", records, RedditOptions(), report)
    assert [d.texts for d in dialogues] == [["broken \ufffd text", "a reply to it"]]
