"""A/B arms in `rejoinder serve`: sessions drawn into arms, kept in them, answered by
their arm's model, and the arm never shown to a client."""

from __future__ import annotations

import math
import random

import httpx
import pytest

from rejoinder.errors import RejoinderError
from tests.conftest import PARROT, REPEATED

GREEDY = {"temperature": 0}
A, B = "arm-alpha", "arm-beta"  # names no reply or field could hold by chance


@pytest.fixture(scope="module")
def repeater(repeater_dir):
    from rejoinder.generation import ConversationModel

    return ConversationModel.from_pretrained(repeater_dir)


@pytest.fixture
def ab(start, parrot, repeater, tmp_path):
    """start an A/B server: arm-alpha is the parrot, arm-beta the repeater."""

    def make(**settings):
        settings.setdefault("db", f"sqlite:///{tmp_path / 'ab.db'}")
        return start(model={A: parrot, B: repeater}, **settings), settings["db"]

    return make


def within(k: int, n: int, p: float) -> bool:
    """k of n draws of probability p, within 4 binomial standard deviations (a false
    failure about once in 16,000 runs)."""
    return abs(k - n * p) <= 4 * math.sqrt(n * p * (1 - p))


def test_a_session_keeps_its_arm_and_its_model_answers(ab):
    from rejoinder.stores.sessions import SessionStore

    running, db = ab()
    url = running.url
    seen = {}
    for _ in range(12):
        sid = httpx.post(f"{url}/v1/sessions", json=GREEDY).json()["id"]
        replies = [
            httpx.post(f"{url}/v1/sessions/{sid}/messages", json={"content": said}, timeout=60)
            for said in ("Hello", "How are you?")
        ]
        texts = [r.json()["reply"] for r in replies]
        regenerated = httpx.post(f"{url}/v1/sessions/{sid}/regenerate", timeout=60).json()
        seen[sid] = [*texts, regenerated["reply"]]
    store = SessionStore(db)
    arms = {sid: store.arms.of(sid) for sid in seen}
    store.close()
    assert set(arms.values()) == {A, B}  # 12 sessions at 50/50: both arms, but for 2 in 4096
    for sid, texts in seen.items():
        if arms[sid] == A:
            assert texts == [PARROT["Hello"], PARROT["How are you?"], PARROT["How are you?"]]
        else:
            assert texts[0].startswith(REPEATED.strip()), texts  # then its guard redraws
    health = httpx.get(f"{url}/health").json()
    assert sum(a["sessions"] for a in health["arms"].values()) == 12
    assert sum(a["requests"] for a in health["arms"].values()) == 36


def test_the_arm_is_never_shown_to_the_client(ab):
    running, _ = ab()
    url = running.url
    shown = []
    for _ in range(6):
        r = httpx.post(f"{url}/v1/sessions", json=GREEDY)
        sid = r.json()["id"]
        shown.append(r.text)
        shown.append(
            httpx.post(f"{url}/v1/sessions/{sid}/messages", json={"content": "Hello"}).text
        )
        shown.append(
            httpx.post(f"{url}/v1/sessions/{sid}/messages/1/feedback", json={"rating": "up"}).text
        )
        shown.append(httpx.get(f"{url}/v1/sessions/{sid}").text)
        body = {"messages": [{"role": "user", "content": "Hello"}], "temperature": 0}
        shown.append(httpx.post(f"{url}/v1/chat/completions", json=body).text)
    shown.append(httpx.get(f"{url}/v1/models").text)
    for text in shown:
        assert A not in text and B not in text, text
    assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == "rejoinder"


def test_new_sessions_follow_the_split(ab):
    from rejoinder.stores.sessions import SessionStore

    running, db = ab(split=f"{A}=80,{B}=20")
    with httpx.Client() as client:
        ids = [client.post(f"{running.url}/v1/sessions").json()["id"] for _ in range(200)]
    store = SessionStore(db)
    arms = [store.arms.of(sid) for sid in ids]
    store.close()
    assert within(arms.count(A), 200, 0.8)
    assert set(arms) == {A, B}


def test_equal_shares_by_default_and_one_user_meets_one_arm():
    from rejoinder.serve.arms import Arms

    servers = {A: object(), B: object()}
    arms = Arms(servers, store=None)
    arms.rng = random.Random(0)
    drawn = [arms.draw() for _ in range(200)]
    assert within(drawn.count(A), 200, 0.5)
    assert arms.sessions == {A: drawn.count(A), B: drawn.count(B)}
    users = [f"user-{i}" for i in range(200)]
    first = [arms.for_user(u) for u in users]
    assert [arms.for_user(u) for u in users] == first  # sticky by the user's id
    assert within(first.count(servers[A]), 200, 0.5)
    lopsided = Arms(servers, store=None, split=f"{A}=80,{B}=20")
    assert within([lopsided.for_user(u) for u in users].count(servers[A]), 200, 0.8)


