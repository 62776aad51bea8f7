"""A progress line for long work, on a terminal only.

    with Progress("reading comments", total=size, unit="B") as p:
        for ...:
            p.update(done, extra="123k comments/s")

draws `reading comments  412 MB/1.2 GB  34%  52 MB/s  ETA 0:15  123k comments/s` on stderr,
redrawn in place at most `Progress.INTERVAL` apart, and ends the line when the block
ends. Nothing is drawn when stderr is not a terminal (pipes, CI logs) or when the
environment sets REJOINDER_PROGRESS=0, so logs stay clean.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TextIO


def wanted(stream: TextIO) -> bool:
    """Whether progress is drawn on `stream`: a terminal, unless REJOINDER_PROGRESS=0."""
    if os.environ.get("REJOINDER_PROGRESS", "").strip() == "0":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def amount(n: float, unit: str = "") -> str:
    """A count or a size, short: 950, 12.3k, 4.1M; 512 B, 3.4 MB, 1.2 GB.

    >>> amount(12345), amount(3.5e6, "B"), amount(7, "pairs")
    ('12.3k', '3.5 MB', '7 pairs')
    """
    if unit == "B":
        for prefix in ("", "k", "M", "G", "T"):
            if abs(n) < 1000 or prefix == "T":
                return f"{n:.0f} {prefix}B" if not prefix else f"{n:.1f} {prefix}B"
            n /= 1000
    text = f"{n:.0f}"
    for prefix in ("k", "M", "G"):
        if abs(n) < 1000:
            break
        n /= 1000
        text = f"{n:.1f}{prefix}"
    return f"{text} {unit}" if unit else text


def clock(seconds: float) -> str:
    """h:mm:ss or m:ss."""
    s = int(seconds)
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class Progress:
    """One phase of long work as a line on a terminal: done of total, rate, ETA."""

    INTERVAL = 0.2
    """Seconds between redraws at least (about five a second)."""

    def __init__(
        self, phase: str, total: float | None = None, unit: str = "", stream: TextIO | None = None
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = wanted(self.stream)
        self.phase, self.total, self.unit = phase, total, unit
        self.done = 0.0
        self.extra = ""
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self._width = 0

    def update(self, done: float, extra: str | None = None, total: float | None = None) -> None:
        """Sets how much is done (and what else to say); redraws when it is time to."""
        self.done = done
        if extra is not None:
            self.extra = extra
        if total is not None:
            self.total = total
        if self.enabled and time.monotonic() - self._drawn_at >= self.INTERVAL:
            self._draw()

    def advance(self, n: float = 1, extra: str | None = None) -> None:
        """Adds `n` to what is done."""
        self.update(self.done + n, extra)

    def rate(self) -> float:
        """Units done per second so far."""
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """The text of the line as it stands."""
        parts = [self.phase]
        if self.total:
            parts.append(f"{amount(self.done, self.unit)}/{amount(self.total, self.unit)}")
            parts.append(f"{min(100.0, 100 * self.done / self.total):.0f}%")
        else:
            parts.append(amount(self.done, self.unit))
        rate = self.rate()
        if rate > 0 and self.done:
            parts.append(f"{amount(rate, self.unit)}/s")
            if self.total and self.done < self.total:
                parts.append(f"ETA {clock((self.total - self.done) / rate)}")
        if self.extra:
            parts.append(self.extra)
        return "  ".join(parts)

    def _draw(self) -> None:
        columns = shutil.get_terminal_size((100, 20)).columns
        text = self.line()[: max(10, columns - 1)]
        # Spaces over what a longer previous line left behind, then back to the start.
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)
        self._drawn_at = time.monotonic()

    def close(self) -> None:
        """Draws the final state and ends the line (nothing when not drawing)."""
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
