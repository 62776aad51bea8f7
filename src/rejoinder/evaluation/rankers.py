"""`rejoinder eval-ranker`: how often a ranker prefers the reply people preferred.

Pairwise accuracy per kind of pair, with a 95% Wilson interval, for each ranker and,
as in DialogRPT's table (Gao et al., 2020), for two baselines that need no training on
feedback: the forward model's likelihood of each reply (mean log-probability per token,
so that length alone does not decide) and the reverse model's likelihood of the last
context turn given the reply (MMI's backward score). Ties count half.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from rejoinder.atomic import atomic_directory, check_out
from rejoinder.evaluation.stats import wilson
from rejoinder.progress import Progress


def accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> dict[str, Any]:
    """Pairwise accuracy of scores (higher is preferred), ties counting half."""
    wins = sum(
        1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected, strict=True)
    )
    n = len(chosen)
    low, high = wilson(wins, n)
    return {"accuracy": wins / n if n else None, "low": low, "high": high, "pairs": n}


def _by_kind(kinds: list[str], chosen: list[float], rejected: list[float]) -> dict[str, Any]:
    out = {"all": accuracy(chosen, rejected)}
    for kind in sorted(set(kinds)):
        picked = [i for i, k in enumerate(kinds) if k == kind]
        out[kind] = accuracy([chosen[i] for i in picked], [rejected[i] for i in picked])
    return out


def evaluate_rankers(
    data: str | Path,
    split: str = "test",
    rankers: dict[str, str] | None = None,
    forward: str | None = None,
    reverse: str | None = None,
    limit: int | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Pairwise accuracy of each ranker (name -> directory) and of the likelihood
    baselines (given `forward` and/or `reverse` generator directories) on a split of a
    pairs dataset."""
    from rejoinder.data.pairs import read_pairs
    from rejoinder.errors import RejoinderError

    pairs = read_pairs(data, split, limit)
    if not pairs:
        raise RejoinderError(f"the {split} split of {data} has no pairs; choose another --split")
    kinds = [p.kind for p in pairs]
    chosen = [(list(p.context), p.chosen) for p in pairs]
    rejected = [(list(p.context), p.rejected) for p in pairs]
    systems: dict[str, Any] = {}

    def scored(phase: str, score) -> tuple[list[float], list[float]]:
        """score(pairs) over the chosen then the rejected replies, with progress."""
        out: list[float] = []
        both = chosen + rejected
        with Progress(phase, total=len(both), unit="replies") as progress:
            for start in range(0, len(both), 256):
                out += score(both[start : start + 256])
                progress.update(len(out))
        return out[: len(chosen)], out[len(chosen) :]

    for name, path in (rankers or {}).items():
        from rejoinder.modeling.ranker import Ranker

        ranker = Ranker.from_pretrained(path)
        systems[name] = _by_kind(
            kinds, *scored(name, partial(ranker.logits, batch_size=batch_size))
        )
    if forward:
        from rejoinder.generation import ConversationModel

        model = ConversationModel.from_pretrained(forward)
        good, bad = scored(
            "forward likelihood", lambda b: [s.mean for s in model.loglikelihood(b, batch_size)]
        )
        systems["forward likelihood"] = _by_kind(kinds, good, bad)
    if reverse:
        from rejoinder.dialogue import as_context
        from rejoinder.generation import ConversationModel
        from rejoinder.generation.mmi import source_scores

        backward = ConversationModel.from_pretrained(reverse)
        histories = [as_context(list(p.context)) for p in pairs]
        scores = source_scores(backward, histories, [[p.chosen, p.rejected] for p in pairs], "last")
        systems["reverse likelihood"] = _by_kind(
            kinds, [s.mean for s in scores[0::2]], [s.mean for s in scores[1::2]]
        )
    if not systems:
        raise RejoinderError("give at least one ranker, or --forward or --reverse for a baseline")
    counts = {k: kinds.count(k) for k in sorted(set(kinds))}
    return {"data": str(data), "split": split, "pairs": len(pairs), "kinds": counts,
            "systems": systems}  # fmt: skip


def table(result: dict[str, Any]) -> str:
    """Accuracy [95% interval] per system (rows) and kind (columns), in markdown."""
    kinds = ["all", *result["kinds"]]
    rows = ["| system | " + " | ".join(kinds) + " |", "|" + "---|" * (len(kinds) + 1)]
    for name, scores in result["systems"].items():
        cells = [
            f"{s['accuracy']:.3f} [{s['low']:.2f}, {s['high']:.2f}]"
            if (s := scores.get(k)) and s["accuracy"] is not None
            else "n/a"
            for k in kinds
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_ranker_report(result: dict[str, Any], out: str | Path, force: bool = False) -> Path:
    """metrics.json and report.md, written whole or not at all."""
    out = check_out(out, force)
    counts = ", ".join(f"{k} {n}" for k, n in result["kinds"].items())
    text = (
        f"# Ranker evaluation\n\n{result['pairs']} pairs of the {result['split']} split of "
        f"{result['data']} ({counts}). Pairwise accuracy (ties count half) with its 95% "
        "Wilson interval.\n\n" + table(result) + "\n"
    )
    with atomic_directory(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        (tmp / "report.md").write_text(text)
    return out
