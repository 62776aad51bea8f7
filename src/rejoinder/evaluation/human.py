"""The results of a human evaluation run: who won, how surely, and how far judges agreed.

Pairwise judging as in the DialoGPT paper (one context, one reply per system, a choice
per criterion with ties allowed) and as in ACUTE-Eval (two whole conversations, one
question). `summarize` turns a run's items and its kept judges' judgments (plain dicts)
into the numbers; `write_human_report` writes them as report.md, results.json,
winrate.png and acute.jsonl (ParlAI's ACUTE-Eval pairings with each judgment attached,
for whoever analyses there).

Every count is in system terms: "first" and "second" are a pair's systems in the run's
order, whichever side of the page each was shown on; the side only matters for the
position bias.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rejoinder.atomic import atomic_directory, check_out
from rejoinder.evaluation.stats import (
    binomial_test,
    fleiss_kappa,
    holm,
    percent_agreement,
    wilson,
)

TIE = "tie"
REASONS = 5
ALPHA = 0.05
CONTEXT_SPEAKER = "context"


def summarize(run: dict, items: list[dict], judgments: list[dict]) -> dict[str, Any]:
    """The results of a run: per criterion and pair, wins / ties / losses with a test;
    agreement between judges; position bias; each system's standing; counts.

    Judgments of items not in `items` (onboarding, say) are left out.
    """
    by_id = {item["id"]: item for item in items}
    judged = sorted((j for j in judgments if j["item"] in by_id), key=lambda j: j["created"])
    order = {s: i for i, s in enumerate(run["systems"])}
    per_pair = Counter(_pair(item, order) for item in items)
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
    }


def _pair(item: dict, order: dict[str, int]) -> tuple[str, str]:
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
        pair = _pair(by_id[j["item"]], order)
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
        pair = _pair(by_id[j["item"]], order)
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


def write_human_report(
    results: dict, items: list[dict], judgments: list[dict], out: str | Path, force: bool = False
) -> Path:
    """report.md, results.json, winrate.png and acute.jsonl, written whole or not at all."""
    out = check_out(out, force)
    with atomic_directory(out) as tmp:
        (tmp / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        lines = acute_pairings(results, items, judgments)
        (tmp / "acute.jsonl").write_text(
            "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        )
        try:
            plot = plot_winrates(results, tmp).name
        except ImportError:  # the serve extra alone has no matplotlib; the tables suffice
            plot = None
        (tmp / "report.md").write_text(markdown(results, plot))
    return out


def acute_pairings(results: dict, items: list[dict], judgments: list[dict]) -> list[dict]:
    """One line per judgment in ParlAI's ACUTE-Eval pairings format, the judgment attached.

    `winner`, `loser` and `question` follow ParlAI's analysis (no ties there: a tie has
    neither) for the run's first criterion, the only one in conversation mode; `choices`
    holds every criterion. `left` is the system shown on the left, `worker` the judge.
    """
    by_id = {item["id"]: item for item in items}
    order = {s: i for i, s in enumerate(results["systems"])}
    criterion = results["criteria"][0]
    lines = []
    for j in sorted(judgments, key=lambda j: j["created"]):
        if j["item"] not in by_id:
            continue
        item = by_id[j["item"]]
        pair = _pair(item, order)
        choice = j["choices"].get(criterion)
        decided = choice not in (None, TIE)
        lines.append({
            "is_onboarding": False,
            "speakers_to_eval": list(pair),
            "dialogue_ids": [f"{item['id']}:{system}" for system in pair],
            "dialogue_dicts": [_acute_dialogue(item, system) for system in pair],
            "question": results["questions"].get(criterion, criterion),
            "winner": choice if decided else None,
            "loser": pair[1 - pair.index(choice)] if decided else None,
            "left": j["left"],
            "reason": j.get("reason"),
            "worker": j["judge"],
            "item": item["id"],
            "choices": dict(j["choices"]),
            "created": j["created"],
        })  # fmt: skip
    return lines


def _acute_dialogue(item: dict, system: str) -> dict[str, Any]:
    """A system's side of an item as an ACUTE dialogue, its judged turns under its name.

    In turn mode the context turns (people's words, not the system's) come first under
    one `context` speaker, then the system's reply.
    """
    if "conversations" in item:
        judged = item["speaker"][system]
        turns = [
            {"id": system if t["speaker"] == judged else t["speaker"], "text": t["text"]}
            for t in item["conversations"][system]
        ]
    else:
        turns = [{"id": CONTEXT_SPEAKER, "text": text} for text in item["context"]]
        turns.append({"id": system, "text": item["replies"][system]})
    return {"speakers": list(dict.fromkeys(t["id"] for t in turns)), "dialogue": turns}


def escape(text: Any) -> str:
    """Text from judges or models made inert in Markdown rendered to HTML, on one line."""
    text = " ".join(str(text).splitlines())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: Any) -> str:
    return escape(text).replace("|", "\\|")


def _pct(count: int, pct: float | None) -> str:
    return f"{count}" if pct is None else f"{count} ({pct:.1f}%)"


def _interval(rate: float | None, low: float, high: float) -> str:
    return "n/a" if rate is None else f"{rate:.3f} [{low:.3f}, {high:.3f}]"


def comparison_table(rows: list[dict]) -> str:
    """DialoGPT's table: wins / ties / losses of the first system against the second."""
    out = [
        "| pair | wins / ties / losses | win rate [95% CI] | p | Holm p | significant |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        counts = " / ".join(_pct(r[k], r[f"{k}_pct"]) for k in ("wins", "ties", "losses"))
        out.append(
            f"| {_cell(r['first'])} vs {_cell(r['second'])} | {counts} | "
            f"{_interval(r['win_rate'], r['low'], r['high'])} | {r['p']:.3g} | "
            f"{r['p_holm']:.3g} | {'**yes**' if r['significant'] else 'no'} |"
        )
    return "\n".join(out)


def _facts(results: dict) -> list[str]:
    c = results["counts"]
    what = {"turn": "one context, one reply per system", "conversation": "whole conversations"}
    return [
        f"- mode: {results['mode']} ({what.get(results['mode'], '')})",
        f"- systems: {', '.join(_cell(s) for s in results['systems'])}",
        f"- {c['items']} items, {c['judgments']} judgments from {c['judges_kept']} judges "
        f"kept ({c['judges_excluded']} excluded)",
        f"- {c['judgments_per_item']} judgments wanted per item; "
        f"{c['items_short']} items have fewer",
    ]


def _criterion_section(results: dict, criterion: str) -> list[str]:
    lines = [f"## {escape(criterion)}", ""]
    question = results["questions"].get(criterion)
    if question:
        lines += [f"> {escape(question)}", ""]
    rows = results["comparisons"][criterion]
    lines += [comparison_table(rows), ""]
    for r in rows:
        if r.get("reasons"):
            lines += [f"Reasons, {escape(r['first'])} vs {escape(r['second'])}:", ""]
            lines += [
                f"- {escape(x['judge'])} chose {escape(x['choice'])}: {escape(x['text'])}"
                for x in r["reasons"]
            ]
            lines.append("")
    return lines


def _agreement_section(results: dict) -> list[str]:
    lines = [
        "## Agreement between judges",
        "",
        "Over first / tie / second in system terms, on items judged twice or more.",
        "",
        "| criterion | items | Fleiss' kappa | percent agreement |",
        "|---|---|---|---|",
    ]
    for criterion, a in results["agreement"].items():
        kappa = "n/a" if a["kappa"] is None else f"{a['kappa']:.3f}"
        agree = "n/a" if a["percent"] is None else f"{100 * a['percent']:.1f}%"
        lines.append(f"| {_cell(criterion)} | {a['items']} | {kappa} | {agree} |")
    return [*lines, ""]


def _position_section(results: dict) -> list[str]:
    lines = [
        "## Position bias",
        "",
        "How often the side shown on the left wins a decisive vote (0.5 when the side "
        "does not matter).",
        "",
        "| criterion | left wins / decisive | left rate [95% CI] | p |",
        "|---|---|---|---|",
    ]
    position = results["position"]
    for name, b in [*position["criteria"].items(), ("each judgment once", position["overall"])]:
        lines.append(
            f"| {_cell(name)} | {b['left_wins']} / {b['decisive']} | "
            f"{_interval(b['left_rate'], b['low'], b['high'])} | {b['p']:.3g} |"
        )
    return [*lines, ""]


def _standings_section(results: dict) -> list[str]:
    criteria = results["criteria"]
    lines = [
        "## Standings",
        "",
        "Each system's win rate on decisive votes over all its pairs (for reading, not a test).",
        "",
        "| system | " + " | ".join(_cell(c) for c in criteria) + " |",
        "|---|" + "---|" * len(criteria),
    ]
    for system in results["systems"]:
        rows = [results["standings"][c].get(system) for c in criteria]
        cells = [_interval(r["win_rate"], r["low"], r["high"]) if r else "n/a" for r in rows]
        lines.append(f"| {_cell(system)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _judges_section(results: dict) -> list[str]:
    judges = results["judges"]
    lines = ["## Judges", "", f"- kept: {judges['kept']}", f"- excluded: {judges['excluded']}"]
    lines += [
        f"  - {escape(reason)}: {count}" for reason, count in (judges.get("reasons") or {}).items()
    ]
    return [*lines, ""]


def markdown(results: dict, plot: str | None) -> str:
    """report.md: the run's facts, a table per criterion, standings, agreement, position
    bias, judges and the plot."""
    lines = [f"# Human evaluation: {escape(results['name'])}", "", *_facts(results), ""]
    for criterion in results["criteria"]:
        lines += _criterion_section(results, criterion)
    lines += _standings_section(results) + _agreement_section(results)
    lines += _position_section(results)
    lines += _judges_section(results)
    lines += ["## Win rates", ""]
    lines += [f"![win rates]({plot})"] if plot else ["(no plot: `pip install matplotlib`)"]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_winrates(results: dict, out: Path) -> Path:
    """winrate.png: each pair's win rate with its Wilson interval, a panel per criterion."""
    plt = _pyplot()
    criteria = results["criteria"]
    heights = [max(1, len(results["comparisons"][c])) for c in criteria]
    fig, axes = plt.subplots(
        len(criteria), 1, figsize=(8, 1.2 * len(criteria) + 0.5 * sum(heights)),
        height_ratios=heights, squeeze=False,
    )  # fmt: skip
    for ax, criterion in zip(axes[:, 0], criteria, strict=True):
        _panel(ax, criterion, results["comparisons"][criterion])
    fig.tight_layout()
    path = out / "winrate.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _panel(ax, criterion: str, rows: list[dict]) -> None:
    y = list(range(len(rows)))
    rates, below, above = [], [], []
    for i, r in enumerate(rows):
        rate = r["win_rate"]
        if rate is None:  # no decisive vote: say so rather than draw a zero
            ax.text(0.01, i, "n/a", va="center")
        rates.append(rate or 0.0)
        below.append(0.0 if rate is None else rate - r["low"])
        above.append(0.0 if rate is None else r["high"] - rate)
    ax.barh(y, rates, xerr=[below, above], capsize=4, color="C0")
    ax.axvline(0.5, color="C7", linestyle="--")
    ax.set_yticks(y, [f"{r['first']} vs {r['second']}" for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(criterion)
    ax.set_xlabel("win rate of the first system on decisive votes")
