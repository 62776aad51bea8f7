"""`data build feedback`: preference pairs from the feedback kept in a session database."""

from __future__ import annotations

import json
import sqlite3

import pytest

from rejoinder.cli import main
from rejoinder.data.pairs import KINDS, iter_raw_pairs
from rejoinder.data.readers.feedback import read_feedback
from rejoinder.data.records import SPLITS
from rejoinder.data.report import Report
from rejoinder.errors import RejoinderError
from rejoinder.stores.sessions import SessionStore

LONE_LIKE = "a liked reply with nothing disliked or replaced beside it"
NO_LIKE = "disliked or replaced replies with no liked one beside them"


def filled(url: str) -> tuple[set[tuple], dict[str, dict[str, int]]]:
    """Fills a session database through the store; the pairs it must make, and the
    feedback that makes none (kind -> reason -> count)."""
    store = SessionStore(url)
    # a: disliked, regenerated, the new one liked and rewritten; then a second exchange
    # whose disliked reply is regenerated and the new one liked. A system prompt is no
    # part of any context.
    a = store.create({"system": "Be kind."})
    store.append(a, ("user", "hi"), ("assistant", "hello"))
    store.feedback(a, 1, rating="down")
    store.replace_last_reply(a, 1, "hey there")
    store.feedback(a, 1, rating="up", better="Hi! Nice to see you.")
    store.append(a, ("user", "how are you"), ("assistant", "fine"))
    store.feedback(a, 3, rating="down")
    store.replace_last_reply(a, 3, "good, thanks")
    store.feedback(a, 3, rating="up")
    # b: three replies at one message: down, replaced unrated, then the liked one.
    b = store.create()
    store.append(b, ("user", "yo"), ("assistant", "a"))
    store.feedback(b, 1, rating="down")
    store.replace_last_reply(b, 1, "b")
    store.replace_last_reply(b, 1, "c")
    store.feedback(b, 1, rating="up")
    # c: feedback that makes no pair: a lone thumbs up, a "better" reply that is the
    # bot's own, a lone thumbs down, a regeneration nothing was said of, and a rating
    # taken back (no feedback left: nothing to count).
    c = store.create()
    store.append(c, ("user", "one"), ("assistant", "lone like"))
    store.feedback(c, 1, rating="up")
    store.append(c, ("user", "two"), ("assistant", "same"))
    store.feedback(c, 3, better="  same ")
    store.append(c, ("user", "three"), ("assistant", "lone dislike"))
    store.feedback(c, 5, rating="down")
    store.append(c, ("user", "four"), ("assistant", "first try"))
    store.replace_last_reply(c, 7, "second try")
    store.append(c, ("user", "five"), ("assistant", "taken back"))
    store.feedback(c, 9, rating="up")
    store.feedback(c, 9, rating=None)
    # d: no feedback at all.
    d = store.create()
    store.append(d, ("user", "quiet"), ("assistant", "indeed"))
    store.close()

    def pair(sid, suffix, kind, context, chosen, rejected, fb=(None, None)):
        return (f"{sid}-{suffix}-{kind}", kind, sid, tuple(context), chosen, rejected, *fb)

    expected = {
        pair(a, "1-1-0", "thumbs", ["hi"], "hey there", "hello", (1.0, -1.0)),
        pair(a, "1-1", "rewrite", ["hi"], "Hi! Nice to see you.", "hey there"),
        pair(
            a,
            "3-1-0",
            "thumbs",
            ["hi", "hey there", "how are you"],
            "good, thanks",
            "fine",
            (1.0, -1.0),
        ),  # fmt: skip
        pair(b, "1-2-0", "thumbs", ["yo"], "c", "a", (1.0, -1.0)),
        pair(b, "1-2-1", "thumbs", ["yo"], "c", "b", (1.0, None)),
    }
    skipped = {
        "thumbs": {LONE_LIKE: 1, NO_LIKE: 2},
        "rewrite": {"the better reply is the bot's own": 1},
    }
    return expected, skipped


def as_tuple(p) -> tuple:
    return (
        p.id, p.kind, p.group, tuple(p.context), p.chosen, p.rejected,
        p.chosen_feedback, p.rejected_feedback,
    )  # fmt: skip


def test_the_store_makes_exactly_the_pairs_its_feedback_supports(tmp_path):
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    expected, skipped = filled(url)
    report = Report()
    pairs = list(read_feedback(url, report=report))
    assert {as_tuple(p) for p in pairs} == expected
    assert len(pairs) == len(expected)
    assert {p.source for p in pairs} == {"feedback"} and {p.kind for p in pairs} <= set(KINDS)
    assert report.to_dict()["not_made"] == skipped
    # Read twice, the same pairs under the same ids.
    assert [as_tuple(p) for p in read_feedback(url, report=Report())] == [
        as_tuple(p) for p in pairs
    ]


def test_data_build_feedback_writes_the_pairs_and_counts_what_it_skipped(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    expected, skipped = filled(url)
    out = tmp_path / "pairs"
    rc = main(["data", "build", "feedback", "--db", url, "--out", str(out), "--valid", "0.4"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"wrote {len(expected)} pairs" in printed and "pairs not made:" in printed
    assert LONE_LIKE in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "pairs"
    assert {k: v["total"] for k, v in manifest["kinds"].items()} == {"thumbs": 4, "rewrite": 1}
    assert manifest["not_made"] == skipped
    written = {split: [as_tuple(p) for p in iter_raw_pairs(out, split)] for split in SPLITS}
    assert {p for ps in written.values() for p in ps} == expected
    assert sum(map(len, written.values())) == len(expected)
    for group in {p[2] for p in expected}:  # one session's pairs share a split
        assert sum(any(p[2] == group for p in ps) for ps in written.values()) == 1


def test_a_database_without_sessions_is_refused_naming_db(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path / 'nowhere.db'}"
    with pytest.raises(RejoinderError, match="--db .*nowhere.db: no such file"):
        list(read_feedback(missing, report=Report()))
    assert not (tmp_path / "nowhere.db").exists()  # nothing made where nothing was

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(RejoinderError, match="--db .*other.db holds no chat sessions"):
        list(read_feedback(f"sqlite:///{other}", report=Report()))
    with sqlite3.connect(other) as c:  # and left as it was
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"notes"}

    garbage = tmp_path / "garbage.db"
    garbage.write_text("this is no database\n" * 100)
    with pytest.raises(RejoinderError, match="--db .*garbage.db: cannot read it"):
        list(read_feedback(f"sqlite:///{garbage}", report=Report()))

    rc = main(["data", "build", "feedback", "--db", missing, "--out", str(tmp_path / "o")])
    assert rc == 2 and "--db" in capsys.readouterr().err
    rc = main(["data", "build", "feedback", "--out", str(tmp_path / "o")])
    assert rc == 2 and "source feedback needs --db URL" in capsys.readouterr().err
