"""Continuous batching in the server: requests decoded a token at a time, together.

`ContinuousBatcher` owns a `generation.continuous.StepDecoder`: a request joins the
running batch at the next step and leaves it, its reply sent, the step its row ends;
rows with different options share steps, and a seeded row draws from its own generator,
so no reply depends on the traffic. What cannot decode in steps (beams, extra heads,
seeded requests of several sequences) runs whole between two steps (`run_whole`).
Reranked requests draw their candidates as rows in the shared steps, and the candidates
of the requests whose rows finished in one step are scored together
(`mmi.rerank_drawn`), the forward model's scores mostly from what decoding them
computed (`generation.continuous.rescoring`). Where the repetition guard checks a reply
(`max_self_overlap`, the bot having spoken before), a refused reply is drawn again as
new rows, and a streamed one is sent whole once it passes. With the safety policy on
(`model.safety`), the user messages of the requests taken together are checked in one
pass, so are the replies of the requests whose rows finished in one step; flagged
replies are drawn again as new rows (`generation.screening`), and every reply is sent
whole once checked.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import replace

from rejoinder.generation import replies as guard
from rejoinder.generation.config import DecodingConfig
from rejoinder.generation.replies import STOP, Finish, Reply
from rejoinder.generation.screening import Screen, redraw_config, refusals
from rejoinder.generation.streaming import RowText
from rejoinder.safety import SafetyError
from rejoinder.serve.batching import STOP_WORKER, Job, Worker, handed_together, run_whole

log = logging.getLogger("rejoinder.serve")

BURST_WAIT = 0.01
"""Seconds an idle continuous worker waits, after a request, for others arriving with it."""


class ContinuousBatcher(Worker):
    """The queue of requests, and a worker that decodes them a token at a time, together."""

    scheduler = "continuous"

    def __init__(
        self, model, max_rows: int = 32, prefill_chunk: int = 512, prefix_bytes: int = 256 << 20
    ):
        super().__init__(model)
        from rejoinder.generation.continuous import StepDecoder

        self.decoder = StepDecoder(model, max_rows, prefill_chunk, prefix_bytes)
        self.open: dict[Job, list] = {}
        """Each job in the decoder: its rows."""
        self.texts: dict[Job, RowText] = {}
        self.ranking: list[tuple[Job, list[Reply], list]] = []
        """Reranked jobs whose candidates are all drawn (their replies and rows), waiting
        to be scored."""
        self.checking: list[tuple[Job, list[Reply]]] = []
        """Jobs whose replies (or redraws) are drawn, waiting for the safety policy."""

    @property
    def waiting(self) -> int:
        return self.jobs.qsize() + len(self.decoder.waiting)

    def facts(self) -> dict:
        d = self.decoder
        return {
            "running": len(d.rows),
            "row_steps": d.row_steps,
            "step": d.clock.summary(),
            "prefix_cache": {
                "sessions": len(d.prefixes.entries),
                "mb": round(d.prefixes.bytes / (1 << 20), 2),
                "reused_tokens": d.reused_tokens,
            },
            # reranked candidates' tokens scored from what decoding them computed
            "rescored_tokens": d.rescored_tokens,
        }

    def _work(self) -> None:
        stopping = False
        while True:
            idle = not self.decoder.busy
            until = 0.0
            taken = []
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
                if job is STOP_WORKER:
                    stopping = True
                    break
                if not job.cancelled:
                    taken.append(job)
            clock = self.decoder.clock
            started = clock.start()  # the scheduler's work from here on is host time
            self._take_all(taken)
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
            with handed_together():
                for row, token in events:
                    self._deliver(row, token)
            # (reranking and the safety pass run other models: not the step's host time)
            clock.stop_iteration(started)
            with handed_together():
                if self.ranking:
                    self._rerank()
                if self.checking:
                    self._check()

    def _take_all(self, jobs: list[Job]) -> None:
        """Jobs into the decoder; with the safety policy, the user messages of those that
        decode in steps are checked first, together, and flagged ones refused."""
        safety = self.model.safety
        stepped = [job for job in jobs if not self._whole(job)]
        if safety is not None and stepped:
            try:
                flags = safety.check_users([job.context for job in stepped])
            except SafetyError as e:  # fails closed: these requests get the error
                for job in stepped:
                    job.fail(e)
                jobs = [job for job in jobs if job not in stepped]
                flags = []
            for job, flag in zip(stepped, flags, strict=False):
                job.user_flag = flag
        for job in jobs:
            if job.user_flag is not None and safety.refuses_users:
                n = 1 if job.config.uses_mmi else job.config.num_return_sequences
                job.resolve(refusals(safety, job.user_flag, n))
            else:
                self._take(job)

    @staticmethod
    def _whole(job: Job) -> bool:
        """Whether a job runs as one generate call rather than rows in steps."""
        from rejoinder.generation.continuous import supports

        config = job.config
        several = config.uses_mmi or config.num_return_sequences > 1
        return (
            not supports(replace(config, mmi_candidates=0, num_return_sequences=1))
            or (config.uses_mmi and not config.do_sample)
            # A seeded request of several sequences runs whole, as offline: generate
            # draws its rows from one seeded stream, which rows of their own cannot.
            or (several and config.seed is not None)
        )

    def _take(self, job: Job) -> None:
        """A job's rows go to the decoder; what cannot decode in steps runs now, whole
        (`reply_batch`, which applies the safety policy itself)."""
        config = job.config
        sample = replace(config, mmi_candidates=0, num_return_sequences=1)
        if self._whole(job):
            run_whole(self.model, [job])
            return
        # A reranked job's rows are its candidates; another's, its n replies.
        n = config.mmi_candidates or config.num_return_sequences
        if not self._submit(job, sample, list(range(n)), job.session if n == 1 else None):
            return
        # A streamed reply the repetition guard or the safety policy checks is sent
        # whole (Job.resolve).
        checked = self.model.safety is not None or guard.guarded(config, job.context)
        if job.stream and not checked:
            self.texts[job] = RowText(self.model.tokenizer, self._stops(config))

    def _submit(self, job: Job, config: DecodingConfig, which: list[int], reuse=None) -> bool:
        """Rows for sequences `which` of a job (each seeded apart when it is seeded)."""
        from rejoinder.generation.continuous.rescoring import KeptPrompt

        # Candidates to rerank keep what decoding computed: the forward model's scores
        # of their replies come mostly from it (`StepDecoder.loglikelihood`).
        keep = KeptPrompt() if job.config.uses_mmi and job.screen is None else None
        try:
            prompt = self.model.encode(job.context, config.max_new_tokens)
            self.open[job] = [
                self.decoder.submit(
                    (job, i),
                    prompt,
                    config,
                    None if config.seed is None else config.seed + i,
                    prefix_key=reuse,
                    # a request's rows (candidates, n replies) count as one request
                    share=job.config.mmi_candidates or job.config.num_return_sequences,
                    keep=keep,
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
            if job.cancelled:  # its client left: nothing to score, check or send
                return
            got = [self.model.reply_of(r.new, r.config) for r in rows]
            if job.screen is not None:  # the safety policy's redraws
                self.checking.append((job, got))
            elif job.config.uses_mmi:
                self.ranking.append((job, got, rows))
            elif not self._redraw(job, got):
                self._final(job)

    def _final(self, job: Job) -> None:
        """A job's replies are drawn: to the safety policy, or to the client."""
        if self.model.safety is not None:
            self.checking.append((job, []))
        else:
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

        groups: dict[tuple, list[tuple[Job, list[Reply], list]]] = {}
        for job, drawn, rows in self.ranking:
            groups.setdefault(job.key() if job.config.seed is None else (id(job),), []).append(
                (job, drawn, rows)
            )
        self.ranking = []
        for group in groups.values():
            jobs = [job for job, _, _ in group]

            def forward_of(encodings, at, group=group):
                rows = [group[i][2][j] for i, j in at]
                return self.decoder.loglikelihood(rows, encodings)

            try:
                results = mmi.rerank_drawn(
                    self.model,
                    [j.context for j in jobs],
                    [d for _, d, _ in group],
                    jobs[0].config,
                    forward_of,
                )
            except Exception as e:
                log.exception("reranking failed")
                for job in jobs:
                    job.fail(e)
                continue
            for job, result in zip(jobs, results, strict=True):
                if self.model.safety is None:
                    job.resolve([result.best])
                    continue
                # The candidates were checked as they were scored.
                job.screen = Screen.of([result.best], [result.candidates[result.chosen].flag])
                self._screened(job)

    def _check(self) -> None:
        """The safety policy on the replies drawn for every waiting job, in one pass: a
        job's first replies, or the redraws of those it flagged."""
        safety = self.model.safety
        waiting, self.checking = self.checking, []
        drawn = [job.drawn if job.screen is None else got for job, got in waiting]
        pairs = [
            (job.context, r.text) for (job, _), rs in zip(waiting, drawn, strict=True) for r in rs
        ]
        try:
            flags = iter(safety.check(pairs))
        except SafetyError as e:
            for job, _ in waiting:
                job.fail(e)
            return
        for (job, _), rs in zip(waiting, drawn, strict=True):
            said = [next(flags) for _ in rs]
            if job.screen is None:
                job.screen = Screen.of(rs, said)
            else:
                for k, reply, flag in zip(job.redrawn, rs, said, strict=True):
                    job.screen.offer(k, reply, flag)
            self._screened(job)

    def _screened(self, job: Job) -> None:
        """Draws a job's flagged replies again while retries are left, else answers it."""
        safety, screen = self.model.safety, job.screen
        pending = screen.pending()
        if pending and screen.attempts < safety.config.safety_retries:
            screen.attempts += 1
            job.redrawn = pending
            self._submit(job, redraw_config(job.config, screen.attempts), pending)
            return
        job.resolve(screen.final(safety, job.user_flag))

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
