"""Batching across users: concurrent requests gathered into batched generate calls.

Requests wait in one queue. A worker thread takes the first, waits up to `wait`
seconds for more (at most `max_batch`), groups those whose decoding options can share
a call, and runs each group as one `generate_batch` (or one `stream_batch` for
streamed replies). The model runs on that one thread only: torch already uses every
core for one call, and a second call beside it would only slow both.

A request with a seed runs alone: its reply must not depend on what else was in the
batch. MMI requests share calls like the rest (`generate_batch` draws every context's
candidates in one generate call).

`Worker` is what every scheduler shares: the queue, the thread, and the event loop's
side (`generate`, `stream`); `serve.continuous.ContinuousBatcher` schedules per token
instead, and runs what cannot decode in steps with `run_whole`, as this one runs every
group.

Replies come back as `Reply`s (text, tokens generated, finish reason); a streamed
reply's pieces end with its `Finish`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

from rejoinder.generation.config import DecodingConfig
from rejoinder.generation.heap import hold_freed_memory
from rejoinder.generation.replies import Finish, Reply
from rejoinder.generation.screening import Screen
from rejoinder.safety import Flag

log = logging.getLogger("rejoinder.serve")

STOP_WORKER = object()
"""Queued to end a worker, after what was queued before it."""


@dataclass(eq=False)
class Job:
    """One reply (or n, for num_return_sequences) to one context."""

    context: list
    config: DecodingConfig
    stream: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future | None = None
    """Non-streamed jobs: the list of Replies."""
    pieces: asyncio.Queue | None = None
    """Streamed jobs: text pieces, the Finish, then None at the end (or an exception)."""
    cancelled: bool = False
    queued: float = field(default_factory=time.monotonic)
    session: str | None = None
    """The chat session it answers, whose kept keys and values it may reuse."""
    drawn: list[Reply] | None = None
    """Continuous: the replies so far (the best of each sequence's draws)."""
    redrawn: list[int] = field(default_factory=list)
    """Continuous: which of them the rows now decoding draw again."""
    attempts: int = 0
    screen: Screen | None = None
    """Continuous, with the safety policy: the replies under its check (`Screen`)."""
    user_flag: Flag | None = None
    """Continuous: the safety policy's flag on the user's message (answered as usual)."""

    def key(self, any_length: bool = False) -> tuple:
        """Jobs with equal keys can share a generate call; `any_length`: whatever their
        max_new_tokens (a stream whose rows stop at their own lengths)."""
        if self.config.seed is not None:
            return (id(self),)
        options = asdict(replace(self.config, seed=None))
        if any_length:
            options.pop("max_new_tokens")
        return (self.stream, *((k, _frozen(v)) for k, v in sorted(options.items())))

    # Results are handed to the event loop's thread, where the request waits.
    def resolve(self, replies: list[Reply]) -> None:
        if self.future is None:  # a streamed reply made whole (the repetition guard)
            for reply in replies:
                if reply.text:
                    self.send(reply.text)
                self.send(reply.finish)
            self.send(None)
            return
        self._hand(_set_result, self.future, replies)

    def fail(self, error: BaseException) -> None:
        if self.future is not None:
            self._hand(_set_exception, self.future, error)
        else:
            self._hand(self.pieces.put_nowait, error)

    def send(self, piece: str | Finish | None) -> None:
        self._hand(self.pieces.put_nowait, piece)

    def _hand(self, fn, *args) -> None:
        pending = getattr(_handoffs, "pending", None)
        if pending is not None:  # inside `handed_together`: sent with the others
            pending.setdefault(self.loop, []).append((self, fn, args))
            return
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop has closed: nobody waits for this any more
            self.cancelled = True


_handoffs = threading.local()


@contextmanager
def handed_together() -> Iterator[None]:
    """What jobs hand to the event loop in this block (each row's token of a step, the
    replies it ended) goes in one call per loop when the block ends, in order: one
    wake-up of the loop's thread a step instead of one a token, each of which would
    take the interpreter from the worker in the middle of the step."""
    _handoffs.pending = pending = {}
    try:
        yield
    finally:
        _handoffs.pending = None
        for loop, calls in pending.items():
            try:
                loop.call_soon_threadsafe(_run_all, calls)
            except RuntimeError:  # the loop has closed: nobody waits for these any more
                for job, _, _ in calls:
                    job.cancelled = True


def _run_all(calls: list) -> None:
    for _, fn, args in calls:
        fn(*args)


def _frozen(value):
    """A hashable stand-in for an option's value (lists and mappings included)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def _set_result(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class Worker:
    """The queue of generation requests and the thread that serves them: what every
    scheduler shares. A scheduler writes `_work`, the worker thread's loop."""

    scheduler = ""

    def __init__(self, model):
        self.model = model
        self.jobs: queue.Queue = queue.Queue()
        self.thread: threading.Thread | None = None
        self.batches = 0
        """Generate calls made so far (a batched call counts once)."""
        self.batched_jobs = 0
        """Jobs served by those calls: batched_jobs / batches is the mean batch size."""

    # -- the event loop's side -------------------------------------------------------

    def start(self) -> None:
        """Starts the worker (the first request does, if nobody did before)."""
        if self.thread is None:
            hold_freed_memory()  # each step's large tensors reuse pages (generation/heap.py)
            self.thread = threading.Thread(target=self._work, name="rejoinder-batcher", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        """Finishes every queued job, then ends the worker."""
        if self.thread is not None:
            self.jobs.put(STOP_WORKER)
            self.thread.join()
            self.thread = None

    @property
    def waiting(self) -> int:
        return self.jobs.qsize()

    def facts(self) -> dict:
        """What /health says of this scheduler beyond the counts every one has."""
        return {}

    async def generate(
        self, context: list, config: DecodingConfig, session: str | None = None
    ) -> list[Reply]:
        """The replies (num_return_sequences of them) to `context`."""
        self.start()
        loop = asyncio.get_running_loop()
        job = Job(context, config, False, loop, future=loop.create_future(), session=session)
        self.jobs.put(job)
        try:
            return await job.future
        finally:
            job.cancelled = True

    async def stream(
        self, context: list, config: DecodingConfig, session: str | None = None
    ) -> AsyncIterator[str | Finish]:
        """The reply to `context`, piece by piece, and its Finish last."""
        self.start()
        loop = asyncio.get_running_loop()
        job = Job(context, config, True, loop, pieces=asyncio.Queue(), session=session)
        self.jobs.put(job)
        try:
            while (piece := await job.pieces.get()) is not None:
                if isinstance(piece, BaseException):
                    raise piece
                yield piece
        finally:
            job.cancelled = True  # a client that left: its row is no longer read

    def _work(self) -> None:
        raise NotImplementedError


def run_whole(model, group: list[Job]) -> None:
    """Serves a group of jobs that share options with one generate call (one stream for
    streamed ones); a group that fails is served one job at a time, so that one bad
    request (say, options transformers refuses) fails alone."""
    config = group[0].config
    contexts = [job.context for job in group]
    try:
        if group[0].stream:
            limits = [job.config.max_new_tokens for job in group]
            if len(set(limits)) > 1:  # rows of their own lengths (`Batcher.key`)
                config = replace(config, max_new_tokens=max(limits))
            else:
                limits = None
            for row, piece in model.stream_batch(contexts, config, limits=limits):
                if not group[row].cancelled:
                    group[row].send(piece)
                    if isinstance(piece, Finish):
                        group[row].send(None)
            return
        for job, replies in zip(group, model.reply_batch(contexts, config), strict=True):
            job.resolve(replies)
    except Exception as e:  # every request of the call learns why
        if len(group) > 1 and not group[0].stream:
            log.warning("a batch of %d failed (%s); serving them one by one", len(group), e)
            for job in group:
                run_whole(model, [job])
            return
        for job in group:
            job.fail(e)


class Batcher(Worker):
    """Requests gathered for `wait` seconds (at most `max_batch`) into shared generate calls."""

    scheduler = "gather"

    def __init__(self, model, max_batch: int = 16, wait: float = 0.05):
        super().__init__(model)
        self.max_batch, self.wait = max(1, max_batch), max(0.0, wait)

    def _work(self) -> None:
        stopping = False
        while not stopping:
            first = self.jobs.get()
            if first is STOP_WORKER:
                return
            batch = [first]
            deadline = time.monotonic() + self.wait
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    job = (
                        self.jobs.get(timeout=remaining)
                        if remaining > 0
                        else self.jobs.get_nowait()
                    )
                except queue.Empty:
                    break
                if job is STOP_WORKER:
                    stopping = True
                    break
                batch.append(job)
            groups: dict[tuple, list[Job]] = {}
            for job in batch:
                if not job.cancelled:
                    try:
                        key = self.key(job)
                    except TypeError:  # an option that cannot be compared: run it alone
                        key = (id(job),)
                    groups.setdefault(key, []).append(job)
            for group in groups.values():
                try:
                    self._run(group)
                except BaseException as e:  # the worker must outlive any one batch
                    log.exception("serving a batch failed")
                    for job in group:
                        job.fail(e)
        while True:  # what was queued before the stop is still served
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            if job is not STOP_WORKER and not job.cancelled:
                self._run([job])

    def key(self, job: Job) -> tuple:
        """The group a job joins. CTranslate2 stops each row of a stream at its own
        length (its callback), so streams that differ only in their length share a
        call there: mixed traffic then waits for far fewer calls. On torch a shared call
        would decode every row to the longest length, so lengths stay apart."""
        return job.key(any_length=job.stream and self.model.backend == "ctranslate2")

    def _run(self, group: list[Job]) -> None:
        self.batches += 1
        self.batched_jobs += len(group)
        run_whole(self.model, group)
