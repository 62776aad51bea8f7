"""Text no store can keep (lone surrogates, NUL) gets a 422 naming its field on every
route; every other Unicode edge case goes through and comes back as it was sent."""

from __future__ import annotations

import json

import httpx
import pytest

LONE = ["hi \\ud800", "\\udfff", "a\\ud83d b", "\\u0000", "x\\u0000y"]
"""JSON string bodies (escaped as a client would send them) that hold no storable text."""

FINE = [
    "e\u0301\u0302 combining marks",
    "\u202eRTL override\u202c and \u200fmarks",
    "four-byte emoji \U0001f600\U0001f469\u200d\U0001f4bb",
    "\u00a0non-breaking and zero\u200bwidth",
    "Ǆ ﬁ ℌ compatibility forms",
]


def raw(url: str, body: str) -> httpx.Response:
    return httpx.post(url, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("text", LONE)
def test_unstorable_text_is_refused_naming_the_field(server, text):
    sid = httpx.post(f"{server.url}/v1/sessions", json={}).json()["id"]
    cases = {
        "/v1/chat/completions": (
            '{"messages": [{"role": "user", "content": "%s"}]}', "messages.0.content"
        ),
        "/v1/sessions": ('{"system": "%s"}', "system"),
        f"/v1/sessions/{sid}/messages": ('{"content": "%s"}', "content"),
        f"/v1/sessions/{sid}/messages/0/feedback": ('{"better": "%s"}', "better"),
        "/v1/judge/any/judgments": (
            '{"judge": "j", "item": "i", "left": "l", "choices": {}, "reason": "%s"}',
            "reason",
        ),
    }  # fmt: skip
    for route, (template, field) in cases.items():
        r = raw(server.url + route, template % text)
        assert r.status_code == 422, (route, r.status_code, r.text)
        message = r.json()["error"]["message"]
        assert message.startswith(f"{field}: the text holds"), message
    assert httpx.get(f"{server.url}/v1/sessions/{sid}").json()["messages"] == []


def test_every_other_edge_case_goes_through_unchanged(server):
    sid = httpx.post(f"{server.url}/v1/sessions", json={"temperature": 0}).json()["id"]
    for text in FINE:
        r = httpx.post(f"{server.url}/v1/sessions/{sid}/messages", json={"content": text})
        assert r.status_code == 200, r.text
        r = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": text}], "max_tokens": 4},
        )
        assert r.status_code == 200, r.text
    said = [m["content"] for m in httpx.get(f"{server.url}/v1/sessions/{sid}").json()["messages"]]
    assert said[::2] == FINE
    # A surrogate pair written as two escapes is one emoji, not a lone half.
    r = raw(f"{server.url}/v1/sessions/{sid}/messages", '{"content": "\\ud83d\\ude00"}')
    assert r.status_code == 200 and json.loads(r.text)["reply"] is not None
