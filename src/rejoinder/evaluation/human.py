"""The results of a human evaluation run: who won, how surely, and how far judges agreed.

Pairwise judging as in the DialoGPT paper (one context, one reply per system, a choice
per criterion with ties allowed) and as in ACUTE-Eval (two whole conversations, one
question). `summarize` turns a run's items and its kept judges' judgments (plain dicts)
into the numbers; `human_report.write_human_report` writes them as report.md,
results.json, winrate.png, leaderboard.png and acute.jsonl.

Every count is in system terms: "first" and "second" are a pair's systems in the run's
order, whichever side of the page each was shown on; the side only matters for the
position bias.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from rejoinder.evaluation.leaderboard import from_comparisons
from rejoinder.evaluation.stats import (
    binomial_test,
    fleiss_kappa,
    holm,
    judgments_needed,
    percent_agreement,
    power_of,
    wilson,
)

TIE = "tie"
REASONS = 5
ALPHA = 0.05
CONTEXT_SPEAKER = "context"


def summarize(run: dict, items: list[dict], judgments: list[dict]) -> dict[str, Any]:
    """The results of a run: per criterion and pair, wins / ties / losses with a test;
    agreement between judges; position bias; each system's standing; per criterion a
    Bradley–Terry leaderboard (`leaderboard.leaderboard`, seeded: the same judgments give
    the same board); counts.

    Judgments of items not in `items` (onboarding, say) are left out.
    """
    by_id = {item["id"]: item for item in items}
    judged = sorted((j for j in judgments if j["item"] in by_id), key=lambda j: j["created"])
    order = {s: i for i, s in enumerate(run["systems"])}
    per_pair = Counter(pair_of(item, order) for item in items)
    pairs = {p: per_pair[p] for p in sorted(per_pair, key=lambda p: (order[p[0]], order[p[1]]))}
    criteria = list(run["criteria"])
    comparisons = {
        c: _comparisons(c, pairs, by_id, judged, order, run["mode"] == "conversation")
        for c in criteria
    }
    return {
        "name": run["name"],
        "mode": run["mode"],
        "systems": list(run["systems"]),
        "criteria": criteria,
        "questions": dict(run.get("questions") or {}),
        "counts": _counts(run, items, judged),
        "judges": run["judges"],
        "comparisons": comparisons,
        "agreement": {c: _agreement(c, by_id, judged, order) for c in criteria},
        "position": _position(criteria, judged),
        "standings": {c: _standings(run["systems"], comparisons[c]) for c in criteria},
        "leaderboard": {c: from_comparisons(run["systems"], comparisons[c]) for c in criteria},
    }


def pair_of(item: dict, order: dict[str, int]) -> tuple[str, str]:
    """An item's two systems in the run's order, whichever side each was shown on."""
    return tuple(sorted(item["pair"], key=order.__getitem__))


def _choice(judgment: dict, criterion: str, pair: tuple[str, str]) -> str | None:
    """The judgment's choice on a criterion (None when it has none), checked."""
    choice = judgment["choices"].get(criterion)
    if choice is not None and choice not in (*pair, TIE):
        raise ValueError(
            f"judgment of item {judgment['item']!r} by {judgment['judge']!r} chose "
            f"{choice!r} on {criterion!r}; it must be one of {list(pair)} or {TIE!r}"
        )
    return choice


def _rate(successes: int, n: int) -> dict[str, Any]:
    """A proportion with its Wilson 95% interval and the exact test against one half."""
    low, high = wilson(successes, n)
    return {
        "rate": successes / n if n else None,
        "low": low,
        "high": high,
        "p": binomial_test(successes, n),
    }


def _percent(count: int, total: int) -> float | None:
    return 100 * count / total if total else None


def _tally(pair: tuple[str, str], choices: list[str], items: int) -> dict[str, Any]:
    first, second = pair
    wins, losses, ties = choices.count(first), choices.count(second), choices.count(TIE)
    decisive = wins + losses
    rate = _rate(wins, decisive)
    return {
        "first": first,
        "second": second,
        "items": items,
        "votes": len(choices),
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "wins_pct": _percent(wins, len(choices)),
        "ties_pct": _percent(ties, len(choices)),
        "losses_pct": _percent(losses, len(choices)),
        "decisive": decisive,
        "win_rate": rate["rate"],
        "low": rate["low"],
        "high": rate["high"],
        "p": rate["p"],
    }


def _comparisons(
    criterion: str,
    pairs: dict[tuple[str, str], int],
    by_id: dict[str, dict],
    judged: list[dict],
    order: dict[str, int],
    with_reasons: bool,
) -> list[dict[str, Any]]:
    """One row per pair with items (`pairs`: pair -> its number of items).

    Holm's correction runs over the rows of a criterion, the family of tests one reads
    off its table.
    """
    votes: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for j in judged:
        pair = pair_of(by_id[j["item"]], order)
        if _choice(j, criterion, pair) is not None:
            votes[pair].append(j)
    rows = []
    for pair, n_items in pairs.items():
        chosen = votes[pair]
        row = _tally(pair, [j["choices"][criterion] for j in chosen], n_items)
        if with_reasons:
            row["reasons"] = _reasons(chosen, criterion)
        rows.append(row)
    for row, adjusted in zip(rows, holm([r["p"] for r in rows]), strict=True):
        row["p_holm"] = adjusted
        row["significant"] = adjusted < ALPHA
    return rows


