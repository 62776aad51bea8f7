"""Feedback on the bot's replies and regenerating the last one, through a real server."""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest

from tests.conftest import PARROT

TRICKY = '<img src=x onerror="alert(1)"><script>alert(2)</script> & <b>bold</b>'


def session(server, *said: str, **options) -> str:
    """A greedy session that has said `said` (each answered)."""
    sid = httpx.post(f"{server.url}/v1/sessions", json={"temperature": 0, **options}).json()["id"]
    for text in said:
        r = httpx.post(f"{server.url}/v1/sessions/{sid}/messages", json={"content": text})
        assert r.status_code == 200, r.text
    return sid


def feedback(server, sid, seq, body):
    return httpx.post(f"{server.url}/v1/sessions/{sid}/messages/{seq}/feedback", json=body)


def messages(server, sid) -> list[dict]:
    return httpx.get(f"{server.url}/v1/sessions/{sid}").json()["messages"]


def test_feedback_is_kept_with_the_reply_and_replaced_by_later_feedback(server):
    sid = session(server, "Hello")
    r = feedback(server, sid, 1, {"rating": "up"})
    assert r.status_code == 200, r.text
    shown = r.json()
    assert shown == messages(server, sid)[1]
    assert (shown["seq"], shown["content"], shown["rating"]) == (1, PARROT["Hello"], "up")
    assert (shown["better"], shown["earlier"]) == (None, [])

    assert feedback(server, sid, 1, {"rating": "down"}).json()["rating"] == "down"
    # HTML is text: stored and given back as it came.
    r = feedback(server, sid, 1, {"better": TRICKY})
    assert (r.json()["rating"], r.json()["better"]) == ("down", TRICKY)  # rating kept
    r = feedback(server, sid, 1, {"rating": None})
    assert (r.json()["rating"], r.json()["better"]) == (None, TRICKY)
    assert feedback(server, sid, 1, {"better": "  "}).json()["better"] is None

    user, bot = messages(server, sid)
    assert user == {"role": "user", "content": "Hello", "created": user["created"], "seq": 0}
    assert set(bot) == {"role", "content", "created", "seq", "rating", "better", "earlier"}


def test_bad_feedback_gets_the_right_status(start):
    server = start(max_message_chars=len(TRICKY))
    sid = session(server, "Hello")

    def refused(status, sid, seq, body):
        r = feedback(server, sid, seq, body)
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == status and r.json()["error"]["message"]
        return r.json()["error"]["message"]

    assert "no session 'nope'" in refused(404, "nope", 1, {"rating": "up"})
    assert "no message 2" in refused(404, sid, 2, {"rating": "up"})
    assert "no message -1" in refused(404, sid, -1, {"rating": "up"})
    assert "not a bot reply" in refused(422, sid, 0, {"rating": "up"})  # the user's message
    assert "rating" in refused(422, sid, 1, {"rating": "meh"})
    assert "rating" in refused(422, sid, 1, {"rating": 1})
    refused(422, sid, 1, {"rating": "up", "comment": "hm"})  # extra fields are refused
    assert "give a" in refused(422, sid, 1, {})
    refused(422, sid, "one", {"rating": "up"})
    refused(413, sid, 1, {"better": TRICKY + "!"})
    assert messages(server, sid)[1]["rating"] is None  # nothing stuck


