"""Which waiting rows join the batch at a step, and their prompts' prefill.

Each step spends a budget of prompt tokens (`prefill_chunk`), padding counted. Fresh
prompts that fit go through the model together, left-padded (one forward for many
prompts is about twice as fast as one each on a CPU), and rows of one prompt (a request's
reranking candidates, its n replies) are prefilled once; a long prompt, or one that starts
from a session's kept prefix, goes alone, a chunk per step, so a long prompt never
stalls the running rows for more than one chunk. Rows join in the order they came.
"""

from __future__ import annotations

import logging
from collections import deque

import torch

from rejoinder.generation.continuous.batch import Batch
from rejoinder.generation.continuous.rows import Row

log = logging.getLogger("rejoinder.generation")

EPSILON = 1e-9
"""Row weights (1/n) summed in floating point: the cap's comparisons allow for rounding."""


class Admission:
    """The waiting rows, and the prefill that brings them into the batch."""

    def __init__(self, lm, max_rows: int, prefill_chunk: int):
        self.lm = lm
        self.max_rows, self.prefill_chunk = max(1, max_rows), max(1, prefill_chunk)
        self.waiting: deque[Row] = deque()
        self.grouped_prompts = 0
        """Prompts prefilled together with others."""
        self.largest_group = 0
        """The most tokens (padding included) prefilled together in one forward pass."""

    def admit(self, batch: Batch, events: list) -> None:
        """Prefills waiting rows within this step's budget of prompt tokens and joins
        those whose whole prompt is in; (row, None) in `events` for each that ends here
        (cancelled before it started, or failed to prefill)."""
        budget = self.prefill_chunk
        while self.waiting and budget > 0:
            row = self.waiting[0]
            if row.done:  # cancelled before it started
                self.waiting.popleft()
                events.append((row, None))
                continue
            room = self.max_rows - sum(r.weight for r in batch.rows)
            if row.weight > room + EPSILON:
                return
            group = self.fresh_group(budget, room)
            if group:
                try:
                    budget -= self.prefill_group(group, batch)
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
                budget -= self.prefill(row, budget)
            except Exception as e:
                log.exception("a prompt failed to prefill")
                self.waiting.popleft()
                row.failed, row.done, row.cache = e, True, None
                events.append((row, None))
                continue
            if row.prefilled < len(row.prompt):
                return  # the rest of this prompt next step: running rows go on meanwhile
            self.waiting.popleft()
            batch.join([row], row.cache, None, row.logits)
            row.cache = row.logits = None

    def fresh_group(self, budget: int, room: float) -> list[Row]:
        """The waiting rows from the front that can be prefilled together: not started,
        not cancelled, their padded prompts within `budget`, `room` left in the batch. At
        least two, else empty (one goes through `prefill`)."""
        group: list[Row] = []
        longest, used, distinct = 0, 0.0, set()
        for row in self.waiting:
            if row.done or row.alone or row.cache is not None:
                break
            used += row.weight
            if used > room + EPSILON:
                break
            width = max(longest, len(row.prompt))
            key = same_prompt(row)  # a prompt already in the group costs no more
            if width * (len(distinct) + (key not in distinct)) > budget:
                break
            group.append(row)
            longest = width
            distinct.add(key)
        return group if len(group) > 1 else []

    def prefill_group(self, group: list[Row], batch: Batch) -> int:
        """Runs fresh prompts through the model together, left-padded, and joins them to
        the batch; returns the tokens it computed, padding included."""
        from transformers import DynamicCache

        device = self.lm.device
        # Rows of one prompt (a request's reranking candidates, its n replies) are
        # prefilled once, and their keys and values copied to each.
        first: dict[tuple, int] = {}
        which = [first.setdefault(same_prompt(row), len(first)) for row in group]
        unique = [group[which.index(k)] for k in range(len(first))]
        width = max(len(row.prompt) for row in unique)
        pads = [width - len(row.prompt) for row in unique]
        ids = torch.tensor([[0] * p + r.prompt for r, p in zip(unique, pads, strict=True)])
        mask = torch.tensor([[0] * p + [1] * (width - p) for p in pads])
        ids, mask = ids.to(device), mask.to(device)
        kwargs = {
            "input_ids": ids,
            "attention_mask": mask,
            # Positions count real tokens only, as `generate` numbers a left-padded batch.
            "position_ids": (mask.cumsum(1) - 1).clamp(min=0),
        }
        if unique[0].prompt_types is not None:
            kwargs["token_type_ids"] = torch.tensor(
                [[0] * p + r.prompt_types for r, p in zip(unique, pads, strict=True)],
                device=device,
            )
        cache = DynamicCache(config=self.lm.config)
        out = self.lm(**kwargs, cache=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :]
        if len(unique) < len(group):
            index = torch.tensor(which, device=device)
            cache.reorder_cache(index)
            mask, logits = mask.index_select(0, index), logits.index_select(0, index)
        for row in group:
            row.prefilled = len(row.prompt)
        batch.join(group, cache, mask, logits)
        self.grouped_prompts += len(group)
        self.largest_group = max(self.largest_group, width * len(unique))
        return width * len(unique)

    def prefill(self, row: Row, budget: int) -> int:
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


def same_prompt(row: Row) -> tuple:
    """What rows prefilled once together must share: their prompt and its token types."""
    return tuple(row.prompt), tuple(row.prompt_types or ())
