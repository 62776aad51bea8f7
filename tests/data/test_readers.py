"""The corpus readers: every layout gives the same records, and bad input is counted, not fatal."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import re

import pytest

from rejoinder import RejoinderError
from rejoinder.data.io import open_lines
from rejoinder.data.readers import SOURCES, chatterbot
from rejoinder.data.readers.chatterbot import read_chatterbot
from rejoinder.data.readers.chitchat import read_chitchat
from rejoinder.data.readers.dailydialog import read_dailydialog
from rejoinder.data.readers.jsonl import read_jsonl
from rejoinder.data.readers.qa import read_qa
from rejoinder.data.report import Report

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture
def report():
    return Report()


def view(dialogues):
    """What a reader said, in a form that compares across layouts."""
    return [
        (d.id, d.source, dict(d.meta), [(t.text, t.speaker, dict(t.labels)) for t in d.turns])
        for d in dialogues
    ]


# ---------------------------------------------------------------------------- DailyDialog

# Three dialogues as the original release writes them (spaces before punctuation).
DD = [
    {
        "dialog": ["Say , Jim , how about going for a few beers after dinner ?", "Sure ."],
        "act": [3, 4],
        "emotion": [0, 4],
    },
    {
        "dialog": ["Can you do push-ups ?", "Of course I can .", "How many ?", "Forty ."],
        "act": [2, 1, 2, 1],
        "emotion": [0, 0, 6, 0],
    },
    {
        "dialog": ["I 'm exhausted .", "Go to bed then ."],
        "act": [0, 3],
        "emotion": [5, 0],
    },
]


def write_dd_hf_jsonl(path):
    # Hugging Face's daily_dialog keeps the space that followed each turn.
    rows = [{**d, "dialog": [t + " " for t in d["dialog"]]} for d in DD]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_dd_parquet(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({key: [d[key] for d in DD] for key in ("dialog", "act", "emotion")})
    pq.write_table(table, path)


def write_dd_text_release(folder, split=None):
    folder.mkdir(parents=True, exist_ok=True)

    def name(kind):
        if split is None:
            return f"dialogues_{kind}.txt"
        return f"dialogues_{split}.txt" if kind == "text" else f"dialogues_{kind}_{split}.txt"

    text = "".join("".join(f"{t} __eou__ " for t in d["dialog"]).rstrip() + "\n" for d in DD)
    (folder / name("text")).write_text(text, encoding="utf-8")
    for kind in ("act", "emotion"):
        lines = "".join(" ".join(map(str, d[kind])) + " \n" for d in DD)
        (folder / name(kind)).write_text(lines)


def test_dailydialog_layouts_give_the_same_dialogues(tmp_path, report):
    hf = tmp_path / "hf"
    hf.mkdir()
    write_dd_hf_jsonl(hf / "train.jsonl")
    (hf / "dataset_info.json").write_text(json.dumps({"citation": "..."}, indent=2))
    pq_dir = tmp_path / "parquet"
    pq_dir.mkdir()
    write_dd_parquet(pq_dir / "train.parquet")
    release = tmp_path / "ijcnlp_dailydialog"
    write_dd_text_release(release / "train", split="train")
    # The original zip also has the whole corpus at the top: it must not be read twice.
    write_dd_text_release(release)
    plain = tmp_path / "plain" / "train"
    write_dd_text_release(plain)  # dialogues_text.txt inside a train/ folder

    from_jsonl = view(read_dailydialog(hf, report=report))
    from_file = view(read_dailydialog(hf / "train.jsonl", report=report))
    from_parquet = view(read_dailydialog(pq_dir, report=report))
    from_release = view(read_dailydialog(release, report=report))
    from_plain = view(read_dailydialog(plain.parent, report=report))

    assert len(from_jsonl) == len(DD)
    assert from_jsonl == from_file == from_parquet == from_release == from_plain
    assert not report.bad_input
    assert [d[0] for d in from_jsonl] == [f"dailydialog-train-{i}" for i in range(len(DD))]
    for (_, source, meta, turns), d in zip(from_jsonl, DD, strict=True):
        assert source == "dailydialog" and meta == {"split": "train"}
        assert [t[0] for t in turns] == d["dialog"]  # stripped, spacing kept
        assert [t[1] for t in turns] == ["A", "B", "A", "B"][: len(turns)]


def test_dailydialog_labels_are_names(tmp_path, report):
    write_dd_hf_jsonl(tmp_path / "test.jsonl")
    dialogues = list(read_dailydialog(tmp_path / "test.jsonl", report=report))
    first, second, third = (d.turns for d in dialogues)
    assert first[0].labels == {"act": "directive", "emotion": "no_emotion"}
    assert first[1].labels == {"act": "commissive", "emotion": "happiness"}
    assert [t.labels["act"] for t in second] == ["question", "inform", "question", "inform"]
    assert second[2].labels["emotion"] == "surprise"
    assert third[0].labels == {"act": None, "emotion": "sadness"}  # act 0: unknown
    assert dialogues[0].id == "dailydialog-test-0" and dialogues[0].meta == {"split": "test"}


def test_dailydialog_mismatched_labels_keep_the_text(tmp_path, report):
    rows = [
        {"dialog": ["Hi .", "Hello ."], "act": [1], "emotion": [0, 0]},  # one act too few
        {"dialog": ["Bye .", "", "See you ."], "act": [1, 1, 1], "emotion": [0, 0, 0]},
        {"dialog": "not a list", "act": [], "emotion": []},
        {"act": [1]},
    ]
    lines = [json.dumps(r) for r in rows] + ["{oops"]
    (tmp_path / "dev.jsonl").write_text("\n".join(lines) + "\n")
    dialogues = list(read_dailydialog(tmp_path, report=report))
    assert [d.texts for d in dialogues] == [["Hi .", "Hello ."]]
    assert all(not t.labels for t in dialogues[0].turns)
    assert report.counts["dailydialog labels dropped: length mismatch"] == 1
    # Without its empty turn, A would answer A: who said what would be lost.
    assert report.counts["empty turns skipped"] == 1
    assert report.bad_input == {
        "wrong type: dialog": 1,
        "missing field: dialog": 1,
        "malformed json": 1,
        "empty turn after a turn without a role": 1,
    }


# ---------------------------------------------------------------------------- Chit-Chat


@pytest.fixture(scope="module")
def chitchat():
    report = Report()
    return list(read_chitchat(report=report)), report


def test_chitchat_corpus(chitchat):
    import importlib.util
    from pathlib import Path

    dialogues, report = chitchat
    assert len(dialogues) == 7168
    assert not report.bad_input
    assert len({d.id for d in dialogues}) == len(dialogues)
    assert all(d.source == "chitchat" and d.id.startswith("chitchat-") for d in dialogues)
    for d in dialogues:
        assert all(a.speaker != b.speaker for a, b in zip(d.turns, d.turns[1:], strict=False))
        assert all(t.text == t.text.strip() and t.speaker for t in d.turns)

    # Consecutive messages from one sender are one turn: no message text is lost.
    origin = importlib.util.find_spec("chitchat_dataset").origin
    raw = json.loads((Path(origin).parent / "dataset.json").read_text(encoding="utf-8"))
    messages = 0
    for d in dialogues:
        conv = raw[d.id.removeprefix("chitchat-")]
        texts = [m["text"].strip() for group in conv["messages"] for m in group]
        messages += len(texts)
        assert " ".join(d.texts) == " ".join(t for t in texts if t)
    assert sum(len(d) for d in dialogues) < messages


def test_chitchat_merges_across_groups_and_skips_bad_conversations(tmp_path, report):
    def msg(text, sender):
        return {"text": text, "timestamp": "2018-05-02T19:38:15Z", "sender": sender}

    data = {
        "c1": {
            "messages": [
                [msg("Hello", "a"), msg(" How are you? ", "a")],
                [msg("Still there?", "a")],  # the same sender again: the same turn
                [msg("Yes", "b"), msg("", "b")],
                [msg("   ", "a")],  # empty: skipped, so b's next message joins b's turn
                [msg("fine", "b")],
            ],
            "prompt": "Say hi",
        },
        "c2": {"messages": "oops"},
        "c3": {"ratings": {}},
        "c4": {"messages": [[{"text": "no sender"}]]},
        "c5": {"messages": [[msg("", "a")]]},
    }
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(data))
    dialogues = list(read_chitchat(path, report=report))
    assert view(dialogues) == [
        (
            "chitchat-c1",
            "chitchat",
            {"prompt": "Say hi"},
            [("Hello How are you? Still there?", "a", {}), ("Yes fine", "b", {})],
        )
    ]
    assert report.bad_input == {
        "wrong type: messages": 1,
        "missing field: messages": 1,
        "missing field: sender": 1,
        "empty dialogue": 1,
    }
    assert report.counts["empty turns skipped"] == 3


# ---------------------------------------------------------------------------- ChatterBot


def test_chatterbot_chinese():
    report = Report()
    dialogues = list(read_chatterbot("Chinese", report=report))  # case-insensitive
    assert dialogues
    assert all(len(d) >= 1 and d.source == "chatterbot" for d in dialogues)
    assert len({d.id for d in dialogues}) == len(dialogues)
    assert all(d.id.startswith(f"chatterbot-chinese-{d.meta['category']}-") for d in dialogues)
    assert sum(bool(CJK.search(" ".join(d.texts))) for d in dialogues) > len(dialogues) / 2
    assert all(t.text == t.text.strip() for d in dialogues for t in d.turns)


def test_chatterbot_numbers_nulls_and_bad_entries(tmp_path, report, monkeypatch):
    folder = tmp_path / "Klingon"
    folder.mkdir()
    (folder / "misc.yml").write_text(
        "categories:\n- misc\nconversations:\n"
        "- - How many legs has a spider?\n  - 8\n"
        "- - Hello\n  - null\n  - Hi\n"
        "- - null\n"
        "- just a string - not a list\n",
        encoding="utf-8",
    )
    (folder / "broken.yml").write_text("conversations: [unclosed\n")
    (folder / "empty.yml").write_text("categories: [x]\n")
    monkeypatch.setattr(chatterbot, "corpus_root", lambda: tmp_path)
    dialogues = list(read_chatterbot("klingon", report=report))
    assert [d.texts for d in dialogues] == [["How many legs has a spider?", "8"]]
    assert dialogues[0].id == "chatterbot-Klingon-misc-0"
    assert dialogues[0].meta == {"category": "misc"}
    assert report.counts["empty turns skipped"] == 2
    assert report.bad_input == {
        "empty turn after a turn without a role": 1,
        "empty dialogue": 1,
        "wrong type: conversation": 1,
        "malformed yaml": 1,
        "missing field: conversations": 1,
    }


# ---------------------------------------------------------------------------- JSON lines

JSONL_GOOD = [
    json.dumps(["Hi", "  Hello!  "]),
    json.dumps(
        {
            "id": "x1",
            "turns": [
                "   ",  # dropped: a leading empty turn changes nobody's role
                {"text": "How are you?", "speaker": "u", "emotion": "joy"},
                "Fine, thanks",
            ],
            "style": "polite",
            "tags": ["a", "b"],
        }
    ),
    "",
    json.dumps(
        {
            "messages": [
                {"role": "system", "content": "Be nice."},
                {"role": "user", "content": "Hey"},
                {"role": "assistant", "content": "Hello there"},
            ],
            "source": "chat",
        },
        ensure_ascii=False,
    ),
]
JSONL_BAD = {
    "{not json": "malformed json",
    json.dumps({"turns": "abc"}): "wrong type: turns",
    json.dumps({"foo": 1}): "missing field: turns",
    json.dumps({"turns": ["", "  "]}): "empty dialogue",
    json.dumps(42): "wrong type: line",
    json.dumps({"turns": [1, 2]}): "wrong type: turn",
    json.dumps({"messages": [{"content": "no role"}]}): "missing field: role",
    json.dumps(["Hi", "", "Hello"]): "empty turn after a turn without a role",
}


def jsonl_bytes():
    lines = [line.encode() for line in JSONL_GOOD + list(JSONL_BAD)]
    lines.append(b'["caf\xe9 au lait"]')  # Latin-1, not UTF-8
    return b"\n".join(lines) + b"\n"


def test_jsonl_shapes_and_bad_lines(tmp_path, report):
    path = tmp_path / "chats.jsonl"
    path.write_bytes(jsonl_bytes())
    dialogues = list(read_jsonl(path, report=report))
    assert view(dialogues) == [
        ("chats-1", "jsonl", {}, [("Hi", None, {}), ("Hello!", None, {})]),
        (
            "x1",
            "jsonl",
            {"style": "polite"},
            [("How are you?", "u", {"emotion": "joy"}), ("Fine, thanks", None, {})],
        ),
        (
            "chats-4",
            "chat",
            {"system": "Be nice."},  # a system message is the dialogue's system prompt
            [("Hey", "user", {}), ("Hello there", "assistant", {})],
        ),
    ]
    expected = {}
    for reason in [*JSONL_BAD.values(), "invalid utf-8"]:
        expected[reason] = expected.get(reason, 0) + 1
    assert report.bad_input == expected
    assert report.counts["system messages kept as the system prompt"] == 1
    assert report.counts["empty turns skipped"] == 4


def compress(kind, data):
    if kind == "gz":
        return gzip.compress(data)
    if kind == "bz2":
        return bz2.compress(data, compresslevel=1)  # 100 kB blocks
    if kind == "xz":
        return lzma.compress(data)
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("kind", ["gz", "zst", "bz2", "xz"])
def test_compressed_jsonl_reads_like_plain(tmp_path, kind):
    data = jsonl_bytes()
    (tmp_path / "chats.jsonl").write_bytes(data)
    (tmp_path / f"chats.jsonl.{kind}").write_bytes(compress(kind, data))
    plain, packed = Report(), Report()
    expected = view(read_jsonl(tmp_path / "chats.jsonl", report=plain))
    assert view(read_jsonl(tmp_path / f"chats.jsonl.{kind}", report=packed)) == expected
    assert packed.to_dict() == plain.to_dict()


def many_lines(n=6000):
    # Hashes do not compress well, so a cut in the middle leaves many whole lines before it.
    return [
        json.dumps([f"question {i} {hashlib.sha256(str(i).encode()).hexdigest()}", f"answer {i}"])
        for i in range(n)
    ]


@pytest.mark.parametrize("kind", ["zst", "gz", "bz2", "xz"])
def test_truncated_file_yields_the_lines_before_the_cut(tmp_path, kind):
    lines = many_lines()
    data = ("\n".join(lines) + "\n").encode()
    (tmp_path / "big.jsonl").write_bytes(data)
    packed = compress(kind, data)
    (tmp_path / f"big.jsonl.{kind}").write_bytes(packed[: len(packed) // 2])
    full = view(read_jsonl(tmp_path / "big.jsonl", report=Report()))
    report = Report()
    got = view(read_jsonl(tmp_path / f"big.jsonl.{kind}", report=report))
    assert 0 < len(got) < len(full)
    assert got == full[: len(got)]
    assert report.bad_input == {"truncated file": 1}  # no half line read as malformed json


def test_zstd_frames_and_open_lines(tmp_path, report):
    import zstandard

    first, second = b"one\ntwo\n", b"three\nfour"  # no newline at the very end
    path = tmp_path / "x.txt.zst"
    c = zstandard.ZstdCompressor()
    path.write_bytes(c.compress(first) + c.compress(second))
    assert list(open_lines(path, report)) == [b"one\n", b"two\n", b"three\n", b"four"]
    (tmp_path / "x.txt").write_bytes(first + second)
    assert list(open_lines(tmp_path / "x.txt", report)) == [b"one\n", b"two\n", b"three\n", b"four"]
    assert not report.bad_input


@pytest.mark.parametrize("kind", ["gz", "zst", "bz2", "xz"])
def test_corrupt_compressed_file_is_counted(tmp_path, report, kind):
    path = tmp_path / f"junk.jsonl.{kind}"
    path.write_bytes(b"this is not compressed data at all\n" * 20)
    assert list(read_jsonl(path, report=report)) == []
    assert sum(report.bad_input.values()) == 1
    assert set(report.bad_input) <= {"corrupt compressed file", "truncated file"}


# ---------------------------------------------------------------------------- Q&A


def test_qa_pairs(tmp_path, report):
    path = tmp_path / "qa.tsv"
    lines = [
        "你好吗？\t我很好，谢谢。",
        "no tab on this line",
        "",
        "empty answer\t   ",
        " a \tb\tc ",
        "What is 2+2?\t4\r",
    ]
    path.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe\tbad bytes\n")
    dialogues = list(read_qa(path, report=report))
    assert view(dialogues) == [
        ("qa-1", "qa", {}, [("你好吗？", None, {}), ("我很好，谢谢。", None, {})]),
        ("qa-5", "qa", {}, [("a", None, {}), ("b\tc", None, {})]),
        ("qa-6", "qa", {}, [("What is 2+2?", None, {}), ("4", None, {})]),
    ]
    assert report.bad_input == {"no tab": 1, "empty question or answer": 1, "invalid utf-8": 1}


# ---------------------------------------------------------------------------- requests


@pytest.mark.parametrize("name", ["dailydialog", "jsonl", "qa", "chitchat", "pairs"])
def test_missing_path_is_a_request_error(tmp_path, name):
    with pytest.raises(RejoinderError, match="no such file"):
        list(SOURCES[name].read(tmp_path / "nowhere.jsonl", report=Report()))


def test_unknown_language_lists_the_available_ones():
    with pytest.raises(RejoinderError, match="available: .*chinese.*english"):
        list(read_chatterbot("klingon", report=Report()))


def test_dailydialog_directory_without_its_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RejoinderError, match="no DailyDialog files"):
        list(read_dailydialog(tmp_path, report=Report()))


def test_registry_names_every_reader():
    readers = {name: kind.read for name, kind in SOURCES.items() if not kind.threads}
    assert set(readers) == {
        "dailydialog",
        "chitchat",
        "jsonl",
        "qa",
        "chatterbot",
        "pairs",
        "feedback",
        "labels",
        "unpaired",
    }
    assert [name for name, kind in SOURCES.items() if kind.pairs] == ["pairs", "feedback"]
    assert [name for name, kind in SOURCES.items() if kind.labels] == ["labels"]
    assert all(callable(f) for f in readers.values())


def test_lone_surrogates_in_json_readers_are_repaired(tmp_path, report):
    path = tmp_path / "chats.jsonl"
    path.write_text('["Hi \\udc00", "Hello \\ud83d\\ude00"]\n{"turns": ["ok", "\\ud800"]}\n')
    got = [d.texts for d in SOURCES["jsonl"].read(path, report=report)]
    assert got == [["Hi \ufffd", "Hello \U0001f600"], ["ok", "\ufffd"]]
    assert report.counts["texts with lone surrogates repaired"] == 2 and not report.bad_input
