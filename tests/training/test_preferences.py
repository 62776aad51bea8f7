"""Learning from preference pairs: rankers (--model.objective rank) and DPO."""

import json
import random

import pytest
import torch

from rejoinder import ConversationModel, RejoinderError
from rejoinder.cli import main
from rejoinder.data.pairs import RawPair, write_pairs
from rejoinder.modeling import init_checkpoint
from rejoinder.modeling.ranker import Ranker

WORDS = ["movie", "pizza", "music", "rain", "work", "city", "book", "game", "coffee", "beach",
         "dog", "train", "garden", "winter", "friends", "dinner"]  # fmt: skip


def make_pairs(n: int, seed: int, words: list[str]) -> list[RawPair]:
    """People prefer a reply that asks back over one that only states: a signal in the
    reply's words, whatever the topic."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.sample(words, 2)
        chosen, rejected = f"Do you like {b} too?", f"I like {b}."
        out.append(RawPair(f"p{seed}-{i}", "given", f"g{i}", [f"I like {a}."], chosen, rejected))
    return out


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs") / "ds"
    write_pairs(root, "train", make_pairs(160, 0, WORDS[:12]))
    write_pairs(root, "valid", make_pairs(16, 1, WORDS[12:]))
    write_pairs(root, "test", make_pairs(40, 2, WORDS[12:]))  # topics never trained on
    (root / "manifest.json").write_text(json.dumps({"kind": "pairs"}))
    return root


def argv(data, init, out, *extra):
    return ["train", "--data.path", str(data), "--data.batch_tokens", "512",
            "--model.init", str(init), "--model.max_tokens", "64", "--model.lr", "3e-3",
            "--model.warmup_steps", "2", "--model.dropout", "0.0",
            "--trainer.max_steps", "40", "--trainer.val_check_interval", "20",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.log_every_n_steps", "1", "--out", str(out), *extra]  # fmt: skip


def held_out(data):
    from rejoinder.data.pairs import read_pairs

    return read_pairs(data, "test")


@pytest.fixture(scope="module")
def ranker_dir(pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ranker") / "ranker"
    extra = ["--model.objective", "rank", "--trainer.max_steps", "20"]
    assert main(argv(pairs, "tiny", out, *extra)) == 0
    return out


def test_a_ranker_learns_to_rank_held_out_pairs(pairs, ranker_dir):
    out = ranker_dir
    meta = json.loads((out / "rejoinder.json").read_text())
    assert meta["ranks"] is True
    ranker = Ranker.from_pretrained(out)
    test = held_out(pairs)
    chosen = ranker.score_pairs([(p.context, p.chosen) for p in test])
    rejected = ranker.score_pairs([(p.context, p.rejected) for p in test])
    assert all(0 < s < 1 for s in chosen + rejected)  # probabilities
    accuracy = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(test)
    assert accuracy >= 0.9
    # A ranker is no generator, and the reverse: each refused where the other is wanted.
    with pytest.raises(RejoinderError, match="is a reply ranker"):
        ConversationModel.from_pretrained(out)


@pytest.mark.parametrize("lora", [False, True])
def test_dpo_raises_the_margin_over_the_reference(pairs, tmp_path, lora):
    base = init_checkpoint(tmp_path / "base", initializer_range=0.2)
    extra = ["--model.objective", "dpo", "--model.beta", "0.5", "--trainer.max_steps", "16"]
    extra += ["--model.lora.r", "8", "--model.lr", "1e-2"] if lora else []
    out = tmp_path / "tuned"
    assert main(argv(pairs, base, out, *extra)) == 0
    test = held_out(pairs)

    def margins(model) -> torch.Tensor:
        bot = ConversationModel.from_pretrained(model)
        good = bot.loglikelihood([(p.context, p.chosen) for p in test])
        bad = bot.loglikelihood([(p.context, p.rejected) for p in test])
        return torch.tensor([g.total - b.total for g, b in zip(good, bad, strict=True)])

    before, after = margins(base), margins(out)
    assert (after > before).float().mean() >= 0.9 and after.mean() > before.mean() + 1


def test_pairs_and_dialogues_are_not_mistaken_for_each_other(pairs, tmp_path, capsys):
    from tests.training.test_train import LINES

    assert main(argv(pairs, "tiny", tmp_path / "lm")) == 2
    assert "holds pairs, but --model.objective lm" in capsys.readouterr().err
    src = tmp_path / "chats.jsonl"
    src.write_text("\n".join(json.dumps(line) for line in LINES) + "\n")
    assert main(["data", "build", "jsonl", str(src), "--out", str(tmp_path / "d")]) == 0
    assert main(argv(tmp_path / "d", "tiny", tmp_path / "r", "--model.objective", "rank")) == 2
    assert "holds dialogues, but --model.objective rank needs pairs" in capsys.readouterr().err
    assert main(argv(pairs, "tiny", tmp_path / "x", "--model.objective", "dpo")) == 2
    assert "DPO tunes a trained generator" in capsys.readouterr().err
    for bad in (tmp_path / "lm", tmp_path / "r", tmp_path / "x"):
        assert not bad.exists()


def test_the_dpo_reference_stays_out_of_the_run_checkpoint(pairs, tmp_path):
    base = init_checkpoint(tmp_path / "base")
    out = tmp_path / "tuned"
    extra = ["--model.objective", "dpo", "--trainer.max_steps", "2", "--checkpoint_every", "1"]
    assert main(argv(pairs, base, out, *extra)) == 0
    state = torch.load(tmp_path / "tuned.run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["state_dict"] and all(k.startswith("model.") for k in state["state_dict"])


def test_eval_ranker_reports_accuracy_per_kind_beside_the_baselines(pairs, ranker_dir, tmp_path):
    base = init_checkpoint(tmp_path / "base")
    report = tmp_path / "report"
    argv = ["eval-ranker", f"asks={ranker_dir}", "--data", str(pairs), "--forward", str(base),
            "--reverse", str(base), "--out", str(report)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((report / "metrics.json").read_text())
    assert result["pairs"] == 40 and result["kinds"] == {"given": 40}
    systems = result["systems"]
    assert list(systems) == ["asks", "forward likelihood", "reverse likelihood"]
    for scores in systems.values():
        s = scores["all"]
        assert s == scores["given"] and s["low"] <= s["accuracy"] <= s["high"]
    assert systems["asks"]["all"]["accuracy"] >= 0.9
    assert "| asks |" in (report / "report.md").read_text()
    assert main(argv) == 2  # the report exists: refused, not overwritten


def test_reranking_follows_a_ranker(ranker_dir, tmp_path):
    """With the ranker alone deciding, the pick is the candidate it scores best; with its
    weight negative, the one it scores worst."""
    base = init_checkpoint(tmp_path / "gen", initializer_range=0.5)
    bot = ConversationModel.from_pretrained(base, rankers={"asks": ranker_dir})
    kw = dict(mmi_candidates=6, max_new_tokens=5, seed=0)
    result = bot.rerank(["I like music."], **kw)
    scores = {c.text: c.rankers["asks"] for c in result.candidates}
    assert len(scores) > 1
    direct = Ranker.from_pretrained(ranker_dir).scores(["I like music."], list(scores))
    assert list(scores.values()) == pytest.approx(direct, abs=1e-6)
    assert result.reply == max(scores, key=scores.get)
    worst = bot.rerank(["I like music."], ranker_weights={"asks": -1.0}, **kw)
    assert worst.reply == min(scores, key=scores.get)
    with pytest.raises(RejoinderError, match="loaded rankers are asks"):
        bot.generate(["Hi"], preset="mmi", ranker_weights={"updown": 1.0})
    with pytest.raises(RejoinderError, match="dialogrpt recipe needs"):
        bot.generate(["Hi"], preset="dialogrpt")


def test_chat_and_the_server_rerank_with_a_ranker(ranker_dir, tmp_path):
    """A ranker given is a ranker used: chat reranks without a preset or --sample, and
    the server reranks when a request asks for it."""
    import subprocess
    import sys

    from fastapi.testclient import TestClient

    from rejoinder.serve.app import create_app
    from rejoinder.serve.server import Settings

    base = init_checkpoint(tmp_path / "gen", initializer_range=0.5)
    proc = subprocess.run(
        [sys.executable, "-m", "rejoinder", "chat", str(base), "--ranker", f"asks={ranker_dir}",
         "--max-new-tokens", "5", "--mmi-candidates", "4", "--seed", "0"],
        input="I like music.\nquit\n", capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    bot = ConversationModel.from_pretrained(base, rankers={"asks": ranker_dir})
    expected = bot.generate(["I like music."], preset="mmi", mmi_candidates=4,
                            max_new_tokens=5, seed=0)  # fmt: skip
    assert proc.stdout.strip() == expected.strip()
    body = {"messages": [{"role": "user", "content": "I like music."}], "max_tokens": 5,
            "seed": 0, "rejoinder": {"mmi": True, "mmi_candidates": 4}}  # fmt: skip
    with TestClient(create_app(bot, Settings(db=f"sqlite:///{tmp_path}/s.db"))) as client:
        r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == expected
