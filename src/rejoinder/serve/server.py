"""What the HTTP routes share: the settings, the model and its batcher, the sessions,
and the rules that turn a request into decoding options and replies.

Nothing here knows HTTP beyond `ApiError` (a status and a message); `app.py` holds the
routes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rejoinder.db import DEFAULT_DB
from rejoinder.dialogue import PERSONA, SYSTEM_ROLES, Turn
from rejoinder.errors import ApiError, RejoinderError
from rejoinder.generation.config import PRESETS, DecodingConfig, decoding_config
from rejoinder.generation.replies import Finish, Reply
from rejoinder.options import option
from rejoinder.safety import SafetyError
from rejoinder.serve.arms import parse_arms
from rejoinder.serve.batching import Batcher, Worker
from rejoinder.serve.continuous import ContinuousBatcher
from rejoinder.stores.sessions import SessionStore

log = logging.getLogger("rejoinder.serve")


@dataclass
class Settings:
    """How the server runs; each field is a `rejoinder serve` option."""

    host: str = "127.0.0.1"
    """The address to listen on."""
    port: int = 8000
    """The port to listen on."""
    db: str = option(DEFAULT_DB, metavar="URL")
    """Where sessions live: sqlite:///FILE or postgresql://USER:PASSWORD@HOST/DB."""
    model_name: str | None = None
    """The model's id in /v1/models (default: the model directory's name)."""
    preset: str = option("nucleus", choices=list(PRESETS))
    """Decoding when a request names none."""
    api_key: str | None = None
    """Requests to /v1 must carry `Authorization: Bearer KEY` (default: $REJOINDER_API_KEY,
    else none)."""
    max_body_kb: float = 256.0
    """The largest request body, in KiB."""
    max_message_chars: int = 4000
    """The longest message, in characters."""
    max_tokens: int = option(256, flag="--max-tokens-limit")
    """The most new tokens a request may ask for."""
    default_max_tokens: int = 64
    """New tokens when a request does not say."""
    request_seconds: float = option(60.0, flag="--request-timeout")
    """Seconds a request may take, queueing and generation together."""
    scheduler: str = option("continuous", choices=("continuous", "gather"))
    """continuous: requests join and leave the running batch at every token (torch);
    gather: requests gathered for --batch-wait-ms run as one generate call (always so
    with CTranslate2, and for models with sliding-window attention)."""
    max_batch: int = 32
    """The most requests decoded together (continuous: a request's rows, its reranking
    candidates or n replies, count as one), or in one generate call (gather)."""
    prefix_cache_mb: float = 256.0
    """continuous: memory for keeping sessions' keys and values, so that a session's next
    message runs only its new tokens (the least recently used go first; 0: off)."""
    batch_wait_ms: float = 50.0
    """gather: how long the first request of a batch waits for others: long enough for
    clients answered by the last batch to send their next request
    (benchmarks/serve_load.py)."""
    persona: str | None = option(None, metavar="TEXT")
    """Text about the bot placed before every conversation and never cut (a chat
    template's system prompt holds it); a session's or request's own replaces it
    (default: the checkpoint's, if it has one)."""
    max_self_overlap: float | None = 0.5
    """The repetition guard of requests that do not set it: a reply whose word trigrams
    are, for more than this share, those of one of the bot's earlier turns is drawn
    again (or loses to another candidate); 0: off."""
    cors_origins: list[str] = option(default_factory=list, flag="--cors-origin", metavar="URL")
    """A web origin allowed to call the API."""
    shutdown_seconds: float = option(30.0, flag="--shutdown-timeout")
    """On SIGTERM or Ctrl-C: how long requests in flight may take to finish."""
    arms: list[str] = option(
        default_factory=list, flag="--arm", metavar="NAME=DIR[,reverse=DIR,preset=P,ranker=DIR]"
    )
    """An A/B arm: a model served beside the others. With --arm the positional
    DIR is optional; given, it is one more arm, named "control" (with --reverse, --ranker
    and --preset). Each new session gets an arm (--split) and keeps it; a chat completion
    gets one by its `user` field, else at random. Clients never see which; `rejoinder ab
    report` compares them."""
    split: str | None = option(None, metavar="NAME=PERCENT,...")
    """The arms' shares of new sessions, in percent, summing to 100 (default: equal); an
    arm left out gets no new sessions."""

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise RejoinderError(f"--preset {self.preset}: presets are {', '.join(PRESETS)}")
        self.api_key = self.api_key or os.environ.get("REJOINDER_API_KEY") or None
        if self.max_self_overlap is not None and not 0 <= self.max_self_overlap <= 1:
            raise RejoinderError(
                f"--max-self-overlap {self.max_self_overlap}: use a share in [0, 1] (0: off)"
            )
        parse_arms(self.arms)  # refused before any model loads

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_kb * 1024)


