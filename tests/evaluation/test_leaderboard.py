"""The Bradley–Terry leaderboard and the power figures of a run: known strengths
recovered, hand-computable cases, disconnected systems, the normal approximation's n."""

import math
import random

import pytest

from rejoinder.evaluation.human import power_plan, summarize
from rejoinder.evaluation.human_report import write_human_report
from rejoinder.evaluation.leaderboard import ELO_SCALE, fit, has_maximum, leaderboard
from rejoinder.evaluation.stats import judgments_needed, power_of
from tests.evaluation.test_human_report import make_run, turn_item, vote

TRUE = {"A": 0.9, "B": 0.4, "C": 0.0, "D": -1.3}
TIES = 0.1


def simulate(strengths, votes_per_pair, seed):
    """Votes drawn so that a vote's expected points (win 1, tie 1/2) are exactly
    Bradley–Terry's win probability: a tie with probability TIES, else a win with
    (p - TIES / 2) / (1 - TIES)."""
    rng = random.Random(seed)
    names = list(strengths)
    counts = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            p = 1 / (1 + math.exp(strengths[b] - strengths[a]))
            win = (p - TIES / 2) / (1 - TIES)
            tally = [0, 0, 0]
            for _ in range(votes_per_pair):
                tally[1 if rng.random() < TIES else 0 if rng.random() < win else 2] += 1
            counts[(a, b)] = tuple(tally)
    return names, counts


def test_known_strengths_are_recovered_with_covering_intervals_and_right_ranks():
    names, counts = simulate(TRUE, 600, seed=3)
    result = leaderboard(names, counts, rounds=300, seed=1)
    (board,) = result["boards"]
    assert board["maximum"] and result["notes"] == [] and result["unrated"] == []
    mean = sum(TRUE.values()) / len(TRUE)
    by_name = {r["system"]: r for r in board["systems"]}
    for name, true in TRUE.items():
        row = by_name[name]
        assert row["strength"] == pytest.approx(true - mean, abs=0.12)
        assert row["low"] <= 1000 + ELO_SCALE * (true - mean) <= row["high"]
        assert row["votes"] == 3 * 600
    assert [r["system"] for r in board["systems"]] == ["A", "B", "C", "D"]
    assert [r["rank"] for r in board["systems"]] == [1, 2, 3, 4]


def test_seven_wins_to_three_is_a_strength_ratio_of_seven_to_three():
    (board,) = leaderboard(["A", "B"], {("A", "B"): (7, 0, 3)}, rounds=200)["boards"]
    a, b = board["systems"]
    assert math.exp(a["strength"] - b["strength"]) == pytest.approx(7 / 3, rel=1e-9)
    assert a["score"] - b["score"] == pytest.approx(400 * math.log10(7 / 3))
    assert a["strength"] + b["strength"] == pytest.approx(0)  # centred
    assert a["rank"] == b["rank"] == 1  # ten votes separate nothing
    assert a["low"] < a["score"] < a["high"]


def test_a_tie_counts_as_half_a_win_to_each_side():
    # 2 wins, 2 ties, 0 losses = 3 points to 1: the fit of 3 wins to 1.
    with_ties = fit(2, [(0, 1, 2 + 2 / 2, 4)])
    assert with_ties == pytest.approx(fit(2, [(0, 1, 3.0, 4)]))
    assert math.exp(with_ties[0] - with_ties[1]) == pytest.approx(3.0)
    # all ties: equal strengths
    (board,) = leaderboard(["A", "B"], {("A", "B"): (0, 5, 0)}, rounds=20)["boards"]
    assert [r["strength"] for r in board["systems"]] == pytest.approx([0.0, 0.0])


def test_a_cycle_of_three_is_centred_and_consistent():
    # A beats B 2:1, B beats C 2:1, C beats A 2:1: everyone is equal.
    counts = {("A", "B"): (2, 0, 1), ("B", "C"): (2, 0, 1), ("A", "C"): (1, 0, 2)}
    (board,) = leaderboard(["A", "B", "C"], counts, rounds=50)["boards"]
    assert [r["strength"] for r in board["systems"]] == pytest.approx([0, 0, 0], abs=1e-9)


