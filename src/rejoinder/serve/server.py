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
from rejoinder.dialogue import SYSTEM_ROLES, Turn
from rejoinder.errors import RejoinderError
from rejoinder.generation.config import PRESETS, DecodingConfig, decoding_config
from rejoinder.options import option
from rejoinder.serve.batching import Batcher, ContinuousBatcher
from rejoinder.serve.store import SessionStore

log = logging.getLogger("rejoinder.serve")

REFUSAL = "Sorry, I'd rather not say that."


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
    """The most rows decoded together (continuous), or requests in one generate call
    (gather)."""
    prefix_cache_mb: float = 256.0
    """continuous: memory for keeping sessions' keys and values, so that a session's next
    message runs only its new tokens (the least recently used go first; 0: off)."""
    batch_wait_ms: float = 50.0
    """gather: how long the first request of a batch waits for others: long enough for
    clients answered by the last batch to send their next request
    (benchmarks/serve_load.py)."""
    filter_offensive: bool = False
    """Replace replies that hold a blocklisted word by a refusal (logged)."""
    offensive_words: str | None = option(None, metavar="FILE")
    """The blocklist for --filter-offensive, which it implies (default: better-profanity's
    list, as the data filters use)."""
    cors_origins: list[str] = option(default_factory=list, flag="--cors-origin", metavar="URL")
    """A web origin allowed to call the API."""
    shutdown_seconds: float = option(30.0, flag="--shutdown-timeout")
    """On SIGTERM or Ctrl-C: how long requests in flight may take to finish."""

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise RejoinderError(f"--preset {self.preset}: presets are {', '.join(PRESETS)}")
        self.api_key = self.api_key or os.environ.get("REJOINDER_API_KEY") or None
        self.filter_offensive = self.filter_offensive or bool(self.offensive_words)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_kb * 1024)


class ApiError(Exception):
    """An error answered to the client, in OpenAI's error shape."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def error_body(message: str, kind: str, status: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": status}}


class OffensiveFilter:
    """Replaces replies that contain a blocklisted word, as the data filters judge them."""

    def __init__(self, words_file: str | None):
        from rejoinder.data.filters import FilterConfig, Filters

        self.filters = Filters(FilterConfig(enabled=("offensive",), offensive_words=words_file))

    def __call__(self, reply: str, where: str) -> str:
        if self.filters.offensive(reply):
            log.warning("offensive reply replaced by a refusal (%s)", where)
            return REFUSAL
        return reply


def make_batcher(model, settings: Settings) -> Batcher:
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


def turns_of(said) -> list[Turn]:
    """(role, text) pairs as the model's context: the user's and assistant's turns, in order,
    and system (or developer) messages, which a chat-template model takes as its system
    prompt and other formats leave out.

    Other roles (tool) and empty texts (an empty reply is stored) are left out.
    """
    speakers = {"user": "user", "assistant": "bot", **{r: "system" for r in SYSTEM_ROLES}}
    return [
        Turn(text, speaker=speakers[role])
        for role, text in said
        if role in speakers and text.strip()
    ]


class Server:
    """What the routes share: the model, its batcher, the session store, the settings."""

    def __init__(self, model, settings: Settings, store: SessionStore):
        self.model, self.settings, self.store = model, settings, store
        self.batcher = make_batcher(model, settings)
        self.filter = (
            OffensiveFilter(settings.offensive_words) if settings.filter_offensive else None
        )
        self.name = settings.model_name or Path(str(model.checkpoint.path)).name
        self.created = int(time.time())
        self.locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # Tokens are counted with a private copy of the tokenizer: the batcher's thread
        # uses the model's, and a Rust tokenizer used from two threads can fail with
        # "Already borrowed".
        from tokenizers import Tokenizer

        self.counter = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())

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
        if n > 1:
            values["num_return_sequences"] = n
        if stop:
            values["stop"] = [stop] if isinstance(stop, str) else list(stop)
        try:
            config = decoding_config(preset or s.preset, **values)
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

    def clean(self, reply: str, where: str) -> str:
        return self.filter(reply, where) if self.filter else reply

    async def replies(
        self, context: list[Turn], config: DecodingConfig, session: str | None = None
    ) -> list[str]:
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
        except RejoinderError as e:
            raise ApiError(422, str(e)) from None

    async def pieces(
        self, context: list[Turn], config: DecodingConfig, session: str | None = None
    ) -> AsyncIterator[str]:
        """The reply in pieces: streamed where it can be, else whole, as one piece.

        With the offensive filter on, the reply is checked whole before any of it is sent.
        """
        if not config.streamable or self.filter is not None:
            replies = await self.replies(context, config, session)
            yield self.clean(replies[0], "stream")
            return
        deadline = time.monotonic() + self.settings.request_seconds
        try:
            async for piece in self.batcher.stream(context, config, session):
                yield piece
                if time.monotonic() > deadline:
                    raise ApiError(504, "the reply ran over the time limit", "timeout")
        except RejoinderError as e:
            raise ApiError(422, str(e)) from None

    def usage(self, context: list[Turn], config: DecodingConfig, replies: list[str]) -> dict:
        prompt = len(self.model.encode(context, config.max_new_tokens))
        done = sum(self.tokens(r) for r in replies)
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    def tokens(self, text: str) -> int:
        return len(self.counter.encode(text, add_special_tokens=False).ids)

    def finish_reason(self, reply: str, config: DecodingConfig) -> str:
        return "length" if self.tokens(reply) >= config.max_new_tokens else "stop"

    def lock(self, sid: str) -> asyncio.Lock:
        lock = self.locks.get(sid)
        if lock is None:
            lock = self.locks[sid] = asyncio.Lock()
        return lock
