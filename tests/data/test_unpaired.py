"""Unpaired feedback datasets (KTO's data): `data build unpaired FILE` and `data build
feedback --kind unpaired`; neither they nor pairs are read as the other."""

from __future__ import annotations

import json

import pytest

from rejoinder.cli import main
from rejoinder.data.pairs import RawPair, read_pairs, write_pairs
from rejoinder.data.unpaired import Unpaired, read_unpaired
from rejoinder.errors import RejoinderError
from rejoinder.stores.sessions import SessionStore

LINES = [
    {"context": ["hi"], "reply": "hello there!", "label": True, "group": "s1"},
    {"context": ["hi"], "reply": "go away", "label": "undesirable", "group": "s1"},
    {"context": "how are you", "reply": "fine, you?", "label": 1},
    {"context": [{"role": "user", "content": "bye"}], "reply": "whatever", "label": 0},
    {"reply": "good morning", "label": "Desirable", "id": 7},
    {"context": ["x"], "reply": "   ", "label": 1},
    {"context": ["x"], "reply": "y", "label": "maybe"},
    {"context": ["x"], "reply": "y"},
    {"context": 3, "reply": "y", "label": True},
    [1, 2],
]


@pytest.fixture
def built(tmp_path):
    src = tmp_path / "rated.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in LINES) + "\n{not json\n\n")
    out = tmp_path / "ds"
    assert main(["data", "build", "unpaired", str(src), "--out", str(out), "--valid", "0.3"]) == 0
    return out


def test_a_build_counts_desirable_and_undesirable_per_split_and_every_bad_line(built, capsys):
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["kind"] == "unpaired"
    assert manifest["replies"]["total"] == 5
    labels = manifest["labels"]
    assert labels["desirable"]["total"] == 3 and labels["undesirable"]["total"] == 2
    for split in ("train", "valid", "test"):
        rows = read_unpaired(built, split)
        assert sum(r.desirable for r in rows) == labels["desirable"][split]
        assert sum(not r.desirable for r in rows) == labels["undesirable"][split]
        assert manifest["replies"][split] == len(rows)
    assert manifest["bad_input"] == {
        "empty reply": 1,
        "unknown label": 1,
        "missing field: label": 1,
        "wrong type: context": 1,
        "wrong type: line": 1,
        "malformed json": 1,
    }
    rows = {r.reply: r for s in ("train", "valid", "test") for r in read_unpaired(built, s)}
    assert rows["hello there!"].group == rows["go away"].group == "s1"
    assert rows["whatever"] == Unpaired(("bye",), "whatever", False, rows["whatever"].group,
                                        "given", rows["whatever"].id)  # fmt: skip
    assert rows["good morning"].context == () and rows["good morning"].id == "7"
    assert main(["data", "show", str(built), "-n", "1"]) == 0
    assert "rated replies" in capsys.readouterr().out


def test_unpaired_and_pairs_are_never_read_as_each_other(built, tmp_path):
    with pytest.raises(RejoinderError, match="holds unpaired.*needs pairs.*data build pairs"):
        read_pairs(built, "train")
    pairs = tmp_path / "pairs"
    write_pairs(pairs, "train", [RawPair("p1", "given", "g", ["hi"], "hello!", "meh")])
    (pairs / "manifest.json").write_text(json.dumps({"kind": "pairs"}))
    with pytest.raises(RejoinderError, match="holds pairs.*needs unpaired.*--kind unpaired"):
        read_unpaired(pairs, "train")
    # KTO reads a pairs dataset as unpaired rows: chosen desirable, rejected undesirable.
    rows = read_unpaired(pairs, "train", from_pairs=True)
    assert [(r.context, r.reply, r.desirable) for r in rows] == [
        (("hi",), "hello!", True),
        (("hi",), "meh", False),
    ]
    assert read_unpaired(built, "train", from_pairs=True) == read_unpaired(built, "train")


def test_an_unpaired_source_is_not_built_with_others(tmp_path, capsys):
    src = tmp_path / "rated.jsonl"
    src.write_text(json.dumps(LINES[0]) + "\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"context": ["a"], "chosen": "b", "rejected": "c"}) + "\n")
    rc = main(
        ["data", "build", "unpaired", str(src), "pairs", str(pairs), "--out", str(tmp_path / "o")]
    )
    assert rc == 2 and "pairs makes pairs; build them in another run" in capsys.readouterr().err
    rc = main(
        ["data", "build", "unpaired", str(src), "--filters", "all", "--out", str(tmp_path / "o")]
    )
    assert rc == 2 and "keeps every rated reply" in capsys.readouterr().err


def filled(url: str) -> set[tuple]:
    """A session database with every kind of feedback; the rows KTO must get from it,
    as (reply, desirable, kind, context)."""
    store = SessionStore(url)
    a = store.create()
    store.append(a, ("user", "hi"), ("assistant", "hello"))
    store.feedback(a, 1, rating="down")
    store.replace_last_reply(a, 1, "hey there")
    store.feedback(a, 1, rating="up", better="Hi! Nice to see you.")
    store.append(a, ("user", "how are you"), ("assistant", "first try"))
    store.replace_last_reply(a, 3, "second try")  # regenerated, nothing said of either
    store.append(a, ("user", "and you?"), ("assistant", "same"))
    store.feedback(a, 5, better=" same ")  # the bot's own: no row
    b = store.create()
    store.append(b, ("user", "yo"), ("assistant", "liked then regenerated"))
    store.feedback(b, 1, rating="up")
    store.replace_last_reply(b, 1, "new one")  # the liked one stays desirable
    store.flags.add(
        [{"who": "reply", "text": "a nasty reply", "layer": "words", "label": "x", "score": 1.0},
         {"who": "user", "text": "a nasty message", "layer": "words", "label": "x", "score": 1.0}],
        ["be nice"], "a kind reply", "stop", sid=b, seqs={"reply": 3, "user": 2},
    )  # fmt: skip
    store.close()
    return {
        ("hello", False, "thumbs", ("hi",)),
        ("hey there", True, "thumbs", ("hi",)),
        ("Hi! Nice to see you.", True, "rewrite", ("hi",)),
        ("first try", False, "regenerated", ("hi", "hey there", "how are you")),
        ("liked then regenerated", True, "thumbs", ("yo",)),
        ("a nasty reply", False, "flagged", ("be nice",)),
    }


def test_feedback_kind_unpaired_rates_every_reply_people_spoke_of(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    expected = filled(url)
    out = tmp_path / "ds"
    rc = main(["data", "build", "feedback", "--db", url, "--kind", "unpaired", "--out", str(out)])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "unpaired" and manifest["sources"][0]["makes"] == "unpaired"
    assert manifest["labels"]["desirable"]["total"] == 3
    assert manifest["labels"]["undesirable"]["total"] == 3
    assert manifest["not_made"] == {
        "rewrite": {"the better reply is the bot's own": 1},
        "flagged": {"a user's message, not a reply": 1},
    }
    rows = {(r.reply, r.desirable, r.kind, r.context)
            for s in ("train", "valid", "test") for r in read_unpaired(out, s)}  # fmt: skip
    assert rows == expected
    # The default is still pairs: nothing existing changes.
    assert main(["data", "build", "feedback", "--db", url, "--out", str(tmp_path / "p")]) == 0
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["kind"] == "pairs"
