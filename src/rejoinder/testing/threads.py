"""The shape of a synthetic Reddit dump: heavy-tailed threads, reply trees, ids in base 36
that grow with time, and the compressed file the lines go to (see `testing.reddit`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import IO

import numpy as np

from rejoinder.errors import RejoinderError

THREAD_SIZE_ALPHA = 1.1
"""Thread sizes are floor(Pareto(alpha)), x_min 1: median 1, mean about 6 under the cap."""
THREAD_SIZE_CAP = 5000
P_TOP_LEVEL = 0.25
"""A comment after a thread's first is a new top-level comment with this probability,"""
P_REPLY_TO_TOP = 0.1
"""a reply to a uniformly chosen top-level comment with this one,"""
P_RECENT_BACK = 0.5
"""and otherwise a reply to a recent one: Geometric(P_RECENT_BACK) - 1 comments back."""
START_UTC = 1420070400
"""2015-01-01T00:00:00Z; threads start uniformly within `WINDOW_S` after it."""
WINDOW_S = 31 * 86400


ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
ID_BASE = int("cn00000", 36)
"""Comment ids are ID_BASE + 4 * rank + (0, 1 or 2); + 3 is never used (orphans' parents)."""
SUB_ID_BASE = int("2r0000", 36)


def b36_one(v: int) -> str:
    if v == 0:
        return "0"
    out = []
    while v:
        v, r = divmod(v, 36)
        out.append(ALPHABET[r])
    return "".join(reversed(out))


ALPHABET_ARRAY = np.array(list(ALPHABET))


def b36(vals: np.ndarray) -> list[str]:
    """Base-36 strings of non-negative ints, vectorised when they share one width."""
    vals = np.asarray(vals, dtype=np.int64)
    if vals.size == 0:
        return []
    width = len(b36_one(int(vals.max())))
    if len(b36_one(int(vals.min()))) != width:
        return [b36_one(v) for v in vals.tolist()]
    powers = 36 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    chars = np.ascontiguousarray(ALPHABET_ARRAY[(vals[:, None] // powers) % 36])
    return chars.view(f"<U{width}").ravel().tolist()


class LineWriter:
    """Text lines to `path`, zstd-compressed (level 3) when it ends with .zst."""

    def __init__(self, path: Path):
        self.path = path
        self._raw: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._zst = None
        if path.name.endswith(".zst"):
            try:
                import zstandard
            except ImportError:
                self._raw.close()
                raise RejoinderError(
                    f"{path}: writing .zst files needs zstandard: pip install zstandard, "
                    "or write plain NDJSON (a name without .zst)"
                ) from None
            self._zst = zstandard.ZstdCompressor(level=3).stream_writer(self._raw, closefd=False)

    def write_lines(self, lines: list[str]) -> None:
        if lines:
            data = ("\n".join(lines) + "\n").encode("utf-8")
            (self._zst or self._raw).write(data)

    def close(self) -> None:
        if self._zst is not None:
            self._zst.close()
        self._raw.close()


def thread_sizes(rng: np.random.Generator, total: int) -> np.ndarray:
    """Heavy-tailed thread sizes summing to `total`."""
    cap = max(1, min(THREAD_SIZE_CAP, total))
    parts, have = [], 0
    while have < total:
        draw = np.minimum(np.floor(rng.pareto(THREAD_SIZE_ALPHA, 4096) + 1.0), cap)
        parts.append(draw.astype(np.int64))
        have += int(parts[-1].sum())
    sizes = np.concatenate(parts)
    ends = np.cumsum(sizes)
    k = int(np.searchsorted(ends, total)) + 1
    sizes = sizes[:k].copy()
    sizes[-1] -= int(ends[k - 1]) - total
    return sizes


def skeleton(rng: np.random.Generator, n: int):
    """Threads and reply trees for `n` comments, in generation order (thread by thread).

    Returns (sizes, thread start times, thread of each comment, parent index or -1,
    created_utc, depth).
    """
    sizes = thread_sizes(rng, n) if n else np.zeros(0, dtype=np.int64)
    starts = START_UTC + rng.integers(0, WINDOW_S, len(sizes))
    thread = np.repeat(np.arange(len(sizes)), sizes)
    u_kind = rng.random(n).tolist()
    u_pick = rng.random(n).tolist()
    back = (rng.geometric(P_RECENT_BACK, n) - 1).tolist()
    d_top = (1 + np.minimum(rng.lognormal(math.log(3600), 1.5, n), 20 * 86400)).astype(np.int64)
    d_reply = (1 + np.minimum(rng.lognormal(math.log(1200), 1.3, n), 10 * 86400)).astype(np.int64)
    d_top, d_reply = d_top.tolist(), d_reply.tolist()
    parent = [-1] * n
    created = [0] * n
    depth = [1] * n
    g = 0
    p_reply_top = P_TOP_LEVEL + P_REPLY_TO_TOP
    for size, start in zip(sizes.tolist(), starts.tolist(), strict=True):
        first = g
        tops: list[int] = []
        for r in range(size):
            u = u_kind[g]
            if r == 0 or u < P_TOP_LEVEL:
                created[g] = start + d_top[g]
                tops.append(g)
            else:
                if u < p_reply_top:
                    p = tops[int(u_pick[g] * len(tops))]
                else:
                    p = max(first, g - 1 - back[g])
                parent[g] = p
                depth[g] = depth[p] + 1
                created[g] = created[p] + d_reply[g]
            g += 1
    return (
        sizes,
        starts,
        thread,
        np.array(parent, dtype=np.int64),
        np.array(created, dtype=np.int64),
        np.array(depth, dtype=np.int64),
    )
