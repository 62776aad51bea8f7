"""Results of a human evaluation run: hand-made runs, simulated judges, the report files."""

import json
import random

import pytest

from rejoinder.errors import RejoinderError
from rejoinder.evaluation.human import summarize
from rejoinder.evaluation.human_report import write_human_report
from rejoinder.evaluation.stats import binomial_test, wilson

TURN = ["relevance", "humanlike"]
ACUTE_KEYS = {"is_onboarding", "speakers_to_eval", "dialogue_ids", "dialogue_dicts"}


def make_run(systems, criteria=TURN, mode="turn", per_item=2, **judges):
    return {
        "name": "demo",
        "mode": mode,
        "criteria": criteria,
        "questions": {c: f"Which reply is more {c}?" for c in criteria},
        "systems": systems,
        "judgments_per_item": per_item,
        "judges": {"kept": 2, "excluded": 0, "excluded_ids": [], "reasons": {}, **judges},
    }


def turn_item(id, a, b):
    return {
        "id": id, "mode": "turn", "pair": [a, b], "context": ["Hi there.", "How are you?"],
        "replies": {a: f"{a} says fine.", b: f"{b} says good."},
    }  # fmt: skip


def vote(item, judge, left, created, reason=None, **choices):
    return {"item": item, "judge": judge, "left": left, "choices": choices,
            "reason": reason, "created": created}  # fmt: skip


@pytest.fixture
def small():
    """Two pairs, both criteria; i1 is judged by two judges who saw it in opposite
    positions and both preferred A on relevance."""
    items = [turn_item("i1", "A", "B"), turn_item("i2", "A", "B"), turn_item("i3", "A", "C")]
    judgments = [
        vote("i1", "j1", "A", 1.0, relevance="A", humanlike="tie"),
        vote("i1", "j2", "B", 2.0, relevance="A", humanlike="B"),
        vote("i2", "j1", "A", 3.0, relevance="B", humanlike="A"),
        vote("i2", "j2", "B", 4.0, relevance="tie", humanlike="tie"),
        vote("i3", "j1", "A", 5.0, relevance="A", humanlike="A"),
        vote("onboarding-1", "j1", "A", 0.5, relevance="B", humanlike="B"),
    ]
    return make_run(["A", "B", "C"]), items, judgments


def test_counts_percentages_and_win_rates_by_hand(small):
    results = summarize(*small)
    ab, ac = results["comparisons"]["relevance"]
    assert (ab["first"], ab["second"], ac["first"], ac["second"]) == ("A", "B", "A", "C")
    # relevance, A vs B: A, A, B, tie -> 2 / 1 / 1 of 4 votes; 2 of 3 decisive
    assert (ab["wins"], ab["ties"], ab["losses"], ab["votes"], ab["items"]) == (2, 1, 1, 4, 2)
    assert (ab["wins_pct"], ab["ties_pct"], ab["losses_pct"]) == (50.0, 25.0, 25.0)
    assert ab["win_rate"] == pytest.approx(2 / 3)
    assert (ab["low"], ab["high"]) == wilson(2, 3)
    assert ab["p"] == 1.0  # 2 of 3 is the most likely outcome there is
    hl = results["comparisons"]["humanlike"][0]  # tie, B, A, tie
    assert (hl["wins"], hl["ties"], hl["losses"], hl["win_rate"]) == (1, 2, 1, 0.5)
    assert results["counts"] == {
        "items": 3, "judgments": 5, "judges_kept": 2, "judges_excluded": 0,
        "judgments_per_item": 2, "items_short": 1,
    }  # fmt: skip
    standings = results["standings"]["relevance"]
    assert (standings["A"]["wins"], standings["A"]["ties"], standings["A"]["losses"]) == (3, 1, 1)
    assert standings["A"]["win_rate"] == 0.75
    assert (standings["C"]["wins"], standings["C"]["losses"]) == (0, 1)


def test_agreement_is_in_system_terms_not_positions(small):
    results = summarize(*small)
    # relevance: i1 first, first (seen on opposite sides: still agreement); i2 second,
    # tie; i3 has one vote. P-bar = (1 + 0) / 2; pooled first 2/4, second 1/4, tie 1/4:
    # P-e = 0.375; kappa = (0.5 - 0.375) / 0.625 = 0.2
    relevance = results["agreement"]["relevance"]
    assert relevance["items"] == 2
    assert relevance["kappa"] == pytest.approx(0.2)
    assert relevance["percent"] == pytest.approx(0.5)


