"""The DSTC-7 metric set of the DialoGPT paper, plus ParlAI's F1, in plain Python.

Every metric takes hypotheses (one reply per context) and references (for each
context, one or more replies), already tokenized unless said otherwise:

- BLEU-n: corpus-level (Papineni et al. 2002): n-gram precisions clipped by the most
  any one reference has, pooled over the corpus, uniform weights up to n, and a
  brevity penalty against the reference closest in length to each hypothesis.
- NIST-n: corpus-level (Doddington 2002): matched n-grams weighted by their
  information in the references, log2(count(w1..wn-1) / count(w1..wn)), and NIST's
  brevity penalty against the average reference length (0.5 at 2/3 of it).
- Entropy-n: -sum (c/T) ln(c/T) over the n-gram counts pooled across all hypotheses.
- Dist-n: distinct n-grams / all n-grams, pooled across all hypotheses.
- F1: ParlAI's word F1 after its normalisation (lowercase, no punctuation, no
  articles), the best over the references, averaged over contexts.
- Average length: whitespace tokens of the raw reply text.

BLEU and NIST are reported as percentages and raw scores, like the paper's table.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

from rejoinder.errors import RejoinderError

TOKENIZERS = ("default", "none", "char")
WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)


def tokenize(text: str, how: str = "default") -> list[str]:
    """The metric tokens of `text`.

    default: lowercased, then words (letters and digits, with inner apostrophes as in
    "don't") and every other non-space character as a token of its own: "Hi, you!" ->
    ["hi", ",", "you", "!"]. none: split on whitespace only, case kept. char: every
    non-space character (for Chinese, Japanese, …).
    """
    if how == "default":
        return WORD.findall(text.lower())
    if how == "none":
        return text.split()
    if how == "char":
        return [c for c in text if not c.isspace()]
    raise RejoinderError(f"unknown tokenization {how!r}; use one of {', '.join(TOKENIZERS)}")


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _check(hyps: Sequence, refs: Sequence[Sequence]) -> None:
    if len(hyps) != len(refs):
        raise RejoinderError(f"{len(hyps)} hypotheses but {len(refs)} sets of references")
    if any(len(r) == 0 for r in refs):
        raise RejoinderError("every hypothesis needs at least one reference")


def bleu(hyps: Sequence[list[str]], refs: Sequence[Sequence[list[str]]], n: int = 4) -> float:
    """Corpus BLEU-n in [0, 1] (0 when some order has no match at all: no smoothing)."""
    _check(hyps, refs)
    matched, total = [0] * n, [0] * n
    hyp_len = ref_len = 0
    for hyp, rs in zip(hyps, refs, strict=True):
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in rs)[1]
        for k in range(1, n + 1):
            counts = ngrams(hyp, k)
            most = Counter()
            for r in rs:
                most |= ngrams(r, k)
            matched[k - 1] += sum(min(c, most[g]) for g, c in counts.items())
            total[k - 1] += max(len(hyp) - k + 1, 0)
    if hyp_len == 0 or min(matched) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matched, total, strict=True)) / n
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_p)


NIST_BETA = math.log(0.5) / math.log(1.5) ** 2  # the penalty is 0.5 at 2/3 of the length


def nist(hyps: Sequence[list[str]], refs: Sequence[Sequence[list[str]]], n: int = 4) -> float:
    """Corpus NIST-n (unbounded above; 0 for no match)."""
    _check(hyps, refs)
    counts: Counter = Counter()  # every n-gram of orders 1..n over all references
    words = 0
    for rs in refs:
        for r in rs:
            words += len(r)
            for k in range(1, n + 1):
                counts.update(ngrams(r, k))

    def info(gram: tuple) -> float:
        below = counts[gram[:-1]] if len(gram) > 1 else words
        return math.log2(below / counts[gram])

    score, hyp_len, ref_len = 0.0, 0, 0.0
    for k in range(1, n + 1):
        gained, seen = 0.0, 0
        for hyp, rs in zip(hyps, refs, strict=True):
            grams = ngrams(hyp, k)
            seen += sum(grams.values())
            most = Counter()
            for r in rs:
                most |= ngrams(r, k)
            gained += sum(info(g) * min(c, most[g]) for g, c in grams.items() if most[g])
        if seen:
            score += gained / seen
    for hyp, rs in zip(hyps, refs, strict=True):
        hyp_len += len(hyp)
        ref_len += sum(len(r) for r in rs) / len(rs)
    ratio = min(hyp_len / ref_len, 1.0) if ref_len else 0.0
    penalty = math.exp(NIST_BETA * math.log(ratio) ** 2) if ratio > 0 else 0.0
    return score * penalty


def entropy(hyps: Sequence[list[str]], n: int = 4) -> float:
    """-sum (c/T) ln(c/T) over the n-grams pooled across all hypotheses (nats)."""
    counts: Counter = Counter()
    for h in hyps:
        counts.update(ngrams(h, n))
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values()) if total else 0.0


def distinct(hyps: Sequence[list[str]], n: int) -> float:
    """Distinct n-grams / all n-grams, pooled across all hypotheses (0 when there are none)."""
    counts: Counter = Counter()
    for h in hyps:
        counts.update(ngrams(h, n))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def _parlai_words(text: str) -> list[str]:
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()


def f1(hyp: str, refs: Sequence[str]) -> float:
    """ParlAI's F1 of one raw reply: word overlap with the best-matching reference."""
    words = _parlai_words(hyp)
    best = 0.0
    for ref in refs:
        gold = _parlai_words(ref)
        common = sum((Counter(words) & Counter(gold)).values())
        if common:
            p, r = common / len(words), common / len(gold)
            best = max(best, 2 * p * r / (p + r))
    return best


