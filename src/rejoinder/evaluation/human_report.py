"""A human evaluation run's report: report.md, results.json, winrate.png, leaderboard.png
and acute.jsonl (ParlAI's ACUTE-Eval pairings with each judgment attached, for whoever
analyses there), from `human.summarize`'s results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rejoinder.atomic import atomic_directory, check_out
from rejoinder.evaluation.human import CONTEXT_SPEAKER, TIE, pair_of


def write_human_report(
    results: dict, items: list[dict], judgments: list[dict], out: str | Path, force: bool = False
) -> Path:
    """report.md, results.json, winrate.png, leaderboard.png and acute.jsonl, written
    whole or not at all."""
    out = check_out(out, force)
    with atomic_directory(out) as tmp:
        (tmp / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        lines = acute_pairings(results, items, judgments)
        (tmp / "acute.jsonl").write_text(
            "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        )
        try:
            plot = plot_winrates(results, tmp).name
            board = plot_leaderboards(results, tmp).name
        except ImportError:  # the serve extra alone has no matplotlib; the tables suffice
            plot = board = None
        (tmp / "report.md").write_text(markdown(results, plot, board))
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
        pair = pair_of(item, order)
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


def facts(results: dict) -> list[str]:
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
    if criterion in results.get("leaderboard", {}):
        lines += leaderboard_lines(results["leaderboard"][criterion])
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


def leaderboard_table(board: dict) -> str:
    """One leaderboard's table: rank, system, score with its bootstrap interval, votes."""
    level = round(100 * board.get("level", 0.95))
    out = [
        f"| rank | system | score [{level}% CI] | log-strength | votes |",
        "|---|---|---|---|---|",
    ]
    for r in board["systems"]:
        out.append(
            f"| {r['rank']} | {_cell(r['system'])} | {r['score']:.0f} "
            f"[{r['low']:.0f}, {r['high']:.0f}] | {r['strength']:+.3f} | {r['votes']} |"
        )
    return "\n".join(out)


def leaderboard_lines(result: dict) -> list[str]:
    lines = [
        f"Bradley–Terry leaderboard (ties as half a win; score 1000 + 400·log10(strength); "
        f"{result['level']:.0%} bootstrap intervals over {result['rounds']} rounds; a rank is "
        "1 + the systems whose interval lies wholly above):",
        "",
    ]
    for k, board in enumerate(result["boards"]):
        if len(result["boards"]) > 1:
            lines += [f"Group {k + 1}:", ""]
        lines += [leaderboard_table({**board, "level": result["level"]}), ""]
    lines += [f"Note: {escape(note)}." for note in result["notes"]]
    return [*lines, ""] if result["notes"] else lines


def markdown(results: dict, plot: str | None, board: str | None = None) -> str:
    """report.md: the run's facts, a table and a leaderboard per criterion, standings,
    agreement, position bias, judges and the plots."""
    lines = [f"# Human evaluation: {escape(results['name'])}", "", *facts(results), ""]
    for criterion in results["criteria"]:
        lines += _criterion_section(results, criterion)
    lines += _standings_section(results) + _agreement_section(results)
    lines += _position_section(results)
    lines += _judges_section(results)
    lines += ["## Win rates", ""]
    lines += [f"![win rates]({plot})"] if plot else ["(no plot: `pip install matplotlib`)"]
    if board:
        lines += ["", "## Leaderboards", "", f"![leaderboards]({board})"]
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
        win_rate_panel(ax, criterion, results["comparisons"][criterion])
    fig.tight_layout()
    path = out / "winrate.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def win_rate_panel(ax, criterion: str, rows: list[dict]) -> None:
    y = list(range(len(rows)))
    rates, below, above = [], [], []
    for i, r in enumerate(rows):
        rate = r["win_rate"]
        if rate is None:  # no decisive vote: say so rather than draw a zero
            ax.text(0.01, i, "n/a", va="center")
        rates.append(rate or 0.0)
        # max(0, ...): an interval ending at the rate can miss it by a rounding error
        below.append(0.0 if rate is None else max(0.0, rate - r["low"]))
        above.append(0.0 if rate is None else max(0.0, r["high"] - rate))
    ax.barh(y, rates, xerr=[below, above], capsize=4, color="C0")
    ax.axvline(0.5, color="C7", linestyle="--")
    ax.set_yticks(y, [f"{r['first']} vs {r['second']}" for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(criterion)
    ax.set_xlabel("win rate of the first system on decisive votes")


def plot_leaderboards(results: dict, out: Path) -> Path:
    """leaderboard.png: each system's Bradley–Terry score with its bootstrap interval, a
    panel per criterion (groups never compared with each other in separate colours)."""
    plt = _pyplot()
    criteria = results["criteria"]
    boards = results["leaderboard"]
    heights = [max(1, sum(len(b["systems"]) for b in boards[c]["boards"])) for c in criteria]
    fig, axes = plt.subplots(
        len(criteria), 1, figsize=(8, 1.2 * len(criteria) + 0.4 * sum(heights)),
        height_ratios=heights, squeeze=False,
    )  # fmt: skip
    for ax, criterion in zip(axes[:, 0], criteria, strict=True):
        rows = [(k, r) for k, b in enumerate(boards[criterion]["boards"]) for r in b["systems"]]
        for y, (k, r) in enumerate(rows):
            # max(0, ...): bootstrap fits that all equal the point fit differ by rounding
            below, above = max(0.0, r["score"] - r["low"]), max(0.0, r["high"] - r["score"])
            ax.errorbar(r["score"], y, xerr=[[below], [above]], fmt="o", capsize=4, color=f"C{k}")
        ax.axvline(1000, color="C7", linestyle="--")
        ax.set_yticks(range(len(rows)), [f"{r['rank']}. {r['system']}" for _, r in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_title(criterion)
        ax.set_xlabel("Bradley–Terry score (1000 + 400 log10 strength)")
    fig.tight_layout()
    path = out / "leaderboard.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