def _reasons(chosen: list[dict], criterion: str) -> list[dict[str, Any]]:
    """The first few non-empty reasons, as the judges wrote them."""
    given = [j for j in chosen if (j.get("reason") or "").strip()]
    return [
        {"item": j["item"], "judge": j["judge"], "choice": j["choices"][criterion],
         "text": j["reason"]}
        for j in given[:REASONS]
    ]  # fmt: skip


def _agreement(
    criterion: str, by_id: dict[str, dict], judged: list[dict], order: dict[str, int]
) -> dict[str, Any]:
    """Agreement over first / tie / second, so that two judges who saw the pair in
    opposite positions but preferred the same system agree."""
    labels: dict[str, list[str]] = defaultdict(list)
    for j in judged:
        pair = pair_of(by_id[j["item"]], order)
        choice = _choice(j, criterion, pair)
        if choice is not None:
            labels[j["item"]].append(
                TIE if choice == TIE else "first" if choice == pair[0] else "second"
            )
    ratings = list(labels.values())
    return {
        "items": sum(len(r) >= 2 for r in ratings),
        "kappa": fleiss_kappa(ratings),
        "percent": percent_agreement(ratings),
    }


def _left_wins(judged: list[dict], criteria: Iterable[str]) -> dict[str, Any]:
    decisive = [(j, c) for j in judged for c in criteria if j["choices"].get(c) not in (None, TIE)]
    left = sum(j["choices"][c] == j["left"] for j, c in decisive)
    rate = _rate(left, len(decisive))
    return {"left_wins": left, "decisive": len(decisive), "left_rate": rate.pop("rate"), **rate}


def _by_judgment(judged: list[dict], criteria: list[str]) -> dict[str, Any]:
    """One vote per judgment: the side that won more of its criteria (a judgment whose
    sides won equally many is not decisive). Pooling every criterion's votes instead
    would count one judge's one look at an item several times, and its p-value would
    claim a certainty the data do not have."""
    left = decisive = 0
    for j in judged:
        votes = [j["choices"].get(c) for c in criteria]
        won = sum(v == j["left"] for v in votes)
        lost = sum(v not in (None, TIE, j["left"]) for v in votes)
        if won != lost:
            decisive += 1
            left += won > lost
    rate = _rate(left, decisive)
    return {"left_wins": left, "decisive": decisive, "left_rate": rate.pop("rate"), **rate}


def _position(criteria: list[str], judged: list[dict]) -> dict[str, Any]:
    """How often the reply shown on the left wins a decisive vote; 0.5 when position
    does not matter. Overall counts each judgment once (`_by_judgment`)."""
    return {
        "overall": _by_judgment(judged, criteria),
        "criteria": {c: _left_wins(judged, [c]) for c in criteria},
    }


def _standings(systems: list[str], rows: list[dict]) -> dict[str, dict[str, Any]]:
    """Each system's record over all its pairs: a league table to read, not a test."""
    out = {}
    for system in systems:
        mine = [r for r in rows if system in (r["first"], r["second"])]
        if not mine:
            continue
        wins = sum(r["wins"] if r["first"] == system else r["losses"] for r in mine)
        losses = sum(r["losses"] if r["first"] == system else r["wins"] for r in mine)
        low, high = wilson(wins, wins + losses)
        out[system] = {
            "wins": wins,
            "ties": sum(r["ties"] for r in mine),
            "losses": losses,
            "win_rate": wins / (wins + losses) if wins + losses else None,
            "low": low,
            "high": high,
        }
    return out


def _counts(run: dict, items: list[dict], judged: list[dict]) -> dict[str, int]:
    per_item = Counter(j["item"] for j in judged)
    wanted = run["judgments_per_item"]
    return {
        "items": len(items),
        "judgments": len(judged),
        "judges_kept": run["judges"]["kept"],
        "judges_excluded": run["judges"]["excluded"],
        "judgments_per_item": wanted,
        "items_short": sum(per_item[item["id"]] < wanted for item in items),
    }


POWER_RATES = (0.55, 0.60, 0.65)
POWER = 0.8
TURN_TIES = 0.25
"""The share of ties a turn-mode run is planned for (DialoGPT's tables had 15-40%);
conversation mode is a forced choice, with none."""


def power_plan(items: int, pairs: int, judgments_per_item: int, mode: str) -> dict[str, Any]:
    """Whether a run as created can detect a 55%, 60% or 65% win rate against 50% on a
    pair of systems at 80% power (two-sided alpha 0.05, normal approximation).

    The report's test counts decisive votes only, so the judgments a pair gets (its
    fewest items, as pairs go round-robin, times the judgments per item) are discounted
    by the ties expected (`TURN_TIES` in turn mode, none in conversation mode).
    """
    per_pair = items // pairs * judgments_per_item
    ties = TURN_TIES if mode == "turn" else 0.0
    decisive = per_pair * (1 - ties)
    rows = []
    for rate in POWER_RATES:
        needed = judgments_needed(rate, ALPHA, POWER)
        judgments = math.ceil(needed / (1 - ties))
        power = power_of(decisive, rate, ALPHA)
        rows.append({"rate": rate, "decisive": needed, "judgments": judgments,
                     "enough": per_pair >= judgments, "power": power})  # fmt: skip
    return {"items": items // pairs, "judgments_per_item": judgments_per_item,
            "per_pair": per_pair, "ties": ties, "decisive": decisive, "power": POWER,
            "alpha": ALPHA, "rates": rows}  # fmt: skip