def test_regenerate_keeps_the_replaced_reply_and_its_rating(server):
    sid = session(server, "Hello")
    assert feedback(server, sid, 1, {"rating": "down"}).status_code == 200
    r = httpx.post(
        f"{server.url}/v1/sessions/{sid}/regenerate", json={"temperature": 1.0, "seed": 3}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["id"], body["seq"], body["messages"]) == (sid, 1, 2)
    assert body["earlier"] == [PARROT["Hello"]]
    bot = messages(server, sid)[1]
    assert (bot["content"], bot["earlier"]) == (body["reply"], [PARROT["Hello"]])
    assert bot["rating"] is None  # the new reply is unrated; the old one keeps its thumbs down

    # Streamed, with no body options: the session's greedy decoding, the same events.
    r = httpx.post(f"{server.url}/v1/sessions/{sid}/regenerate", json={"stream": True})
    events = [json.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: ")]
    *pieces, done = events
    assert pieces and all("delta" in e for e in pieces)
    assert done["done"] and done["reply"] == "".join(e["delta"] for e in pieces).strip()
    assert done["reply"] == PARROT["Hello"]
    assert done["earlier"] == [PARROT["Hello"], body["reply"]]
    assert [m["content"] for m in messages(server, sid)] == ["Hello", PARROT["Hello"]]
    # No body at all is fine too; the next message sees the current reply only.
    assert httpx.post(f"{server.url}/v1/sessions/{sid}/regenerate").status_code == 200
    r = httpx.post(f"{server.url}/v1/sessions/{sid}/messages", json={"content": "How are you?"})
    assert r.json()["seq"] == 3 and r.json()["reply"] == PARROT["How are you?"]


def test_regenerate_needs_a_bot_reply_last(server, tmp_path):
    r = httpx.post(f"{server.url}/v1/sessions/nope/regenerate")
    assert r.status_code == 404 and r.json()["error"]["code"] == 404
    empty = session(server)
    r = httpx.post(f"{server.url}/v1/sessions/{empty}/regenerate", json={"stream": True})
    assert r.status_code == 409 and "not a bot reply" in r.json()["error"]["message"]
    # A history that ends with the user's message (written past the server).
    sid = session(server, "Hello")
    with sqlite3.connect(tmp_path / "sessions.db") as c:
        c.execute("INSERT INTO rejoinder_messages VALUES (?, 2, 'user', 'And you?', 0)", (sid,))
    r = httpx.post(f"{server.url}/v1/sessions/{sid}/regenerate")
    assert r.status_code == 409 and r.json()["error"]["type"] == "conflict"
    r = httpx.post(f"{server.url}/v1/sessions/{sid}/regenerate", json={"content": "x"})
    assert r.status_code == 422  # a message's content is no regenerate option


def test_the_routes_are_documented(server):
    schema = httpx.get(f"{server.url}/openapi.json").json()
    feedback_route = schema["paths"]["/v1/sessions/{sid}/messages/{seq}/feedback"]["post"]
    regenerate_route = schema["paths"]["/v1/sessions/{sid}/regenerate"]["post"]
    assert feedback_route["summary"] and regenerate_route["summary"]
    assert "404" in feedback_route["description"] and "422" in feedback_route["description"]
    assert "409" in regenerate_route["description"]
    rating = schema["components"]["schemas"]["SessionFeedback"]["properties"]["rating"]
    assert {"enum": ["up", "down"], "type": "string"} in rating["anyOf"]


def test_the_store_refuses_stale_and_wrong_messages_and_deletes_replies(tmp_path):
    from rejoinder.stores.sessions import NoSuchMessage, NotAReply, NotTheLast, SessionStore

    store = SessionStore(f"sqlite:///{tmp_path / 's.db'}")
    sid = store.create()
    assert store.append(sid, ("user", "hi"), ("assistant", "hello")) == [0, 1]
    store.feedback(sid, 1, rating="up")
    store.append(sid, ("user", "more"), ("assistant", "sure"))
    with pytest.raises(NotTheLast):  # someone wrote since the caller read the session
        store.replace_last_reply(sid, 1, "hey")
    with pytest.raises(NotAReply):
        store.replace_last_reply(sid, 2, "hey")
    with pytest.raises(NoSuchMessage):
        store.feedback(sid, 7, rating="up")
    with pytest.raises(NoSuchMessage):
        store.feedback("nope", 1, rating="up")
    with pytest.raises(ValueError, match="rating"):
        store.feedback(sid, 1, rating="great")
    assert store.get(sid)["messages"][1]["content"] == "hello"  # nothing changed
    store.replace_last_reply(sid, 3, "of course")
    assert store.delete(sid)
    with store.engine.connect() as c:
        assert c.execute(store.replies.select()).all() == []
    store.close()


def test_a_database_from_before_feedback_keeps_working(tmp_path):
    """Sessions written before the replies table existed are read, rated and regenerated."""
    from rejoinder.stores.sessions import SessionStore

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as c:
        c.executescript(
            """
            CREATE TABLE rejoinder_sessions (id VARCHAR(64) PRIMARY KEY, created FLOAT NOT NULL,
                options TEXT NOT NULL);
            CREATE TABLE rejoinder_messages (session_id VARCHAR(64) NOT NULL REFERENCES
                rejoinder_sessions (id) ON DELETE CASCADE, seq INTEGER NOT NULL,
                role VARCHAR(16) NOT NULL, content TEXT NOT NULL, created FLOAT NOT NULL,
                PRIMARY KEY (session_id, seq));
            INSERT INTO rejoinder_sessions VALUES ('old', 1.0, '{}');
            INSERT INTO rejoinder_messages VALUES ('old', 0, 'user', 'hi', 1.0);
            INSERT INTO rejoinder_messages VALUES ('old', 1, 'assistant', 'hello', 1.0);
            """
        )
    store = SessionStore(f"sqlite:///{path}")
    assert store.get("old")["messages"][1] == {
        "role": "assistant", "content": "hello", "created": 1.0, "seq": 1,
        "rating": None, "better": None, "earlier": [],
    }  # fmt: skip
    assert store.feedback("old", 1, rating="down")["rating"] == "down"
    shown = store.replace_last_reply("old", 1, "hey")
    assert (shown["content"], shown["earlier"], shown["rating"]) == ("hey", ["hello"], None)
    store.close()
