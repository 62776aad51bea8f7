"""The HTTP app: OpenAI's chat completions, sessions, health, and the chat page.

`create_app(model, settings)` builds it around a loaded `ConversationModel`; `serve`
runs it with uvicorn. Every reply goes through one `Batcher`, so concurrent users
share generate calls.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from rejoinder.dialogue import Turn
from rejoinder.errors import RejoinderError
from rejoinder.generation.config import DecodingConfig, decoding_config
from rejoinder.serve.batching import Batcher
from rejoinder.serve.schemas import (
    ChatCompletionRequest,
    SessionCreate,
    SessionMessage,
)
from rejoinder.serve.store import DEFAULT_DB, SessionStore

log = logging.getLogger("rejoinder.serve")

REFUSAL = "Sorry, I'd rather not say that."


@dataclass
class Settings:
    """How the server runs; each field is a `rejoinder serve` option."""

    host: str = "127.0.0.1"
    port: int = 8000
    db: str = DEFAULT_DB
    model_name: str | None = None
    """The id in /v1/models (default: the model directory's name)."""
    preset: str = "nucleus"
    """Decoding when a request says nothing of it."""
    api_key: str | None = None
    """Requests to /v1 must carry `Authorization: Bearer KEY` (None: open)."""
    max_body_bytes: int = 256 * 1024
    max_message_chars: int = 4000
    max_tokens: int = 256
    """The most new tokens a request may ask for."""
    default_max_tokens: int = 64
    request_seconds: float = 60.0
    """Time limit of a request (queueing and generation)."""
    max_batch: int = 16
    batch_wait_ms: float = 50.0
    """How long the first request of a batch waits for others: long enough for clients
    answered by the last batch to send their next request (10 ms split 8 clients into
    two alternating half batches: 2.4x the throughput of one client, against 3.5x)."""
    filter_offensive: bool = False
    offensive_words: str | None = None
    """A blocklist file (default: better-profanity's list, as the data filters use)."""
    cors_origins: list[str] = field(default_factory=list)
    shutdown_seconds: float = 30.0
    """On SIGTERM or Ctrl-C: how long requests in flight may take to finish."""


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


class _BodyLimit:
    """Answers 413 to a request body over `limit` bytes, before the app reads it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                return await self._too_large(send)
            chunks.append(body)
            more = message.get("more_body", False)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send):
        body = json.dumps(
            error_body(
                f"the request body is over this server's limit of {self.limit} bytes "
                "(rejoinder serve --max-body-kb)",
                "request_too_large",
                413,
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class Server:
    """What the routes share: the model, its batcher, the session store, the settings."""

    def __init__(self, model, settings: Settings, store: SessionStore):
        self.model, self.settings, self.store = model, settings, store
        self.batcher = Batcher(model, settings.max_batch, settings.batch_wait_ms / 1000)
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
        options: dict[str, Any] | None = None,
    ) -> DecodingConfig:
        """A request's DecodingConfig, checked against the server's limits."""
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
        if top_p is not None:
            values["top_p"] = top_p
        limit = max_tokens or options.get("max_new_tokens") or s.default_max_tokens
        if not isinstance(limit, int) or limit > s.max_tokens:
            raise ApiError(
                422,
                f"max_tokens {limit} is above this server's limit of {s.max_tokens} "
                "(rejoinder serve --max-tokens-limit)",
            )
        values["max_new_tokens"] = limit
        if n > 1:
            values["num_return_sequences"] = n
        if stop:
            values["stop"] = [stop] if isinstance(stop, str) else list(stop)
        if seed is not None:
            values["seed"] = seed
        if mmi_candidates:
            values["mmi_candidates"] = mmi_candidates
        try:
            config = decoding_config(preset or s.preset, **values)
        except RejoinderError as e:
            raise ApiError(422, str(e)) from None
        if mmi is False:
            config.mmi_candidates = 0
        elif mmi and not config.mmi_candidates:
            config.mmi_candidates = 10
        if config.mmi_candidates:
            if self.model.reverse is None:
                raise ApiError(
                    422, "MMI needs a reverse model: start the server with --reverse DIR"
                )
            if config.num_return_sequences > 1:
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

    async def replies(self, context: list[Turn], config: DecodingConfig, head=None) -> list[str]:
        try:
            return await asyncio.wait_for(
                self.batcher.generate(context, config, head), self.settings.request_seconds
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
        self, context: list[Turn], config: DecodingConfig, head=None
    ) -> AsyncIterator[str]:
        """The reply in pieces: streamed where it can be, else whole, as one piece.

        With the offensive filter on, the reply is checked whole before any of it is sent.
        """
        whole = (
            config.mmi_candidates
            or config.num_beams > 1
            or config.num_return_sequences > 1
            or self.filter is not None
        )
        if whole:
            replies = await self.replies(context, config, head)
            yield self.clean(replies[0], "stream")
            return
        deadline = time.monotonic() + self.settings.request_seconds
        try:
            async for piece in self.batcher.stream(context, config, head):
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


def turns_of(said) -> list[Turn]:
    """(role, text) pairs as the model's context: the user's and assistant's turns, in order.

    Other roles (system, tool) and empty texts (an empty reply is stored) are left out.
    """
    speakers = {"user": "user", "assistant": "bot"}
    return [
        Turn(text, speaker=speakers[role])
        for role, text in said
        if role in speakers and text.strip()
    ]


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(model, settings: Settings | None = None, store: SessionStore | None = None):
    """The FastAPI app serving `model` (a loaded ConversationModel)."""
    settings = settings or Settings()
    store = store or SessionStore(settings.db)
    server = Server(model, settings, store)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        server.batcher.start()
        try:
            yield
        finally:  # requests in flight have finished: uvicorn waits for them first
            await run_in_threadpool(server.batcher.stop)
            store.close()

    app = FastAPI(
        title="rejoinder",
        version=_version(),
        description="Conversational replies from a GPT-2-style dialogue model: OpenAI's chat "
        "completions, and persistent chat sessions.",
        lifespan=lifespan,
    )
    app.state.server = server

    def authorized(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), settings.api_key.encode()
        ):
            raise ApiError(
                401, "a valid API key is needed: Authorization: Bearer KEY", "authentication_error"
            )

    auth = [Depends(authorized)]

    # -- errors in one shape -------------------------------------------------------

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return JSONResponse(error_body(e.message, e.kind, e.status), e.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        problems = []
        for err in e.errors():
            where = ".".join(str(x) for x in err.get("loc", ())[1:]) or "body"
            if err.get("type") == "json_invalid":
                reason = (err.get("ctx") or {}).get("error", "")
                problems.append(f"the body is not valid JSON ({reason})".replace(" ()", ""))
            else:
                problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse(
            {
                **error_body("; ".join(problems), "invalid_request_error", 422),
                "detail": json.loads(json.dumps(e.errors(), default=str)),
            },
            422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        message = {404: f"no such route: {request.method} {request.url.path}"}.get(
            e.status_code, str(e.detail)
        )
        if e.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse(
            error_body(message, "invalid_request_error", e.status_code), e.status_code
        )

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception):
        log.exception("request failed: %s %s", request.method, request.url.path)
        return JSONResponse(error_body(f"internal error: {e}", "server_error", 500), 500)

    # -- the page and the probes ---------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(_page())

    @app.get("/health")
    async def health():
        ok = await run_in_threadpool(store.ping)
        b = server.batcher
        return JSONResponse(
            {
                "status": "ok" if ok else "database unreachable",
                "model": server.name,
                "reverse": model.reverse is not None,
                "waiting": b.waiting,
                "generate_calls": b.batches,
                "mean_batch": round(b.batched_jobs / b.batches, 2) if b.batches else None,
            },
            200 if ok else 503,
        )

    @app.get("/v1/models", dependencies=auth)
    async def models():
        return {"object": "list", "data": [_model_card(server)]}

    @app.get("/v1/models/{name}", dependencies=auth)
    async def model_card(name: str):
        if name != server.name:
            raise ApiError(404, f"no model {name!r}; this server has {server.name!r}")
        return _model_card(server)

    # -- chat completions ----------------------------------------------------------

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(body: ChatCompletionRequest):
        server.check_length([m.text() for m in body.messages])
        extra = body.rejoinder
        config = server.config(
            preset=extra.preset if extra else None,
            temperature=body.temperature,
            top_p=body.top_p,
            max_tokens=body.max_completion_tokens or body.max_tokens,
            n=body.n,
            stop=body.stop,
            seed=body.seed,
            mmi=extra.mmi if extra else None,
            mmi_candidates=extra.mmi_candidates if extra else None,
            options=extra.options if extra else None,
        )
        head = extra.head if extra else None
        context = turns_of((m.role, m.text()) for m in body.messages)
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        if body.stream:
            return StreamingResponse(
                _completion_chunks(server, rid, context, config, body.n, head),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        replies = [server.clean(r, rid) for r in await server.replies(context, config, head)]
        return {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": server.name,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": server.finish_reason(reply, config),
                }
                for i, reply in enumerate(replies)
            ],
            "usage": server.usage(context, config, replies),
        }

    # -- sessions ------------------------------------------------------------------

    @app.post("/v1/sessions", status_code=201, dependencies=auth)
    async def create_session(body: SessionCreate | None = None):
        options = body.model_dump(exclude_none=True) if body else {}
        server.config(**_session_options(options))  # refuse bad options now, not later
        sid = await run_in_threadpool(store.create, options)
        return {"id": sid, "options": options}

    @app.get("/v1/sessions/{sid}", dependencies=auth)
    async def get_session(sid: str):
        session = await run_in_threadpool(store.get, sid)
        if session is None:
            raise ApiError(404, f"no session {sid!r}")
        return session

    @app.delete("/v1/sessions/{sid}", status_code=204, dependencies=auth)
    async def delete_session(sid: str):
        if not await run_in_threadpool(store.delete, sid):
            raise ApiError(404, f"no session {sid!r}")
        return Response(status_code=204)

    @app.post("/v1/sessions/{sid}/messages", dependencies=auth)
    async def send_message(sid: str, body: SessionMessage):
        server.check_length([body.content])
        session = await run_in_threadpool(store.get, sid)
        if session is None:
            raise ApiError(404, f"no session {sid!r}")
        asked = body.model_dump(exclude_none=True, exclude={"content", "stream"})
        config = server.config(**_session_options({**session["options"], **asked}))
        if body.stream:
            return StreamingResponse(
                _session_events(server, sid, body.content, config),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        async with server.lock(sid):  # one message at a time per session
            session = await run_in_threadpool(store.get, sid)
            if session is None:
                raise ApiError(404, f"session {sid!r} was deleted")
            context = _history(session, body.content)
            reply = server.clean((await server.replies(context, config))[0], f"session {sid}")
            if not await run_in_threadpool(
                store.append, sid, ("user", body.content), ("assistant", reply)
            ):
                raise ApiError(404, f"session {sid!r} was deleted while it was answered")
        return {"id": sid, "reply": reply, "messages": len(session["messages"]) + 2}

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    return app


def _session_options(options: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in options.items()
        if k in ("preset", "temperature", "top_p", "max_tokens", "mmi", "seed")
    }


def _history(session: dict, content: str) -> list[Turn]:
    """A session's history and the new message, as the model's context."""
    said = [(m["role"], m["content"]) for m in session["messages"]]
    return turns_of([*said, ("user", content)])


def _model_card(server: Server) -> dict[str, Any]:
    return {
        "id": server.name,
        "object": "model",
        "created": server.created,
        "owned_by": "rejoinder",
    }


async def _completion_chunks(server: Server, rid, context, config, n: int, head):
    """OpenAI's streamed chat completion: chunks, one choice index each, then [DONE]."""
    created = int(time.time())

    def chunk(index: int, delta: dict, finish: str | None = None) -> str:
        return sse(
            {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": server.name,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
            }
        )

    one = config if n == 1 else _single(config)
    events: asyncio.Queue = asyncio.Queue()

    async def run(index: int, cfg: DecodingConfig):
        text = ""
        try:
            async for piece in server.pieces(context, cfg, head):
                text += piece
                await events.put(chunk(index, {"content": piece}))
            await events.put(chunk(index, {}, server.finish_reason(text, cfg)))
        except ApiError as e:
            await events.put(sse(error_body(e.message, e.kind, e.status)))
        finally:
            await events.put(None)

    for i in range(n):
        yield chunk(i, {"role": "assistant", "content": ""})
    tasks = [
        asyncio.create_task(run(i, one if one.seed is None else _single(one, one.seed + i)))
        for i in range(n)
    ]
    try:
        left = n
        while left:
            item = await events.get()
            if item is None:
                left -= 1
            else:
                yield item
        yield "data: [DONE]\n\n"
    finally:
        for t in tasks:
            t.cancel()


def _single(config: DecodingConfig, seed: int | None = None) -> DecodingConfig:
    from dataclasses import replace

    return replace(config, num_return_sequences=1, seed=seed if seed is not None else config.seed)


async def _session_events(server: Server, sid: str, content: str, config: DecodingConfig):
    """A session's streamed reply: {"delta"} events, then {"done", "reply"} once it is stored."""
    async with server.lock(sid):
        session = await run_in_threadpool(server.store.get, sid)
        if session is None:
            yield sse(error_body(f"session {sid!r} was deleted", "invalid_request_error", 404))
            return
        reply = ""
        try:
            async for piece in server.pieces(_history(session, content), config):
                reply += piece
                yield sse({"delta": piece})
        except ApiError as e:
            yield sse(error_body(e.message, e.kind, e.status))
            return
        reply = reply.strip()
        stored = await run_in_threadpool(
            server.store.append, sid, ("user", content), ("assistant", reply)
        )
        if not stored:
            yield sse(error_body(f"session {sid!r} was deleted", "invalid_request_error", 404))
            return
        yield sse(
            {"done": True, "id": sid, "reply": reply, "messages": len(session["messages"]) + 2}
        )


def _page() -> str:
    from importlib.resources import files

    return (files("rejoinder.serve") / "static" / "index.html").read_text(encoding="utf-8")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("rejoinder")
    except Exception:
        return "0"


def serve(
    model_dir: str,
    reverse: str | None = None,
    settings: Settings | None = None,
    backend: str = "torch",
    compute_type: str = "int8",
) -> None:
    """Loads the model(s) and serves them until SIGINT or SIGTERM."""
    import uvicorn

    from rejoinder.generation import ConversationModel

    settings = settings or Settings()
    model = ConversationModel.from_pretrained(
        model_dir, reverse=reverse, backend=backend, compute_type=compute_type
    )
    store = SessionStore(settings.db)
    app = create_app(model, settings, store)
    where = f"http://{settings.host}:{settings.port}"
    print(
        f"serving {model_dir} at {where}/ (API: {where}/docs; sessions in {settings.db})",
        flush=True,
    )
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        print("warning: listening beyond this machine with no --api-key", flush=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=int(settings.shutdown_seconds),
    )
