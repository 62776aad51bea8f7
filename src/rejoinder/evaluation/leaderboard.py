"""A Bradley–Terry leaderboard of a judging run's systems, with bootstrap intervals.

Bradley–Terry: system i beats system j with probability s_i / (s_i + s_j). Its
log-strengths are fitted by maximum likelihood (Newton's method) from every pair's
wins, ties and losses, a tie counting as half a win to each side, and shown as
Elo-like scores, 1000 + 400 * log10(s_i) with the log-strengths of a component
centred, as Chatbot Arena shows its own. Intervals are Chatbot Arena's fast bootstrap:
each pair's wins / ties / losses are drawn again from a multinomial with the observed
shares and the same number of votes, the model is fitted again, and the percentiles
of the scores over the rounds are the interval. A system's rank is 1 + the number of
systems whose lower bound is above its upper bound, so systems whose intervals overlap
share a rank.

Systems that were never compared, directly or through others, cannot be put on one
scale: each connected group of systems (a component) gets its own fit and ranks, and
the board says so. Where every vote between two groups of a component went one way
the likelihood has no maximum (the winners' strength grows without end); the fit
then adds a weak Gaussian prior on the log-strengths (`RIDGE`) and the board says so.

Standard library only, like `stats`: a report can be rebuilt anywhere.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import Any

ROUNDS = 1000
LEVEL = 0.95
RIDGE = 0.01
"""The prior's precision on log-strengths where the likelihood has no maximum."""
ELO_SCALE = 400 / math.log(10)
ELO_CENTRE = 1000.0
MAX_STEPS = 100
TOLERANCE = 1e-10

