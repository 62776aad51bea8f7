"""A/B arms compared by what live users said of their replies (`rejoinder ab report`).

Pure functions over the plain rows a session store exports (`stores.arms.ab_rows`): a
reply is one assistant message, and its rating is the current reply's (the one the user
saw last). Each rate has a Wilson 95% interval; each pair of arms is compared on each
measure by a two-proportion z-test, Holm-corrected over the pairs of that measure.

Replies of one session are not independent (a user who likes one reply tends to like
the next), so the tests over replies are somewhat too confident; the report says so.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

from rejoinder.evaluation.stats import holm, wilson

ALPHA = 0.05
MIN_N = 30
"""Below this many replies counted per arm the z-test's normal approximation is poor:
no decision is made, whatever p says."""
HEADLINE = "thumbs_up"
"""The measure a decision is made on: thumbs-up per rated reply (of the replies users
judged, the share they liked). Per-reply rates also count replies nobody rated."""

MEASURES: dict[str, tuple[str, str, str, bool]] = {
    # name: (label, numerator, denominator, higher is better)
    "thumbs_up": ("thumbs-up rate, per rated reply", "up", "rated", True),
    "thumbs_down": ("thumbs-down rate, per rated reply", "down", "rated", False),
    "thumbs_up_per_reply": ("thumbs-up rate, per reply", "up", "replies", True),
    "thumbs_down_per_reply": ("thumbs-down rate, per reply", "down", "replies", False),
    "regenerated": ("replies regenerated", "regenerated", "replies", False),
    "rewritten": ("replies rewritten by the user", "rewritten", "replies", False),
    "rated": ("replies rated", "rated", "replies", True),
}
"""Each proportion the report gives, per arm, with its interval and tests."""

RULE = (
    "An arm is better than another on the headline measure ({label}) if the two-proportion "
    "z-test between them has a Holm-adjusted p < {alpha:g} (adjusted over the pairs of "
    "arms), each arm counts at least {min_n} replies in it, and its rate is the better "
    "one; otherwise there is no decision. The other "
    "measures are tested the same way and reported, but decide nothing."
)


def count(rows: dict[str, list[dict]]) -> dict[str, dict[str, int]]:
    """Per arm: sessions, replies, rated, up, down, regenerated (replies regenerated at
    least once), regenerations, rewritten, turns (the users' messages)."""
    out: dict[str, dict[str, int]] = {}

    def of(arm: str) -> dict[str, int]:
        keys = ("sessions", "replies", "rated", "up", "down", "regenerated", "regenerations")
        return out.setdefault(arm, dict.fromkeys((*keys, "rewritten", "turns"), 0))

    for s in rows["sessions"]:
        c = of(s["arm"])
        c["sessions"] += 1
        c["turns"] += s["turns"]
    for r in rows["replies"]:
        c = of(r["arm"])
        c["replies"] += 1
        c["rated"] += r["rating"] is not None
        c["up"] += r["rating"] == "up"
        c["down"] += r["rating"] == "down"
        c["regenerated"] += r["regenerations"] > 0
        c["regenerations"] += r["regenerations"]
        c["rewritten"] += bool(r["rewritten"])
    return dict(sorted(out.items()))


def proportion(k: int, n: int) -> dict[str, Any]:
    """k of n with its rate and Wilson 95% interval (rate None when n is 0)."""
    low, high = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "low": low, "high": high}


def z_test(k1: int, n1: int, k2: int, n2: int) -> tuple[float | None, float]:
    """The pooled two-proportion z-test: (z, two-sided p); p is 1 where it cannot tell
    (an empty arm, or every outcome the same in both).

    >>> round(z_test(60, 100, 40, 100)[1], 4)
    0.0047
    """
    if not n1 or not n2:
        return None, 1.0
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return None, 1.0
    z = (k1 / n1 - k2 / n2) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def mean_turns(rows: dict[str, list[dict]], arm: str) -> dict[str, Any]:
    """Users' messages per session: the mean, with a normal 95% interval (n >= 2)."""
    turns = [s["turns"] for s in rows["sessions"] if s["arm"] == arm]
    if not turns:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = sum(turns) / len(turns)
    if len(turns) < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1}
    sd = math.sqrt(sum((t - mean) ** 2 for t in turns) / (len(turns) - 1))
    half = 1.96 * sd / math.sqrt(len(turns))
    return {"mean": mean, "low": max(0.0, mean - half), "high": mean + half, "n": len(turns)}


