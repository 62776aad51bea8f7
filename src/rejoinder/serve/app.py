"""The HTTP app: OpenAI's chat completions, sessions, health, and the chat page.

`create_app(model, settings)` builds it around a loaded `ConversationModel`, or A/B
arms ({name: model}, `serve.arms`); `serve` runs it with uvicorn. Every reply goes
through its model's `Server` and that one's batcher, so concurrent users share
generate calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from rejoinder.errors import ApiError, error_body
from rejoinder.generation.config import DecodingConfig
from rejoinder.generation.replies import Finish
from rejoinder.judging.api import add_judge_routes
from rejoinder.safety import SafetyConfig
from rejoinder.serve.arms import Arms, load_arms, parse_arms
from rejoinder.serve.http import BodyLimit, add_error_handlers, authorizer, run_server
from rejoinder.serve.schemas import (
    ChatCompletionRequest,
    SessionCreate,
    SessionDecoding,
    SessionFeedback,
    SessionMessage,
)
from rejoinder.serve.server import Server, Settings, check_messages, turns_of
from rejoinder.serve.sessions import (
    last_reply,
    refused,
    session_events,
    session_options,
    session_or_404,
    session_reply,
    sse,
)
from rejoinder.stores.judgments import JudgeStore
from rejoinder.stores.sessions import (
    MessageError,
    SessionStore,
)

log = logging.getLogger("rejoinder.serve")


def create_app(model, settings: Settings | None = None, store: SessionStore | None = None):
    """The FastAPI app serving `model` (a loaded ConversationModel), or A/B arms: a
    mapping from each arm's name to its loaded model (`serve.arms`)."""
    settings = settings or Settings()
    store = store or SessionStore(settings.db)
    ab = isinstance(model, Mapping)
    models = dict(model) if ab else {"": model}
    name = settings.model_name or ("rejoinder" if ab else None)
    presets = {spec.name: spec.preset for spec in parse_arms(settings.arms)}
    servers = {arm: Server(m, settings, store, name, presets.get(arm)) for arm, m in models.items()}
    arms = Arms(servers, store, settings.split if ab else None, ab)
    server = arms.first

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        for s in servers.values():
            s.batcher.start()
        try:
            yield
        finally:  # requests in flight have finished: uvicorn waits for them first
            for s in servers.values():
                await run_in_threadpool(s.batcher.stop)
            store.close()

    app = FastAPI(
        title="rejoinder",
        version=_version(),
        description="Conversational replies from a GPT-2-style dialogue model: OpenAI's chat "
        "completions, and persistent chat sessions.",
        lifespan=lifespan,
    )
    app.state.server, app.state.arms = server, arms

    auth = [Depends(authorizer(settings))]
    add_error_handlers(app)
    judges = JudgeStore(store.db)
    add_judge_routes(app, judges, auth)

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
                "reverse": server.model.reverse is not None,
                "waiting": b.waiting,
                "scheduler": b.scheduler,
                # gather: generate calls and requests per call; continuous: decoding steps
                # and rows per step.
                ("steps" if b.scheduler == "continuous" else "generate_calls"): b.batches,
                "mean_batch": round(b.batched_jobs / b.batches, 2) if b.batches else None,
                **b.facts(),
                "safety": await _safety_facts(server),
                **arms.facts(),
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
        server = arms.for_user(body.user)
        said = [(m.role, m.text()) for m in body.messages]
        check_messages(said)
        server.check_length([text for _, text in said])
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
            head=extra.head if extra else None,
            options=extra.options if extra else None,
        )
        context = turns_of(said, (extra and extra.persona) or settings.persona)
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _completion_chunks(server, rid, context, config, body.n, usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        replies = await server.replies(context, config)
        seen: set = set()  # the user's message's flag comes with each of n replies
        for reply in replies:
            flags = [f for f in reply.flags if f not in seen]
            seen.update(flags)
            await server.keep_flags(context, flags, reply.text, reply.finish_reason)
        return {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": server.name,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": reply.finish_reason,
                }
                for i, reply in enumerate(replies)
            ],
            "usage": server.usage(context, config, [r.tokens for r in replies]),
        }

    # -- sessions ------------------------------------------------------------------

    @app.post("/v1/sessions", status_code=201, dependencies=auth)
    async def create_session(body: SessionCreate | None = None):
        options = body.model_dump(exclude_none=True) if body else {}
        server.check_length([options.get("system", ""), options.get("persona", "")])
        arm = arms.draw()
        arms.server(arm).config(**session_options(options))  # refuse bad options now
        sid = await run_in_threadpool(store.create, options, arm)
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
        server = await arms.for_session(sid)
        server.check_length([body.content])
        session = await session_or_404(server, sid)
        asked = body.model_dump(exclude_none=True, exclude={"content", "stream"})
        config = server.config(**session_options({**session["options"], **asked}))
        if body.stream:
            return _event_stream(session_events(server, sid, config, body.content))
        return await session_reply(server, sid, config, body.content)

    @app.post(
        "/v1/sessions/{sid}/regenerate",
        dependencies=auth,
        summary="Regenerate the last reply",
        description="Replies again to the context before the session's last message, which "
        "must be a bot reply (else 409), and makes the new reply the current one; the one it "
        "replaces is kept, with its rating, in the message's `earlier`. The body (optional) "
        "takes the decoding options of a message, `stream` included: the same events, "
        '{"delta"} then {"done", "reply", "seq", "earlier", ...}.',
    )
    async def regenerate(sid: str, body: SessionDecoding | None = None):
        body = body or SessionDecoding()
        server = await arms.for_session(sid)
        session = await session_or_404(server, sid)
        last_reply(session)  # a 409 now rather than inside a stream
        asked = body.model_dump(exclude_none=True, exclude={"stream"})
        config = server.config(**session_options({**session["options"], **asked}))
        if body.stream:
            return _event_stream(session_events(server, sid, config))
        return await session_reply(server, sid, config)

    @app.post(
        "/v1/sessions/{sid}/messages/{seq}/feedback",
        dependencies=auth,
        summary="Rate a bot reply, or write a better one",
        description="Feedback on the current reply at message `seq` (as GET numbers them): "
        '`rating` "up", "down" or null (taken back), and/or `better`, the reply the user '
        "would have liked (null or blank: none). A field left out keeps its earlier value. "
        "Returns the message as GET shows it. 404: no such session or message; 422: the "
        "message is the user's. `rejoinder data build feedback` makes preference pairs of it.",
    )
    async def feedback(sid: str, seq: int, body: SessionFeedback):
        if body.better is not None:
            server.check_length([body.better])
        given = body.model_dump(include=body.model_fields_set)
        try:
            return await run_in_threadpool(store.feedback, sid, seq, **given)
        except MessageError as e:
            raise refused(e) from None

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


