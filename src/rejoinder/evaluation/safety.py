"""`rejoinder eval-safety`'s figures: how well a safety policy's layers tell unsafe texts
from safe ones.

Three systems on one binary task (flagged = predicted unsafe; a text is unsafe when its
label is not a safe name such as "safe" or "__ok__", `safety.policy.SAFE_NAMES`): the
word list alone, the classifier alone (its probability of the unsafe labels above the
threshold, as `Safety.check` flags), and both (the policy: a listed word, or else the
classifier). Each gets precision, recall and false-positive rate with 95% Wilson
intervals, and F1 with a 95% percentile-bootstrap interval (`BOOTSTRAP` resamples of the
texts, drawn as multinomial counts of the four cells, seed 0). Beside them: the
classifier's argmax against each dataset class (when its labels are the dataset's
classes), each class's share flagged by each system, the precision/recall/FPR curve
over thresholds, the threshold that maximises F1, and the false positives and misses.

Everything here is a pure function of `Scored` rows, one per labelled text (its label,
the listed word that matched it, the classifier's score), so that tests can count the
figures by hand; `safety_report` reads the policy and the texts, scores them, and
writes the report.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rejoinder.dialogue import Turn, as_context
from rejoinder.errors import RejoinderError
from rejoinder.evaluation.stats import wilson
from rejoinder.safety.policy import SAFE_NAMES

BOOTSTRAP = 2000
"""Resamples of the F1 interval."""
GRID = [i / 100 for i in range(101)]
"""The thresholds of the curve."""
WORDS, CLASSIFIER, BOTH = "words", "classifier", "both"
F1_METHOD = (
    f"95% percentile bootstrap over the texts ({BOOTSTRAP} resamples, seed 0); "
    "degenerate ([0, 0]) when there is no true positive"
)


def is_unsafe(label: str) -> bool:
    """Whether a dataset label is an unsafe class (any label that is not a safe name).

    >>> is_unsafe("safe"), is_unsafe("__ok__"), is_unsafe("toxic")
    (False, False, True)
    """
    return label.strip().lower() not in SAFE_NAMES


@dataclass(frozen=True)
class Scored:
    """One labelled text as the policy's layers saw it."""

    gold: str
    """The dataset's label."""
    word: str | None = None
    """The listed word or phrase that matched it (None: none did)."""
    score: float | None = None
    """The classifier's probability that it is unsafe (None: no classifier)."""
    label: str | None = None
    """The classifier's likeliest label, of all its labels (None: no classifier)."""
    text: str = ""
    context: tuple[str, ...] = ()

    @property
    def unsafe(self) -> bool:
        return is_unsafe(self.gold)


def rate(k: int, n: int) -> dict[str, Any]:
    """k of n as a share with its Wilson interval (None of nothing)."""
    low, high = wilson(k, n)
    return {"value": k / n if n else None, "low": low, "high": high, "k": k, "n": n}


def f1_score(tp: int, fp: int, fn: int) -> float | None:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None


def f1_interval(tp: int, fp: int, fn: int, tn: int, resamples: int = BOOTSTRAP, seed: int = 0):
    """F1's 95% percentile-bootstrap interval: the texts resampled with replacement,
    which for four cells is one multinomial draw of their counts per resample."""
    import numpy as np

    n = tp + fp + fn + tn
    if not n or not tp + fp + fn:
        return None
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, np.array([tp, fp, fn, tn]) / n, size=resamples)
    denominator = 2 * draws[:, 0] + draws[:, 1] + draws[:, 2]
    kept = denominator > 0  # a resample of true negatives only has no F1
    f1 = 2 * draws[kept, 0] / denominator[kept]
    return float(np.quantile(f1, 0.025)), float(np.quantile(f1, 0.975))


def binary(gold: Sequence[bool], flagged: Sequence[bool]) -> dict[str, Any]:
    """Counts, precision, recall, F1 and false-positive rate of flags against gold."""
    cells = Counter(zip(gold, flagged, strict=True))
    tp, fp, fn, tn = cells[True, True], cells[False, True], cells[True, False], cells[False, False]
    f1 = f1_score(tp, fp, fn)
    low, high = f1_interval(tp, fp, fn, tn) or (None, None)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": rate(tp, tp + fp),
        "recall": rate(tp, tp + fn),
        "f1": {"value": f1, "low": low, "high": high},
        "fpr": rate(fp, fp + tn),
    }


