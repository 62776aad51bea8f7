"""The safety policy (`rejoinder.safety`) where replies are made.

A user message the policy flags gets the refusal (`safety_user="refuse"`, the model is
not asked) or a reply as usual. Replies are checked in their context, every reply of a
batch in one pass: reranking leaves flagged candidates out of the pick (`mmi`); a
flagged reply (or a pick with no safe candidate) is drawn again, sampled, at most
`safety_retries` times, each round's draws checked together; a reply still flagged
becomes the fallback reply, which changes the topic. Canned replies generate nothing
(0 tokens) and finish with "content_filter". Every reply carries what was flagged on
its way (`Reply.flags`), so the server can store it.

`Screen` keeps one context's replies through the rounds; `screened` runs them for
`ConversationModel.reply_batch`, and the server's continuous batcher, which draws in
shared steps, uses `Screen` and `redraw_config` the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from rejoinder.generation import mmi
from rejoinder.generation.config import DecodingConfig
from rejoinder.generation.replies import Reply, retry_config
from rejoinder.safety import CONTENT_FILTER, Flag, Safety


def canned(text: str, flags: Sequence[Flag]) -> Reply:
    """A reply the policy gives instead of the model's: nothing generated for it."""
    return Reply(text, 0, CONTENT_FILTER, tuple(flags))


def refusals(safety: Safety, flag: Flag, n: int) -> list[Reply]:
    """The answer to a flagged user message when the policy refuses them."""
    return [canned(safety.config.safety_refusal, [flag])] * n


def redraw_config(config: DecodingConfig, attempt: int) -> DecodingConfig:
    """How a flagged reply is drawn again: one sampled sequence, not reranked (its
    candidates were all flagged), seeded apart from earlier draws."""
    return retry_config(config, attempt).with_mmi(False)


@dataclass
class Screen:
    """One context's replies under the policy: the best so far of each sequence, the
    flag of each (None: safe) and everything flagged on the way."""

    replies: list[Reply]
    bad: list[Flag | None]
    seen: list[list[Flag]]
    attempts: int = 0

    @classmethod
    def of(cls, replies: Sequence[Reply], flags: Sequence[Flag | None]) -> Screen:
        seen = [[*r.flags] for r in replies]
        for said, flag in zip(seen, flags, strict=True):
            if flag is not None and flag not in said:
                said.append(flag)
        return cls(list(replies), list(flags), seen)

    def pending(self) -> list[int]:
        """The sequences whose reply is still flagged."""
        return [k for k, flag in enumerate(self.bad) if flag is not None]

    def offer(self, k: int, reply: Reply, flag: Flag | None) -> None:
        """A new draw for sequence `k`: kept when it is safe."""
        if flag is not None:
            if flag not in self.seen[k]:
                self.seen[k].append(flag)
            return
        if self.bad[k] is not None:
            self.replies[k], self.bad[k] = reply, None

    def final(self, safety: Safety, user: Flag | None = None) -> list[Reply]:
        """The replies to send: each with its flags (the user's message's first); the
        fallback reply where none was safe."""
        out = []
        for reply, bad, seen in zip(self.replies, self.bad, self.seen, strict=True):
            flags = ([user] if user is not None else []) + seen
            if bad is not None:
                out.append(canned(safety.config.safety_fallback, flags))
            else:
                out.append(replace(reply, flags=tuple(flags)))
        return out


def screened(model, contexts: Sequence[Any], config: DecodingConfig) -> list[list[Reply]]:
    """`reply_batch` under `model.safety`: for each context, its Replies."""
    safety: Safety = model.safety
    n = 1 if config.uses_mmi else config.num_return_sequences
    users = safety.check_users(contexts)
    out: list[list[Reply] | None] = [None] * len(contexts)
    asked = []
    for i, flag in enumerate(users):
        if flag is not None and safety.refuses_users:
            out[i] = refusals(safety, flag, n)
        else:
            asked.append(i)
    if asked:
        sub = [contexts[i] for i in asked]
        screens = first_screens(model, sub, config)
        for attempt in range(1, safety.config.safety_retries + 1):
            again = [(j, k) for j, s in enumerate(screens) for k in s.pending()]
            if not again:
                break
            drawn = model.draw([sub[j] for j, _ in again], redraw_config(config, attempt))
            news = [d[0] for d in drawn]
            flags = safety.check([(sub[j], r.text) for (j, _), r in zip(again, news, strict=True)])
            for (j, k), reply, flag in zip(again, news, flags, strict=True):
                screens[j].offer(k, reply, flag)
        for j, i in enumerate(asked):
            out[i] = screens[j].final(safety, users[i])
    return out  # type: ignore[return-value]


def first_screens(model, contexts: Sequence[Any], config: DecodingConfig) -> list[Screen]:
    """The first replies to `contexts` (reranked, or drawn with the repetition guard),
    every one checked in one pass."""
    if config.uses_mmi:
        results = mmi.rerank_batch(model, contexts, config)
        return [Screen.of([r.best], [r.candidates[r.chosen].flag]) for r in results]
    made = model.unscreened(contexts, config)
    return check_all(model.safety, contexts, made)


def check_all(safety: Safety, contexts: Sequence[Any], made: Sequence[Sequence[Reply]]):
    """Screens of replies drawn for `contexts`, all checked in one pass."""
    pairs = [(c, r.text) for c, rs in zip(contexts, made, strict=True) for r in rs]
    flags = iter(safety.check(pairs))
    return [Screen.of(rs, [next(flags) for _ in rs]) for rs in made]
