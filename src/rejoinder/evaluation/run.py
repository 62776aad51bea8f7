"""Evaluating a model on a dataset split: perplexity, then replies scored per preset.

Test points: one (context, reference) per dialogue of the split. The reference is the
turn at a position picked from the dialogue's id (stable across runs and machines),
the context every turn before it. Dialogues whose contexts are identical pool their
references, so a dataset with several replies to one context is scored
multi-reference.

Perplexity covers every response of the split (every turn after the first), each
scored given the latest turns before it that fit the model's window. Per token it is
exp(NLL / tokens scored, end-of-turn included); per word it is exp(NLL / (whitespace
words + one end-of-turn per response)), which compares tokenizers fairly.
"""

from __future__ import annotations

import math
import sys
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rejoinder.errors import RejoinderError
from rejoinder.evaluation.metrics import score_human, score_replies
from rejoinder.progress import Progress


@dataclass
class TestSet:
    contexts: list[list[str]]
    references: list[list[str]]
    dialogues: list = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def load_test_set(dataset: str | Path, split: str = "test", limit: int | None = None) -> TestSet:
    """The test points of `split` of a `rejoinder data build` directory."""
    from rejoinder.data.records import read_dialogues

    root = Path(dataset)
    dialogues = read_dialogues(root, split)
    if not dialogues:
        have = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.parquet")))
        raise RejoinderError(
            f"{root} has no dialogues in a {split!r} split (it has: {', '.join(have) or 'none'}); "
            "rebuild it with `rejoinder data build … --test 0.01`, or pick another --split"
        )
    pooled: dict[tuple[str, ...], list[str]] = {}
    skipped = {"dialogues of one turn": 0}
    for d in dialogues:
        texts = [t.text for t in d.turns]
        if len(texts) < 2:
            skipped["dialogues of one turn"] += 1
            continue
        at = 1 + zlib.crc32(str(d.id).encode()) % (len(texts) - 1)
        pooled.setdefault(tuple(texts[:at]), []).append(texts[at])
    items = list(pooled.items())[:limit]
    if not items:
        raise RejoinderError(f"the {split!r} split of {root} has no dialogue of two turns or more")
    return TestSet(
        [list(c) for c, _ in items],
        [refs for _, refs in items],
        [d for d in dialogues if len(d.turns) >= 2],
        {k: v for k, v in skipped.items() if v},
    )


def perplexity(model, dialogues: list, batch_size: int = 16) -> dict[str, float]:
    """Per-token and per-word perplexity of `model` on every response of `dialogues`.

    Each response is scored given the turns before it, as many as fit the model's
    window (the latest ones), so every response gets as much context as it can.
    """
    pairs = [
        ([t.text for t in d.turns[:i]], d.turns[i].text)
        for d in dialogues
        for i in range(1, len(d.turns))
    ]
    if not pairs:
        raise RejoinderError("there are no responses to score (every dialogue has one turn)")
    budget = model.context_budget
    encodings = [model.format.training_example([*c, r], "last", budget) for c, r in pairs]
    order = sorted(range(len(encodings)), key=lambda i: len(encodings[i]))  # little padding
    nll, tokens = 0.0, 0
    with Progress("perplexity", total=len(order), unit="responses") as progress:
        for start in range(0, len(order), 256):
            chunk = [encodings[i] for i in order[start : start + 256]]
            for score in model.score_encodings(chunk, batch_size):
                nll -= score.total
                tokens += len(score.token_logprobs)
            progress.update(min(start + 256, len(order)))
    words = sum(len(r.split()) + 1 for _, r in pairs)
    return {
        "per_word": math.exp(nll / words),
        "per_token": math.exp(nll / tokens),
        "nll": nll,
        "tokens": tokens,
        "words": words,
        "responses": len(pairs),
    }


def meteor(hyps: list[str], refs: list[list[str]]) -> tuple[float | None, str | None]:
    """METEOR (NLTK's, x100) where NLTK and its WordNet data are installed; else why not."""
    try:
        from nltk.corpus import wordnet
        from nltk.translate.meteor_score import meteor_score

        wordnet.ensure_loaded()
    except ImportError:
        return None, "not computed: NLTK is not installed (pip install nltk)"
    except LookupError:
        return None, (
            "not computed: NLTK's WordNet data is not installed "
            "(python -m nltk.downloader wordnet omw-1.4)"
        )
    from rejoinder.evaluation.metrics import tokenize

    total = sum(
        meteor_score([tokenize(r) for r in rs], tokenize(h))
        for h, rs in zip(hyps, refs, strict=True)
    )
    return 100 * total / len(hyps), None


