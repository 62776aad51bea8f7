"""The offensive filter's classifier (`--offensive-classifier`): a pass of its own,
batched, after the one-pass filters, on both engines; its drops counted as "offensive"."""

import functools
import json
import shutil

import pyarrow.dataset as pads
import pytest

from rejoinder.cli import main
from rejoinder.data.build import BuildConfig, Source, build
from rejoinder.data.commands import offensive_scorer
from rejoinder.data.filters import FilterConfig
from rejoinder.data.pairs import read_pairs
from rejoinder.data.records import SPLITS, RawDialogue
from rejoinder.data.reddit import RedditOptions
from rejoinder.data.report import Report
from rejoinder.data.stages import offensive_pass
from rejoinder.errors import RejoinderError
from rejoinder.testing.reddit import synth_reddit
from tests.conftest import safety_lines

CUE = "orange"
"""What the classifier flags: any text holding this word."""
LISTED = "grumpkin"
"""What the word list flags."""


def cue_classifier(out, cue: str):
    """A Hugging Face GPT-2 sequence classifier (labels safe, unsafe) that finds `cue`
    anywhere in a text, its weights set by hand (no training: exact and instant).

    Every token embeds so that its first dimension normalises to exactly 0, the cue's
    above 0; attention with zero queries and keys averages that dimension over the text
    into a fourth one, scaled up; "unsafe" reads the fourth, "safe" a constant one."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from rejoinder.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    tok.pad_token = tok.eos_token
    ids = [tok(w).input_ids for w in (cue, f" {cue}")]
    assert all(len(i) == 1 for i in ids), f"{cue!r} is more than one token"
    config = GPT2Config(
        vocab_size=len(tok), n_positions=256, n_embd=4, n_layer=1, n_head=1, num_labels=2,
        id2label={0: "safe", 1: "unsafe"}, label2id={"safe": 0, "unsafe": 1},
        pad_token_id=tok.eos_token_id, architectures=["GPT2ForSequenceClassification"],
    )  # fmt: skip
    model = GPT2ForSequenceClassification(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        block = model.transformer.h[0]
        for norm in (block.ln_1, block.ln_2, model.transformer.ln_f):
            norm.weight.fill_(1.0)
        wte = model.transformer.wte.weight
        wte[:, 1], wte[:, 2] = 1.0, -1.0
        wte[[i for (i,) in ids], 0] = 1.0
        block.attn.c_attn.weight[0, 2 * 4] = 1.0  # the values: dimension 0
        block.attn.c_proj.weight[0, 3] = 1000.0
        model.score.weight[0, 1] = 5.0  # safe
        model.score.weight[1, 3] = 5.0  # unsafe
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return cue_classifier(tmp_path_factory.mktemp("classifier") / "orange", CUE)


def rows(out):
    return {
        split: sorted(
            pads.dataset(str(out / split), format="parquet").to_table().to_pylist(),
            key=lambda r: r["id"],
        )
        for split in SPLITS
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Dialogues of four kinds, ten of each, and the word list."""
    root = tmp_path_factory.mktemp("chats")
    lines = []
    for i in range(40):
        lines.append(
            [
                ["How was your day?", f"Fine, number {i}"],
                ["What do you eat?", f"An {CUE} a day, number {i}"],
                ["Anything new?", f"That {LISTED} again, number {i}"],
                ["Hi there", f"I bought an {CUE}", f"Nice, number {i}"],
            ][i % 4]
        )
    lines.append(["Both?", f"An {CUE} and a {LISTED}"])
    (root / "chats.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (root / "words.txt").write_text(f"{LISTED}\n")
    return root


def chats_config(corpus, out, classifier=None, **kw):
    options = {"offensive_words": str(corpus / "words.txt")}
    if classifier is not None:
        options["offensive_classifier"] = str(classifier)
    options |= kw.pop("filter_options", {})
    return BuildConfig(
        sources=[Source("jsonl", {"path": str(corpus / "chats.jsonl")})],
        out=str(out),
        filters=kw.pop("filters", "offensive"),
        filter_options=options,
        valid=0.2,
        test=0.2,
        explain=2,
        **kw,
    )


def targets(out):
    return {r["id"]: [t["text"] for t in r["turns"]] for split in rows(out).values() for r in split}


@pytest.fixture(scope="module")
def built(corpus, classifier, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "chats"
    return out, build(chats_config(corpus, out, classifier), load_classifier=offensive_scorer)


def test_the_classifier_drops_the_targets_it_flags_as_offensive(
    built, corpus, classifier, tmp_path
):
    out, manifest = built
    kept = targets(out)
    assert len(kept) == 20 and not any(CUE in t[-1] or LISTED in t[-1] for t in kept.values())
    # A cue in the context is no reason: the target is the last turn.
    assert sum(CUE in t[1] for t in kept.values()) == 10
    # The word list and the classifier drop under one name, a dialogue once.
    assert manifest["dropped"] == {"offensive": 21}
    assert manifest["counts"]["dialogues in: jsonl"] == 41
    samples = manifest["samples"]["dropped:offensive"]
    assert len(samples) == 2 and all(set(s) == {"id", "turns"} for s in samples)
    assert manifest["options"]["filter_options"]["offensive_classifier"] == str(classifier)
    # Without the classifier, the word list alone.
    alone = build(chats_config(corpus, tmp_path / "words"))
    assert alone["dropped"] == {"offensive": 11} and alone["dialogues"]["total"] == 30


def test_with_targets_responses_every_response_is_read_in_its_context(corpus, classifier, tmp_path):
    out = tmp_path / "responses"
    config = chats_config(corpus, out, classifier, filter_options={"targets": "responses"})
    manifest = build(config, load_classifier=offensive_scorer)
    assert manifest["dropped"] == {"offensive": 31}
    assert not any(CUE in turn for t in targets(out).values() for turn in t[1:])


def test_a_threshold_of_one_flags_nothing(corpus, classifier, tmp_path):
    config = chats_config(
        corpus, tmp_path / "t", classifier, filter_options={"offensive_threshold": 1.0}
    )
    manifest = build(config, load_classifier=offensive_scorer)
    assert manifest["dropped"] == {"offensive": 11}


def test_a_classifier_trained_here_reads_each_target_after_its_context(safety_classifier, tmp_path):
    # conftest's classifier is trained (`train --model.objective classify`), so it reads
    # the turns before a target in its format; being learnt, it is judged by its own
    # verdicts, which must agree with the cue on most texts.
    lines = safety_lines(60, seed=2)
    dialogues = [[*(x["context"] or ["Hi there!"]), x["text"]] for x in lines]
    src = tmp_path / "chats.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in dialogues))
    config = BuildConfig(
        sources=[Source("jsonl", {"path": str(src)})],
        out=str(tmp_path / "out"),
        filters="offensive",
        filter_options={
            "offensive_words": str(tmp_path / "words.txt"),
            "offensive_classifier": str(safety_classifier),
        },
        valid=0,
        test=0,
    )
    (tmp_path / "words.txt").write_text(f"{LISTED}\n")
    manifest = build(config, load_classifier=offensive_scorer)
    scores = offensive_scorer(FilterConfig(offensive_classifier=str(safety_classifier)))(
        [(d[:-1], d[-1]) for d in dialogues]
    )
    flagged_here = [s > 0.5 for s in scores]
    agree = sum(f == (x["label"] == "unsafe") for f, x in zip(flagged_here, lines, strict=True))
    assert agree >= 0.9 * len(lines)
    kept = sorted(targets(tmp_path / "out").values())
    assert kept == sorted(d for d, f in zip(dialogues, flagged_here, strict=True) if not f)
    assert manifest["dropped"] == {"offensive": sum(flagged_here)}


def test_spark_gives_the_same_dataset(built, corpus, classifier, tmp_path):
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("the Spark engine needs Java")
    out, manifest = built
    spark_out = tmp_path / "spark"
    config = chats_config(corpus, spark_out, classifier, engine="spark", master="local[2]")
    spark = build(config, load_classifier=offensive_scorer)
    assert rows(spark_out) == rows(out)
    for key in ("dialogues", "dropped", "counts", "bad_input"):
        assert spark[key] == manifest[key], key


def test_given_pairs_are_dropped_when_a_reply_is_flagged(classifier, tmp_path):
    lines = [
        {"context": ["Which fruit?"], "chosen": f"An {CUE}", "rejected": "A pear"},
        {"context": ["Which fruit?"], "chosen": "A pear", "rejected": f"An {CUE}"},
        {"context": ["Which fruit?"], "chosen": "A pear", "rejected": "A plum"},
        {"context": [f"An {CUE}?"], "chosen": "A pear", "rejected": "A plum"},
    ]
    src = tmp_path / "pairs.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    config = BuildConfig(
        sources=[Source("pairs", {"path": str(src)})],
        out=str(tmp_path / "pairs"),
        filters="offensive",
        filter_options={"offensive_classifier": str(classifier)},
        valid=0,
        test=0,
    )
    manifest = build(config, load_classifier=offensive_scorer)
    assert manifest["dropped"] == {"offensive": 2}
    kept = read_pairs(tmp_path / "pairs", "train")
    assert sorted(p.context[0] for p in kept) == [f"An {CUE}?", "Which fruit?"]


# -- Reddit: dialogues and sibling pairs, with a cue that its comments often hold ---------

PEOPLE = "people"


@pytest.fixture(scope="module")
def reddit(tmp_path_factory):
    root = tmp_path_factory.mktemp("reddit")
    synth_reddit(1500, root / "RC.zst", seed=7)
    cue_classifier(root / "people", PEOPLE)
    return root


@functools.cache
def _tokenizer():
    from rejoinder.tokenizers import gpt2_tokenizer

    return gpt2_tokenizer()


def flagged(text: str) -> bool:
    """Whether the classifier flags `text`: it holds the cue's token."""
    tok = _tokenizer()
    cue = {tok(PEOPLE).input_ids[0], tok(f" {PEOPLE}").input_ids[0]}
    return not cue.isdisjoint(tok(text).input_ids)


def reddit_config(root, out, classify: bool, **kw):
    options = {"offensive_classifier": str(root / "people")} if classify else {}
    return BuildConfig(
        sources=[Source("reddit", {"comments": [root / "RC.zst"]})],
        out=str(out),
        filter_options=options,
        reddit=RedditOptions(),
        valid=0.1,
        test=0.1,
        **kw,
    )


def test_reddit_dialogues_lose_the_flagged_targets(reddit, tmp_path):
    plain = build(reddit_config(reddit, tmp_path / "plain", False))
    classified = build(
        reddit_config(reddit, tmp_path / "classified", True), load_classifier=offensive_scorer
    )
    kept = targets(tmp_path / "classified")
    assert kept and not any(flagged(t[-1]) for t in kept.values())
    before = targets(tmp_path / "plain")
    assert set(kept) == {i for i, t in before.items() if not flagged(t[-1])}
    more = classified["dropped"]["offensive"] - plain["dropped"].get("offensive", 0)
    assert more == len(before) - len(kept) > 0
    assert classified["counts"]["dialogues in: reddit"] == (
        classified["dialogues"]["total"] + sum(classified["dropped"].values())
    )


def test_reddit_pairs_are_made_of_the_replies_left(reddit, tmp_path):
    kinds = "updown,width,depth,human_vs_rand"
    plain = build(reddit_config(reddit, tmp_path / "plain", False, pairs=kinds))
    config = reddit_config(reddit, tmp_path / "classified", True, pairs=kinds)
    classified = build(config, load_classifier=offensive_scorer)
    pairs = [p for split in SPLITS for p in read_pairs(tmp_path / "classified", split)]
    assert pairs and not any(flagged(p.chosen) or flagged(p.rejected) for p in pairs)
    assert classified["dropped"]["offensive"] > plain["dropped"].get("offensive", 0)


# -- the pass itself ----------------------------------------------------------------------


def test_the_pass_scores_hundreds_of_targets_a_call_each_in_its_context():
    calls = []

    def scorer(pairs):
        calls.append(list(pairs))
        return [float("bad" in text) for _, text in pairs]

    fconf = FilterConfig(offensive_classifier="unused")
    items = [
        (
            i % 2 == 0,
            RawDialogue(f"d{i}", "x", f"d{i}", [f"hello {i}", f"reply {i % 7}"], [None] * 2),
        )
        for i in range(1000)
    ]
    items.append((True, RawDialogue("bad", "x", "bad", ["hi", "so bad"], [None, None])))
    items.append((True, RawDialogue("empty", "x", "empty", ["hi", " "], [None, None])))
    report = Report()
    kept = list(offensive_pass(iter(items), scorer, fconf, report, batch=300))
    assert [entry for entry in kept] == items[:1000] + items[-1:]  # order and checks kept
    assert report.dropped == {"offensive": 1}
    assert len(calls) == 4 and all(len(c) >= 300 for c in calls[:-1])
    assert calls[0][0] == (["hello 0"], "reply 0")  # the target after its context
    assert all(text.strip() for c in calls for _, text in c)  # empty targets are not asked
    # With --targets responses, every response after the turns before it, each pair once.
    fconf = FilterConfig(offensive_classifier="unused", targets="responses")
    calls.clear()
    raw = RawDialogue("r", "x", "r", ["a", "b", "c"], [None] * 3)
    assert list(offensive_pass([(True, raw), (True, raw)], scorer, fconf, Report())) == [
        (True, raw),
        (True, raw),
    ]
    assert calls == [[(["a"], "b"), (["a", "b"], "c")]]


# -- bad settings fail at the start -------------------------------------------------------


def test_bad_settings_fail_before_anything_is_read(corpus, classifier, tmp_path):
    missing = [Source("jsonl", {"path": str(tmp_path / "nope.jsonl")})]

    def refused(match, load=offensive_scorer, **options):
        config = BuildConfig(
            sources=missing, out=str(tmp_path / "out"), filters="offensive", filter_options=options
        )
        with pytest.raises(RejoinderError, match=match):
            build(config, load_classifier=load)
        assert not (tmp_path / "out").exists()

    refused(
        "classifier .*nowhere: no such model directory",
        offensive_classifier=str(tmp_path / "nowhere"),
    )
    refused(
        r"--offensive-unsafe-label toxic: the classifier .* has no such label; "
        "its labels are safe, unsafe",
        offensive_classifier=str(classifier),
        offensive_unsafe_labels=["toxic"],
    )
    refused(r"--offensive-threshold 1.5: use a probability in \[0, 1\]", offensive_threshold=1.5)
    refused("--offensive-unsafe-label needs --offensive-classifier", offensive_unsafe_labels=["x"])
    refused("needs a loader", load=None, offensive_classifier=str(classifier))
    # A classifier no source would run is refused too: jsonl runs no filter by default.
    config = BuildConfig(
        sources=missing, out=str(tmp_path / "out"), filter_options={"offensive_classifier": "c"}
    )
    with pytest.raises(RejoinderError, match="no source runs the offensive filter"):
        build(config, load_classifier=offensive_scorer)


def test_the_command_line_takes_the_classifier(corpus, classifier, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["data", "build", "jsonl", str(corpus / "chats.jsonl"), "--out", str(out)]
    args += ["--filters", "offensive", "--offensive-words", str(corpus / "words.txt")]
    args += ["--offensive-classifier", str(classifier), "--offensive-unsafe-label", "unsafe"]
    assert main(args) == 0
    assert "offensive" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dropped"] == {"offensive": 21}
    assert manifest["options"]["filter_options"]["offensive_unsafe_labels"] == ["unsafe"]
    bad = ["data", "build", "jsonl", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x")]
    bad += ["--filters", "offensive", "--offensive-classifier", str(classifier)]
    assert main([*bad, "--offensive-threshold", "2"]) == 2
    assert "--offensive-threshold 2.0: use a probability in [0, 1]" in capsys.readouterr().err
