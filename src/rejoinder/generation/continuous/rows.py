"""A row: one sequence being decoded in the shared batch, with its own options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from rejoinder.generation.config import DecodingConfig
from rejoinder.generation.streaming import StopStrings


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
    shared: dict[str, Any] = field(default_factory=dict)
    """What `sampling.choose` applies to all rows at once (minimum length, repetition
    penalty): the rest of its processors that read its ids."""
    warpers: Any = None
    """The rest (temperature, top-k, top-p, …): the same for rows of one `group`, which
    are warped together."""
    weight: float = 1.0
    """Its part of the row cap: the rows of one request (its reranking candidates, its n
    replies) count as one request together, as they do in the gathering batcher."""
    group: tuple = ()
    """Rows of one group share their warpers (`sampling.warp_key`)."""
    new: list[int] = field(default_factory=list)
    """Every token generated, its end id included."""
    done: bool = False
    finish_reason: str | None = None
    """Why it ended: "stop" (an end id, a stop string) or "length"; None if cancelled."""
    failed: BaseException | None = None
    kept: Any = None
    """A `rescoring.Kept` when the caller scores the reply (MMI): what decoding computed."""
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
