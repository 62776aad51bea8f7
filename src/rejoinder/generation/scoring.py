"""Scoring: the log-probability of a continuation given a context, on either backend.

Evaluation (perplexity), MMI reranking and `rejoinder score` all score through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rejoinder.dialogue import ASSISTANT, Turn, as_context
from rejoinder.errors import RejoinderError
from rejoinder.formats import IGNORE, Encoding, Format


@dataclass
class Score:
    """The log-probability of a continuation: in all, per token, and the tokens."""

    total: float
    token_logprobs: list[float]
    tokens: list[str]

    @property
    def mean(self) -> float:
        return self.total / max(len(self.token_logprobs), 1)


NOTHING = Score(0.0, [0.0], [])
"""The score of nothing to explain (MMI's source when nothing was said yet)."""


def response_encodings(
    fmt: Format, pairs: Sequence[tuple[Any, str]], budget: int
) -> list[Encoding]:
    """(context, response) pairs as `fmt` would produce each response: its tokens and
    the end-of-turn marker labelled, the latest context that fits `budget` before it."""
    encodings = []
    for context, response in pairs:
        reply = as_context([response])
        if len(reply) != 1:
            raise RejoinderError(
                f"a response to score must be one non-empty turn, got {response!r}"
            )
        # The response is the bot's, whatever roles the context's turns have.
        reply = [Turn(reply[0].text, ASSISTANT)]
        encodings.append(fmt.training_example([*as_context(context), *reply], "last", budget))
    return encodings


def score_encodings(backend, tokenizer, encodings: list[Encoding], batch_size: int) -> list[Score]:
    """The log-probability of each encoding's labelled tokens (its labels != IGNORE)."""
    if not encodings:
        return []
    return scores_of(tokenizer, encodings, backend.score(encodings, batch_size))


def scores_of(tokenizer, encodings: list[Encoding], logprobs: list[list[float]]) -> list[Score]:
    """Each encoding's `Score` from the log-probabilities of its labelled tokens."""
    out = []
    for e, lps in zip(encodings, logprobs, strict=True):
        ids = [t for i, t in enumerate(e.labels) if t != IGNORE and i > 0]
        out.append(Score(sum(lps), lps, [tokenizer.decode([t]) for t in ids]))
    return out