def test_position_bias_counts_the_left_side_of_decisive_votes(small):
    position = summarize(*small)["position"]
    # relevance decisive: i1/j1 A on the left won, i1/j2 A on the right, i2/j1 B on the
    # right, i3/j1 A on the left; humanlike: B left, A left, A left
    assert (
        position["criteria"]["relevance"]["left_wins"],
        position["criteria"]["relevance"]["decisive"],
    ) == (2, 4)  # noqa: E501
    assert position["criteria"]["humanlike"]["left_rate"] == 1.0
    # Overall, each judgment once: i1/j1 left won 1-0, i3/j1 2-0; i1/j2 and i2/j1 split
    # 1-1 and i2/j2 is all ties: not decisive.
    assert (position["overall"]["left_wins"], position["overall"]["decisive"]) == (2, 2)


def test_holm_step_and_position_bias_when_every_vote_goes_left():
    items = [turn_item(f"b{i}", "A", "B") for i in range(6)]
    items += [turn_item(f"c{i}", "A", "C") for i in range(5)]
    judgments = [vote(it["id"], "j1", "A", i, relevance="A") for i, it in enumerate(items)]
    results = summarize(make_run(["A", "B", "C"], ["relevance"], per_item=1), items, judgments)
    ab, ac = results["comparisons"]["relevance"]
    # 6 of 6: 2 / 64; 5 of 5: 2 / 32. Holm: the smaller times 2 = 0.0625; the larger
    # times 1 = 0.0625. A vs B is below 0.05 alone and not once corrected.
    assert (ab["p"], ac["p"]) == pytest.approx((2 / 64, 2 / 32))
    assert (ab["p_holm"], ac["p_holm"]) == pytest.approx((0.0625, 0.0625))
    assert not ab["significant"] and not ac["significant"]
    overall = results["position"]["overall"]
    assert (overall["left_wins"], overall["decisive"], overall["left_rate"]) == (11, 11, 1.0)
    assert overall["p"] == pytest.approx(2 * 0.5**11)


def simulated(prefer_a, seed, items=200, judges=3):
    """A run of A vs B where each judge picks A with probability `prefer_a` (B otherwise)
    or, with prefer_a None, any of A, B and tie; sides are random."""
    rng = random.Random(seed)
    pool = [turn_item(f"i{i}", "A", "B") for i in range(items)]
    judgments = []
    for item in pool:
        for judge in range(judges):
            if prefer_a is None:
                choice = rng.choice(["A", "B", "tie"])
            else:
                choice = "A" if rng.random() < prefer_a else "B"
            left = rng.choice(["A", "B"])
            judgments.append(vote(item["id"], f"j{judge}", left, len(judgments), relevance=choice))
    run = make_run(["A", "B"], ["relevance"], per_item=judges)
    return summarize(run, pool, judgments)["comparisons"]["relevance"][0]


def test_judges_who_prefer_a_seventy_percent_of_the_time_are_significant():
    row = simulated(0.7, seed=1)
    assert row["significant"] and row["low"] > 0.5
    assert row["p"] == binomial_test(row["wins"], row["decisive"])


def test_judges_who_choose_at_random_are_not():
    row = simulated(None, seed=1)
    assert not row["significant"] and row["low"] < 0.5 < row["high"]


def test_a_choice_outside_the_pair_is_refused(small):
    run, items, judgments = small
    judgments.append(vote("i3", "j2", "C", 9.0, relevance="B"))
    with pytest.raises(ValueError, match="'B'"):
        summarize(run, items, judgments)


