"""`rejoinder eval`: a model on a dataset split, or replies in files; reports and errors."""

import json
import math

import pytest

from rejoinder import ConversationModel
from rejoinder.cli import main
from rejoinder.data.build import BuildConfig, Source, build
from rejoinder.evaluation.run import load_test_set, perplexity

CHATS = [
    ["Hello there!", "Hi, how are you?", "Fine, thanks."],
    ["What are you doing tonight?", "Watching a movie."],
    ["Do you like pizza?", "I love it.", "Me too!"],
    ["Hello there!", "Hey! Good to see you."],  # the same context as the first: pooled
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-data")
    src = root / "chats.jsonl"
    src.write_text("\n".join(json.dumps(c) for c in CHATS * 3) + "\n")
    out = root / "ds"
    source = Source("jsonl", {"path": str(src)})
    build(BuildConfig(sources=[source], out=str(out), valid=0, test=0.99))  # nearly all test
    return out


def test_perplexity_is_the_scored_nll_of_every_response(make_checkpoint, dataset):
    bot = ConversationModel.from_pretrained(make_checkpoint("dialogpt"))
    test = load_test_set(dataset)
    ppl = perplexity(bot, test.dialogues)
    pairs = [
        ([t.text for t in d.turns[:i]], d.turns[i].text)
        for d in test.dialogues
        for i in range(1, len(d.turns))
    ]
    scores = bot.loglikelihood(pairs)
    assert math.isclose(ppl["nll"], -sum(s.total for s in scores), rel_tol=1e-4)
    assert ppl["tokens"] == sum(len(s.token_logprobs) for s in scores)
    assert ppl["words"] == sum(len(r.split()) + 1 for _, r in pairs)
    assert math.isclose(ppl["per_word"], math.exp(ppl["nll"] / ppl["words"]))


def test_identical_contexts_pool_their_references(dataset):
    test = load_test_set(dataset)
    assert len(test.contexts) == len(set(map(tuple, test.contexts)))
    assert sum(map(len, test.references)) == len(test.dialogues)


def test_eval_a_model_writes_a_whole_report(make_checkpoint, reverse_dir, dataset, tmp_path):
    out = tmp_path / "report"
    argv = ["eval", str(make_checkpoint("dialogpt")), "--data", str(dataset), "--out", str(out)]
    argv += ["--reverse", str(reverse_dir), "--presets", "greedy,mmi", "--limit", "3"]
    assert main(argv) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert set(result["systems"]) == {"greedy", "mmi"} and result["contexts"] == 3
    assert result["perplexity"]["per_word"] > 1
    # NLTK is not installed here: METEOR is n/a, never a made-up number, and says why.
    assert result["systems"]["greedy"]["meteor"] is None
    assert result["meteor"].startswith("not computed: NLTK")
    report = (out / "report.md").read_text()
    assert f"METEOR: {result['meteor']}." in report
    assert "| greedy |" in report and "| human |" in report and "## Sample replies" in report
    assert (out / "metrics.png").stat().st_size > 0
    assert main(argv) == 2  # the report exists: refused, and left as it was
    assert json.loads((out / "metrics.json").read_text()) == result


def test_eval_hypotheses_against_several_reference_files(tmp_path):
    hyp, r1, r2 = tmp_path / "hyp.txt", tmp_path / "r1.txt", tmp_path / "r2.txt"
    hyp.write_text("i am fine\nit is sunny today\n")
    r1.write_text("i am fine , thanks\nit is sunny\n")
    r2.write_text("good , you ?\nsunny and warm\n")
    out = tmp_path / "report"
    assert (
        main(["eval", "--hyp", str(hyp), "--refs", str(r1), "--refs", str(r2), "--out", str(out)])
        == 0
    )
    result = json.loads((out / "metrics.json").read_text())
    scores = result["systems"]["hyp.txt"]
    assert scores["avg_len"] == 3.5 and scores["bleu2"] > 0
    assert result["human"]["bleu2"] is not None  # two references: each held out in turn


@pytest.mark.parametrize(
    "hyp, ref, message",
    [
        ("a\nb\n", "a\n", "has 2 lines but"),
        ("a\n\nb\n", "a\nb\nc\n", "empty line"),
    ],
)
def test_bad_reply_files_get_clear_errors_and_no_report(tmp_path, capsys, hyp, ref, message):
    (tmp_path / "h").write_text(hyp)
    (tmp_path / "r").write_text(ref)
    out = tmp_path / "report"
    argv = ["eval", "--hyp", str(tmp_path / "h"), "--refs", str(tmp_path / "r"), "--out", str(out)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".report*"))


def test_a_dataset_without_a_test_split_is_refused(make_checkpoint, tmp_path, capsys):
    src = tmp_path / "c.jsonl"
    src.write_text(json.dumps(CHATS[0]) + "\n")
    build(
        BuildConfig(sources=[Source("jsonl", {"path": str(src)})], out=str(tmp_path / "ds"), test=0)
    )
    argv = ["eval", str(make_checkpoint("dialogpt")), "--data", str(tmp_path / "ds")]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    assert "no dialogues in a 'test' split" in capsys.readouterr().err
    assert main([*argv, "--presets", "mmi", "--out", str(tmp_path / "r")]) == 2
    assert "needs a reverse model" in (err := capsys.readouterr().err) and "--reverse" in err
