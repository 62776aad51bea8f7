"""The torch backend: `transformers` generate on a loaded model, and scoring by its logits."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

import torch

from rejoinder.errors import RejoinderError
from rejoinder.formats import Encoding
from rejoinder.generation.backends import Job
from rejoinder.generation.replies import LENGTH, STOP, Finish
from rejoinder.generation.streaming import StopStrings
from rejoinder.modeling.loss import labelled_logprobs
from rejoinder.padding import pad_batch


class _StopCriterion:
    """A transformers stopping criterion: rows whose new text holds a stop string end.
    `ended` records how many tokens each such row had then: what follows is padding."""

    def __init__(self, check: StopStrings, prompt_len: int):
        self.check, self.prompt_len = check, prompt_len
        self.ended: dict[int, int] = {}

    def __call__(self, input_ids, scores, **kwargs):
        done = self.check.found(input_ids[:, self.prompt_len :].tolist())
        for row in (i for i, d in enumerate(done) if d):
            self.ended.setdefault(row, input_ids.shape[1] - self.prompt_len)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _TokenEvents:
    """A transformers streamer for a batch: (row, token) events on a queue, and (row,
    Finish) when the row produces one of `stop_ids`, spells a stop string, reaches its
    length, or (every row left) at the end."""

    def __init__(self, job: Job, stop_ids: set[int], check, events: queue.Queue):
        rows = len(job.prompts)
        self.stop_ids, self.check, self.events = stop_ids, check, events
        self.limit = [job.limit(row) for row in range(rows)]
        self.new: list[list[int]] = [[] for _ in range(rows)]
        self.done = [False] * rows
        self.prompt_seen = False

    def _finish(self, row: int, reason: str, tokens: int) -> None:
        self.done[row] = True
        self.events.put((row, Finish(tokens, reason)))

    def put(self, value) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            new = self.new[row]
            if token in self.stop_ids:
                self._finish(row, STOP, len(new) + 1)
                continue
            new.append(token)
            self.events.put((row, token))
            if self.check is not None and self.check.found([new])[0]:
                self._finish(row, STOP, len(new))
            elif len(new) >= self.limit[row]:
                self._finish(row, LENGTH, len(new))

    def end(self) -> None:
        for row, done in enumerate(self.done):
            if not done:
                self._finish(row, LENGTH, len(self.new[row]))


def seeded(seed: int | None, device: torch.device):
    """Seeds one call only: the caller's RNG state (CPU and GPU) comes back after."""
    if seed is None:
        return contextlib.nullcontext()
    gpus = [device.index or 0] if device.type == "cuda" else []

    @contextlib.contextmanager
    def fork():
        with torch.random.fork_rng(devices=gpus):
            torch.manual_seed(seed)
            yield

    return fork()


class TorchBackend:
    """Generation and scoring with a loaded `transformers` causal LM."""

    name = "torch"

    def __init__(self, model, tokenizer, stop_ids: list[int]):
        self.model, self.tokenizer, self.stop_ids = model, tokenizer, list(stop_ids)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _run(self, job: Job, streamer=None) -> tuple[torch.Tensor, int, dict[int, int]]:
        """One left-padded generate call: (output ids, prompt length, the length of each
        row a stop string ended)."""
        config = job.config
        kwargs = config.generate_kwargs()
        kwargs.update(eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id)
        if job.bad_ids:
            kwargs["bad_words_ids"] = job.bad_ids
        batch = pad_batch(job.prompts, self.tokenizer.pad_token_id, side="left", device=self.device)
        prompt_len = batch["input_ids"].shape[1]
        criterion = None
        if job.stops:
            criterion = _StopCriterion(StopStrings(self.tokenizer, job.stops), prompt_len)
            kwargs["stopping_criteria"] = [criterion]
        if streamer is not None:
            kwargs["streamer"] = streamer
        with torch.inference_mode(), seeded(config.seed, self.device):
            try:
                out = self.model.generate(**batch, **kwargs)
            except ValueError as e:  # transformers' own check of the options
                raise RejoinderError(f"bad generation options: {e}") from None
        # Beams are reordered as they search: rows are not the criterion's rows then.
        ended = criterion.ended if criterion and job.config.num_beams == 1 else {}
        return out, prompt_len, ended

    def generate(self, job: Job) -> list[list[list[int]]]:
        out, prompt_len, ended = self._run(job)
        rows = [self._generated(r[prompt_len:].tolist(), ended.get(i)) for i, r in enumerate(out)]
        k = job.config.num_return_sequences
        return [rows[i * k : (i + 1) * k] for i in range(len(job.prompts))]

    def _generated(self, ids: list[int], ended: int | None) -> list[int]:
        """A row's generated ids without the padding after its end: up to its first end
        id, or to where a stop string ended it."""
        stops = set(self.stop_ids)
        cut = next((i + 1 for i, t in enumerate(ids) if t in stops), len(ids))
        if ended is not None:
            cut = min(cut, ended)
        elif cut == len(ids) and self.tokenizer.pad_token_id not in stops:
            while cut and ids[cut - 1] == self.tokenizer.pad_token_id:  # a beam's padding
                cut -= 1
        return ids[:cut]

    def stream(self, job: Job) -> Iterator[tuple[int, int | Finish]]:
        """Token events from one generate call, run on a thread of its own."""
        events: queue.Queue = queue.Queue()
        check = StopStrings(self.tokenizer, job.stops) if job.stops else None
        streamer = _TokenEvents(job, set(self.stop_ids), check, events)
        errors: list[BaseException] = []

        def run():
            try:
                self._run(job, streamer)
            except BaseException as e:  # re-raised in the caller's thread
                errors.append(e)
            finally:
                events.put(None)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            while (event := events.get()) is not None:
                yield event
        finally:
            # The caller may stop early; generation then runs to its end unread.
            thread.join()
        if errors:
            raise errors[0]

    def score(self, encodings: list[Encoding], batch_size: int) -> list[list[float]]:
        out = []
        for start in range(0, len(encodings), batch_size):
            chunk = encodings[start : start + batch_size]
            batch = pad_batch(chunk, self.tokenizer.pad_token_id, labels=True, device=self.device)
            with torch.inference_mode():
                out += labelled_logprobs(self.model, batch)
        return out

    def inspect(self, ids: list[int], steps: int, top: int) -> list[dict]:
        """Greedy decoding of `ids`, step by step, with the `top` most likely tokens."""
        with torch.inference_mode():
            seq = torch.tensor([ids], device=self.device)
            out = self.model.generate(
                seq,
                attention_mask=torch.ones_like(seq),
                max_new_tokens=steps,
                min_new_tokens=steps,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        rows = []
        for i, logits in enumerate(out.logits):
            p, idx = torch.softmax(logits[0].float(), -1).topk(top)
            chosen = int(out.sequences[0, len(ids) + i])
            rows.append(
                {
                    "step": i + 1,
                    "token": self.tokenizer.decode([chosen]),
                    "top": [
                        (self.tokenizer.decode([int(t)]), float(q))
                        for t, q in zip(idx, p, strict=True)
                    ],
                }
            )
        return rows
