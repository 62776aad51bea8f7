"""Judging on a real PostgreSQL: judges served by two stores at once (two servers' worth)."""

from __future__ import annotations

import httpx

from tests.judging.test_store import judge_concurrently
from tests.serve.test_postgres import postgres_url  # noqa: F401  (the fixture)


def test_concurrent_judges_on_postgres_never_exceed_the_judgments_per_item(postgres_url):  # noqa: F811
    judge_concurrently(postgres_url)


def test_a_server_on_postgres_runs_the_judging_flow(start, postgres_url):  # noqa: F811
    from tests.serve.test_judging_api import judge_all
    from tests.serve.test_judging_api import make_run as make_api_run

    make_api_run(postgres_url, "pg", items=5, per_item=2)
    server = start(db=postgres_url)
    for judge in ("p", "q", "r"):
        judge_all(server.url, "pg", judge, lambda: True)
    results = httpx.get(f"{server.url}/v1/judge/pg/results").json()
    (row,) = results["comparisons"]["relevance"]
    assert row["votes"] == 10 and row["wins"] == 10  # every slot filled once, alpha preferred
    assert results["counts"]["judges_kept"] == 3