def test_chat_completions_by_user_go_to_one_arm(ab):
    running, _ = ab()
    replies = set()
    for _ in range(4):
        body = {"messages": [{"role": "user", "content": "Hello"}], "temperature": 0, "user": "u7"}
        replies.add(
            httpx.post(f"{running.url}/v1/chat/completions", json=body).json()["choices"][0][
                "message"
            ]["content"]
        )
    assert len(replies) == 1


def test_feedback_on_a_session_whose_arm_is_gone_is_kept_under_that_arm(ab, tmp_path):
    from rejoinder.stores.arms import ab_rows
    from rejoinder.stores.sessions import SessionStore

    db = f"sqlite:///{tmp_path / 'old.db'}"
    store = SessionStore(db)
    sid = store.create({}, arm="retired")
    store.append(sid, ("user", "Hello"), ("assistant", "hey"))
    old = store.create({})  # made by a server with one model: joins an arm when it speaks
    store.close()
    running, _ = ab(db=db)
    r = httpx.post(f"{running.url}/v1/sessions/{sid}/messages/1/feedback", json={"rating": "down"})
    assert r.status_code == 200 and r.json()["rating"] == "down"
    gone = httpx.post(f"{running.url}/v1/sessions/{sid}/messages", json={"content": "Hi"})
    assert gone.status_code == 410 and "retired" not in gone.text
    assert httpx.post(
        f"{running.url}/v1/sessions/{old}/messages", json={"content": "Hi"}
    ).is_success
    assert (
        httpx.post(
            f"{running.url}/v1/sessions/missing/messages", json={"content": "Hi"}
        ).status_code
        == 404
    )
    store = SessionStore(db)
    rows = ab_rows(store)
    assert store.arms.of(old) in (A, B)
    store.close()
    assert [(r["arm"], r["rating"]) for r in rows["replies"] if r["session"] == sid] == [
        ("retired", "down")
    ]


def test_a_single_model_server_stores_no_arm(start, tmp_path):
    from rejoinder.stores.sessions import SessionStore

    db = f"sqlite:///{tmp_path / 'one.db'}"
    running = start(db=db)
    sid = httpx.post(f"{running.url}/v1/sessions").json()["id"]
    httpx.post(f"{running.url}/v1/sessions/{sid}/messages", json={"content": "Hello"})
    assert "arms" not in httpx.get(f"{running.url}/health").json()
    store = SessionStore(db)
    assert store.arms.of(sid) is None
    store.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"arms": ["a=x", "a=y"]}, "--arm a: two arms have this name"),
        ({"arms": ["a=x", "b=y"], "split": "a=60,b=30"}, "sum to 90, not 100"),
        ({"arms": ["a=x,temperature=1"]}, "--arm a: 'temperature=1' is not one of"),
        ({"arms": ["a=x,preset=fast"]}, "--arm a: preset=fast is not one of"),
        ({"arms": ["nodir"]}, "--arm 'nodir': write NAME=DIR"),
    ],
)
def test_bad_arms_are_refused_at_start(settings, message):
    from rejoinder.serve.arms import parse_split
    from rejoinder.serve.server import Settings

    with pytest.raises(RejoinderError, match=message):
        built = Settings(**settings)
        parse_split(built.split, ["a", "b"])


def test_a_split_naming_an_unknown_arm_and_an_arm_that_fails_to_load(tmp_path, parrot_dir):
    from rejoinder.serve.arms import load_arms, parse_split
    from rejoinder.serve.server import Settings

    with pytest.raises(RejoinderError, match="--split gamma: no such arm; the arms are a, b"):
        parse_split("a=50,gamma=50", ["a", "b"])
    settings = Settings(arms=[f"good={parrot_dir}", f"bad={tmp_path / 'nothing'}"])
    with pytest.raises(RejoinderError, match="--arm bad: cannot load"):
        load_arms(None, None, settings, "torch", "int8", {}, None)
    settings = Settings(arms=[f"good={parrot_dir}"], split="good=50,control=50")
    with pytest.raises(RejoinderError, match="no such arm"):
        load_arms(None, None, settings, "torch", "int8", {}, None)
    settings = Settings(arms=[f"control={parrot_dir}"])
    with pytest.raises(RejoinderError, match="--arm control: two arms have this name"):
        load_arms(str(parrot_dir), None, settings, "torch", "int8", {}, None)
    with pytest.raises(RejoinderError, match="--reverse and --ranker go with the positional"):
        load_arms(None, str(parrot_dir), settings, "torch", "int8", {}, None)
    with pytest.raises(RejoinderError, match="--split shares new sessions between arms"):
        load_arms(str(parrot_dir), None, Settings(split="a=100"), "torch", "int8", {}, None)
    models = load_arms(
        str(parrot_dir), None, Settings(arms=[f"b={parrot_dir}"]), "torch", "int8", {}, None
    )
    assert list(models) == ["control", "b"]


def test_the_command_line_names_the_arm(tmp_path, capsys):
    from rejoinder.cli import main

    code = main(
        ["serve", "--arm", f"a={tmp_path / 'none'}", "--db", f"sqlite:///{tmp_path / 'x.db'}"]
    )
    assert code == 2
    assert "--arm a: cannot load" in capsys.readouterr().err
