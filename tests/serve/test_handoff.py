"""What the worker thread hands to the event loop: in order, and a step's hand-offs in
one wake-up of the loop (serve/batching.py `handed_together`)."""

from __future__ import annotations

import asyncio

from rejoinder.generation.config import decoding_config
from rejoinder.serve.batching import Job, handed_together


class Loop:
    """An event loop's thread-safe entry, recorded; `closed` refuses as a closed loop."""

    def __init__(self, closed: bool = False):
        self.calls, self.closed = [], closed

    def call_soon_threadsafe(self, fn, *args):
        if self.closed:
            raise RuntimeError("Event loop is closed")
        self.calls.append((fn, args))

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for fn, args in calls:
            fn(*args)


def streamed(loop) -> Job:
    return Job(["Hello"], decoding_config("greedy"), True, loop, pieces=asyncio.Queue())


def drained(job: Job) -> list:
    out = []
    while not job.pieces.empty():
        out.append(job.pieces.get_nowait())
    return out


def test_a_steps_pieces_reach_the_loop_in_one_call_and_in_order():
    loop, other = Loop(), Loop()
    a, b, c = streamed(loop), streamed(loop), streamed(other)
    with handed_together():
        a.send("Hel")
        b.send("Yes")
        c.send("No")
        a.send("lo")
        b.send(None)
        assert loop.calls == [] and other.calls == []  # nothing before the block ends
    assert len(loop.calls) == 1 and len(other.calls) == 1
    loop.run()
    other.run()
    assert drained(a) == ["Hel", "lo"] and drained(b) == ["Yes", None] and drained(c) == ["No"]
    a.send("!")  # outside a block: handed at once, as before
    assert len(loop.calls) == 1
    loop.run()
    assert drained(a) == ["!"]


def test_pieces_for_a_closed_loop_cancel_their_jobs():
    gone = Loop(closed=True)
    job, alive = streamed(gone), streamed(Loop())
    with handed_together():
        job.send("lost")
        alive.send("kept")
    assert job.cancelled and not alive.cancelled
