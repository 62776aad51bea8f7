"""`rejoinder data build … --pairs` and `data build pairs FILE`: datasets of preference pairs."""

import json
import shutil

import pyarrow.dataset as pads
import pytest

from rejoinder.cli import main
from rejoinder.data.build import BuildConfig, Source, build
from rejoinder.data.pairs import FEEDBACK_KINDS, dataset_kind, read_pairs
from rejoinder.data.records import SPLITS, read_dialogues
from rejoinder.data.reddit import RedditOptions
from rejoinder.data.stages import split_of
from rejoinder.errors import RejoinderError
from rejoinder.testing.reddit import synth_reddit

KINDS = "updown,width,depth,human_vs_rand"


def rows(out):
    return {
        split: sorted(
            pads.dataset(str(out / split), format="parquet").to_table().to_pylist(),
            key=lambda r: r["id"],
        )
        for split in SPLITS
    }


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    root = tmp_path_factory.mktemp("reddit-pairs")
    synth_reddit(4000, root / "RC.zst", submissions_out=root / "RS.zst", seed=5)
    return root


def pairs_config(dump, out, **kw):
    return BuildConfig(
        sources=[
            Source("reddit", {"comments": [dump / "RC.zst"], "submissions": [dump / "RS.zst"]})
        ],
        out=str(out),
        reddit=RedditOptions(title=True),
        pairs=KINDS,
        valid=0.1,
        test=0.1,
        **kw,
    )