def test_systems_never_compared_get_separate_groups_and_a_message():
    counts = {("A", "B"): (6, 1, 3), ("C", "D"): (4, 2, 4), ("A", "C"): (0, 0, 0)}
    result = leaderboard(["A", "B", "C", "D", "E"], counts, rounds=50)
    groups = [[r["system"] for r in b["systems"]] for b in result["boards"]]
    assert groups == [["A", "B"], ["C", "D"]]
    assert result["unrated"] == ["E"]
    assert any("never compared" in n and "A, B; C, D" in n for n in result["notes"])
    assert any("no votes for E" in n for n in result["notes"])
    for board in result["boards"]:  # each group centred on its own scale
        assert sum(r["strength"] for r in board["systems"]) == pytest.approx(0)


def test_a_clean_sweep_has_no_maximum_and_says_so():
    assert not has_maximum(2, [(0, 1, 5.0, 5)])
    assert has_maximum(2, [(0, 1, 4.5, 5)])  # a tie gives the loser half a point
    result = leaderboard(["A", "B"], {("A", "B"): (5, 0, 0)}, rounds=20)
    (board,) = result["boards"]
    assert not board["maximum"] and any("no finite" in n for n in result["notes"])
    a, b = board["systems"]
    assert math.isfinite(a["score"]) and a["score"] > b["score"]


def test_ranks_count_only_intervals_wholly_above():
    names, counts = simulate({"A": 0.5, "B": 0.45, "C": -1.0}, 300, seed=5)
    (board,) = leaderboard(names, counts, rounds=200)["boards"]
    rows = {r["system"]: r for r in board["systems"]}
    assert rows["A"]["rank"] == rows["B"]["rank"] == 1  # overlapping: one rank
    assert rows["C"]["rank"] == 3


def test_the_bootstrap_is_seeded():
    names, counts = simulate(TRUE, 50, seed=0)
    assert leaderboard(names, counts, rounds=30, seed=4) == leaderboard(
        names, counts, rounds=30, seed=4
    )


def test_power_by_the_normal_approximation():
    # ((1.95996 * 0.5 + 0.84162 * sqrt(0.24)) / 0.1)^2 = 193.85
    assert judgments_needed(0.6) == 194
    assert (judgments_needed(0.55), judgments_needed(0.65)) == (783, 85)
    assert judgments_needed(0.4) == judgments_needed(0.6)
    assert power_of(194, 0.6) == pytest.approx(0.8, abs=0.005)
    assert power_of(783, 0.55) == pytest.approx(0.8, abs=0.005)


def test_a_runs_power_plan_counts_pairs_and_ties():
    plan = power_plan(items=200, pairs=3, judgments_per_item=3, mode="turn")
    assert (plan["items"], plan["per_pair"], plan["decisive"]) == (66, 198, 198 * 0.75)
    rows = {r["rate"]: r for r in plan["rates"]}
    assert rows[0.6]["decisive"] == 194 and rows[0.6]["judgments"] == math.ceil(194 / 0.75)
    assert [r["enough"] for r in plan["rates"]] == [False, False, True]
    forced = power_plan(items=200, pairs=1, judgments_per_item=3, mode="conversation")
    assert forced["ties"] == 0 and forced["decisive"] == 600
    assert [r["enough"] for r in forced["rates"]] == [False, True, True]


def test_the_report_has_a_leaderboard_per_criterion(tmp_path):
    rng = random.Random(0)
    quality = {"A": 0.8, "B": 0.5, "C": 0.2}
    items, judgments = [], []
    for k, (a, b) in enumerate([("A", "B"), ("A", "C"), ("B", "C")] * 20):
        items.append(turn_item(f"i{k}", a, b))
        for judge in ("j1", "j2"):
            p = quality[a] / (quality[a] + quality[b])
            pick = a if rng.random() < p else b
            judgments.append(vote(f"i{k}", judge, a, len(judgments), relevance=pick,
                                  humanlike="tie"))  # fmt: skip
    results = summarize(make_run(["A", "B", "C"]), items, judgments)
    board = results["leaderboard"]["relevance"]
    assert [r["system"] for r in board["boards"][0]["systems"]][0] == "A"
    humanlike = results["leaderboard"]["humanlike"]["boards"][0]["systems"]
    assert [r["strength"] for r in humanlike] == pytest.approx([0, 0, 0], abs=1e-9)
    out = write_human_report(results, items, judgments, tmp_path / "report")
    report = (out / "report.md").read_text()
    assert report.count("Bradley–Terry leaderboard") == 2
    assert "| rank | system | score [95% CI] | log-strength | votes |" in report
    top = board["boards"][0]["systems"][0]
    assert f"| {top['rank']} | A | {top['score']:.0f} [{top['low']:.0f}," in report
    assert "![leaderboards](leaderboard.png)" in report
    assert (out / "leaderboard.png").read_bytes().startswith(b"\x89PNG")
