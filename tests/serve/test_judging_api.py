"""The judging API on a real server: the flow, every refusal, secrecy, simulated judges."""

from __future__ import annotations

import random

import httpx
import pytest

from rejoinder.stores.judgments import JudgeStore
from rejoinder.stores.runs import Item, RunConfig


def make_run(db: str, name: str, items: int, per_item: int = 3, onboarding: int = 1, quota=None):
    """A turn run comparing "sysalpha" and "sysbeta" (names a leak would show)."""
    config = RunConfig(
        name=name, mode="turn", systems=["sysalpha", "sysbeta"], criteria=["relevance"],
        questions={"relevance": "Which is more relevant?"}, judgments_per_item=per_item,
        quota=quota or items, check_criterion="relevance",
    )  # fmt: skip
    real = [
        Item(f"i{k:03d}", ("sysalpha", "sysbeta"),
             {"context": [f"question {k}"],
              "replies": {"sysalpha": f"alpha {k}", "sysbeta": f"beta {k}"}})
        for k in range(items)
    ]  # fmt: skip
    known = [
        Item(f"o{k}", ("real", "other"),
             {"context": ["Hello"], "replies": {"real": "Hi there", "other": "Bananas are yellow"}},
             onboarding=True, answer="real")
        for k in range(onboarding)
    ]  # fmt: skip
    store = JudgeStore(db)
    store.create_run(config, known + real)
    store.close()


def side_of(shown, start: str) -> str:
    return "A" if shown["replies"]["A"].startswith(start) else "B"


def judge_all(url, run, judge, prefer_alpha) -> list[dict]:
    """A simulated judge through the API: right on onboarding, then prefer_alpha() per item."""
    seen = []
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            r = client.get(f"/v1/judge/{run}/next", params={"judge": judge})
            if r.status_code == 204:
                return seen
            assert r.status_code == 200, r.text
            shown = r.json()
            seen.append(shown)
            if shown["replies"]["A"] in ("Hi there", "Bananas are yellow"):
                choice = side_of(shown, "Hi there")
            else:
                choice = side_of(shown, "alpha" if prefer_alpha() else "beta")
            body = {"judge": judge, "item": shown["item"], "left": shown["left"],
                    "choices": {"relevance": choice}}  # fmt: skip
            r = client.post(f"/v1/judge/{run}/judgments", json=body)
            assert r.status_code == 201, r.text


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'sessions.db'}"


def test_a_judge_goes_through_a_run_and_every_refusal_is_a_clear_4xx(start, db, monkeypatch):
    make_run(db, "r1", items=3, per_item=1, onboarding=0)
    server = start(db=db)
    url = server.url
    page = httpx.get(f"{url}/judge/r1")
    assert page.status_code == 200 and "Which is better?" in page.text
    first = httpx.get(f"{url}/v1/judge/r1/next", params={"judge": "ann"}).json()
    again = httpx.get(f"{url}/v1/judge/r1/next", params={"judge": "ann"}).json()
    assert first == again  # a reload resumes the same item, same sides

    def post(**body):
        full = {"judge": "ann", "item": first["item"], "left": first["left"],
                "choices": {"relevance": "A"}, **body}  # fmt: skip
        return httpx.post(f"{url}/v1/judge/r1/judgments", json=full)

    refusals = [
        (httpx.get(f"{url}/v1/judge/nope/next", params={"judge": "ann"}), 404, "no judging run"),
        (httpx.get(f"{url}/v1/judge/r1/next"), 422, "judge"),
        (httpx.get(f"{url}/v1/judge/r1/next", params={"judge": "<script>"}), 422, "judge must"),
        (post(choices={"relevance": "C"}), 422, "not one of A, B, tie"),
        (post(choices={}), 422, "missing relevance"),
        (post(item="i999"), 404, "no item"),
        (post(item="i001" if first["item"] != "i001" else "i002"), 403, "was not given"),
        (post(left="0000"), 409, "fetch the next item"),
        (post(extra=1), 422, "extra"),
    ]
    for r, status, words in refusals:
        assert r.status_code == status, (r.status_code, r.text)
        assert words in r.json()["error"]["message"], r.text
    assert post(choices={"relevance": "Hi"}).status_code == 422
    assert post().status_code == 201
    assert post().status_code == 409  # never counted twice
    assert "already judged" in post().json()["error"]["message"]
    from rejoinder.evaluation import human

    summaries = []
    real = human.summarize
    monkeypatch.setattr(human, "summarize", lambda *a: summaries.append(1) or real(*a))
    early = httpx.get(f"{url}/v1/judge/r1/results").json()
    # nothing new: the same answer, not summarized (and bootstrapped) again
    assert early == httpx.get(f"{url}/v1/judge/r1/results").json() and len(summaries) == 1
    assert early["comparisons"]["relevance"][0]["votes"] == 1
    seen = judge_all(url, "r1", "ann", lambda: True)
    assert len(seen) == 2  # the rest: two real items
    assert httpx.get(f"{url}/v1/judge/r1/next", params={"judge": "ann"}).status_code == 204
    results = httpx.get(f"{url}/v1/judge/r1/results").json()
    (row,) = results["comparisons"]["relevance"]
    assert row["votes"] == 3 and results["counts"]["judges_kept"] == 1 and len(summaries) == 2
    schema = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert {"/v1/judge/{run}/next", "/v1/judge/{run}/judgments", "/v1/judge/{run}/results"} <= set(
        schema
    )


