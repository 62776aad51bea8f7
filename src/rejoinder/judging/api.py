"""The judging page and its API: `/judge/{run}` and `/v1/judge/{run}/...`.

`add_judge_routes(app, store, auth)` puts them on an app: `rejoinder serve`'s (beside
the model's routes, same database, same API key) or `rejoinder judge serve`'s, which
has no model. Every answer names positions (A is the left reply), never systems.
"""

from __future__ import annotations

from typing import Any

from fastapi import Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from rejoinder.errors import ApiError
from rejoinder.stores.judgments import JudgeStore
from rejoinder.stores.runs import MAX_REASON, JudgeError


class JudgmentBody(BaseModel):
    """POST /v1/judge/{run}/judgments: one judge's answers on one item."""

    model_config = ConfigDict(extra="forbid")
    judge: str = Field(min_length=1, max_length=64, description="the judge's id")
    item: str = Field(min_length=1, max_length=32, description="the item, as /next gave it")
    choices: dict[str, str] = Field(
        description='each criterion\'s answer: "A" (the left reply), "B" (the right) or "tie" '
        "(turn mode only)"
    )
    left: str = Field(
        min_length=1, max_length=32, description="`left` as /next gave it with the item"
    )
    reason: str | None = Field(
        None, max_length=MAX_REASON, description="why (required in conversation mode)"
    )


async def _call(fn, *args):
    try:
        return await run_in_threadpool(fn, *args)
    except JudgeError as e:
        kind = "permission_error" if e.status == 403 else "invalid_request_error"
        raise ApiError(e.status, e.message, kind) from None


def add_judge_routes(app, store: JudgeStore, auth: list) -> None:
    """The judging page (public HTML, as the chat page is) and the API under it."""
    answered: dict[str, tuple[tuple, dict]] = {}  # run: (what it was computed from, results)

    @app.get("/judge/{run}", response_class=HTMLResponse, include_in_schema=False)
    async def judge_page(run: str):
        from importlib.resources import files

        page = files("rejoinder.judging") / "static" / "judge.html"
        return HTMLResponse(page.read_text(encoding="utf-8"))

    @app.get("/v1/judge", dependencies=auth, summary="List the judging runs")
    async def runs() -> dict[str, Any]:
        return {"runs": await _call(store.run_names)}

    @app.get(
        "/v1/judge/{run}/next",
        dependencies=auth,
        summary="The next item for a judge",
        description="The item this judge should judge now (the same one again until it is "
        "judged, so a reload resumes it), or 204 when there is none left for them. The "
        "first items are onboarding items; nothing says which.",
        responses={204: {"description": "nothing left for this judge"}},
    )
    async def next_item(run: str, judge: str = Query(..., description="the judge's id")):
        shown = await _call(store.next_item, run, judge)
        if shown is None:
            return Response(status_code=204)
        return shown

    @app.post(
        "/v1/judge/{run}/judgments",
        dependencies=auth,
        status_code=201,
        summary="Record a judgment",
        description="One judgment of an item given to this judge by /next. A second judgment "
        "of the same item by the same judge is refused (409), as is an item the judge was "
        "not given (403).",
    )
    async def judgment(run: str, body: JudgmentBody):
        done = await _call(
            store.judge, run, body.judge, body.item, body.choices, body.left, body.reason
        )
        return JSONResponse(done, 201)

    @app.get(
        "/v1/judge/{run}/results",
        dependencies=auth,
        summary="The run's results so far",
        description="Wins, ties and losses per criterion and pair of systems, win rates with "
        "Wilson intervals, exact binomial tests (Holm-corrected), agreement, position bias.",
    )
    async def results(run: str):
        from rejoinder.evaluation.human import summarize

        run_, items, judgments = await _call(store.export, run)
        # The leaderboard's bootstrap refits every criterion a thousand times; a page
        # polling results between judgments gets the last answer while nothing changed.
        # Judgments are only ever added, so their count and the judges' standing say so.
        key = (len(items), len(judgments), judgments[-1]["created"] if judgments else None,
               repr(run_["judges"]))  # fmt: skip
        held = answered.get(run)
        if held is None or held[0] != key:
            held = answered[run] = (key, await run_in_threadpool(summarize, run_, items, judgments))
        return held[1]