def _configs(model, presets: list[str], seed: int) -> dict:
    """Each preset's DecodingConfig, checked against the model before any work."""
    from rejoinder.generation.config import decoding_config

    configs = {name: decoding_config(name, seed=seed) for name in presets}
    for config in configs.values():
        model.check(config)  # MMI presets need the reverse model
    return configs


def generate_replies(
    model, contexts: list[list[str]], preset: str, seed: int = 0, batch_size: int = 16
) -> list[str]:
    """One reply per context with `preset` (MMI presets rerank with the reverse model)."""
    config = _configs(model, [preset], seed)[preset]
    replies: list[str] = []
    with Progress(preset, total=len(contexts), unit="replies") as progress:
        for start in range(0, len(contexts), batch_size):
            chunk = contexts[start : start + batch_size]
            replies += model.generate_batch(chunk, replace(config, seed=seed + start))
            progress.update(len(replies))
    return replies


def evaluate(
    model,
    dataset: str | Path,
    split: str = "test",
    presets: list[str] | None = None,
    limit: int | None = 200,
    seed: int = 0,
    tokenize_as: str = "default",
) -> dict[str, Any]:
    """Perplexity and the metric table of `model` (a ConversationModel) on `dataset`."""
    presets = presets or ["nucleus"]
    _configs(model, presets, seed)
    test = load_test_set(dataset, split, limit)
    print(
        f"evaluating on {len(test.contexts)} contexts of {dataset}:{split} "
        f"({sum(map(len, test.references))} references)",
        file=sys.stderr,
    )
    ppl = perplexity(model, test.dialogues)
    systems, samples = {}, {}
    for preset in presets:
        replies = generate_replies(model, test.contexts, preset, seed)
        systems[preset] = score_replies(replies, test.references, tokenize_as)
        systems[preset]["meteor"], meteor_note = meteor(replies, test.references)
        samples[preset] = replies
    human = score_human(test.references, tokenize_as)
    human["meteor"] = None
    return {
        "model": model.checkpoint.path,
        "reverse": model.reverse.checkpoint.path if model.reverse else None,
        "dataset": str(dataset),
        "split": split,
        "contexts": len(test.contexts),
        "references": sum(map(len, test.references)),
        "skipped": test.skipped,
        "tokenize": tokenize_as,
        "seed": seed,
        "perplexity": ppl,
        "systems": systems,
        "human": human,
        "meteor": meteor_note or "NLTK's meteor_score with WordNet",
        "samples": [
            {"context": c, "references": r, "replies": {p: samples[p][i] for p in presets}}
            for i, (c, r) in enumerate(zip(test.contexts, test.references, strict=True))
        ],
        "run": (model.checkpoint.meta.get("made_by") or {}).get("run"),
    }


def score_files(hyp: str | Path, refs: list[str | Path], tokenize_as: str = "default") -> dict:
    """The metric table of replies in a file against references in aligned files."""
    hyps = _lines(hyp, "hypothesis")
    ref_columns = [_lines(r, "reference") for r in refs]
    for path, column in zip(refs, ref_columns, strict=True):
        if len(column) != len(hyps):
            raise RejoinderError(
                f"{hyp} has {len(hyps)} lines but {path} has {len(column)}; the references must "
                "be aligned with the hypotheses line by line"
            )
    references = [list(r) for r in zip(*ref_columns, strict=True)]
    scores = score_replies(hyps, references, tokenize_as)
    scores["meteor"], note = meteor(hyps, references)
    human = score_human(references, tokenize_as)
    human["meteor"] = None
    return {
        "hypotheses": str(hyp),
        "references_files": [str(r) for r in refs],
        "contexts": len(hyps),
        "references": len(hyps) * len(refs),
        "tokenize": tokenize_as,
        "systems": {Path(hyp).name: scores},
        "human": human,
        "meteor": note or "NLTK's meteor_score with WordNet",
        "samples": [
            {"context": [], "references": r, "replies": {Path(hyp).name: h}}
            for h, r in zip(hyps, references, strict=True)
        ],
    }


def _lines(path: str | Path, what: str) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise RejoinderError(f"the {what} file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise RejoinderError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    empty = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if empty:
        shown = ", ".join(map(str, empty[:5])) + (" …" if len(empty) > 5 else "")
        raise RejoinderError(
            f"{path} has {len(empty)} empty line(s) (line {shown}); every line must hold one "
            f"{what} (write a placeholder such as '.' where a system said nothing)"
        )
    if not lines:
        raise RejoinderError(f"the {what} file {path} is empty")
    return lines
