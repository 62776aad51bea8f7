"""`rejoinder data negatives`: a pairs dataset plus pairs of human against sampled replies."""

import importlib.util
import json

import pytest

from rejoinder.cli import main
from rejoinder.data.build import BuildConfig, Source, build
from rejoinder.data.pairs import iter_raw_pairs, read_pairs
from rejoinder.data.records import SPLITS

LINES = [
    {"context": ["Hello there", "Hi! How are you?"], "chosen": "Fine, thanks.", "rejected": "no"},
    {"context": ["Hello there", "Hi! How are you?"], "chosen": "Fine, thanks.", "rejected": "meh"},
    {"context": ["What is your name?"], "chosen": "I am Bob.", "rejected": "whatever"},
    {"context": ["Where do you live?"], "chosen": "In Paris.", "rejected": "?"},
]


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("given")
    path = root / "prefs.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in LINES))
    out = root / "pairs"
    build(
        BuildConfig(sources=[Source("pairs", {"path": str(path)})], out=str(out), valid=0, test=0)
    )
    return out


def everything(path):
    return sorted((p for s in SPLITS for p in iter_raw_pairs(path, s)), key=lambda p: p.id)


@pytest.mark.parametrize("backend", ["torch", "ctranslate2"])
def test_negatives_add_a_sampled_reply_against_each_human_one(
    pairs_dir, make_checkpoint, tmp_path, backend, capsys
):
    if backend == "ctranslate2" and importlib.util.find_spec("ctranslate2") is None:
        pytest.skip("ctranslate2 is not installed")
    model = make_checkpoint("dialogpt")
    before = everything(pairs_dir)
    args = ["data", "negatives", str(pairs_dir), "--model", str(model), "--batch-size", "2"]
    args += ["--max-new-tokens", "8"]
    assert main([*args, "--backend", backend, "--out", str(tmp_path / "a")]) == 0
    assert "human_vs_machine" in capsys.readouterr().out
    got = everything(tmp_path / "a")
    machine = [p for p in got if p.kind == "human_vs_machine"]
    assert [p for p in got if p.kind != "human_vs_machine"] == before  # the input's pairs
    assert everything(pairs_dir) == before  # and the input left alone
    # One pair per distinct (context, human reply): the duplicate chosen reply once.
    assert sorted((tuple(p.context), p.chosen) for p in machine) == sorted(
        {(tuple(x["context"]), x["chosen"]) for x in LINES}
    )
    assert all(p.rejected and p.rejected != p.chosen for p in machine)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["kind"] == "pairs" and manifest["negatives"]["backend"] == backend
    assert manifest["kinds"]["human_vs_machine"]["total"] == len(machine)
    assert manifest["pairs"]["total"] == len(got) == len(read_pairs(tmp_path / "a", "train"))
    # Seeded: the same model and data sample the same replies; --limit caps each split.
    assert main([*args, "--backend", backend, "--out", str(tmp_path / "b")]) == 0
    assert everything(tmp_path / "b") == got
    assert main([*args, "--backend", backend, "--limit", "1", "--out", str(tmp_path / "c")]) == 0
    assert sum(p.kind == "human_vs_machine" for p in everything(tmp_path / "c")) == 1


def test_negatives_need_a_pairs_dataset(tmp_path, make_checkpoint, capsys):
    qa = tmp_path / "qa.tsv"
    qa.write_text("Hello\tHi\n")
    dialogues = tmp_path / "dialogues"
    build(BuildConfig(sources=[Source("qa", {"path": str(qa)})], out=str(dialogues)))
    out = tmp_path / "out"
    args = ["data", "negatives", str(dialogues), "--model", str(make_checkpoint("dialogpt"))]
    assert main([*args, "--out", str(out)]) == 2
    assert "holds dialogues, but data negatives needs pairs" in capsys.readouterr().err
    assert not out.exists()
