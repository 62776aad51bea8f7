"""Sessions over HTTP: a session's history as the model's context, its reply stored in
one transaction, streamed or whole, and regenerating its last reply."""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool

from rejoinder.dialogue import Turn
from rejoinder.errors import ApiError, error_body
from rejoinder.generation.replies import Finish, Reply
from rejoinder.serve.server import Server, turns_of
from rejoinder.stores.sessions import MessageError, NoSuchMessage, NotAReply, NotTheLast


def sse(data: Any) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def session_options(options: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in options.items()
        if k in ("preset", "temperature", "top_p", "max_tokens", "mmi", "seed")
    }


def history(
    server: Server, session: dict, content: str | None = None, before: int | None = None
) -> list[Turn]:
    """A session's history (the messages before seq `before`, or all) and the new message,
    as the model's context, with the session's system prompt and persona (or the server's)."""
    said = [
        (m["role"], m["content"])
        for m in session["messages"]
        if before is None or m["seq"] < before
    ]
    options = session["options"]
    system = options.get("system")
    new = [("user", content)] if content is not None else []
    persona = options.get("persona") or server.settings.persona
    return turns_of([*([("system", system)] if system else []), *said, *new], persona)


async def session_or_404(server: Server, sid: str, missing: str = "no session {sid!r}") -> dict:
    session = await run_in_threadpool(server.store.get, sid)
    if session is None:
        raise ApiError(404, missing.format(sid=sid))
    return session


def last_reply(session: dict) -> int:
    """The seq of the session's last message, which regenerating needs to be a bot reply."""
    messages = session["messages"]
    if not messages or messages[-1]["role"] != "assistant":
        raise ApiError(
            409,
            f"the last message of session {session['id']!r} is not a bot reply, so there is "
            "nothing to regenerate; send a message instead",
            "conflict",
        )
    return messages[-1]["seq"]


def refused(e: MessageError) -> ApiError:
    status = {NoSuchMessage: 404, NotAReply: 422, NotTheLast: 409}[type(e)]
    return ApiError(status, str(e), "conflict" if status == 409 else "invalid_request_error")


def context_of(server: Server, session: dict, content: str | None) -> tuple[list[Turn], int | None]:
    """The context of the reply to `content`, or, with None, of the last reply again (and
    that reply's seq)."""
    if content is not None:
        return history(server, session, content), None
    seq = last_reply(session)
    return history(server, session, before=seq), seq


async def stored(
    server: Server, session: dict, content: str | None, seq: int | None, reply: Reply, usage
):
    """Stores a reply to `content`, or in place of the last reply `seq` (regenerating);
    what the response says of it."""
    sid, count = session["id"], len(session["messages"])
    said = {"reply": reply.text, "finish_reason": reply.finish_reason, "usage": usage}
    if seq is None:
        seqs = await run_in_threadpool(
            server.store.append, sid, ("user", content), ("assistant", reply.text)
        )
        if seqs is None:
            raise ApiError(404, f"session {sid!r} was deleted while it was answered")
        return {"id": sid, **said, "messages": count + 2, "seq": seqs[-1]}
    try:
        message = await run_in_threadpool(server.store.replace_last_reply, sid, seq, reply.text)
    except MessageError as e:
        raise refused(e) from None
    return {"id": sid, **said, "messages": count, "seq": seq, "earlier": message["earlier"]}


async def session_reply(server: Server, sid: str, config, content: str | None = None) -> dict:
    """A session's reply to `content` (None: its last reply again), stored."""
    async with server.lock(sid):  # one reply at a time per session
        session = await session_or_404(server, sid, "session {sid!r} was deleted")
        context, seq = context_of(server, session, content)
        reply = (await server.replies(context, config, sid))[0]
        usage = server.usage(context, config, [reply.tokens])
        done = await stored(server, session, content, seq, reply, usage)
        await keep_flags(server, context, reply, done)
        return done


async def keep_flags(server: Server, context, reply: Reply, done: dict) -> None:
    """Stores what the safety policy flagged on the way to a stored reply: the user's
    message at the seq before the reply's (the message it answers), drafts at its own."""
    seqs = {"user": done["seq"] - 1, "reply": done["seq"]}
    await server.keep_flags(context, reply.flags, reply.text, reply.finish_reason, done["id"], seqs)


async def session_events(server: Server, sid: str, config, content: str | None = None):
    """A session's streamed reply to `content` (None: its last reply again): {"delta"}
    events, then {"done", "reply", ...} once it is stored, or an error event."""
    async with server.lock(sid):
        try:
            session = await session_or_404(server, sid, "session {sid!r} was deleted")
            context, seq = context_of(server, session, content)
            text, finish = "", Finish(0, "stop")
            async for piece in server.pieces(context, config, sid):
                if isinstance(piece, Finish):
                    finish = piece
                    continue
                text += piece
                yield sse({"delta": piece})
            reply = Reply(text.strip(), finish.tokens, finish.reason, finish.flags)
            usage = server.usage(context, config, [reply.tokens])
            done = await stored(server, session, content, seq, reply, usage)
            await keep_flags(server, context, reply, done)
        except ApiError as e:
            yield sse(error_body(e.message, e.kind, e.status))
            return
        yield sse({"done": True, **done})