def system_flags(rows: Sequence[Scored], threshold: float) -> dict[str, list[bool]]:
    """Each system's flags: the word list, and where there is a classifier, the
    classifier (score above the threshold) and both (the policy)."""
    words = [r.word is not None for r in rows]
    if not rows or rows[0].score is None:
        return {WORDS: words}
    scored = [r.score > threshold for r in rows]
    return {
        WORDS: words,
        CLASSIFIER: scored,
        BOTH: [a or b for a, b in zip(words, scored, strict=True)],
    }


def per_class(rows: Sequence[Scored]) -> dict[str, Any]:
    """One-vs-rest figures of the classifier's likeliest label for each dataset class."""
    gold = [r.gold for r in rows]
    return {c: binary([g == c for g in gold], [r.label == c for r in rows]) for c in classes(rows)}


def classes(rows: Sequence[Scored]) -> list[str]:
    """The dataset's classes, most frequent first."""
    return [c for c, _ in Counter(r.gold for r in rows).most_common()]


def shares(rows: Sequence[Scored], flags: dict[str, list[bool]]) -> dict[str, Any]:
    """For each dataset class: how many texts, and the share each system flagged."""
    out = {}
    for c in classes(rows):
        at = [i for i, r in enumerate(rows) if r.gold == c]
        out[c] = {"texts": len(at), "unsafe": is_unsafe(c)}
        for name, flagged in flags.items():
            out[c][name] = rate(sum(flagged[i] for i in at), len(at))
    return out


class Sweep:
    """The figures at any threshold, a text flagged when `always` says so (a listed word)
    or its score is above the threshold."""

    def __init__(self, rows: Sequence[Scored], always: Sequence[bool]):
        self.positives = sum(r.unsafe for r in rows)
        self.negatives = len(rows) - self.positives
        pairs = list(zip(rows, always, strict=True))
        self.tp = sum(1 for r, a in pairs if a and r.unsafe)
        self.fp = sum(1 for r, a in pairs if a and not r.unsafe)
        self.pos = sorted(r.score for r, a in pairs if not a and r.unsafe)
        self.neg = sorted(r.score for r, a in pairs if not a and not r.unsafe)

    def at(self, t: float) -> dict[str, Any]:
        tp = self.tp + len(self.pos) - bisect.bisect_right(self.pos, t)
        fp = self.fp + len(self.neg) - bisect.bisect_right(self.neg, t)
        p, n = self.positives, self.negatives
        return {
            "threshold": t,
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / p if p else None,
            "f1": f1_score(tp, fp, p - tp),
            "fpr": fp / n if n else None,
        }


def curve(rows: Sequence[Scored], always: Sequence[bool], grid=GRID) -> dict[str, list]:
    """Precision, recall, F1 and FPR at each threshold of `grid` (None where undefined)."""
    sweep = Sweep(rows, always)
    points = [sweep.at(t) for t in grid]
    names = ("precision", "recall", "f1", "fpr")
    return {"thresholds": list(grid), **{k: [x[k] for x in points] for k in names}}


def best_threshold(rows: Sequence[Scored], always: Sequence[bool]) -> dict[str, Any] | None:
    """The threshold that maximises F1, searched exactly: every way a threshold splits
    the scores is tried, as the thresholds that split them so (from `low`, included, to
    `high`) and their middle; the highest of equal F1s. None without unsafe texts."""
    sweep = Sweep(rows, always)
    if not sweep.positives:
        return None
    values = [1.0, *sorted({s for s in sweep.pos + sweep.neg if 0 < s < 1}, reverse=True), 0.0]
    best = {**sweep.at(1.0), "low": 1.0, "high": 1.0}  # the classifier flags nothing
    for high, low in zip(values, values[1:], strict=False):
        at = {**sweep.at((low + high) / 2), "low": low, "high": high}
        if at["f1"] > best["f1"]:
            best = at
    return best


def examples(rows: Sequence[Scored], flagged: Sequence[bool], n: int) -> dict[str, list]:
    """The policy's false positives (surest first: a listed word counts 1) and misses
    (the classifier's lowest scores first), `n` of each."""

    def shown(r: Scored) -> dict[str, Any]:
        layer = WORDS if r.word is not None else CLASSIFIER if r.score is not None else None
        return {
            "text": r.text,
            "context": list(r.context[-2:]),
            "label": r.gold,
            "layer": layer,
            "word": r.word,
            "score": r.score,
        }

    wrong = [r for r, f in zip(rows, flagged, strict=True) if f and not r.unsafe]
    missed = [r for r, f in zip(rows, flagged, strict=True) if not f and r.unsafe]
    wrong.sort(key=lambda r: -(1.0 if r.word is not None else r.score or 0.0))
    missed.sort(key=lambda r: r.score or 0.0)
    return {
        "false_positives": [shown(r) for r in wrong[:n]],
        "misses": [shown(r) for r in missed[:n]],
    }


