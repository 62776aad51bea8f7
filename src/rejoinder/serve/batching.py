"""Batching across users: concurrent requests gathered into batched generate calls.

Requests wait in one queue. A worker thread takes the first, waits up to `wait`
seconds for more (at most `max_batch`), groups those whose decoding options can share
a call, and runs each group as one `generate_batch` (or one `stream_batch` for
streamed replies). The model runs on that one thread only: torch already uses every
core for one call, and a second call beside it would only slow both.

A request with a seed runs alone: its reply must not depend on what else was in the
batch. MMI requests share calls like the rest (`generate_batch` draws every context's
candidates in one generate call).

`ContinuousBatcher` schedules per token instead (`generation.continuous.StepDecoder`):
a request joins the running batch at the next step and leaves it, its reply sent, the
step its row ends; rows with different options share steps, and a seeded row draws
from its own generator, so no reply depends on the traffic. What cannot decode in steps
(beams, extra heads) runs as a whole generate call between two steps. Reranked
requests draw their candidates as rows in the shared steps, and the candidates of the
requests whose rows finished in one step are scored together (`mmi.rerank_drawn`).

Replies come back as `Reply`s (text, tokens generated, finish reason); a streamed
reply's pieces end with its `Finish`. Where the repetition guard checks a reply
(`max_self_overlap`, the bot having spoken before), a refused reply is drawn again as
new rows, and a streamed one is sent whole once it passes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, replace

from rejoinder.generation import replies as guard
from rejoinder.generation.config import DecodingConfig
from rejoinder.generation.replies import STOP, Finish, Reply
from rejoinder.generation.streaming import RowText

log = logging.getLogger("rejoinder.serve")

_STOP = object()


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

    def key(self) -> tuple:
        """Jobs with equal keys can share a generate call."""
        if self.config.seed is not None:
            return (id(self),)
        options = asdict(replace(self.config, seed=None))
        return (self.stream, *((k, _frozen(v)) for k, v in sorted(options.items())))

    # Results are handed to the event loop's thread, where the request waits.
    def resolve(self, replies: list[Reply]) -> None:
        if self.future is None:  # a streamed reply made whole (the repetition guard)
            for reply in replies:
                if reply.text:
                    self.send(reply.text)
                self.send(Finish(reply.tokens, reply.finish_reason))
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
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop has closed: nobody waits for this any more
            self.cancelled = True


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


class Batcher:
    """The queue of generation requests and the thread that serves them in batches."""

    scheduler = "gather"

    def __init__(self, model, max_batch: int = 16, wait: float = 0.05):
        self.model, self.max_batch, self.wait = model, max(1, max_batch), max(0.0, wait)
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
            self.thread = threading.Thread(target=self._work, name="rejoinder-batcher", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        """Finishes every queued job, then ends the worker."""
        if self.thread is not None:
            self.jobs.put(_STOP)
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

    # -- the worker thread -----------------------------------------------------------

    def _work(self) -> None:
        stopping = False
        while not stopping:
            first = self.jobs.get()
            if first is _STOP:
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
                if job is _STOP:
                    stopping = True
                    break
                batch.append(job)
            groups: dict[tuple, list[Job]] = {}
            for job in batch:
                if not job.cancelled:
                    try:
                        key = job.key()
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
            if job is not _STOP and not job.cancelled:
                self._run([job])

    def _run(self, group: list[Job]) -> None:
        self.batches += 1
        self.batched_jobs += len(group)
        config = group[0].config
        contexts = [job.context for job in group]
        try:
            if group[0].stream:
                for row, piece in self.model.stream_batch(contexts, config):
                    if not group[row].cancelled:
                        group[row].send(piece)
                        if isinstance(piece, Finish):
                            group[row].send(None)
                return
            for job, replies in zip(group, self.model.reply_batch(contexts, config), strict=True):
                job.resolve(replies)
        except Exception as e:  # every request of the call learns why
            if len(group) > 1 and not group[0].stream:
                # One bad request (say, options transformers refuses) must not fail the rest.
                log.warning("a batch of %d failed (%s); serving them one by one", len(group), e)
                for job in group:
                    self._run([job])
                return
            for job in group:
                job.fail(e)


BURST_WAIT = 0.01
"""Seconds an idle continuous worker waits, after a request, for others arriving with it."""


class ContinuousBatcher(Batcher):
    """The queue of requests, and a worker that decodes them a token at a time, together."""

    scheduler = "continuous"

    def __init__(
        self, model, max_rows: int = 32, prefill_chunk: int = 512, prefix_bytes: int = 256 << 20
    ):
        super().__init__(model, max_rows, 0.0)
        from rejoinder.generation.continuous import StepDecoder

        self.decoder = StepDecoder(model, max_rows, prefill_chunk, prefix_bytes)
        self.open: dict[Job, list] = {}
        """Each job in the decoder: its rows."""
        self.texts: dict[Job, RowText] = {}
        self.ranking: list[tuple[Job, list[str]]] = []
        """Reranked jobs whose candidates are all drawn, waiting to be scored."""

    @property
    def waiting(self) -> int:
        return self.jobs.qsize() + len(self.decoder.waiting)

    def facts(self) -> dict:
        d = self.decoder
        return {
            "running": len(d.rows),
            "prefix_cache": {
                "sessions": len(d.prefixes.entries),
                "mb": round(d.prefixes.bytes / (1 << 20), 2),
                "reused_tokens": d.reused_tokens,
            },
        }

    def _work(self) -> None:
        stopping = False
        while True:
            idle = not self.decoder.busy
            until = 0.0
            while True:  # everything queued joins now; an idle worker waits for work
                try:
                    if idle:
                        job = self.jobs.get()
                    elif (left := until - time.monotonic()) > 0:
                        job = self.jobs.get(timeout=left)
                    else:
                        job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if idle:
                    # Work after a pause often comes in a burst (clients answered by
                    # one step come back together): a moment's wait lets their
                    # prompts be prefilled in one pass instead of one after another.
                    until = time.monotonic() + BURST_WAIT
                idle = False
                if job is _STOP:
                    stopping = True
                    break
                if not job.cancelled:
                    self._take(job)
            if not self.decoder.busy:
                if stopping and self.jobs.empty():
                    return
                continue
            for job, rows in list(self.open.items()):
                if job.cancelled:  # the client left: its rows leave at this step
                    for row in rows:
                        self.decoder.cancel(row)
            try:
                events = self.decoder.step()
            except BaseException as e:  # the worker must outlive any one step
                log.exception("a decoding step failed")
                self._fail_all(e)
                continue
            self.batches = self.decoder.steps
            self.batched_jobs = self.decoder.row_steps
            for row, token in events:
                self._deliver(row, token)
            if self.ranking:
                self._rerank()

    def _take(self, job: Job) -> None:
        """A job's rows go to the decoder; what cannot decode in steps runs now, whole."""
        from rejoinder.generation.continuous import supports

        config = job.config
        sample = replace(config, mmi_candidates=0, num_return_sequences=1)
        several = config.uses_mmi or config.num_return_sequences > 1
        if (
            not supports(sample)
            or (config.uses_mmi and not config.do_sample)
            or (several and config.seed is not None)
        ):
            # A seeded request of several sequences runs whole, as offline: generate
            # draws its rows from one seeded stream, which rows of their own cannot.
            super()._run([job])
            return
        # A reranked job's rows are its candidates; another's, its n replies.
        n = config.mmi_candidates or config.num_return_sequences
        if not self._submit(job, sample, list(range(n)), job.session if n == 1 else None):
            return
        # A streamed reply the repetition guard checks is sent whole (Job.resolve).
        if job.stream and not guard.guarded(config, job.context):
            self.texts[job] = RowText(self.model.tokenizer, self._stops(config))

    def _submit(self, job: Job, config: DecodingConfig, which: list[int], reuse=None) -> bool:
        """Rows for sequences `which` of a job (each seeded apart when it is seeded)."""
        try:
            prompt = self.model.encode(job.context, config.max_new_tokens)
            self.open[job] = [
                self.decoder.submit(
                    (job, i),
                    prompt,
                    config,
                    None if config.seed is None else config.seed + i,
                    prefix_key=reuse,
                )  # fmt: skip
                for i in which
            ]
        except Exception as e:
            self._close(job)
            job.fail(e)
            return False
        return True

    def _stops(self, config: DecodingConfig) -> list[str]:
        return [*self.model.format.stop_strings, *config.stop]

    def _deliver(self, row, token: int | None) -> None:
        job, _ = row.key
        if job not in self.open:
            return
        if row.failed is not None:
            self._close(job)
            job.fail(row.failed)
            return
        if job in self.texts:
            self._stream(job, row, token)
            return
        rows = self.open[job]
        if token is None and all(r.done for r in rows):
            self._close(job)
            got = [self.model.reply_of(r.new, r.config) for r in rows]
            if job.config.uses_mmi:
                self.ranking.append((job, got))
            elif not self._redraw(job, got):
                job.resolve(job.drawn)

    def _redraw(self, job: Job, got: list[Reply]) -> bool:
        """Keeps a job's new replies (the less repetitive where a sequence was drawn again)
        and submits rows for those the repetition guard refuses, while retries are left;
        False when the job's replies are final."""
        config = job.config
        earlier = guard.bot_turns(job.context) if config.max_self_overlap else []
        if job.drawn is None:
            job.drawn = got
        else:
            for i, new in zip(job.redrawn, got, strict=True):
                if guard.overlap(new.text, earlier) < guard.overlap(job.drawn[i].text, earlier):
                    job.drawn[i] = new
        again = [i for i, r in enumerate(job.drawn) if guard.refused(r.text, earlier, config)]
        if not earlier or not again or job.attempts >= config.self_overlap_retries:
            return False
        job.attempts += 1
        job.redrawn = again
        self._submit(job, guard.retry_config(config, job.attempts), again)  # fails the job itself
        return True

    def _rerank(self) -> None:
        """Scores the drawn candidates of every waiting job, a batch per decoding config."""
        from rejoinder.generation import mmi

        groups: dict[tuple, list[tuple[Job, list[Reply]]]] = {}
        for job, drawn in self.ranking:
            groups.setdefault(job.key() if job.config.seed is None else (id(job),), []).append(
                (job, drawn)
            )
        self.ranking = []
        for group in groups.values():
            jobs = [job for job, _ in group]
            try:
                results = mmi.rerank_drawn(
                    self.model, [j.context for j in jobs], [d for _, d in group], jobs[0].config
                )
            except Exception as e:
                log.exception("reranking failed")
                for job in jobs:
                    job.fail(e)
                continue
            for job, result in zip(jobs, results, strict=True):
                job.resolve([result.best])

    def _stream(self, job: Job, row, token: int | None) -> None:
        text = self.texts[job]
        if token is not None:
            if chunk := text.add(token):
                job.send(chunk)
            if not text.stopped:
                return
            self.decoder.cancel(row)  # a stop string ended the reply: free the row now
        if rest := text.finish():
            job.send(rest)
        job.send(Finish(len(row.new), row.finish_reason or STOP))
        job.send(None)
        self._close(job)

    def _close(self, job: Job) -> None:
        self.open.pop(job, None)
        self.texts.pop(job, None)

    def _fail_all(self, error: BaseException) -> None:
        for job in list(self.open):
            self._close(job)
            job.fail(error)
        self.decoder.reset()
