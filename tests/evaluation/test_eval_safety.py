"""`rejoinder eval-safety`: the figures against a hand count on ten texts written here, the
command end to end, and the messages bad input gets."""

from __future__ import annotations

import json

import pytest

from rejoinder.cli import main
from rejoinder.evaluation.safety import (
    BOTH,
    CLASSIFIER,
    WORDS,
    Scored,
    best_threshold,
    curve,
    f1_interval,
    summarize,
)
from rejoinder.evaluation.stats import wilson
from tests.conftest import safety_lines

WORD_LIST = "# our own list\ngrumble\nbad words\n"

# (text, label, the listed word it holds, a classifier's unsafe probability)
TEXTS = [
    ("she is nice", "safe", None, 0.9),
    ("you grumble a lot", "unsafe", "grumble", 0.8),
    ("those are bad words", "toxic", "bad words", 0.3),
    ("I grumble too", "safe", "grumble", 0.2),
    ("go away", "unsafe", None, 0.7),
    ("have a good day", "safe", None, 0.1),
    ("what a grumble", "insult", "grumble", 0.6),
    ("the weather is fine", "__ok__", None, 0.4),
    ("leave me alone", "unsafe", None, 0.45),
    ("bad words everywhere", "safe", "bad words", 0.05),
]
# Unsafe (a label not named safe): 2, 3, 5, 7, 9 (1-based). Listed words: 2, 3, 4, 7, 10.
# Classifier above 0.5: 1, 2, 5, 7. Both: 1, 2, 3, 4, 5, 7, 10.
BY_HAND = {
    WORDS: (3, 2, 2, 3),  # tp 2 3 7; fp 4 10; fn 5 9; tn 1 6 8
    CLASSIFIER: (3, 1, 2, 4),  # tp 2 5 7; fp 1; fn 3 9; tn 4 6 8 10
    BOTH: (4, 3, 1, 2),  # tp 2 3 5 7; fp 1 4 10; fn 9; tn 6 8
}


def rows(scored: bool = True) -> list[Scored]:
    return [
        Scored(label, word, score if scored else None, None, text)
        for text, label, word, score in TEXTS
    ]