def summarize(rows: dict[str, list[dict]], since: str | None = None) -> dict[str, Any]:
    """The report's figures (metrics.json): per arm its counts, rates and mean turns;
    per measure each pair's test and decision; the headline and the rule."""
    counts = count(rows)
    arms = {}
    for arm, c in counts.items():
        rates = {m: proportion(c[num], c[den]) for m, (_, num, den, _) in MEASURES.items()}
        per_reply = c["regenerations"] / c["replies"] if c["replies"] else None
        arms[arm] = {
            **c,
            "rates": rates,
            "regenerations_per_reply": per_reply,
            "turns_per_session": mean_turns(rows, arm),
        }
    tests = {m: compare(arms, m) for m in MEASURES}
    label = MEASURES[HEADLINE][0]
    return {
        "since": since,
        "arms": arms,
        "tests": tests,
        "headline": HEADLINE,
        "alpha": ALPHA,
        "rule": RULE.format(label=label, alpha=ALPHA, min_n=MIN_N),
        "decisions": [t["decision"] for t in tests[HEADLINE]],
    }


def compare(arms: dict[str, dict], measure: str) -> list[dict[str, Any]]:
    """Every pair of arms on one measure: rates, z, p, Holm-adjusted p, and the better
    arm where the adjusted p is below ALPHA (else None)."""
    _, _, _, higher = MEASURES[measure]
    pairs = list(itertools.combinations(arms, 2))
    out = []
    for a, b in pairs:
        ra, rb = arms[a]["rates"][measure], arms[b]["rates"][measure]
        z, p = z_test(ra["k"], ra["n"], rb["k"], rb["n"])
        enough = min(ra["n"], rb["n"]) >= MIN_N
        out.append(
            {
                "a": a,
                "b": b,
                "rate_a": ra["rate"],
                "rate_b": rb["rate"],
                "z": z,
                "p": p,
                "enough": enough,
            }
        )
    for test, adjusted in zip(out, holm([t["p"] for t in out]), strict=True):
        test["p_holm"] = adjusted
        better = None
        if adjusted < ALPHA and test["z"] is not None and test["enough"]:
            better = test["a"] if (test["z"] > 0) == higher else test["b"]
        test["better"] = better
        verdict = f"{better} is better" if better else "no decision"
        test["decision"] = f"{test['a']} vs {test['b']}: {verdict}"
    return out