def score_replies(
    hyps: Sequence[str], refs: Sequence[Sequence[str]], tokenize_as: str = "default"
) -> dict[str, float | None]:
    """The whole metric set for raw reply texts against raw references."""
    _check(hyps, refs)
    if not hyps:
        raise RejoinderError("there are no replies to score")
    h = [tokenize(x, tokenize_as) for x in hyps]
    r = [[tokenize(x, tokenize_as) for x in rs] for rs in refs]
    return {
        "nist2": nist(h, r, 2),
        "nist4": nist(h, r, 4),
        "bleu2": 100 * bleu(h, r, 2),
        "bleu4": 100 * bleu(h, r, 4),
        "entropy4": entropy(h, 4),
        "dist1": 100 * distinct(h, 1),
        "dist2": 100 * distinct(h, 2),
        "avg_len": sum(len(x.split()) for x in hyps) / len(hyps),
        "f1": 100 * sum(f1(x, rs) for x, rs in zip(hyps, refs, strict=True)) / len(hyps),
    }


OVERLAP = ("nist2", "nist4", "bleu2", "bleu4", "f1")


def score_human(refs: Sequence[Sequence[str]], tokenize_as: str = "default") -> dict:
    """The ceiling: the references scored as replies.

    Overlap metrics hold each reference out in turn against the others (contexts with
    at least two references only) and average over the held-out positions; with one
    reference per context they are None, never a reference scored against itself.
    Diversity and length are those of each context's first reference.
    """
    out: dict[str, float | None] = score_replies(
        [rs[0] for rs in refs], [rs[:1] for rs in refs], tokenize_as
    )
    multi = [rs for rs in refs if len(rs) >= 2]
    if not multi:
        return {**out, **dict.fromkeys(OVERLAP)}
    width = min(len(rs) for rs in multi)
    held = [
        score_replies([rs[k] for rs in multi], [[*rs[:k], *rs[k + 1 :]] for rs in multi])
        for k in range(width)
    ]
    for name in OVERLAP:
        out[name] = sum(s[name] for s in held) / len(held)
    return out
