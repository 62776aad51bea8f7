"""Continuous batching on torch: rows join and leave a running batch at every token.

`StepDecoder` holds one batch of rows decoding together over one KV cache. Each
`step()` admits waiting rows (within a budget of prompt tokens per step: fresh prompts
prefilled together, left-padded; a long one alone, a chunk per step, so a long prompt
never stalls the running rows for more than one chunk),
picks every row's next token with that row's own options, hands the tokens out, drops
the rows that finished, and runs one forward pass for the rest. It is the scheduler
TGI's first causal-LM server used: the batch's cache is left-padded to its longest
row; a row that joins is padded to fit (or the batch to fit it), a row that leaves is
cut out, and columns no row needs any more are trimmed.

Each row decodes exactly as `model.generate` would decode it alone: the same logits
processors, built by transformers from the row's options (temperature, top-k, top-p,
typical, min-p, repetition penalty, no-repeat n-grams, bad words, min new tokens), fed
the row's own unpadded ids; greedy rows take the argmax, sampled rows draw with their
own generator, seeded as a lone `generate` call would be. So a reply does not depend on
what else is in the batch (tests/test_continuous.py checks this against generate).

What a step cannot do is left to the caller: beam search, extra heads, reranking
(`supports(config)` says which), and models whose cache layers are not plain
key/value tensors (sliding windows: `StepDecoder.usable(model)`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import torch

from rejoinder.errors import RejoinderError
from rejoinder.formats import Encoding
from rejoinder.generation.backends import Job
from rejoinder.generation.config import DecodingConfig
from rejoinder.generation.replies import LENGTH, STOP
from rejoinder.generation.streaming import StopStrings

log = logging.getLogger("rejoinder.generation")


def supports(config: DecodingConfig) -> bool:
    """Whether a config decodes row by row in shared steps (no beams, heads or reranking)."""
    return config.num_beams == 1 and not config.uses_mmi and config.head in (None, "default")


@dataclass(eq=False)
class Row:
    """One sequence being decoded: a prompt, the tokens so far, and its own options."""

    key: Any
    """The caller's handle (a request, and which of its sequences)."""
    prefix_key: Any
    prompt: list[int]
    prompt_types: list[int] | None
    """The prompt's token types, for formats that have them (GPT-2's sep and speaker)."""
    config: DecodingConfig
    stops: StopStrings | None
    bad_ids: list[list[int]]
    generator: torch.Generator | None = None
    processors: Any = None
    """The row's processors that read its ids (repetition, n-grams, bad words, lengths)."""
    warpers: Any = None
    """The rest (temperature, top-k, top-p, …): the same for rows of one `group`, which
    are warped together."""
    group: Any = None
    new: list[int] = field(default_factory=list)
    """Every token generated, its end id included."""
    done: bool = False
    finish_reason: str | None = None
    """Why it ended: "stop" (an end id, a stop string) or "length"; None if cancelled."""
    failed: BaseException | None = None
    # Prefill state, while the row waits to join the batch.
    alone: bool = False
    """Prefilled alone: prefilling it with others failed."""
    cache: Any = None
    prefilled: int = 0
    logits: torch.Tensor | None = None

    @property
    def ids(self) -> list[int]:
        return self.prompt + self.new

    @property
    def token_type(self) -> int | None:
        """New tokens take the prompt's last type, as `generate` gives them."""
        return self.prompt_types[-1] if self.prompt_types else None


