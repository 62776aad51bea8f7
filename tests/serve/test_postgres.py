"""Sessions in a real PostgreSQL server, started by the test set-up on a free port."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import tempfile

import httpx
import pytest

from tests.conftest import PARROT
from tests.serve.conftest import free_port
from tests.serve.services import postgres_bin


@pytest.fixture(scope="module")
def postgres_url():
    bin_dir = postgres_bin()
    root = tempfile.mkdtemp(prefix="rejoinder-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(root, "data"), free_port()

    def run(*command):
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=120)

    run(f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres")
    run(
        f"{bin_dir}/pg_ctl",
        "-D",
        data,
        "-w",
        "-l",
        os.path.join(root, "log"),
        "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
        "start",
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, f"{bin_dir}/pg_ctl", "-D", data, "-m", "fast", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(root, ignore_errors=True)


def test_the_store_on_postgres(postgres_url):
    from rejoinder.stores.sessions import SessionStore

    store = SessionStore(postgres_url)
    sid = store.create({"temperature": 0})
    assert store.append(sid, ("user", "hi"), ("assistant", "hello"))
    assert store.get(sid)["messages"][1]["content"] == "hello"
    assert store.get(sid)["options"] == {"temperature": 0}
    assert not store.append("missing", ("user", "hi"))
    assert store.delete(sid) and store.get(sid) is None
    store.close()


def test_two_servers_appending_to_one_session_lose_nothing(postgres_url):
    from rejoinder.stores.sessions import SessionStore

    a, b = SessionStore(postgres_url), SessionStore(postgres_url)
    sid = a.create()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: (a, b)[i % 2].append(sid, ("user", f"u{i}"), ("assistant", f"a{i}")),
                range(40),
            )
        )
    messages = a.get(sid)["messages"]
    assert len(messages) == 80
    # Each pair was written in one transaction: a user message and its reply side by side.
    pairs = [(messages[i]["content"], messages[i + 1]["content"]) for i in range(0, 80, 2)]
    assert sorted(pairs) == sorted((f"u{i}", f"a{i}") for i in range(40))
    a.close()
    b.close()


def test_a_server_on_postgres_keeps_sessions_across_a_restart(start, postgres_url):
    first = start(db=postgres_url)
    sid = httpx.post(f"{first.url}/v1/sessions", json={"temperature": 0}).json()["id"]
    r = httpx.post(f"{first.url}/v1/sessions/{sid}/messages", json={"content": "Hello"})
    assert r.json()["reply"] == PARROT["Hello"]
    first.stop()
    second = start(db=postgres_url)
    history = httpx.get(f"{second.url}/v1/sessions/{sid}").json()["messages"]
    assert [m["content"] for m in history] == ["Hello", PARROT["Hello"]]


def test_feedback_and_regenerate_through_a_server_on_postgres(start, postgres_url):
    server = start(db=postgres_url)
    sid = httpx.post(f"{server.url}/v1/sessions", json={"temperature": 0}).json()["id"]
    httpx.post(f"{server.url}/v1/sessions/{sid}/messages", json={"content": "Hello"})
    url = f"{server.url}/v1/sessions/{sid}"
    assert httpx.post(f"{url}/messages/1/feedback", json={"rating": "up"}).status_code == 200
    assert httpx.post(f"{url}/messages/0/feedback", json={"rating": "up"}).status_code == 422
    assert httpx.post(f"{url}/messages/9/feedback", json={"rating": "up"}).status_code == 404
    assert httpx.post(f"{url}/regenerate").status_code == 200
    better = "Hey! <b>Good</b> to see you."
    r = httpx.post(f"{url}/messages/1/feedback", json={"rating": "down", "better": better})
    assert r.status_code == 200, r.text
    bot = httpx.get(url).json()["messages"][1]
    assert (bot["rating"], bot["better"], bot["earlier"]) == ("down", better, [PARROT["Hello"]])
    assert httpx.delete(url).status_code == 204


def test_feedback_pairs_from_postgres(postgres_url):
    from rejoinder.data.readers.feedback import read_feedback
    from rejoinder.data.report import Report
    from rejoinder.stores.sessions import SessionStore

    store = SessionStore(postgres_url)
    sid = store.create()
    store.append(sid, ("user", "hi"), ("assistant", "hello"))
    store.feedback(sid, 1, rating="down")
    store.replace_last_reply(sid, 1, "hey there")
    store.feedback(sid, 1, rating="up", better="Hi! Nice to see you.")
    pairs = [p for p in read_feedback(postgres_url, report=Report()) if p.group == sid]
    assert sorted((p.kind, p.context, p.chosen, p.rejected) for p in pairs) == [
        ("rewrite", ["hi"], "Hi! Nice to see you.", "hey there"),
        ("thumbs", ["hi"], "hey there", "hello"),
    ]
    store.delete(sid)
    store.close()


def test_two_servers_regenerating_one_reply_keep_every_reply(postgres_url):
    from rejoinder.stores.sessions import SessionStore

    a, b = SessionStore(postgres_url), SessionStore(postgres_url)
    sid = a.create()
    a.append(sid, ("user", "hi"), ("assistant", "r0"))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: (a, b)[i % 2].replace_last_reply(sid, 1, f"r{i + 1}"), range(20)))
    bot = b.get(sid)["messages"][1]
    assert sorted([*bot["earlier"], bot["content"]]) == sorted(f"r{i}" for i in range(21))
    assert bot["earlier"][0] == "r0"
    a.close()
    b.close()


def test_servers_behind_a_round_robin_balancer_keep_each_session_whole(start, postgres_url):
    """The layout of README's "Several servers": any message of a session may reach any
    server. Each server keeps its own prefixes: one that last saw a session before the
    other answered in it reuses what it kept and runs the rest, so replies are those of
    one server alone, and every history is complete and in order."""
    a, b = start(db=postgres_url), start(db=postgres_url)
    alone = start()  # SQLite, one server: what the replies must be
    lines = ["Hello", "How are you?", "Hello", "How are you?"]

    def chat(servers: list, k: int) -> tuple[str, list[str]]:
        sid = httpx.post(f"{servers[0].url}/v1/sessions", json={"temperature": 0}).json()["id"]
        replies = []
        for i, line in enumerate(lines):
            url = f"{servers[(i + k) % len(servers)].url}/v1/sessions/{sid}/messages"
            r = httpx.post(url, json={"content": line}, timeout=60)
            assert r.status_code == 200, r.text
            replies.append(r.json()["reply"])
        return sid, replies

    _, wanted = chat([alone], 0)
    assert wanted[:2] == [PARROT["Hello"], PARROT["How are you?"]]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        chats = list(pool.map(lambda k: chat([a, b], k), range(6)))
    for sid, replies in chats:
        assert replies == wanted
        for server in (a, b):
            history = httpx.get(f"{server.url}/v1/sessions/{sid}").json()["messages"]
            said = [(m["role"], m["content"]) for m in history]
            assert said == [
                (("user", "assistant")[i % 2], (lines, wanted)[i % 2][i // 2]) for i in range(8)
            ]
    # Each server answered a session's third message from what it kept of its first.
    for server in (a, b):
        assert httpx.get(f"{server.url}/health").json()["prefix_cache"]["reused_tokens"] > 0