def make_batcher(model, settings: Settings) -> Worker:
    """The continuous scheduler where the model decodes on torch with a plain KV cache,
    else the gathering batcher."""
    from rejoinder.generation.continuous import StepDecoder

    if (
        settings.scheduler == "continuous"
        and model.backend == "torch"
        and StepDecoder.usable(model)
    ):
        return ContinuousBatcher(
            model, settings.max_batch, prefix_bytes=int(settings.prefix_cache_mb * (1 << 20))
        )
    return Batcher(model, settings.max_batch, settings.batch_wait_ms / 1000)


def turns_of(said, persona: str | None = None) -> list[Turn]:
    """(role, text) pairs as the model's context: the user's and assistant's turns in
    order, each in its role, and system (or developer) messages, which a chat-template
    model takes as its system prompt and other formats leave out; `persona` first.

    Empty texts (an empty reply is stored) are left out; requests are checked before
    (`check_messages`).
    """
    roles = ("user", "assistant", *SYSTEM_ROLES)
    turns = [Turn(text, speaker=role) for role, text in said if role in roles and text.strip()]
    return [Turn(persona, speaker=PERSONA), *turns] if persona and persona.strip() else turns


def check_messages(said) -> None:
    """Refuses (422) a chat the model cannot take as it is, naming the message: a tool
    message, an empty user or assistant message, a system message after the
    conversation began, no user or assistant message at all."""
    began = False
    for i, (role, text) in enumerate(said):
        if role == "tool":
            raise ApiError(
                422,
                f"messages[{i}].role 'tool': this model has no tools; send system, user and "
                "assistant messages only",
            )
        if role in SYSTEM_ROLES:
            if began:
                raise ApiError(
                    422,
                    f"messages[{i}] is a {role} message after the conversation began; put "
                    "system messages first (they are the system prompt)",
                )
            continue
        if not text.strip():
            raise ApiError(422, f"messages[{i}].content is empty: a {role} message says something")
        began = True
    if not began:
        raise ApiError(422, "messages holds no user or assistant message; add the user's message")


def unavailable(e: SafetyError) -> ApiError:
    """The safety classifier failed: the reply is withheld (the policy fails closed)."""
    return ApiError(503, str(e), "safety_unavailable")


