"""What a reply is beyond its text, and the guard against replies that repeat the bot.

A backend reports, for each row it decodes, the tokens it generated (the end id
included when one ended the row) and why the row stopped (`Finish`); a `Reply` carries
that next to the text, so that `usage` and `finish_reason` count what was generated,
never a re-tokenised text.

The guard (`DecodingConfig.max_self_overlap`): a reply whose word trigrams are, for
more than that share, trigrams of one of the bot's own earlier turns (the context's
turns whose role is "assistant") is refused. Among reranked candidates it loses to any
that is not refused; otherwise it is drawn again (`retry_config`), a bounded number of
times, and the least repetitive reply wins if every draw repeats.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from rejoinder.dialogue import ASSISTANT, as_context, role_of
from rejoinder.generation.config import DecodingConfig

STOP, LENGTH = "stop", "length"


@dataclass(frozen=True)
class Finish:
    """The end of a row: the tokens it generated (its end id included, when one ended
    it) and why it stopped: "stop" (an end id or a stop string) or "length"."""

    tokens: int
    reason: str
    flags: tuple = ()
    """What the safety policy flagged on the way to this reply (`Reply.flags`)."""


@dataclass(frozen=True)
class Reply:
    """A reply's text, the tokens generated for it, and why it stopped ("stop",
    "length", or "content_filter" for the safety policy's canned replies)."""

    text: str
    tokens: int
    finish_reason: str
    flags: tuple = ()
    """What the safety policy flagged on the way to this reply (`rejoinder.safety.Flag`s):
    the user's message, and the candidates and draws it refused."""

    @property
    def finish(self) -> Finish:
        return Finish(self.tokens, self.finish_reason, self.flags)


def finish_of(ids: Sequence[int], stop_ids, stopped_by_text: bool, max_new_tokens: int) -> Finish:
    """The Finish of a row whose generated ids are `ids` (exactly: no padding)."""
    ended = stopped_by_text or (bool(ids) and ids[-1] in stop_ids)
    return Finish(len(ids), LENGTH if not ended and len(ids) >= max_new_tokens else STOP)


# -- the guard against repeating the bot --------------------------------------------------

NGRAM = 3
"""Replies are compared with the bot's earlier turns by word n-grams of this size; a
reply of fewer words is never refused (too short to call a repetition)."""
_WORD = re.compile(r"\w+(?:'\w+)*")


def _ngrams(text: str) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def bot_turns(context: Any) -> list[str]:
    """The texts of the context's turns whose role is the assistant's."""
    return [t.text for t in as_context(context) if role_of(t.speaker) == ASSISTANT]


def overlap(reply: str, earlier: Sequence[str]) -> float:
    """The largest share of `reply`'s word trigrams found in one of the `earlier` texts.

    >>> overlap("I love my dog so much", ["my dog so much fun", "hello there"])
    0.5
    """
    mine = _ngrams(reply)
    if not mine:
        return 0.0
    return max((len(mine & _ngrams(e)) / len(mine) for e in earlier), default=0.0)


def guarded(config: DecodingConfig, context: Any) -> bool:
    """Whether the guard checks replies to `context`: it is on, and the bot spoke before."""
    return config.max_self_overlap is not None and bool(bot_turns(context))


def refused(reply: str, earlier: Sequence[str], config: DecodingConfig) -> bool:
    limit = config.max_self_overlap
    return limit is not None and overlap(reply, earlier) > limit


def retry_config(config: DecodingConfig, attempt: int) -> DecodingConfig:
    """How a refused reply is drawn again: one sampled sequence (a greedy or beam config
    would only find the same reply; it samples with top_p 0.9), seeded apart from the
    first draw when the config is seeded."""
    seed = None if config.seed is None else (config.seed + 7919 * attempt) % 2**62
    sample = {} if config.do_sample else {"do_sample": True, "top_p": config.top_p or 0.9}
    return replace(config, num_beams=1, num_return_sequences=1, seed=seed, **sample)
