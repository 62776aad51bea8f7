"""A report directory: metrics.json, report.md (the table and sample replies), PNG plots.

The directory is written under a temporary sibling and renamed into place when it is
complete, so a report that exists is never a partial one.
"""

from __future__ import annotations

import json
from pathlib import Path

from rejoinder.atomic import atomic_directory, check_out

COLUMNS = [
    ("nist2", "NIST-2", "{:.2f}"),
    ("nist4", "NIST-4", "{:.2f}"),
    ("bleu2", "BLEU-2", "{:.2f}%"),
    ("bleu4", "BLEU-4", "{:.2f}%"),
    ("meteor", "METEOR", "{:.2f}%"),
    ("entropy4", "Entropy-4", "{:.2f}"),
    ("dist1", "Dist-1", "{:.1f}%"),
    ("dist2", "Dist-2", "{:.1f}%"),
    ("avg_len", "Avg len", "{:.1f}"),
    ("f1", "F1", "{:.2f}%"),
]
SAMPLES = 5


def write_report(result: dict, out: str | Path, force: bool = False) -> Path:
    out = check_out(out, force)
    with atomic_directory(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        plots = plot_metrics(result, tmp)
        curve = plot_perplexity_curve(result.get("run"), tmp)
        (tmp / "report.md").write_text(markdown(result, [*plots, *([curve] if curve else [])]))
    return out


def table(result: dict) -> str:
    """The metric table, one row per system and the human ceiling last (markdown)."""
    head = "| system | " + " | ".join(label for _, label, _ in COLUMNS) + " |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, scores in [*result["systems"].items(), ("human", result["human"])]:
        cells = [
            "n/a" if scores.get(key) is None else fmt.format(scores[key]) for key, _, fmt in COLUMNS
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def markdown(result: dict, plots: list[Path]) -> str:
    lines = ["# Evaluation", ""]
    if result.get("model"):
        lines.append(f"- model: `{result['model']}`")
    if result.get("reverse"):
        lines.append(f"- reverse model (MMI): `{result['reverse']}`")
    if result.get("dataset"):
        lines.append(f"- data: `{result['dataset']}`, split `{result['split']}`")
    else:
        lines.append(f"- hypotheses: `{result['hypotheses']}`")
        lines.append(f"- references: {', '.join(f'`{r}`' for r in result['references_files'])}")
    lines.append(
        f"- {result['contexts']} contexts, {result['references']} references; "
        f"tokenization `{result['tokenize']}`"
    )
    for what, count in (result.get("skipped") or {}).items():
        lines.append(f"- skipped: {count} {what}")
    ppl = result.get("perplexity")
    if ppl:
        lines += [
            "",
            "## Perplexity of the reference responses",
            "",
            f"- per word: **{ppl['per_word']:.1f}** ({ppl['words']} words, one end of turn "
            f"per response included; {ppl['responses']} responses)",
            f"- per token: {ppl['per_token']:.1f} ({ppl['tokens']} tokens)",
        ]
    lines += ["", "## Replies", "", table(result), ""]
    lines.append(f"METEOR: {result['meteor']}.")
    if result["human"].get("bleu2") is None:
        lines.append(
            "The human row's overlap metrics need two references or more per context "
            "(each is held out against the others), so they are n/a here."
        )
    else:
        lines.append(
            "The human row holds each reference out against the others, so it has one "
            "reference fewer than the systems."
        )
    lines += ["", "## Sample replies", ""]
    for i, sample in enumerate(result["samples"][:SAMPLES], 1):
        lines.append(f"### {i}")
        for turn in sample["context"][-3:]:
            lines.append(f"> {turn}")
        if sample["context"]:
            lines.append("")
        lines.append(f"- reference: {sample['references'][0]}")
        for system, reply in sample["replies"].items():
            lines.append(f"- **{system}**: {reply}")
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(result: dict, out: Path) -> list[Path]:
    """metrics.png: one panel per metric, a bar per system (human last)."""
    plt = _pyplot()
    names = [*result["systems"], "human"]
    rows = [*result["systems"].values(), result["human"]]
    shown = [(k, label) for k, label, _ in COLUMNS if any(r.get(k) is not None for r in rows)]
    cols = 3
    fig, axes = plt.subplots(
        -(-len(shown) // cols), cols, figsize=(11, 2.6 * -(-len(shown) // cols))
    )
    axes = axes.ravel()
    for ax, (key, label) in zip(axes, shown, strict=False):
        values = [r.get(key) or 0.0 for r in rows]
        bars = ax.bar(names, values, color=["C0"] * (len(names) - 1) + ["C7"])
        for bar, r in zip(bars, rows, strict=True):
            if r.get(key) is None:  # not computed: say so rather than draw a zero
                ax.text(bar.get_x() + bar.get_width() / 2, 0, "n/a", ha="center", va="bottom")
        ax.set_title(label)
        ax.tick_params(axis="x", labelsize=8)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    fig.tight_layout()
    path = out / "metrics.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def plot_perplexity_curve(run: str | None, out: Path) -> Path | None:
    """perplexity.png: validation perplexity per token against training tokens seen."""
    if not run:
        return None
    import csv
    import math

    points = []
    for metrics in Path(run).glob("logs/version_*/metrics.csv"):
        with open(metrics, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("val_loss") and row.get("tokens_seen"):
                    points.append((float(row["tokens_seen"]), math.exp(float(row["val_loss"]))))
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(*zip(*sorted(points), strict=True), "o-")
    ax.set_xlabel("training tokens seen")
    ax.set_ylabel("validation perplexity per token")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "perplexity.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