def judged(results: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """The part of the report a judging run adds (`human.summarize`'s `results` of `run`,
    conversations drawn from the arms' sessions by `judge create --system
    NAME=sessions:URL,arm=ARM`): its facts, the arm behind each system, and per criterion
    the Bradley–Terry leaderboard. Judges compare whole conversations, so this measures
    what thumbs cannot: which arm people would rather talk to."""
    specs = (run.get("source") or {}).get("systems") or {}
    return {
        **{k: results[k] for k in ("name", "mode", "systems", "criteria", "questions", "counts")},
        "arms": {s: (specs.get(s) or {}).get("arm") for s in results["systems"]},
        "leaderboard": results["leaderboard"],
    }


def _judged_lines(part: dict[str, Any]) -> list[str]:
    from rejoinder.evaluation.human_report import escape, facts, leaderboard_lines

    arms = ", ".join(f"{escape(s)}: arm {escape(a)}" for s, a in part["arms"].items() if a)
    lines = [f"## Judged conversations: run {escape(part['name'])}", "", *facts(part)]
    lines += [f"- sessions of {arms}", ""]
    for criterion in part["criteria"]:
        question = part["questions"].get(criterion)
        lines += [f"### {escape(criterion)}", ""]
        lines += [f"> {escape(question)}", ""] if question else []
        lines += leaderboard_lines(part["leaderboard"][criterion])
    return [*lines, "![leaderboards](leaderboard.png)", ""]


def _rate(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return "–"
    return f"{r['rate']:.1%} [{r['low']:.1%}, {r['high']:.1%}] ({r['k']}/{r['n']})"


def markdown(result: dict[str, Any]) -> str:
    """report.md: the arms' figures, the tests, the rule and its decisions."""
    arms = result["arms"]
    since = f" since {result['since']}" if result["since"] else ""
    lines = [f"# A/B report{since}", ""]
    if not arms:
        return "\n".join(
            [*lines, "No session has an arm: serve with --arm to run an A/B test.", ""]
        )
    head = "| measure | " + " | ".join(arms) + " |"
    lines += [head, "|---" * (len(arms) + 1) + "|"]
    for key in ("sessions", "replies", "rated"):
        lines.append(f"| {key} | " + " | ".join(str(a[key]) for a in arms.values()) + " |")
    for m, (label, *_) in MEASURES.items():
        star = " **(headline)**" if m == result["headline"] else ""
        cells = " | ".join(_rate(a["rates"][m]) for a in arms.values())
        lines.append(f"| {label}{star} | {cells} |")
    per = [a["regenerations_per_reply"] for a in arms.values()]
    lines.append(
        "| regenerations per reply | "
        + " | ".join("–" if x is None else f"{x:.2f}" for x in per)
        + " |"
    )
    cells = []
    for a in arms.values():
        t = a["turns_per_session"]
        ci = f" [{t['low']:.2f}, {t['high']:.2f}]" if t["low"] is not None else ""
        cells.append("–" if t["mean"] is None else f"{t['mean']:.2f}{ci}")
    lines += ["| turns per session (users' messages) | " + " | ".join(cells) + " |", ""]
    lines += [
        "Rates with Wilson 95% intervals; turns with a normal 95% interval. A reply is an "
        "assistant message; its rating is that of the reply the user saw last.",
        "",
        "## Decision",
        "",
        result["rule"],
        "",
        *[f"- {d}" for d in result["decisions"]],
        "",
        "## Tests",
        "",
        "| measure | pair | rates | z | p | Holm p | better |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, tests in result["tests"].items():
        for t in tests:
            rates = " vs ".join(
                "–" if r is None else f"{r:.1%}" for r in (t["rate_a"], t["rate_b"])
            )
            z = "–" if t["z"] is None else f"{t['z']:.2f}"
            lines.append(
                f"| {MEASURES[m][0]} | {t['a']} vs {t['b']} | {rates} | {z} | {t['p']:.3g} "
                f"| {t['p_holm']:.3g} | {t['better'] or '–'} |"
            )
    lines += [
        "",
        "Replies of one session are not independent, so these tests, which count replies, "
        "are somewhat too confident: prefer more sessions to more replies per session.",
        "",
    ]
    if result.get("judged"):
        lines += _judged_lines(result["judged"])
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """rates.png: each measure's rate per arm with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(result["arms"])
    measures = list(MEASURES)
    fig, ax = plt.subplots(figsize=(8, 1 + 0.6 * len(measures)))
    height = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):
        rates = [result["arms"][arm]["rates"][m] for m in measures]
        ys = [j + i * height for j in range(len(measures))]
        xs = [r["rate"] or 0.0 for r in rates]
        # max(0, ...): an interval that ends at the rate (6 of 6, 0 of 11) can miss it by
        # a rounding error, and matplotlib refuses a negative error bar
        err = [
            [max(0.0, x - r["low"]) for x, r in zip(xs, rates, strict=True)],
            [max(0.0, r["high"] - x) for x, r in zip(xs, rates, strict=True)],
        ]
        ax.barh(ys, xs, height, xerr=err, label=arm, capsize=3)
    ax.set_yticks([j + height * (len(arms) - 1) / 2 for j in range(len(measures))])
    ax.set_yticklabels([MEASURES[m][0] for m in measures])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("rate (Wilson 95% interval)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_ab_report(result: dict[str, Any], out: Path) -> None:
    """report.md, metrics.json and rates.png in `out`, which appears whole or not at all."""
    from rejoinder.atomic import atomic_directory

    with atomic_directory(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(markdown(result), encoding="utf-8")
        if result["arms"]:
            plot(result, tmp / "rates.png")
        if result.get("judged"):
            from rejoinder.evaluation.human_report import plot_leaderboards

            plot_leaderboards(result["judged"], tmp)
