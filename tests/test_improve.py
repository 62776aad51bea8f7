"""`rejoinder improve`: the stages from a serving database to a decision, and the rule
that decides."""

from __future__ import annotations

import json

import pytest

from rejoinder.errors import RejoinderError
from rejoinder.improve import CANDIDATE, KEEP, MORE, PROMOTE, SERVING, ImproveOptions, decide
from tests.conftest import PARROT


def row(first, second, wins, losses, significant, ties=0):
    decisive = wins + losses
    return {
        "first": first, "second": second, "wins": wins, "losses": losses, "ties": ties,
        "decisive": decisive, "win_rate": wins / decisive if decisive else None,
        "significant": significant, "p_holm": 0.01 if significant else 0.5,
    }  # fmt: skip


def test_the_decision_rule():
    assert decide({"relevance": [row(CANDIDATE, SERVING, 70, 30, True)]})["decision"] == PROMOTE
    # The same, the other way round in the run's order.
    assert decide({"relevance": [row(SERVING, CANDIDATE, 30, 70, True)]})["decision"] == PROMOTE
    mixed = {
        "relevance": [row(CANDIDATE, SERVING, 70, 30, True)],
        "humanlike": [row(CANDIDATE, SERVING, 30, 70, True)],
    }
    kept = decide(mixed)
    assert kept["decision"] == KEEP and "humanlike (30% for candidate)" in kept["why"]
    unsure = decide({"relevance": [row(CANDIDATE, SERVING, 12, 8, False)]})
    assert unsure["decision"] == MORE and "20 decisive votes" in unsure["why"]
    assert decide({})["decision"] == MORE


def test_bad_options_are_refused():
    with pytest.raises(RejoinderError, match="kto or dpo"):
        ImproveOptions(db="x", model="m", out="o", objective="ppo")
    with pytest.raises(RejoinderError, match="between 0 and 1"):
        ImproveOptions(db="x", model="m", out="o", test=1.0)


def test_the_stages_from_a_database_to_a_report_and_a_resumed_run(tmp_path, parrot_dir):
    from rejoinder.cli import main
    from rejoinder.stores.sessions import SessionStore

    db = f"sqlite:///{tmp_path / 'serving.db'}"
    store = SessionStore(db)
    for i in range(40):  # users like the parrot's lines and dislike anything else
        sid = store.create()
        said = list(PARROT)[i % 2]
        store.append(sid, ("user", f"{said} {i}"), ("assistant", PARROT[said]))
        store.feedback(sid, 1, rating="up" if i % 4 < 2 else "down")
        if i % 4 >= 2:
            store.replace_last_reply(sid, 1, f"something else {i}")
    store.close()
    from rejoinder.modeling.checkpoint import load_checkpoint, save_checkpoint
    from rejoinder.modeling.ranker import ranker_model

    base = load_checkpoint(parrot_dir, device="cpu")  # a ranker on the parrot's trunk
    ranker = save_checkpoint(
        ranker_model(str(parrot_dir)), base.tokenizer, base.format, tmp_path / "r", ranks=True
    )
    out = tmp_path / "improve"
    argv = ["improve", str(parrot_dir), "--db", db, "--out", str(out), "--steps", "3",
            "--items", "4", "--judgments-per-item", "1", "--test", "0.3",
            "--ranker", f"updown={ranker}"]  # fmt: skip
    assert main(argv) == 0
    for made in ("unpaired/manifest.json", "contexts/manifest.json", "candidate/rejoinder.json"):
        assert (out / made).is_file(), made
    figures = json.loads((out / "offline.json").read_text())
    assert figures["rows"] > 0 and figures["liked"] > 0
    for model in (SERVING, CANDIDATE):
        m = figures[model]
        assert m["margin"] is not None and m["liked_perplexity"] >= 1
        assert set(m["metrics"]) >= {"bleu2", "dist2", "f1"}
        assert 0 <= m["rankers"]["updown"] <= 1
    decision = json.loads((out / "decision.json").read_text())
    assert decision["decision"] == MORE  # nobody has judged yet
    report = (out / "report.md").read_text()
    assert "## Decision: need more judgments" in report and "Nothing was promoted" in report
    # Run again: every stage is found done, the judging run is not made twice.
    trained = (out / "candidate" / "rejoinder.json").stat().st_mtime
    assert main(argv) == 0
    assert (out / "candidate" / "rejoinder.json").stat().st_mtime == trained
    from rejoinder.stores.judgments import JudgeStore

    judges = JudgeStore(db)
    assert [n for n in judges.run_names() if n.startswith("improve-")] == ["improve-improve"]
    judges.close()
