"""Where a decoding step's time goes: the model's forward passes, and everything else.

Everything else is the host's work around the model (admission, the rows' logits
processors, sampling, cache surgery, handing tokens out, Python): the part of a step
that batching cannot spread over more rows, so the part to keep small. `StepClock`
times the model's calls through `timed(lm)`, the proxy the batch and the admission
call it through, and keeps the last steps' figures for `/health` and the benchmarks.

On a GPU a forward call returns before its kernels finish; the host time then also
holds the wait for them (the first read of the logits), so these figures are exact
on CPU and an upper bound on the host's own work on a GPU.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Any

KEPT = 256
"""Steps a summary covers: the recent past, not the server's whole life."""


class Timed:
    """`lm` called through a clock: each call's time is added to `clock.forward`."""

    def __init__(self, lm, clock: StepClock):
        self.__dict__.update(lm=lm, clock=clock)

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.lm(*args, **kwargs)
        finally:
            self.clock.forward += time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lm, name)


class StepClock:
    """Per step: its wall time, the model's share of it and the rows it decoded; per
    serving iteration (a step with the scheduler's work around it), the same."""

    def __init__(self, kept: int = KEPT):
        self.forward = 0.0
        """Seconds inside the model's calls, all steps together."""
        self.steps: deque[tuple[float, float, int]] = deque(maxlen=kept)
        self.iterations: deque[tuple[float, float, int]] = deque(maxlen=kept)

    def timed(self, lm) -> Timed:
        return Timed(lm, self)

    def start(self) -> tuple[float, float]:
        return time.perf_counter(), self.forward

    def stop(self, started: tuple[float, float], rows: int) -> None:
        """Records a step of `rows` rows: the time since `started` (a `start()`), and
        the model's share of it."""
        self.steps.append(self._since(started, rows))

    def stop_iteration(self, started: tuple[float, float]) -> None:
        """Records a serving iteration (its step and the scheduler's work around it)."""
        self.iterations.append(self._since(started, self.steps[-1][2] if self.steps else 0))

    def _since(self, started: tuple[float, float], rows: int) -> tuple[float, float, int]:
        return time.perf_counter() - started[0], self.forward - started[1], rows

    def summary(self) -> dict[str, Any]:
        """Medians over the recent steps, in milliseconds: `forward_ms`, `host_ms` (the
        step's time outside the model), `host_p90_ms`, `serving_host_ms` (the same for
        a whole serving iteration) and the mean `rows`."""
        out: dict[str, Any] = {"steps": len(self.steps)}
        if not self.steps:
            return out
        host = [1000 * (w - f) for w, f, _ in self.steps]
        out.update(
            rows=round(statistics.fmean(r for _, _, r in self.steps), 1),
            forward_ms=round(1000 * statistics.median(f for _, f, _ in self.steps), 2),
            host_ms=round(statistics.median(host), 2),
            host_p90_ms=round(statistics.quantiles(host, n=10)[-1], 2) if len(host) > 1 else None,
        )
        if self.iterations:
            out["serving_host_ms"] = round(
                statistics.median(1000 * (w - f) for w, f, _ in self.iterations), 2
            )
        return out
