"""`rejoinder eval-safety`'s run and report: the policy and the labelled texts read, each
text through the policy's layers (`safety.Scored` rows), and report.md, metrics.json and
threshold.png written whole or not at all."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rejoinder.atomic import atomic_directory, check_out
from rejoinder.errors import RejoinderError
from rejoinder.evaluation.human_report import escape
from rejoinder.evaluation.safety import (
    BOTH,
    CLASSIFIER,
    WORDS,
    Labelled,
    Scored,
    read_labelled,
    summarize,
)
from rejoinder.progress import Progress
from rejoinder.safety.policy import SafetyConfig


def is_classifier(path: Path) -> bool:
    """Whether a directory holds a classifier (rejoinder's, or a Hugging Face
    …ForSequenceClassification), read from its JSON files only."""
    from rejoinder.modeling.classifier import META_KEY

    meta, config = _json(path / "rejoinder.json"), _json(path / "config.json")
    if isinstance(meta, dict) and meta.get(META_KEY):
        return True
    names = (config.get("architectures") or []) if isinstance(config, dict) else []
    return any(str(a).endswith("ForSequenceClassification") for a in names)


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RejoinderError(f"{path} is unreadable ({e})") from None


def policy_config(source: str | Path, **overrides: Any) -> tuple[SafetyConfig, str]:
    """The policy a classifier directory, a model directory carrying "safety" settings or
    a JSON file of SafetyConfig fields stands for, and which of them it is; `overrides`:
    `words` (files added to the policy's), `default_words`, `unsafe_labels`, `threshold`
    (each None: the policy's)."""
    path = Path(source)
    if not path.exists():
        raise RejoinderError(f"{source}: no such classifier directory or policy file")
    meta = _json(path / "rejoinder.json") if path.is_dir() else None
    if path.is_file():
        values, kind = _json(path), "policy file"
        if isinstance(values, dict) and isinstance(values.get("safety"), dict):
            values = values["safety"]  # a model's rejoinder.json, given as a file
        if not isinstance(values, dict):
            raise RejoinderError(
                f"{source} is not a JSON object of safety settings such as "
                '{"safety_words": ["words.txt"], "safety_classifier": "classifier"}'
            )
        config = SafetyConfig.from_dict(values, base=path.parent)
    elif isinstance(meta, dict) and isinstance(meta.get("safety"), dict):
        config, kind = SafetyConfig.from_dict(meta["safety"], base=path), "model's policy"
    elif is_classifier(path):
        config, kind = SafetyConfig(safety_classifier=str(path)), "classifier"
    else:
        raise RejoinderError(
            f"{source} is neither a classifier directory (`train --model.objective classify`, "
            "or a Hugging Face …ForSequenceClassification) nor a model directory whose "
            'rejoinder.json carries "safety" settings; give one of those, or a JSON file '
            "of safety settings"
        )
    return with_overrides(config, **overrides), kind


def with_overrides(
    config: SafetyConfig, words=None, default_words=None, unsafe_labels=None, threshold=None
) -> SafetyConfig:
    """The policy with the command line's settings over it."""
    if threshold is not None and not 0 <= threshold <= 1:
        raise RejoinderError(f"--threshold {threshold}: use a probability in [0, 1]")
    changes: dict[str, Any] = {"safety": True}
    if words:
        changes["safety_words"] = [*config.safety_words, *words]
    if default_words is not None:
        changes["safety_default_words"] = default_words
    if unsafe_labels:
        changes["safety_unsafe_labels"] = list(unsafe_labels)
    if threshold is not None:
        changes["safety_threshold"] = threshold
    return replace(config, **changes)


def score(safety, items: Sequence[Labelled], batch: int = 256) -> list[Scored]:
    """Each text through the word list and, where the policy has one, the classifier:
    one classifier pass gives the policy's unsafe score and each label's probability."""
    classifier = safety.classifier
    rows: list[Scored] = []
    with Progress("checking", total=len(items), unit="texts") as progress:
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            scores, tops = [None] * len(chunk), [None] * len(chunk)
            if classifier is not None:
                scored = safety.scored([(list(x.context), x.text) for x in chunk])
                scores = [s for s, _, _ in scored]
                tops = [classifier.labels[p.index(max(p))] for _, _, p in scored]
            for x, s, top in zip(chunk, scores, tops, strict=True):
                word = safety.words.match(x.text)
                context = tuple(t.text for t in x.context)
                rows.append(Scored(x.label, word, s, top, x.text, context))
            progress.update(len(rows))
    return rows


def evaluate_safety(
    source: str | Path,
    data: str | Path,
    split: str | None = None,
    n_examples: int = 5,
    device: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The whole evaluation of a policy (`policy_config`'s source and overrides) on
    labelled texts (`read_labelled`): `summarize`'s figures and the facts of the run."""
    from rejoinder.safety.policy import Safety

    config, kind = policy_config(source, **overrides)
    items, bad = read_labelled(data, split)
    safety = Safety(config, device)
    rows = score(safety, items)
    labels = list(safety.classifier.labels) if safety.classifier is not None else None
    result = summarize(rows, config.safety_threshold, labels, n_examples)
    result["policy"] = {
        "source": str(source),
        "kind": kind,
        "classifier": config.safety_classifier,
        "classifier_labels": labels,
        "unsafe_labels": config.safety_unsafe_labels or None,
        "default_words": config.safety_default_words,
        "word_files": config.safety_words,
        "listed": safety.words.size,
    }
    split = (split or "test") if Path(data).is_dir() else None
    result["data"] = {"path": str(data), "split": split, "bad_lines": bad}
    return result


# -- the report ------------------------------------------------------------------------

NAMES = {WORDS: "words", CLASSIFIER: "classifier", BOTH: "both (the policy)"}


def plural(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _cell(text: Any) -> str:
    return escape(text).replace("|", "\\|")


def _rate(r: dict[str, Any]) -> str:
    return "n/a" if r["value"] is None else f"{r['value']:.3f} [{r['low']:.2f}, {r['high']:.2f}]"


def table(result: dict[str, Any]) -> str:
    """Each system's precision, recall, F1 and FPR [95% interval] and counts, in markdown."""
    rows = [
        "| system | precision | recall | F1 | FPR | tp | fp | fn | tn |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in result["systems"].items():
        f1 = s["f1"]
        f1_text = "n/a" if f1["value"] is None else f"{f1['value']:.3f}"
        if f1["low"] is not None:
            f1_text += f" [{f1['low']:.2f}, {f1['high']:.2f}]"
        cells = [_rate(s["precision"]), _rate(s["recall"]), f1_text, _rate(s["fpr"])]
        counts = [str(s[k]) for k in ("tp", "fp", "fn", "tn")]
        rows.append(f"| {NAMES.get(name, name)} | " + " | ".join(cells + counts) + " |")
    return "\n".join(rows)


def best_lines(result: dict[str, Any]) -> list[str]:
    """The threshold that maximises F1, for the classifier and for both."""
    lines = []
    for name, best in (result.get("best_threshold") or {}).items():
        if best is not None:
            low, high = best["low"], best["high"]
            span = f" (any in [{low:.3f}, {high:.3f}))" if low < high else ""
            lines.append(
                f"best F1 threshold, {NAMES[name]}: {best['threshold']:.3f}{span}: F1 "
                f"{best['f1']:.3f}, precision {best['precision'] or 0:.3f}, "
                f"recall {best['recall']:.3f}"
            )
    return lines


def _facts(result: dict[str, Any]) -> list[str]:
    p, d = result["policy"], result["data"]
    words = ["better-profanity's list"] if p["default_words"] else []
    words += [f"`{f}`" for f in p["word_files"]]
    lines = [
        f"- policy: `{p['source']}` ({p['kind']})",
        f"- word list: {' + '.join(words) or 'none'} ({p['listed']} words and phrases)",
    ]
    if p["classifier"]:
        unsafe = ", ".join(p["unsafe_labels"] or []) or "every label not named safe"
        lines.append(
            f"- classifier: `{p['classifier']}` (labels {', '.join(p['classifier_labels'])}; "
            f"unsafe: {unsafe}), flagging above {result['threshold']:g}"
        )
    else:
        lines.append("- classifier: none (the policy is its word list)")
    split = f", split {d['split']}" if d["split"] else ""
    counts = ", ".join(f"{_cell(c)} {n}" for c, n in result["classes"].items())
    lines.append(
        f"- data: `{d['path']}`{split}: {result['texts']} texts, {result['unsafe']} "
        f"unsafe ({counts})"
    )
    bad = d["bad_lines"]
    if bad["count"]:
        reasons = "; ".join(f"{_cell(r)}: {n}" for r, n in bad["reasons"].items())
        lines.append(
            f"- **{plural(bad['count'], 'bad line')} skipped** ({reasons}; first: "
            f"{', '.join(_cell(x) for x in bad['lines'])})"
        )
    return lines


def _per_class(result: dict[str, Any]) -> list[str]:
    per = result.get("per_class")
    if per is None:
        return []
    lines = ["## Per class: the classifier's likeliest label, one against the rest", ""]
    if "skipped" in per:
        return [*lines, f"Not computed: {_cell(per['skipped'])}.", ""]
    lines += ["| class | texts | precision | recall | F1 |", "|---|---|---|---|---|"]
    for c, s in per["classes"].items():
        f1 = "n/a" if s["f1"]["value"] is None else f"{s['f1']['value']:.3f}"
        lines.append(
            f"| {_cell(c)} | {s['tp'] + s['fn']} | {_rate(s['precision'])} | "
            f"{_rate(s['recall'])} | {f1} |"
        )
    return [*lines, ""]


def _shares(result: dict[str, Any]) -> list[str]:
    names = list(result["systems"])
    lines = [
        "## Share of each class flagged",
        "",
        "| class | texts | unsafe | " + " | ".join(NAMES[n] for n in names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for c, s in result["flagged_share"].items():
        cells = [_rate(s[n]) for n in names]
        lines.append(
            f"| {_cell(c)} | {s['texts']} | {'yes' if s['unsafe'] else 'no'} | "
            + " | ".join(cells)
            + " |"
        )
    return [*lines, ""]


def _examples(title: str, shown: list[dict[str, Any]]) -> list[str]:
    lines = [f"## {title}", ""]
    if not shown:
        return [*lines, "None.", ""]
    lines += ["| text | context | label | layer | classifier score |", "|---|---|---|---|---|"]
    for x in shown:
        layer = f"words ({x['word']})" if x["layer"] == WORDS else x["layer"] or "-"
        score = "-" if x["score"] is None else f"{x['score']:.3f}"
        context = " / ".join(x["context"]) or "-"
        lines.append(
            f"| {_cell(x['text'])} | {_cell(context)} | {_cell(x['label'])} | "
            f"{_cell(layer)} | {score} |"
        )
    return [*lines, ""]


def markdown(result: dict[str, Any], plot: str | None) -> str:
    """report.md: the facts, the systems' table, per class, shares, the curve, examples."""
    lines = [
        "# Safety evaluation",
        "",
        *_facts(result),
        "",
        "## The layers",
        "",
        table(result),
        "",
        "Flagged = predicted unsafe; a text is unsafe when its label is not a safe name. "
        "`words`: a listed word or phrase; `classifier`: its probability of the unsafe "
        "labels above the threshold; `both`: either (what the policy flags). Precision, "
        "recall and FPR (false-positive rate: safe texts flagged) with 95% Wilson "
        f"intervals; F1's interval: {result['f1_interval']}.",
        "",
    ]
    lines += _per_class(result) + _shares(result)
    if "curve" in result:
        lines += ["## Threshold", "", *(f"- {line}" for line in best_lines(result)), ""]
        lines += [
            "The best threshold is fitted to these texts, so its F1 flatters it: choose it "
            "on one split and measure it on another.",
            "",
        ]
        lines += [f"![threshold]({plot})"] if plot else ["(no plot: `pip install matplotlib`)"]
        lines.append("")
    shown = result["examples"]
    lines += _examples("False positives (safe texts the policy flags)", shown["false_positives"])
    lines += _examples("Misses (unsafe texts the policy lets through)", shown["misses"])
    return "\n".join(lines)


def plot_curve(result: dict[str, Any], out: Path) -> Path:
    """threshold.png: precision, recall, F1 and FPR over thresholds, the classifier's and
    both's, with the threshold in force and the one of best F1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nan = float("nan")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, name in zip(axes, (CLASSIFIER, BOTH), strict=True):
        c = result["curve"][name]
        for key, style in (("precision", "C0-"), ("recall", "C1-"), ("fpr", "C3-"), ("f1", "C7--")):
            ax.plot(
                c["thresholds"],
                [nan if v is None else v for v in c[key]],
                style,
                label=key.upper() if key in ("fpr", "f1") else key,
            )
        ax.axvline(result["threshold"], color="k", linestyle=":", label="threshold in force")
        best = result["best_threshold"][name]
        if best is not None:
            ax.plot([best["threshold"]], [best["f1"]], "k*", markersize=10, label="best F1")
        ax.set_title(NAMES[name])
        ax.set_xlabel("threshold")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
    axes[0].legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = out / "threshold.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_safety_report(result: dict[str, Any], out: str | Path, force: bool = False) -> Path:
    """metrics.json, report.md and threshold.png, written whole or not at all."""
    out = check_out(out, force)
    with atomic_directory(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        plot = None
        if "curve" in result:
            try:
                plot = plot_curve(result, tmp).name
            except ImportError:  # without matplotlib the tables suffice
                plot = None
        (tmp / "report.md").write_text(markdown(result, plot) + "\n")
    return out