def summarize(
    rows: Sequence[Scored],
    threshold: float,
    labels: Sequence[str] | None = None,
    n_examples: int = 5,
) -> dict[str, Any]:
    """Every figure of the report from the rows; `labels`: the classifier's labels
    (None: no classifier)."""
    if not rows:
        raise RejoinderError("no labelled texts to evaluate on")
    flags = system_flags(rows, threshold)
    gold = [r.unsafe for r in rows]
    policy = flags.get(BOTH, flags[WORDS])
    out: dict[str, Any] = {
        "texts": len(rows),
        "unsafe": sum(gold),
        "classes": dict(Counter(r.gold for r in rows).most_common()),
        "threshold": threshold,
        "f1_interval": F1_METHOD,
        "systems": {name: binary(gold, flagged) for name, flagged in flags.items()},
        "flagged_share": shares(rows, flags),
        "examples": examples(rows, policy, n_examples),
    }
    if labels is None:
        return out
    words = flags[WORDS]
    never = [False] * len(rows)
    out["curve"] = {CLASSIFIER: curve(rows, never), BOTH: curve(rows, words)}
    out["best_threshold"] = {
        CLASSIFIER: best_threshold(rows, never),
        BOTH: best_threshold(rows, words),
    }
    missing = [c for c in out["classes"] if c not in labels]
    out["per_class"] = (
        {"classes": per_class(rows)}
        if not missing
        else {
            "skipped": f"the classifier's labels ({', '.join(labels)}) do not include the "
            f"dataset's {', '.join(missing)}"
        }
    )
    return out


@dataclass(frozen=True)
class Labelled:
    """A labelled text: the turns before it, the text and its label."""

    context: tuple[Turn, ...]
    text: str
    label: str


def read_labelled(path: str | Path, split: str | None = None) -> tuple[list[Labelled], dict]:
    """The labelled texts of a JSONL file ({"context": [...], "text", "label"} a line) or
    of a labels dataset's split (`data build labels`), and the bad lines skipped:
    {"count", "reasons": {reason: count}, "lines": the first few "N: reason"}."""
    path = Path(path)
    bad: dict[str, Any] = {"count": 0, "reasons": {}, "lines": []}
    if not path.exists():
        raise RejoinderError(f"--data {path}: no such file or labels dataset")
    if path.is_dir():
        try:
            from rejoinder.data.labels import read_labels
        except ImportError:
            raise RejoinderError(
                f"--data {path}: labels datasets need rejoinder.data.labels, which this "
                "install lacks; give a JSONL file"
            ) from None
        split = split or "test"
        got = [
            Labelled(tuple(as_context(x.context)), x.text, x.label)
            for x in read_labels(path, split)
        ]
        if not got:
            raise RejoinderError(
                f"--data {path}: its {split} split has no labelled texts; choose another --split"
            )
        return got, bad
    if split is not None:
        raise RejoinderError(f"--split is for a labels dataset directory; {path} is a file")
    items = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                items.append(_labelled(json.loads(line)))
            except (ValueError, RejoinderError) as e:
                reason = "not JSON" if isinstance(e, json.JSONDecodeError) else str(e)
                bad["count"] += 1
                bad["reasons"][reason] = bad["reasons"].get(reason, 0) + 1
                if len(bad["lines"]) < 5:
                    bad["lines"].append(f"{number}: {reason}")
    if not items:
        why = f" ({bad['count']} bad: {'; '.join(bad['lines'])})" if bad["count"] else ""
        raise RejoinderError(
            f"--data {path} has no labelled texts{why}; each line must be a JSON object "
            '{"context": ["..."], "text": "...", "label": "safe"}'
        )
    return items, bad


def _labelled(row: Any) -> Labelled:
    if not isinstance(row, dict):
        raise RejoinderError("not a JSON object")
    text, label = row.get("text"), row.get("label")
    if not isinstance(text, str) or not text.strip():
        raise RejoinderError('no "text" (a non-empty string)')
    if not isinstance(label, str) or not label.strip():
        raise RejoinderError('no "label" (a string such as "safe" or "toxic")')
    try:
        context = tuple(as_context(row.get("context") or []))
    except RejoinderError:
        raise RejoinderError('a "context" that is not a list of turns') from None
    return Labelled(context, text, label.strip())