def test_each_system_counts_as_by_hand():
    result = summarize(rows(), 0.5, labels=["safe", "unsafe"])
    for name, (tp, fp, fn, tn) in BY_HAND.items():
        s = result["systems"][name]
        assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (tp, fp, fn, tn), name
        assert s["precision"]["value"] == pytest.approx(tp / (tp + fp))
        assert s["recall"]["value"] == pytest.approx(tp / (tp + fn))
        assert s["fpr"]["value"] == pytest.approx(fp / (fp + tn))
        assert (s["fpr"]["low"], s["fpr"]["high"]) == pytest.approx(wilson(fp, fp + tn))
        assert (s["recall"]["low"], s["recall"]["high"]) == pytest.approx(wilson(tp, tp + fn))
        f1 = s["f1"]
        assert f1["value"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert 0 <= f1["low"] <= f1["value"] <= f1["high"] <= 1
    assert result["texts"] == 10 and result["unsafe"] == 5


def test_the_f1_interval_is_a_seeded_bootstrap_that_narrows_with_more_texts():
    small = f1_interval(3, 1, 2, 4)
    assert small == f1_interval(3, 1, 2, 4)  # seeded: the report is reproducible
    large = f1_interval(300, 100, 200, 400)
    assert large[1] - large[0] < (small[1] - small[0]) / 5
    assert large[0] < 600 / 900 < large[1]  # 2tp / (2tp + fp + fn)
    assert f1_interval(0, 0, 0, 5) is None  # no unsafe text and none flagged: no F1


def test_a_policy_without_classifier_is_its_word_list():
    result = summarize(rows(scored=False), 0.5)
    assert list(result["systems"]) == [WORDS]
    assert "curve" not in result and "per_class" not in result
    assert [x["text"] for x in result["examples"]["misses"]] == ["go away", "leave me alone"]


def test_the_curve_and_the_best_threshold_as_by_hand():
    r = rows()
    never, words = [False] * 10, [x.word is not None for x in r]
    c = curve(r, never)
    at = c["thresholds"].index(0.5)
    assert (c["precision"][at], c["recall"][at], c["fpr"][at]) == pytest.approx(
        (3 / 4, 3 / 5, 1 / 5)
    )
    assert (c["precision"][-1], c["recall"][-1], c["fpr"][-1]) == (None, 0.0, 0.0)
    assert c["recall"][0] == 1.0 and c["fpr"][0] == 1.0  # every score is above 0
    b = curve(r, words)
    assert (b["precision"][at], b["recall"][at], b["fpr"][at]) == pytest.approx(
        (4 / 7, 4 / 5, 3 / 5)
    )
    assert (b["precision"][-1], b["recall"][-1]) == pytest.approx((3 / 5, 3 / 5))  # words alone
    # The classifier alone is best flagging 0.3 and up (tp 5, fp 2): any threshold in [0.2, 0.3).
    best = best_threshold(r, never)
    assert (best["low"], best["high"], best["threshold"]) == pytest.approx((0.2, 0.3, 0.25))
    assert (best["f1"], best["precision"], best["recall"]) == pytest.approx((10 / 12, 5 / 7, 1))
    # Both: the word hits (tp 3, fp 2), then 0.45 and up of the rest (tp 5, fp 3).
    best = best_threshold(r, words)
    assert (best["low"], best["high"], best["f1"]) == pytest.approx((0.4, 0.45, 10 / 13))
    assert best_threshold([Scored("safe", None, 0.3)], [False]) is None


def test_shares_per_class_and_examples_as_by_hand():
    result = summarize(rows(), 0.5, labels=["safe", "unsafe"], n_examples=2)
    safe = result["flagged_share"]["safe"]
    assert safe["texts"] == 4 and not safe["unsafe"]
    assert [safe[n]["k"] for n in (WORDS, CLASSIFIER, BOTH)] == [2, 1, 3]
    assert result["flagged_share"]["toxic"][BOTH]["value"] == 1.0
    # The policy's false positives, listed words first, then the classifier's surest.
    wrong = result["examples"]["false_positives"]
    assert [(x["text"], x["layer"], x["word"]) for x in wrong] == [
        ("I grumble too", WORDS, "grumble"),
        ("bad words everywhere", WORDS, "bad words"),
    ]
    assert [x["text"] for x in result["examples"]["misses"]] == ["leave me alone"]
    assert "toxic" in result["per_class"]["skipped"]  # the classifier has no such label


def test_per_class_one_against_the_rest():
    pairs = [
        ("safe", "safe"),
        ("safe", "toxic"),
        ("toxic", "toxic"),
        ("toxic", "insult"),
        ("insult", "insult"),
        ("insult", "insult"),
        ("safe", "safe"),
    ]
    made = [Scored(gold, None, 0.5, label) for gold, label in pairs]
    per = summarize(made, 0.5, labels=["safe", "toxic", "insult"])["per_class"]["classes"]
    counts = {c: (s["tp"], s["fp"], s["fn"], s["tn"]) for c, s in per.items()}
    assert counts == {"safe": (2, 0, 1, 4), "toxic": (1, 1, 1, 4), "insult": (2, 1, 0, 4)}


# -- the command -------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path):
    """The ten texts as JSONL (with a bad line and a blank one), the word list, and a
    classifier-free policy file naming it (relative to the policy file)."""
    (tmp_path / "words.txt").write_text(WORD_LIST)
    lines = [json.dumps({"context": ["hello"], "text": t, "label": y}) for t, y, _, _ in TEXTS]
    lines[4:4] = ["{not json", ""]
    (tmp_path / "labels.jsonl").write_text("\n".join(lines) + "\n")
    policy = {"safety_words": ["words.txt"], "safety_default_words": False}
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    return tmp_path


def counts(system: dict) -> tuple[int, int, int, int]:
    return system["tp"], system["fp"], system["fn"], system["tn"]


def test_a_policy_file_end_to_end(files, capsys):
    out = files / "report"
    argv = ["eval-safety", str(files / "policy.json"), "--data", str(files / "labels.jsonl")]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "| words | 0.600 [0.23, 0.88] | 0.600 [0.23, 0.88] |" in printed.out
    assert "skipped 1 bad line of" in printed.err and "line 5: not JSON" in printed.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert counts(metrics["systems"][WORDS]) == BY_HAND[WORDS]
    assert metrics["data"]["bad_lines"]["count"] == 1
    assert metrics["policy"]["kind"] == "policy file" and metrics["policy"]["listed"] == 2
    report = (out / "report.md").read_text()
    assert "1 bad line skipped" in report and "| I grumble too | hello | safe |" in report
    assert not (out / "threshold.png").exists()  # no classifier, no curve


def test_a_model_directory_carries_its_policy(files, tmp_path):
    """Its word files are named relative to it; the model itself is not loaded."""
    model = tmp_path / "model"
    model.mkdir()
    safety = {"safety": True, "safety_words": ["words.txt"], "safety_default_words": False}
    (model / "rejoinder.json").write_text(json.dumps({"format": "dialogpt", "safety": safety}))
    (model / "words.txt").write_text(WORD_LIST)
    out = tmp_path / "report"
    assert (
        main(["eval-safety", str(model), "--data", str(files / "labels.jsonl"), "--out", str(out)])
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["policy"]["kind"] == "model's policy"
    assert metrics["policy"]["word_files"] == [str(model / "words.txt")]
    assert counts(metrics["systems"][WORDS]) == BY_HAND[WORDS]


def test_a_classifier_end_to_end_counts_as_the_policy_checks(files, safety_classifier, capsys):
    from rejoinder.safety import Safety, SafetyConfig

    out = files / "report"
    words = ["--safety-words", str(files / "words.txt"), "--no-default-safety-words"]
    argv = ["eval-safety", str(safety_classifier), "--data", str(files / "labels.jsonl"), *words]
    assert main([*argv, "--threshold", "0.4", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| both (the policy) |" in printed and "best F1 threshold, classifier" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "threshold.png").stat().st_size > 1000
    assert "![threshold](threshold.png)" in (out / "report.md").read_text()
    # A count of our own, from the policy's own checks at the same threshold.
    config = SafetyConfig(
        safety_classifier=str(safety_classifier),
        safety_threshold=0.4,
        safety_words=[str(files / "words.txt")],
        safety_default_words=False,
    )
    safety = Safety(config, "cpu")
    pairs = [(["hello"], t) for t, *_ in TEXTS]
    unsafe = [y not in ("safe", "__ok__") for _, y, _, _ in TEXTS]
    flags = {
        WORDS: [w is not None for _, _, w, _ in TEXTS],
        CLASSIFIER: [s > 0.4 for s, _ in safety.scores(pairs)],
        BOTH: [f is not None for f in safety.check(pairs)],
    }
    for name, flagged in flags.items():
        cells = list(zip(unsafe, flagged, strict=True))
        hand = tuple(
            cells.count(c) for c in ((True, True), (False, True), (True, False), (False, False))
        )
        assert counts(metrics["systems"][name]) == hand, name
    assert metrics["threshold"] == 0.4 and metrics["policy"]["classifier_labels"]


def test_a_labels_dataset_split(tmp_path, safety_classifier):
    from rejoinder.data.labels import RawLabel, write_labels

    made = [
        RawLabel(str(i), str(i), ["hi"], [None], t, "unsafe" if w else "safe")
        for i, (t, _, w, _) in enumerate(TEXTS)
    ]
    data = tmp_path / "labels"
    write_labels(data, "test", made)
    (data / "manifest.json").write_text(json.dumps({"kind": "labels"}))
    out = tmp_path / "report"
    assert (
        main(
            [
                "eval-safety",
                str(safety_classifier),
                "--data",
                str(data),
                "--out",
                str(out),
                "--no-default-safety-words",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["split"] == "test" and metrics["texts"] == 10
    per = metrics["per_class"]["classes"]  # the dataset's classes are the classifier's
    assert sorted(per) == ["safe", "unsafe"]
    assert sum(per["unsafe"][k] for k in ("tp", "fp", "fn", "tn")) == 10


def test_the_trained_classifier_finds_what_no_word_list_knows(tmp_path, safety_classifier):
    """The conftest's classifier learnt a made-up cue word (SAFETY_CUE); better-profanity's
    list has never heard of it."""
    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in safety_lines(40, seed=1)))
    out = tmp_path / "report"
    argv = ["eval-safety", str(safety_classifier), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    systems = metrics["systems"]
    assert systems[WORDS]["tp"] == 0 and systems[WORDS]["fn"] == 20
    assert systems[CLASSIFIER]["recall"]["value"] >= 0.9
    assert systems[CLASSIFIER]["fpr"]["value"] <= 0.1
    # The exact search sees the threshold in force too, so it is never worse.
    for name in (CLASSIFIER, BOTH):
        assert metrics["best_threshold"][name]["f1"] >= systems[name]["f1"]["value"]
    assert sorted(metrics["per_class"]["classes"]) == ["safe", "unsafe"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/policy.json", "--data", "{tmp}/missing.jsonl"], "no such file"),
        (["{tmp}/policy.json", "--data", "{tmp}/bad.jsonl"], "has no labelled texts (2 bad"),
        (
            ["{tmp}/policy.json", "--data", "{tmp}/labels.jsonl", "--threshold", "1.5"],
            "--threshold 1.5: use a probability in [0, 1]",
        ),
        (
            ["{tmp}/policy.json", "--data", "{tmp}/labels.jsonl", "--split", "test"],
            "--split is for a labels dataset directory",
        ),
        (["{tmp}/plain", "--data", "{tmp}/labels.jsonl"], "is neither a classifier directory"),
        (["{tmp}/missing", "--data", "{tmp}/labels.jsonl"], "no such classifier directory"),
        (["{tmp}/list.json", "--data", "{tmp}/labels.jsonl"], "is not a JSON object"),
        (["{tmp}/typo.json", "--data", "{tmp}/labels.jsonl"], "unknown fields (safety_wrds)"),
    ],
)
def test_bad_input_gets_one_line(files, args, message, capsys):
    (files / "bad.jsonl").write_text('not json\n{"text": "hi"}\n')
    (files / "plain").mkdir()
    (files / "plain" / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    (files / "list.json").write_text("[1, 2]")
    (files / "typo.json").write_text('{"safety_wrds": []}')
    argv = ["eval-safety", *(a.format(tmp=files) for a in args), "--out", str(files / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (files / "x").exists()