def conversation_run():
    excluded = {"excluded": 1, "excluded_ids": ["j9"], "reasons": {"failed onboarding": 1}}
    run = make_run(["A", "B"], ["engaging"], mode="conversation", per_item=3, kept=3, **excluded)
    run["questions"] = {"engaging": "Who would you prefer to talk to for a long conversation?"}
    items = [{
        "id": "c1", "mode": "conversation", "pair": ["A", "B"], "speaker": {"A": "bot", "B": "bot"},
        "conversations": {
            s: [{"speaker": "human", "text": "Hello"}, {"speaker": "bot", "text": f"Hi from {s}"}]
            for s in ("A", "B")
        },
    }]  # fmt: skip
    judgments = [
        vote("c1", "j1", "A", 1.0, "<script>alert(1)</script>", engaging="A"),
        vote("c1", "j2", "B", 2.0, "B asked\nquestions back", engaging="B"),
        vote("c1", "j3", "B", 3.0, "", engaging="A"),
    ]
    return run, items, judgments


def test_conversation_mode_keeps_a_sample_of_reasons_in_order():
    run, items, judgments = conversation_run()
    row = summarize(run, items, list(reversed(judgments)))["comparisons"]["engaging"][0]
    assert [r["judge"] for r in row["reasons"]] == ["j1", "j2"]  # the empty one is no reason
    assert row["reasons"][1]["text"] == "B asked\nquestions back"


def test_the_report_writes_four_files_with_escaped_reasons(tmp_path):
    run, items, judgments = conversation_run()
    results = summarize(run, items, judgments)
    out = write_human_report(results, items, judgments, tmp_path / "report")
    assert sorted(p.name for p in out.iterdir()) == [
        "acute.jsonl", "leaderboard.png", "report.md", "results.json", "winrate.png",
    ]  # fmt: skip
    report = (out / "report.md").read_text()
    assert "| A vs B | 2 (66.7%) / 0 (0.0%) / 1 (33.3%) |" in report
    low, high = wilson(2, 3)
    assert f"| A | 0.667 [{low:.3f}, {high:.3f}] |" in report  # the standings
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report and "<script>" not in report
    assert "B asked questions back" in report
    assert "failed onboarding: 1" in report and "![win rates](winrate.png)" in report
    assert json.loads((out / "results.json").read_text()) == results
    assert (out / "winrate.png").read_bytes().startswith(b"\x89PNG")


def test_acute_export_has_one_pairing_per_judgment(tmp_path):
    run, items, judgments = conversation_run()
    out = write_human_report(summarize(run, items, judgments), items, judgments, tmp_path / "r")
    lines = [json.loads(line) for line in (out / "acute.jsonl").read_text().splitlines()]
    assert len(lines) == len(judgments)
    first = lines[0]
    assert set(first) >= ACUTE_KEYS and first["is_onboarding"] is False
    assert first["speakers_to_eval"] == ["A", "B"]
    assert (first["winner"], first["loser"], first["left"], first["worker"]) == (
        "A",
        "B",
        "A",
        "j1",
    )
    assert first["question"] == run["questions"]["engaging"]
    # the judged speaker's turns carry the system's name, as ParlAI colours them
    b_side = first["dialogue_dicts"][1]
    assert b_side["dialogue"] == [
        {"id": "human", "text": "Hello"},
        {"id": "B", "text": "Hi from B"},
    ]
    assert b_side["speakers"] == ["human", "B"]


def test_acute_export_in_turn_mode_is_the_context_then_the_reply(small, tmp_path):
    run, items, judgments = small
    results = summarize(run, items, judgments)
    out = write_human_report(results, items, judgments, tmp_path / "r")
    lines = [json.loads(line) for line in (out / "acute.jsonl").read_text().splitlines()]
    assert len(lines) == 5  # the onboarding judgment is not one of the run's items
    texts = [t["text"] for t in lines[0]["dialogue_dicts"][0]["dialogue"]]
    assert texts == ["Hi there.", "How are you?", "A says fine."]
    tie = next(line for line in lines if line["choices"]["relevance"] == "tie")
    assert tie["winner"] is None and tie["loser"] is None


def test_an_existing_report_is_replaced_only_with_force(small, tmp_path):
    run, items, judgments = small
    results = summarize(run, items, judgments)
    out = tmp_path / "report"
    out.mkdir()
    (out / "kept").write_text("an earlier report")
    with pytest.raises(RejoinderError, match="--force"):
        write_human_report(results, items, judgments, out)
    assert [p.name for p in out.iterdir()] == ["kept"]
    write_human_report(results, items, judgments, out, force=True)
    assert (out / "report.md").exists()