class Server:
    """What the routes share: the model, its batcher, the session store, the settings.

    A/B arms (`serve.arms`) are a Server each, sharing the settings and the store; `name`
    is then the one the clients see, `preset` the arm's default."""

    def __init__(
        self,
        model,
        settings: Settings,
        store: SessionStore,
        name: str | None = None,
        preset: str | None = None,
    ):
        self.model, self.settings, self.store = model, settings, store
        self.batcher = make_batcher(model, settings)
        self.name = name or settings.model_name or Path(str(model.checkpoint.path)).name
        self.preset = preset or settings.preset
        self.created = int(time.time())
        self.locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # -- decoding options ----------------------------------------------------------

    def config(
        self,
        preset: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        n: int = 1,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        mmi: bool | None = None,
        mmi_candidates: int | None = None,
        head: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> DecodingConfig:
        """A request's DecodingConfig, checked against the model and the server's limits."""
        s = self.settings
        options = dict(options or {})
        if mmi and preset is None:
            preset = "mmi"
        values: dict[str, Any] = {**options}
        if temperature is not None:
            if temperature == 0:
                values["do_sample"] = False
            else:
                values.update(do_sample=True, temperature=temperature)
        limit = max_tokens or options.get("max_new_tokens") or s.default_max_tokens
        if not isinstance(limit, int) or limit > s.max_tokens:
            raise ApiError(
                422,
                f"max_tokens {limit} is above this server's limit of {s.max_tokens} "
                "(rejoinder serve --max-tokens-limit)",
            )
        values["max_new_tokens"] = limit
        given = dict(top_p=top_p, seed=seed, head=head, mmi_candidates=mmi_candidates)
        values.update({k: v for k, v in given.items() if v is not None})
        if values.get("max_self_overlap") is None and s.max_self_overlap:
            values["max_self_overlap"] = s.max_self_overlap
        if n > 1:
            values["num_return_sequences"] = n
        if stop:
            values["stop"] = [stop] if isinstance(stop, str) else list(stop)
        try:
            config = decoding_config(preset or self.preset, **values)
            if mmi is not None:
                config = config.with_mmi(mmi)
            self.model.check(config)
        except RejoinderError as e:
            raise ApiError(422, str(e)) from None
        if config.uses_mmi and config.num_return_sequences > 1:
            raise ApiError(422, "MMI gives one reply: ask for n=1")
        if config.num_beams > 8 or config.num_return_sequences > 16:
            raise ApiError(422, "at most 8 beams and 16 replies per request")
        return config

    def check_length(self, texts: list[str]) -> None:
        limit = self.settings.max_message_chars
        for i, text in enumerate(texts):
            if len(text) > limit:
                raise ApiError(
                    413,
                    f"message {i} has {len(text)} characters; this server takes at most {limit} "
                    "(rejoinder serve --max-message-chars)",
                    "request_too_large",
                )

    # -- replies -------------------------------------------------------------------

    async def replies(
        self, context: list[Turn], config: DecodingConfig, session: str | None = None
    ) -> list[Reply]:
        try:
            return await asyncio.wait_for(
                self.batcher.generate(context, config, session), self.settings.request_seconds
            )
        except TimeoutError:
            raise ApiError(
                504,
                f"no reply within {self.settings.request_seconds:g} s "
                "(rejoinder serve --request-timeout)",
                "timeout",
            ) from None
        except SafetyError as e:
            raise unavailable(e) from None
        except RejoinderError as e:
            raise ApiError(422, str(e)) from None

    async def pieces(
        self, context: list[Turn], config: DecodingConfig, session: str | None = None
    ) -> AsyncIterator[str | Finish]:
        """The reply in pieces, then its Finish: streamed where it can be, else whole, as
        one piece.

        With the safety policy on, the reply is checked whole before any of it is sent.
        """
        if not config.streamable or self.model.safety is not None:
            reply = (await self.replies(context, config, session))[0]
            if reply.text:
                yield reply.text
            yield reply.finish
            return
        deadline = time.monotonic() + self.settings.request_seconds
        try:
            async for piece in self.batcher.stream(context, config, session):
                yield piece
                if time.monotonic() > deadline:
                    raise ApiError(504, "the reply ran over the time limit", "timeout")
        except SafetyError as e:
            raise unavailable(e) from None
        except RejoinderError as e:
            raise ApiError(422, str(e)) from None

    async def keep_flags(
        self,
        context: list[Turn],
        flags,
        text: str,
        finish: str,
        sid: str | None = None,
        seqs: dict[str, int] | None = None,
    ) -> None:
        """Stores what the safety policy flagged on the way to a reply (`text`, sent, and
        why it ended), with the session's message seqs where there is a session, and
        logs it."""
        if not flags:
            return
        said = [t.text for t in context if t.speaker not in (PERSONA, *SYSTEM_ROLES)]
        for flag in flags:
            log.warning(
                "safety: a %s flagged by %s (%s, %.2f)%s",
                "user's message" if flag.who == "user" else "reply",
                flag.layer, flag.label, flag.score, f" in session {sid}" if sid else "",
            )  # fmt: skip
        await asyncio.to_thread(self.store.flags.add, flags, said, text, finish, sid, seqs)

    def usage(self, context: list[Turn], config: DecodingConfig, generated: list[int]) -> dict:
        """OpenAI's usage: the prompt's tokens as the model saw it, and the tokens the
        backend generated for each reply returned (a reranked reply's own, not its rivals')."""
        prompt = len(self.model.encode(context, config.max_new_tokens))
        done = sum(generated)
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    def lock(self, sid: str) -> asyncio.Lock:
        lock = self.locks.get(sid)
        if lock is None:
            lock = self.locks[sid] = asyncio.Lock()
        return lock