Pair = tuple[int, int, float, int]
"""(i, j, points of i against j (wins + ties / 2), votes between them)."""


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _log_likelihood(theta: Sequence[float], pairs: Sequence[Pair], ridge: float) -> float:
    total = -0.5 * ridge * sum(t * t for t in theta)
    for i, j, points, n in pairs:
        d = theta[i] - theta[j]
        total -= points * _softplus(-d) + (n - points) * _softplus(d)
    return total


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """x with matrix @ x = vector (Gaussian elimination with partial pivoting)."""
    m = len(vector)
    rows = [[*row, v] for row, v in zip(matrix, vector, strict=True)]
    for col in range(m):
        pivot = max(range(col, m), key=lambda r: abs(rows[r][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(col + 1, m):
            factor = rows[r][col] / rows[col][col]
            for c in range(col, m + 1):
                rows[r][c] -= factor * rows[col][c]
    x = [0.0] * m
    for r in reversed(range(m)):
        x[r] = (rows[r][m] - sum(rows[r][c] * x[c] for c in range(r + 1, m))) / rows[r][r]
    return x


def fit(
    k: int, pairs: Sequence[Pair], ridge: float = 0.0, start: Sequence[float] | None = None
) -> list[float]:
    """Log-strengths of k connected systems maximising the (penalised) likelihood,
    centred at zero. Without a ridge the first system's log-strength is held at zero
    while fitting (the likelihood only sees differences)."""
    theta = list(start) if start else [0.0] * k
    free = list(range(k)) if ridge else list(range(1, k))
    if not free:
        return [0.0] * k
    at = {s: r for r, s in enumerate(free)}
    for _ in range(MAX_STEPS):
        grad = [-ridge * t for t in theta]
        info = [[ridge if r == c else 0.0 for c in range(len(free))] for r in range(len(free))]
        for i, j, points, n in pairs:
            p = _sigmoid(theta[i] - theta[j])
            g, w = points - n * p, n * p * (1 - p)
            grad[i] += g
            grad[j] -= g
            for a, b, sign in ((i, i, 1), (j, j, 1), (i, j, -1), (j, i, -1)):
                if a in at and b in at:
                    info[at[a]][at[b]] += sign * w
        step = _solve(info, [grad[s] for s in free])
        base, scale = _log_likelihood(theta, pairs, ridge), 1.0
        while scale > 1e-6:
            trial = list(theta)
            for s, d in zip(free, step, strict=True):
                trial[s] += scale * d
            if _log_likelihood(trial, pairs, ridge) >= base - 1e-12:
                break
            scale /= 2
        theta = trial
        if max(abs(scale * d) for d in step) < TOLERANCE:
            break
    mean = sum(theta) / k
    return [t - mean for t in theta]


def _reaches(k: int, edges: Iterable[tuple[int, int]], start: int) -> set[int]:
    out: dict[int, list[int]] = {i: [] for i in range(k)}
    for a, b in edges:
        out[a].append(b)
    seen, todo = {start}, [start]
    while todo:
        for b in out[todo.pop()]:
            if b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


def has_maximum(k: int, pairs: Sequence[Pair]) -> bool:
    """Whether the likelihood has a maximum (Zermelo, Ford): for every split of the
    systems in two, someone on each side scored against someone on the other, that is
    the graph of "i scored against j" is strongly connected."""
    scored = [(i, j) for i, j, points, _ in pairs if points > 0]
    scored += [(j, i) for i, j, points, n in pairs if n - points > 0]
    full = set(range(k))
    return _reaches(k, scored, 0) == full and _reaches(k, [(b, a) for a, b in scored], 0) == full


def components(systems: Sequence[str], met: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Groups of systems joined by comparisons, in the systems' order; a system with
    no comparison is in none."""
    index = {s: i for i, s in enumerate(systems)}
    links = [(index[a], index[b]) for a, b in met]
    links += [(b, a) for a, b in links]
    touched = {i for link in links for i in link}
    groups, placed = [], set()
    for i in range(len(systems)):
        if i in touched and i not in placed:
            group = sorted(_reaches(len(systems), links, i))
            placed.update(group)
            groups.append([systems[g] for g in group])
    return groups


def _resample(rng: random.Random, wins: int, ties: int, n: int) -> float:
    """A pair's points (wins + ties / 2) drawn again: n votes from the observed shares."""
    win_below, tie_below = wins / n, (wins + ties) / n
    points = 0.0
    for _ in range(n):
        u = rng.random()
        points += 1.0 if u < win_below else 0.5 if u < tie_below else 0.0
    return points


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def _score(theta: float) -> float:
    return ELO_CENTRE + ELO_SCALE * theta


def _board(group: list[str], counts: dict, rounds: int, level: float, rng) -> dict[str, Any]:
    index = {s: i for i, s in enumerate(group)}
    tallies = [
        (index[a], index[b], w, t, w + t + lo)
        for (a, b), (w, t, lo) in counts.items()
        if a in index and w + t + lo
    ]
    pairs = [(i, j, w + t / 2, n) for i, j, w, t, n in tallies]
    exists = has_maximum(len(group), pairs)
    ridge = 0.0 if exists else RIDGE
    theta = fit(len(group), pairs, ridge)
    draws: list[list[float]] = [[] for _ in group]
    for _ in range(rounds):
        again = [(i, j, _resample(rng, w, t, n), n) for i, j, w, t, n in tallies]
        ridge = 0.0 if has_maximum(len(group), again) else RIDGE
        for d, t in zip(draws, fit(len(group), again, ridge, start=theta), strict=True):
            d.append(_score(t))
    tail = (1 - level) / 2
    rows = []
    for s, i in index.items():
        low = _percentile(draws[i], tail) if rounds else _score(theta[i])
        high = _percentile(draws[i], 1 - tail) if rounds else _score(theta[i])
        votes = sum(n for a, b, _, _, n in tallies if i in (a, b))
        rows.append({"system": s, "strength": theta[i], "score": _score(theta[i]),
                     "low": low, "high": high, "votes": votes})  # fmt: skip
    for r in rows:
        r["rank"] = 1 + sum(o["low"] > r["high"] for o in rows)
    rows.sort(key=lambda r: (r["rank"], -r["score"]))
    return {"systems": rows, "maximum": exists}


def leaderboard(
    systems: Sequence[str],
    counts: dict[tuple[str, str], tuple[int, int, int]],
    rounds: int = ROUNDS,
    level: float = LEVEL,
    seed: int = 0,
) -> dict[str, Any]:
    """The Bradley–Terry leaderboard of `systems` from each pair's (wins, ties, losses)
    of its first system against its second.

    One board per component (systems joined by comparisons); `unrated` names systems
    with no vote, `note` says what a reader must know (separate scales, no maximum).
    """
    met = [pair for pair, tally in counts.items() if sum(tally)]
    groups = components(systems, met)
    rng = random.Random(seed)
    boards = [_board(g, counts, rounds, level, rng) for g in groups]
    unrated = [s for s in systems if not any(s in g for g in groups)]
    notes = []
    if len(groups) > 1:
        notes.append(
            "the systems fall into groups never compared with each other ("
            + "; ".join(", ".join(g) for g in groups)
            + "): each group has its own scale and ranks, and scores of different "
            "groups cannot be compared; judge pairs across the groups to join them"
        )
    if any(not b["maximum"] for b in boards):
        notes.append(
            "some systems won (or lost) every vote against the rest of their group, so "
            "their strength has no finite maximum-likelihood estimate; they were fitted "
            f"with a weak prior (ridge {RIDGE}) and their scores only say 'far above' "
            "(or 'far below')"
        )
    if unrated:
        notes.append(f"no votes for {', '.join(unrated)}: not rated")
    return {"boards": boards, "unrated": unrated, "rounds": rounds, "level": level,
            "seed": seed, "notes": notes}  # fmt: skip


def from_comparisons(
    systems: Sequence[str], rows: Sequence[dict], rounds: int = ROUNDS, seed: int = 0
) -> dict[str, Any]:
    """The leaderboard of one criterion from `human.summarize`'s comparison rows."""
    counts = {(r["first"], r["second"]): (r["wins"], r["ties"], r["losses"]) for r in rows}
    return leaderboard(systems, counts, rounds=rounds, seed=seed)
