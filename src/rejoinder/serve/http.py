"""What every rejoinder HTTP app shares: the body limit, the API key, errors in one shape."""

from __future__ import annotations

import hmac
import json
import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rejoinder.errors import ApiError, error_body
from rejoinder.serve.server import Settings

log = logging.getLogger("rejoinder.serve")


class BodyLimit:
    """Answers 413 to a request body over `limit` bytes, and 422 to a JSON body whose
    text cannot be stored (`text_problem`), before the app reads it."""

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
        whole = b"".join(chunks)
        problem = text_problem(whole)
        if problem:
            return await self._answer(send, 422, problem, "invalid_request_error")
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send):
        message = (
            f"the request body is over this server's limit of {self.limit} bytes "
            "(rejoinder serve --max-body-kb)"
        )
        await self._answer(send, 413, message, "request_too_large")

    async def _answer(self, send, status: int, message: str, kind: str):
        body = json.dumps(error_body(message, kind, status)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def text_problem(body: bytes) -> str | None:
    """What is wrong with a JSON body whose text cannot be stored, its field named: a lone
    UTF-16 surrogate (valid JSON, `"\\ud800"`, but not Unicode: nothing downstream can
    encode it) or a NUL character (PostgreSQL's text refuses it). None when all is well.
    Only bodies holding such an escape are parsed again, so the rest cost a byte search."""
    lowered = body.lower()
    if b"\\u0000" not in lowered and not any(b"\\ud" + bytes([c]) in lowered for c in b"89abcdef"):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None  # the app's own validation names what is wrong with it
    for where, text in _strings(data, ""):
        for i, ch in enumerate(text):
            if 0xD800 <= ord(ch) <= 0xDFFF:
                return (
                    f"{where or 'body'}: the text holds a lone UTF-16 surrogate "
                    f"(\\u{ord(ch):04x} at character {i}), which is not Unicode text; send "
                    "the character it was meant to be half of, whole"
                )
            if ch == "\0":
                return f"{where or 'body'}: the text holds a NUL character (at character {i})"
    return None


def _strings(value, where: str):
    """(path, string) for every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            inner = f"{where}.{k}" if where else str(k)
            yield where or "body", k
            yield from _strings(v, inner)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}.{i}" if where else str(i))


def authorizer(settings: Settings):
    """The dependency that checks a request's API key (none needed without --api-key)."""

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

    return authorized


def add_error_handlers(app) -> None:
    """Every error answered in OpenAI's shape: {"error": {"message", "type", "code"}}."""

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


def run_server(app, settings: Settings, banner: str) -> None:
    """Serves `app` with uvicorn until SIGINT or SIGTERM (requests in flight finish
    first), after one line saying where, and a warning when it listens beyond this
    machine with no API key."""
    import uvicorn

    print(banner, flush=True)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        print("warning: listening beyond this machine with no --api-key", flush=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=int(settings.shutdown_seconds),
    )
