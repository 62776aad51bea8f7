"""Statistics for pairwise judgments: intervals, exact tests, multiple comparisons, agreement,
the size a run needs.

Pure functions on counts and labels, standard library only, so that a report can be
rebuilt anywhere from its judgments (scipy is not a dependency).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from statistics import NormalDist

# scipy.stats.binomtest's tolerance: outcomes within this relative distance of the
# observed one's probability count as "no more likely", so rounding cannot drop them.
RELATIVE_TOLERANCE = 1e-7


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for z = 1.96).

    Unlike the normal approximation it stays inside [0, 1] and is honest for small n
    and for proportions near 0 or 1.

    >>> [round(x, 3) for x in wilson(68, 100)]
    [0.583, 0.763]
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _log_pmf(i: int, n: int, p: float) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(i + 1)
        - math.lgamma(n - i + 1)
        + i * math.log(p)
        + (n - i) * math.log1p(-p)
    )


def binomial_test(k: int, n: int, p: float = 0.5) -> float:
    """The exact two-sided p-value of k successes in n trials of probability p.

    The sum of the probabilities of every outcome no more likely than k (scipy's
    `binomtest` default), in log space so that tens of thousands of votes work.

    >>> binomial_test(0, 5)
    0.0625
    """
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must be between 0 and n={n}")
    if not 0 <= p <= 1:
        raise ValueError(f"p={p} is not a probability; use a number in [0, 1]")
    if n == 0 or k == p * n:
        return 1.0
    if p in (0.0, 1.0):
        return 1.0 if k == round(p * n) else 0.0
    threshold = _log_pmf(k, n, p) + math.log1p(RELATIVE_TOLERANCE)
    logs = [lp for i in range(n + 1) if (lp := _log_pmf(i, n, p)) <= threshold]
    return min(1.0, math.fsum(math.exp(lp) for lp in logs))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order.

    Controls the chance of any false positive across a family of tests (the pairs of
    one criterion) with more power than plain Bonferroni.

    >>> holm([0.01, 0.02])
    [0.02, 0.02]
    """
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _rated(ratings: Sequence[Sequence[Hashable]]) -> list[Counter]:
    return [Counter(item) for item in ratings if len(item) >= 2]


def _share_agreeing(counts: Counter) -> float:
    n = sum(counts.values())
    return sum(c * (c - 1) for c in counts.values()) / (n * (n - 1))


def fleiss_kappa(ratings: Sequence[Sequence[Hashable]]) -> float | None:
    """Fleiss' kappa of items rated by several judges each (chance-corrected agreement).

    `ratings` holds one list of category labels per item. Items may have different
    numbers of ratings: per-item agreement is averaged and the category proportions are
    pooled; items with fewer than two ratings say nothing about agreement and are
    skipped. None when no item has two ratings, or when everyone used one category
    (chance agreement is then 1 and kappa is undefined).

    >>> fleiss_kappa([["a", "a"], ["b", "b"]])
    1.0
    """
    items = _rated(ratings)
    if not items:
        return None
    agreement = [_share_agreeing(counts) for counts in items]
    pooled = sum(items, Counter())
    total = sum(pooled.values())
    expected = sum((c / total) ** 2 for c in pooled.values())
    if math.isclose(expected, 1.0):
        return None
    return (sum(agreement) / len(agreement) - expected) / (1 - expected)


def percent_agreement(ratings: Sequence[Sequence[Hashable]]) -> float | None:
    """The share of pairs of judgments on the same item that agree (no chance correction).

    >>> percent_agreement([["a", "a", "b"]])
    0.3333333333333333
    """
    items = _rated(ratings)
    pairs = sum(math.comb(sum(counts.values()), 2) for counts in items)
    if not pairs:
        return None
    return sum(math.comb(c, 2) for counts in items for c in counts.values()) / pairs


def _z(q: float) -> float:
    return NormalDist().inv_cdf(q)


def judgments_needed(rate: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Decisive votes needed for a two-sided test against one half to detect `rate` with
    the given power, by the normal approximation to the binomial.

    n = ((z(1 - alpha/2) * sqrt(0.25) + z(power) * sqrt(rate * (1 - rate))) / (rate - 0.5))^2

    >>> judgments_needed(0.6)
    194
    """
    if not 0 < rate < 1 or rate == 0.5:
        raise ValueError(f"rate={rate} must be in (0, 1) and not 0.5")
    spread = _z(1 - alpha / 2) * 0.5 + _z(power) * math.sqrt(rate * (1 - rate))
    return math.ceil((spread / (rate - 0.5)) ** 2)


def power_of(n: float, rate: float, alpha: float = 0.05) -> float:
    """The chance that n decisive votes, each won with probability `rate`, make the
    two-sided test against one half significant (normal approximation, the far tail
    ignored as `judgments_needed` ignores it).

    >>> round(power_of(194, 0.6), 3)
    0.8
    """
    if n <= 0:
        return 0.0
    shift = abs(rate - 0.5) * math.sqrt(n) - _z(1 - alpha / 2) * 0.5
    return NormalDist().cdf(shift / math.sqrt(rate * (1 - rate)))