@pytest.fixture(scope="module")
def built(dump, tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs") / "pairs"
    return out, build(pairs_config(dump, out))


def test_a_pairs_dataset_and_its_manifest(built):
    out, manifest = built
    assert dataset_kind(out) == "pairs" and manifest["kind"] == "pairs"
    got = rows(out)
    assert {s: len(got[s]) for s in SPLITS} == {s: manifest["pairs"][s] for s in SPLITS}
    kinds = manifest["kinds"]
    assert set(kinds) == set(KINDS.split(",")) and all(k["total"] for k in kinds.values())
    for split in SPLITS:
        assert sum(k[split] for k in kinds.values()) == manifest["pairs"][split]
    assert set(FEEDBACK_KINDS) <= set(manifest["not_made"])
    for kind in FEEDBACK_KINDS:
        assert manifest["not_made"][kind]["siblings too far apart in time"] > 0
    for split, split_rows in got.items():
        for r in split_rows:
            assert split_of(r["group"], 0.1, 0.1) == split  # by thread, as dialogues
            assert r["chosen"] != r["rejected"] and r["context"]
            if r["kind"] in FEEDBACK_KINDS:
                assert r["chosen_feedback"] > r["rejected_feedback"]
    assert len(read_pairs(out, "train")) == manifest["pairs"]["train"]


def test_pairs_and_dialogues_are_never_read_as_each_other(built, tmp_path, capsys):
    out, manifest = built
    with pytest.raises(RejoinderError, match="holds pairs, but reading dialogues needs dialogues"):
        read_dialogues(out, "train")
    assert main(["data", "show", str(out), "-n", "2"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {manifest['pairs']['total']} pairs" in text
    assert text.count("chosen: ") == 2 and "pairs not made:" in text


def test_spark_makes_the_same_pairs(built, dump, tmp_path):
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("the Spark engine needs Java")
    out, manifest = built
    spark = build(pairs_config(dump, tmp_path / "spark", engine="spark", master="local[2]"))
    assert rows(out) == rows(tmp_path / "spark")
    for key in ("pairs", "kinds", "not_made", "dropped", "bad_input", "counts"):
        assert spark[key] == manifest[key], key


def test_a_dump_without_scores_says_which_kinds_it_cannot_make(tmp_path, capsys):
    # c1 and c2 reply to c0, ten seconds apart; c3 and c4 reply to c1: c1 is wider.
    parents = ["t3_L", "t1_c0", "t1_c0", "t1_c1", "t1_c1"]
    lines = [
        {"id": f"c{i}", "parent_id": parent, "link_id": "t3_L", "subreddit": "pics",
         "body": f"reply number {i} to the thread", "created_utc": 10 * i}
        for i, parent in enumerate(parents)
    ]  # fmt: skip
    dump = tmp_path / "RC.ndjson"
    dump.write_text("".join(json.dumps(x) + "\n" for x in lines))
    base = ["data", "build", "reddit", "--comments", str(dump), "--filters", "none"]
    assert main([*base, "--pairs", "updown", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "no comment of reddit has a score" in err and "human_vs_rand" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RC.ndjson"]
    assert main([*base, "--pairs", "updown,width", "--valid", "0", "--test", "0",
                 "--out", str(tmp_path / "b")]) == 0  # fmt: skip
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert "has a score" in manifest["notes"]["updown"]
    assert manifest["kinds"]["updown"]["total"] == 0 < manifest["kinds"]["width"]["total"]
    assert "no updown pairs: no comment of reddit has a score" in capsys.readouterr().out


def test_bad_requests_name_the_fix_and_leave_nothing(tmp_path, dump, capsys):
    out = str(tmp_path / "out")
    cases = [
        (["chitchat", "--pairs", "updown"], "the source chitchat has no feedback"),
        (["reddit", "--comments", str(dump / "RC.zst"), "--pairs", "updown,likes"], "'likes'"),
        (["reddit", "--comments", str(dump / "RC.zst"), "--pairs", "human_vs_machine"],
         "rejoinder data negatives"),
        (["pairs", str(tmp_path / "p.jsonl"), "chitchat"], "build its dialogues in another run"),
        (["pairs", str(tmp_path / "p.jsonl"), "reddit", "--comments", str(dump / "RC.zst")],
         "add --pairs KINDS"),
    ]  # fmt: skip
    for args, message in cases:
        assert main(["data", "build", *args, "--out", out]) == 2
        assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_pairs_from_jsonl_with_bad_lines(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text(
        '{"context": ["Hi", "Hello! What now?"], "chosen": "Tea, please.", "rejected": "no"}\n'
        '{"context": "Hi", "chosen": {"text": "Hey"}, "rejected": "Go away", "kind": "thumbs"}\n'
        "\n"
        '{"context": [], "chosen": "a", "rejected": "a"}\n'
        '{"context": ["x"], "chosen": "a"}\n'
        "{broken\n"
        '{"context": ["x"], "chosen": "b\\ud800", "rejected": "c", "group": "g1"}\n'
    )
    manifest = build(
        BuildConfig(
            sources=[Source("pairs", {"path": str(path)})], out=str(tmp_path / "o"), valid=0, test=0
        )  # fmt: skip
    )
    assert manifest["kind"] == "pairs" and manifest["pairs"]["total"] == 3
    assert manifest["kinds"] == {
        "given": {"train": 2, "valid": 0, "test": 0, "total": 2},
        "thumbs": {"train": 1, "valid": 0, "test": 0, "total": 1},
    }
    assert manifest["bad_input"] == {
        "chosen and rejected are the same": 1,
        "missing field: rejected": 1,
        "malformed json": 1,
    }
    samples = manifest["samples"]
    assert samples["bad_input:chosen and rejected are the same"][0].startswith("prefs.jsonl:4: ")
    assert samples["bad_input:malformed json"][0].startswith("prefs.jsonl:6: ")
    assert manifest["counts"]["texts with lone surrogates repaired"] == 1
    pairs = {p.id: p for p in read_pairs(tmp_path / "o", "train")}
    assert pairs["prefs-1"].context == ("Hi", "Hello! What now?")
    assert pairs["prefs-2"].chosen == "Hey" and pairs["prefs-2"].kind == "thumbs"
    assert pairs["prefs-7"].chosen == "b\ufffd"


def test_synthetic_feedback_follows_content(built):
    from rejoinder.testing.feedback import CHALLENGES, INFORMATIVE, QUESTIONS

    signals = {
        "updown": lambda text: any(clause in text for clause in INFORMATIVE),
        "width": lambda text: text.endswith(QUESTIONS),
        "depth": lambda text: text.startswith(CHALLENGES),
    }
    out, _ = built
    pairs = [p for split in SPLITS for p in read_pairs(out, split)]
    for kind, has in signals.items():
        chosen = sum(has(p.chosen) for p in pairs if p.kind == kind)
        rejected = sum(has(p.rejected) for p in pairs if p.kind == kind)
        assert chosen > 2 * rejected, (kind, chosen, rejected)  # something to learn