def _event_stream(events) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _model_card(server: Server) -> dict[str, Any]:
    return {
        "id": server.name,
        "object": "model",
        "created": server.created,
        "owned_by": "rejoinder",
    }


async def _completion_chunks(server: Server, rid, context, config, n: int, usage: bool):
    """OpenAI's streamed chat completion: chunks, one choice index each, a last chunk with
    the usage when asked (`stream_options.include_usage`), then [DONE]."""
    created = int(time.time())

    def chunk(index: int | None, delta: dict, finish: str | None = None, **more) -> str:
        choices = (
            [] if index is None else [{"index": index, "delta": delta, "finish_reason": finish}]
        )
        return sse(
            {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": server.name,
                "choices": choices,
                **more,
            }
        )

    one = config if n == 1 else _single(config)
    events: asyncio.Queue = asyncio.Queue()
    generated: list[int] = []

    async def run(index: int, cfg: DecodingConfig):
        text = ""
        try:
            async for piece in server.pieces(context, cfg):
                if isinstance(piece, Finish):
                    generated.append(piece.tokens)
                    # The user's message's flag comes with each of n replies: kept once.
                    flags = [f for f in piece.flags if index == 0 or f.who != "user"]
                    await server.keep_flags(context, flags, text, piece.reason)
                    await events.put(chunk(index, {}, piece.reason))
                else:
                    text += piece
                    await events.put(chunk(index, {"content": piece}))
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
        if usage:
            yield chunk(None, {}, usage=server.usage(context, config, generated))
        yield "data: [DONE]\n\n"
    finally:
        for t in tasks:
            t.cancel()


async def _safety_facts(server: Server) -> dict[str, Any]:
    """The safety policy's layers, and what it flagged (every server sharing the database)."""
    safety = server.model.safety
    if safety is None:
        return {"on": False}
    flagged = await run_in_threadpool(server.store.flags.counts)
    return {"on": True, "layers": safety.layers, "flagged": flagged}


def _single(config: DecodingConfig, seed: int | None = None) -> DecodingConfig:
    from dataclasses import replace

    return replace(config, num_return_sequences=1, seed=seed if seed is not None else config.seed)


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
    model_dir: str | None,
    reverse: str | None = None,
    settings: Settings | None = None,
    backend: str = "torch",
    compute_type: str = "int8",
    rankers: dict[str, str] | None = None,
    safety: SafetyConfig | None = None,
) -> None:
    """Loads the model(s), or the A/B arms (`settings.arms`, the positional model one of
    them if given), each with the safety policy (`safety`, else the model directory's),
    and serves them until SIGINT or SIGTERM."""
    settings = settings or Settings()
    model = load_arms(model_dir, reverse, settings, backend, compute_type, rankers, safety)
    store = SessionStore(settings.db)
    app = create_app(model, settings, store)
    where = f"http://{settings.host}:{settings.port}"
    what = ", ".join(model) if isinstance(model, Mapping) else Path(str(model_dir)).name
    run_server(
        app,
        settings,
        f"serving {what} at {where}/ (API: {where}/docs; sessions in {settings.db})",
    )