class StepDecoder:
    """Rows of many requests decoded in shared forward passes, joining and leaving per token."""

    def __init__(
        self, model, max_rows: int = 32, prefill_chunk: int = 512, prefix_bytes: int = 256 << 20
    ):
        self.cm = model
        self.prefixes = PrefixCache(prefix_bytes)
        self.lm = model.model
        self.tokenizer = model.tokenizer
        self.stop_ids = set(model.format.stop_ids)
        self.max_rows, self.prefill_chunk = max(1, max_rows), max(1, prefill_chunk)
        self.waiting: deque[Row] = deque()
        self.rows: list[Row] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # (rows, columns): 1 where a key is real
        self.logits: torch.Tensor | None = None  # (rows, vocab): each row's next-token logits
        self.steps = 0
        self.reused_tokens = 0
        """Prompt tokens not run again, thanks to kept prefixes."""
        self.row_steps = 0
        """Rows decoded over all steps: row_steps / steps is the mean batch."""
        self.grouped_prompts = 0
        """Prompts prefilled together with others."""
        self.largest_group = 0
        """The most tokens (padding included) prefilled together in one forward pass."""

    @staticmethod
    def usable(model) -> bool:
        """Whether the model's cache is plain key/value tensors that can be padded and cut
        (not a sliding window's, which drops keys as it goes)."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        layers = DynamicCache(config=model.model.config).layers
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    # -- rows in and out -------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self.rows or self.waiting)

    def submit(
        self,
        key: Any,
        prompt: Encoding,
        config: DecodingConfig,
        seed: int | None = None,
        prefix_key: Any = None,
    ):
        """Queues one sequence for `prompt`; returns its Row. `seed` seeds this row alone
        (default: the config's). With `prefix_key` (a session), the keys and values kept
        from that key's last row are reused for the prompt's shared beginning, and this
        row's are kept in their place when it ends."""
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
        )
        seed = config.seed if seed is None else seed
        if config.do_sample and seed is not None:
            row.generator = torch.Generator(device=self.lm.device).manual_seed(seed)
        row.processors, row.warpers = _split(self._processors(row))
        row.group = (config.do_sample, repr([(type(w).__name__, vars(w)) for w in row.warpers]))
        if prefix_key is not None and row.prompt_types is None:
            self._reuse(row)
        self.waiting.append(row)
        return row

    def _reuse(self, row: Row) -> None:
        """Starts the row's cache from its session's kept keys and values, if they share
        a beginning with its prompt (the last prompt token is always run: its logits are
        the first reply token's)."""
        from transformers import DynamicCache

        found = self.prefixes.take(row.prefix_key, row.prompt)
        if found is None:
            return
        layers, n = found
        row.cache = DynamicCache(config=self.lm.config)
        for layer, (k, v) in zip(row.cache.layers, layers, strict=True):
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
        row.prefilled = n
        self.reused_tokens += n

    def reset(self) -> None:
        """Forgets every row (after a failed step, whose batch state is unknown)."""
        self.waiting.clear()
        self.rows = []
        self.cache = self.mask = self.logits = None

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
        events: list[tuple[Row, int | None]] = []
        if self.rows:  # each step ends with the rows' next logits still to compute
            self._cut(events)  # cancelled since the last step
            if self.rows:
                self._forward([row.new[-1] for row in self.rows])
        self._admit(events)
        if not self.rows:
            return events
        tokens = self._choose_all(events)
        for row, token in tokens:
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
        self._cut([])  # ended: their events are out
        self.logits = None  # the rows' next logits: the next step's forward pass
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
                self._keep_prefix(i, row)
        if len(keep) < len(self.rows):
            self._keep(keep)

    def _choose_all(self, events: list) -> list[tuple[Row, int]]:
        """Every running row's next token, as `generate` would pick it for that row alone:
        its own processors on its own ids, then its warpers, shared by the rows of its
        group in one call, then the argmax or a draw (a seeded row's from its generator,
        the others' in one call). A row whose processing fails ends alone."""
        scores = self.logits.float().clone()
        groups: dict[Any, list[int]] = {}
        for i, row in enumerate(self.rows):
            try:
                if row.processors:
                    ids = torch.tensor([row.ids], device=scores.device)
                    scores[i : i + 1] = row.processors(ids, scores[i : i + 1])
            except Exception as e:
                self._fail(row, e, events)
                continue
            groups.setdefault(row.group, []).append(i)
        chosen: list[tuple[Row, int]] = []
        for (sample, _), index in groups.items():
            rows = [self.rows[i] for i in index]
            try:
                warped = rows[0].warpers(None, scores[index])
                picked = self._pick(rows, warped) if sample else warped.argmax(-1).tolist()
            except Exception as e:
                for row in rows:
                    self._fail(row, e, events)
                continue
            chosen += zip(rows, picked, strict=True)
        return chosen

    @staticmethod
    def _pick(rows: list[Row], warped: torch.Tensor) -> list[int]:
        probs = torch.softmax(warped, dim=-1)
        out = [0] * len(rows)
        free = [j for j, row in enumerate(rows) if row.generator is None]
        if free:
            for j, token in zip(
                free, torch.multinomial(probs[free], 1)[:, 0].tolist(), strict=True
            ):
                out[j] = token
        for j, row in enumerate(rows):
            if row.generator is not None:
                out[j] = int(torch.multinomial(probs[j : j + 1], 1, generator=row.generator)[0, 0])
        return out

    @staticmethod
    def _fail(row: Row, error: Exception, events: list) -> None:
        log.exception("a row failed", exc_info=error)
        row.failed, row.done = error, True
        events.append((row, None))

    def _processors(self, row: Row):
        """transformers' own logits processors for this row's options (warpers included)."""
        from transformers.generation import LogitsProcessorList

        kwargs = row.config.generate_kwargs()
        for k in ("num_return_sequences", "use_cache"):
            kwargs.pop(k, None)
        if row.bad_ids:
            kwargs["bad_words_ids"] = row.bad_ids
        kwargs.update(eos_token_id=sorted(self.stop_ids), pad_token_id=self.tokenizer.pad_token_id)
        device = self.lm.device
        # The calls `generate` makes to turn options into processors (transformers keeps
        # them private; tests/test_continuous.py would see them change).
        try:
            config, _ = self.lm._prepare_generation_config(None, **kwargs)
            config.validate()
        except ValueError as e:
            raise RejoinderError(f"bad generation options: {e}") from None
        self.lm._prepare_special_tokens(config, True, device=device, batch_size=1)
        return self.lm._get_logits_processor(
            generation_config=config,
            input_ids_seq_length=len(row.prompt),
            encoder_input_ids=torch.tensor([row.prompt], device=device),
            logits_processor=LogitsProcessorList(),
            device=device,
        )

    # -- admitting rows: prefill alone, then join ------------------------------------

    def _admit(self, events: list) -> None:
        """Prefills waiting rows within this step's budget of prompt tokens and joins
        those whose whole prompt is in. Fresh prompts that fit go through the model
        together, left-padded (one forward for many prompts is about twice as fast as
        one each on a CPU, padding counted in the budget); a long prompt, or one that
        starts from a session's kept prefix, goes alone, a chunk per step."""
        budget = self.prefill_chunk
        while self.waiting and len(self.rows) < self.max_rows and budget > 0:
            row = self.waiting[0]
            if row.done:  # cancelled before it started
                self.waiting.popleft()
                events.append((row, None))
                continue
            group = self._fresh_group(budget)
            if group:
                try:
                    budget -= self._prefill_group(group)
                except Exception:
                    # Each goes alone instead, so that only a prompt that fails alone fails.
                    log.exception("prompts failed to prefill together")
                    for member in group:
                        member.alone = True
                    continue
                for _ in group:
                    self.waiting.popleft()
                continue
            try:
                budget -= self._prefill(row, budget)
            except Exception as e:
                log.exception("a prompt failed to prefill")
                self.waiting.popleft()
                row.failed, row.done, row.cache = e, True, None
                events.append((row, None))
                continue
            if row.prefilled < len(row.prompt):
                return  # the rest of this prompt next step: running rows go on meanwhile
            self.waiting.popleft()
            self._join([row], row.cache, None, row.logits)
            row.cache = row.logits = None

    def _fresh_group(self, budget: int) -> list[Row]:
        """The waiting rows from the front that can be prefilled together: not started,
        not cancelled, their padded prompts within `budget`, room left in the batch. At
        least two, else empty (one goes through `_prefill`)."""
        group: list[Row] = []
        longest = 0
        room = self.max_rows - len(self.rows)
        for row in self.waiting:
            if row.done or row.alone or row.cache is not None or len(group) == room:
                break
            width = max(longest, len(row.prompt))
            if width * (len(group) + 1) > budget:
                break
            group.append(row)
            longest = width
        return group if len(group) > 1 else []

    def _prefill_group(self, group: list[Row]) -> int:
        """Runs fresh prompts through the model together, left-padded, and joins them to
        the batch; returns the tokens it computed, padding included."""
        from transformers import DynamicCache

        device = self.lm.device
        width = max(len(row.prompt) for row in group)
        pads = [width - len(row.prompt) for row in group]
        ids = torch.tensor([[0] * p + r.prompt for r, p in zip(group, pads, strict=True)])
        mask = torch.tensor([[0] * p + [1] * (width - p) for p in pads])
        ids, mask = ids.to(device), mask.to(device)
        kwargs = {
            "input_ids": ids,
            "attention_mask": mask,
            # Positions count real tokens only, as `generate` numbers a left-padded batch.
            "position_ids": (mask.cumsum(1) - 1).clamp(min=0),
        }
        if group[0].prompt_types is not None:
            kwargs["token_type_ids"] = torch.tensor(
                [[0] * p + r.prompt_types for r, p in zip(group, pads, strict=True)], device=device
            )
        cache = DynamicCache(config=self.lm.config)
        out = self.lm(**kwargs, cache=cache, use_cache=True, logits_to_keep=1)
        for row in group:
            row.prefilled = len(row.prompt)
        self._join(group, cache, mask, out.logits[:, -1, :])
        self.grouped_prompts += len(group)
        self.largest_group = max(self.largest_group, width * len(group))
        return width * len(group)

    def _prefill(self, row: Row, budget: int) -> int:
        """Runs up to `budget` more of the row's prompt through the model, alone."""
        from transformers import DynamicCache

        if row.cache is None:
            row.cache = DynamicCache(config=self.lm.config)
        start = row.prefilled
        end = min(len(row.prompt), start + budget)
        ids = torch.tensor([row.prompt[start:end]], device=self.lm.device)
        kwargs = {
            "input_ids": ids,
            "attention_mask": torch.ones(1, end, dtype=torch.long, device=ids.device),
            "position_ids": torch.arange(start, end, device=ids.device)[None],
        }
        if row.prompt_types is not None:
            kwargs["token_type_ids"] = torch.tensor(
                [row.prompt_types[start:end]], device=ids.device
            )
        # Only the last position's logits are read: the rest of the prompt's would cost a
        # vocabulary-wide matrix product per token for nothing.
        out = self.lm(**kwargs, cache=row.cache, use_cache=True, logits_to_keep=1)
        row.prefilled = end
        if end == len(row.prompt):
            row.logits = out.logits[:, -1, :]
        return end - start

    def _join(self, rows: list[Row], cache, mask: torch.Tensor | None, logits) -> None:
        """Adds prefilled rows (their cache, their mask: None when none is padded) to the
        batch, left-padding whichever is shorter."""
        if mask is None:
            length = cache.layers[0].keys.shape[2]
            mask = torch.ones(len(rows), length, dtype=torch.long, device=self.lm.device)
        if not self.rows:
            self.cache, self.mask, self.logits = cache, mask, logits
        else:
            width = max(self.mask.shape[1], mask.shape[1])
            self.mask = torch.cat([_left_pad(self.mask, width), _left_pad(mask, width)])
            for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
                mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
                mine.values = torch.cat(
                    [_left_pad(mine.values, width), _left_pad(theirs.values, width)]
                )
            self.logits = torch.cat([self.logits, logits])
        self.rows.extend(rows)

    def _keep_prefix(self, i: int, row: Row) -> None:
        """Keeps a finished row's keys and values (its real columns) for its session."""
        length = int(self.mask[i].sum())
        layers = [
            (
                layer.keys[i : i + 1, :, -length:].clone(),
                layer.values[i : i + 1, :, -length:].clone(),
            )
            for layer in self.cache.layers
        ]
        self.prefixes.put(row.prefix_key, row.ids[:length], layers)

    def _keep(self, keep: list[int]) -> None:
        """Cuts the finished rows out, and the columns no remaining row uses."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = self.logits = None
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.mask = self.mask.index_select(0, index)
        if self.logits is not None:
            self.logits = self.logits.index_select(0, index)
        unused = int((self.mask.sum(0) == 0).long().cumprod(0).sum())  # leading pad columns
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, unused:]
            layer.values = layer.values.index_select(0, index)[:, :, unused:]
        self.mask = self.mask[:, unused:]

    def _forward(self, tokens: list[int]) -> None:
        """One decoding step for every row: their last tokens in, next-token logits out."""
        ids = torch.tensor(tokens, device=self.mask.device)[:, None]
        self.mask = torch.cat([self.mask, torch.ones_like(ids)], dim=1)
        positions = (self.mask.sum(1, keepdim=True) - 1).long()
        kwargs = {"input_ids": ids, "attention_mask": self.mask, "position_ids": positions}
        types = [row.token_type for row in self.rows]
        if types[0] is not None:
            kwargs["token_type_ids"] = torch.tensor(types, device=ids.device)[:, None]
        out = self.lm(**kwargs, cache=self.cache, use_cache=True)
        self.logits = out.logits[:, -1, :]


def _left_pad(t: torch.Tensor, width: int) -> torch.Tensor:
    """`t` with zeros added on the left of its sequence dimension (the last for masks,
    the third for keys and values) up to `width`."""
    dim = 1 if t.dim() == 2 else 2
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class PrefixCache:
    """Keys and values of sessions' last rows, the most recently used kept within a byte
    budget: a session's next message reruns only what is new since."""

    def __init__(self, limit: int):
        self.limit = max(0, limit)
        self.entries: OrderedDict[Any, tuple[list[int], list, int]] = OrderedDict()
        self.bytes = 0

    def put(self, key: Any, ids: list[int], layers: list) -> None:
        self.drop(key)
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if size > self.limit:
            return
        self.entries[key] = (ids, layers, size)
        self.bytes += size
        while self.bytes > self.limit:
            self.drop(next(iter(self.entries)))

    def drop(self, key: Any) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[2]

    def take(self, key: Any, prompt: list[int]) -> tuple[list, int] | None:
        """The kept layers cut to the beginning they share with `prompt` (at most all but
        its last token), and that length; None when nothing is shared. The entry leaves
        the cache: the row that uses it keeps a longer one when it ends."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        self.drop(key)
        ids, layers, _ = entry
        n = 0
        limit = min(len(ids), len(prompt) - 1)
        while n < limit and ids[n] == prompt[n]:
            n += 1
        if n == 0:
            return None
        return [(k[:, :, :n], v[:, :, :n]) for k, v in layers], n


def _split(processors) -> tuple[Any, Any]:
    """(the processors that read a row's ids, the warpers after them): transformers puts
    the warpers (temperature, top-k, top-p, typical, min-p, epsilon, eta) last, and they
    look at the scores alone, so rows that share them can be warped in one call."""
    from transformers.generation import LogitsProcessorList
    from transformers.generation import logits_process as lp

    warper_types = tuple(
        getattr(lp, name)
        for name in (
            "TemperatureLogitsWarper",
            "TopKLogitsWarper",
            "TopPLogitsWarper",
            "MinPLogitsWarper",
            "TypicalLogitsWarper",
            "EpsilonLogitsWarper",
            "EtaLogitsWarper",
        )  # fmt: skip
        if hasattr(lp, name)
    )
    cut = len(processors)
    while cut and isinstance(processors[cut - 1], warper_types):
        cut -= 1
    return LogitsProcessorList(processors[:cut]), LogitsProcessorList(processors[cut:])
