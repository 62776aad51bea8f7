"""Judging on a real PostgreSQL: judges served by two stores at once (two servers' worth)."""

from __future__ import annotations

import concurrent.futures

import httpx

from rejoinder.judging.store import JudgeStore
from tests.judging.test_store import answer_all, careful, check_never_over, make_run
from tests.serve.test_postgres import postgres_url  # noqa: F401  (the fixture)


def test_concurrent_judges_on_postgres_never_exceed_the_judgments_per_item(postgres_url):  # noqa: F811
    stores = [JudgeStore(postgres_url), JudgeStore(postgres_url)]
    make_run(stores[0], items=10, onboarding=1, per_item=3, quota=10)

    def work(k):
        return answer_all(stores[k % 2], "run", f"judge{k}", careful)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        done = list(pool.map(work, range(16)))
    per = check_never_over(stores[0], "run", 3)
    assert sum(per.values()) == 30 and sum(done) == 30 + 16
    for s in stores:
        s.close()


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
