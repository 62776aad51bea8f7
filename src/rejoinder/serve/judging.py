"""`rejoinder judge serve`: the judging page and its API, with no model loaded."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from rejoinder.errors import RejoinderError
from rejoinder.judging.api import add_judge_routes
from rejoinder.serve.http import BodyLimit, add_error_handlers, authorizer, run_server
from rejoinder.serve.server import Settings
from rejoinder.stores.judgments import JudgeStore
from rejoinder.stores.runs import JudgeError


def judging_app(settings: Settings, store: JudgeStore | None = None):
    """An app with the judging page and API only (`rejoinder judge serve`): no model."""
    store = store or JudgeStore(settings.db)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            store.close()

    app = FastAPI(
        title="rejoinder judging",
        description="Pairwise human evaluation: the judging page (/judge/RUN) and its API.",
        lifespan=lifespan,
    )
    add_error_handlers(app)
    add_judge_routes(app, store, [Depends(authorizer(settings))])

    @app.get("/health")
    async def health():
        ok = await run_in_threadpool(store.db.ping)
        return JSONResponse({"status": "ok" if ok else "database unreachable"}, 200 if ok else 503)

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


def serve_judging(run: str, settings: Settings) -> None:
    """Serves the judging page of `run` (and the database's other runs) until stopped."""
    store = JudgeStore(settings.db)
    try:
        store.run(run)
    except JudgeError as e:
        store.close()
        raise RejoinderError(
            f"{e.message} in {settings.db}; make it with `rejoinder judge create`"
        ) from None
    app = judging_app(settings, store)
    where = f"http://{settings.host}:{settings.port}"
    run_server(
        app,
        settings,
        f"judges open {where}/judge/{run}?judge=THEIR_ID (results: {where}/v1/judge/{run}/results)",
    )