def test_nothing_the_page_sees_names_a_system(start, db):
    make_run(db, "r2", items=4, per_item=1)
    server = start(db=db)
    texts = [httpx.get(f"{server.url}/judge/r2").text]
    with httpx.Client(base_url=server.url) as client:
        while (r := client.get("/v1/judge/r2/next", params={"judge": "bo"})).status_code == 200:
            shown = r.json()
            texts.append(r.text)
            known = "Hi there" in shown["replies"].values()
            choice = side_of(shown, "Hi there") if known else "tie"
            body = {"judge": "bo", "item": shown["item"], "left": shown["left"],
                    "choices": {"relevance": choice}}  # fmt: skip
            texts.append(client.post("/v1/judge/r2/judgments", json=body).text)
    assert len(texts) == 1 + 2 * 5
    for text in texts:
        for secret in ("sysalpha", "sysbeta", '"real"', '"other"'):
            assert secret not in text


def test_the_api_key_guards_the_api_but_not_the_page(start, db):
    make_run(db, "r3", items=1)
    server = start(db=db, api_key="sesame")
    assert httpx.get(f"{server.url}/judge/r3").status_code == 200
    r = httpx.get(f"{server.url}/v1/judge/r3/next", params={"judge": "x"})
    assert r.status_code == 401
    r = httpx.get(
        f"{server.url}/v1/judge/r3/next",
        params={"judge": "x"},
        headers={"Authorization": "Bearer sesame"},
    )
    assert r.status_code == 200


def test_simulated_judges_find_a_real_preference_and_no_imagined_one(start, db):
    make_run(db, "prefer", items=60, per_item=3)
    make_run(db, "coin", items=60, per_item=3)
    server = start(db=db)
    rng = random.Random(7)
    for judge in ("a", "b", "c"):
        judge_all(server.url, "prefer", judge, lambda: rng.random() < 0.7)
        judge_all(server.url, "coin", judge, lambda: rng.random() < 0.5)
    prefer = httpx.get(f"{server.url}/v1/judge/prefer/results").json()
    coin = httpx.get(f"{server.url}/v1/judge/coin/results").json()
    (p,) = prefer["comparisons"]["relevance"]
    (c,) = coin["comparisons"]["relevance"]
    assert p["votes"] == c["votes"] == 180
    assert p["significant"] and p["win_rate"] > 0.6 and p["low"] > 0.5
    assert not c["significant"] and c["low"] < 0.5 < c["high"]


def test_judge_serve_needs_no_model(db, capsys):
    from rejoinder.cli import main
    from rejoinder.serve.judging import judging_app
    from rejoinder.serve.server import Settings
    from tests.serve.conftest import Running

    assert main(["judge", "serve", "nothing", "--db", db]) == 2
    assert "no judging run 'nothing'" in capsys.readouterr().err
    make_run(db, "alone", items=2, onboarding=0, per_item=1)
    server = Running(judging_app(Settings(db=db)))
    try:
        assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
        assert "Which is better?" in httpx.get(f"{server.url}/judge/alone").text
        assert len(judge_all(server.url, "alone", "solo", lambda: True)) == 2
        assert httpx.get(f"{server.url}/v1/models").status_code == 404  # no model here
    finally:
        server.stop()
