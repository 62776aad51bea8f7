"""Continuous batching on torch: rows join and leave a running batch at every token.

`StepDecoder` holds one batch of rows decoding together over one KV cache. Each
`step()` runs the forward pass for the tokens handed out last time, admits waiting rows
(`admission`: a budget of prompt tokens per step, fresh prompts prefilled together),
picks every row's next token with that row's own options (`sampling`), hands the tokens
out, and drops the rows that finished (`batch`: the left-padded cache, rows cut out as
they leave). A session's row starts from its kept keys and values (`prefix`).

The split is a serving engine's: a scheduler (admission), a batch runner (batch), a row
sampler (sampling) and the prefix cache, with this module only ordering them in a step.

Each row decodes exactly as `model.generate` would decode it alone: the same logits
processors, built by transformers from the row's options, fed the row's own unpadded
ids; greedy rows take the argmax, sampled rows draw with their own generator, seeded
as a lone `generate` call would be. So a reply does not depend on what else is in the
batch (tests/test_continuous.py checks this against generate).

What a step cannot do is left to the caller: beam search, extra heads, reranking
(`supports(config)` says which), and models whose cache layers are not plain
key/value tensors (sliding windows: `StepDecoder.usable(model)`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from rejoinder.errors import RejoinderError
from rejoinder.formats import Encoding
from rejoinder.generation.backends import Job
from rejoinder.generation.config import DecodingConfig
from rejoinder.generation.continuous import rescoring, sampling
from rejoinder.generation.continuous.admission import Admission
from rejoinder.generation.continuous.batch import Batch
from rejoinder.generation.continuous.clock import StepClock
from rejoinder.generation.continuous.prefix import PrefixCache
from rejoinder.generation.continuous.rows import Row, supports
from rejoinder.generation.replies import LENGTH, STOP
from rejoinder.generation.streaming import StopStrings

log = logging.getLogger("rejoinder.generation")

__all__ = ["PrefixCache", "Row", "StepDecoder", "supports"]


class StepDecoder:
    """Rows of many requests decoded in shared forward passes, joining and leaving per token."""

    def __init__(
        self, model, max_rows: int = 32, prefill_chunk: int = 512, prefix_bytes: int = 256 << 20
    ):
        self.cm = model
        self.lm = model.model
        self.tokenizer = model.tokenizer
        self.stop_ids = set(model.format.stop_ids)
        self.clock = StepClock()
        """Each step's time in and outside the model (`/health`'s `step`)."""
        timed = self.clock.timed(self.lm)
        self.batch = Batch(timed)
        self.admission = Admission(timed, max_rows, prefill_chunk)
        self.prefixes = PrefixCache(prefix_bytes)
        self.steps = 0
        self.reused_tokens = 0
        """Prompt tokens not run again, thanks to kept prefixes."""
        self.rescored_tokens = 0
        """Tokens of scored replies' encodings not run again (`loglikelihood`)."""
        self.pad_id = model.tokenizer.pad_token_id
        self.row_steps = 0
        """Rows decoded over all steps: row_steps / steps is the mean batch."""

    @staticmethod
    def usable(model) -> bool:
        """Whether the model's cache is plain key/value tensors that can be padded and cut
        (not a sliding window's, which drops keys as it goes)."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        layers = DynamicCache(config=model.model.config).layers
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    # -- what callers read -----------------------------------------------------------

    @property
    def rows(self) -> list[Row]:
        """The rows decoding, in the batch's order."""
        return self.batch.rows

    @property
    def waiting(self):
        """The rows waiting to join, in the order they came."""
        return self.admission.waiting

    @property
    def cache(self):
        return self.batch.cache

    @property
    def grouped_prompts(self) -> int:
        return self.admission.grouped_prompts

    @property
    def largest_group(self) -> int:
        return self.admission.largest_group

    @property
    def busy(self) -> bool:
        return bool(self.rows or self.waiting)

    # -- rows in and out -------------------------------------------------------------

    def submit(
        self,
        key: Any,
        prompt: Encoding,
        config: DecodingConfig,
        seed: int | None = None,
        prefix_key: Any = None,
        share: int = 1,
        keep: rescoring.KeptPrompt | None = None,
    ) -> Row:
        """Queues one sequence for `prompt`; returns its Row. `seed` seeds this row alone
        (default: the config's). With `prefix_key` (a session), the keys and values kept
        from that key's last row are reused for the prompt's shared beginning, and this
        row's are kept in their place when it ends. `share`: how many rows the request
        has; together they count as one against `max_rows`. With `keep` (shared by a
        request's rows), what decoding computes is kept to score the row's reply
        (`loglikelihood`)."""
        if not supports(config):
            raise RejoinderError("beam search, extra heads and reranking do not decode in steps")
        job = Job.of(self.cm.format, [prompt], config)
        types = prompt.token_type_ids
        row = Row(
            key=key,
            prefix_key=prefix_key,
            prompt=list(prompt.input_ids),
            prompt_types=list(types) if types else None,
            config=config,
            stops=StopStrings(self.tokenizer, job.stops) if job.stops else None,
            bad_ids=job.bad_ids,
            weight=1 / max(1, share),
            kept=None if keep is None else rescoring.Kept(keep),
        )
        seed = config.seed if seed is None else seed
        if config.do_sample and seed is not None:
            row.generator = torch.Generator(device=self.lm.device).manual_seed(seed)
        pad = self.tokenizer.pad_token_id
        row.processors, row.shared, row.warpers = sampling.processors(
            self.lm, row, self.stop_ids, pad
        )
        row.group = sampling.warp_key(config)
        if prefix_key is not None and row.prompt_types is None:
            self.reused_tokens += self.prefixes.start(row, self.lm.config)
        self.admission.waiting.append(row)
        return row

    def loglikelihood(self, rows: list[Row], encodings: list[Encoding]) -> list[list[float]]:
        """The labelled log-probabilities of each encoding (as `model.loglikelihood`
        scores, in the model's own pass), the encoding of the reply of its row: ended,
        and submitted with `keep`, else scored whole (`rescoring`)."""
        out, reused = rescoring.loglikelihood(self.cm.model, rows, encodings, self.pad_id)
        self.rescored_tokens += reused
        return out

    def reset(self) -> None:
        """Forgets every row (after a failed step, whose batch state is unknown)."""
        self.admission.waiting.clear()
        self.batch.clear()

    def cancel(self, row: Row) -> None:
        """Ends a row at the next step (its client left): its slot is freed."""
        row.done = True

    # -- the step --------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> list[tuple[Row, int | None]]:
        """One token for every running row: (row, token) events, and (row, None) for each
        row that ended (its end token, a stop string, its length, a cancel, a failure).

        The forward pass for the tokens handed out last time runs at the start of the
        next step, not the end of this one: a token reaches its client a forward pass
        sooner, and a row cancelled in between is cut before it costs one."""
        started = self.clock.start()
        events: list[tuple[Row, int | None]] = []
        if self.rows:  # each step ends with the rows' next logits still to compute
            self._cut(events)  # cancelled since the last step
            if self.rows:
                self.batch.forward()
        self.admission.admit(self.batch, events)
        if not self.rows:
            return events
        chosen, failed = sampling.choose(self.rows, self.batch.logits)
        rescoring.record(self.rows, self.batch.logits, chosen)
        for row, error in failed:
            log.exception("a row failed", exc_info=error)
            row.failed, row.done = error, True
            events.append((row, None))
        for row, token in chosen:
            row.new.append(token)
            if token in self.stop_ids:
                row.done, row.finish_reason = True, STOP
                events.append((row, None))
                continue
            events.append((row, token))
            if row.stops is not None and row.stops.found([row.new])[0]:
                row.done, row.finish_reason = True, STOP
            elif len(row.new) >= row.config.max_new_tokens:
                row.done, row.finish_reason = True, LENGTH
            if row.done:
                events.append((row, None))
        self.steps += 1
        self.row_steps += len(self.rows)
        rows = len(self.rows)
        self._cut([])  # ended: their events are out
        self.batch.logits = None  # the rows' next logits: the next step's forward pass
        self.clock.stop(started, rows)
        return events

    def _cut(self, events: list) -> None:
        """Cuts out the rows that are done, keeping a session's keys and values, with an
        end event for each in `events`."""
        keep = []
        for i, row in enumerate(self.rows):
            if not row.done:
                keep.append(i)
                continue
            events.append((row, None))
            if row.prefix_key is not None and row.failed is None:
                self.prefixes.put(row.prefix_key, *self.batch.kept(i))
            if row.kept is not None and row.failed is None:
                rescoring.keep(row, self.batch, i)
        if len(keep) < len(self.rows):
            self.batch.keep(keep)
