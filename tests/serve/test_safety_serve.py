"""The safety policy through a real server: nothing flagged reaches a client, on either
scheduler, streamed or not; what it stops is stored with the session, counted on /health
and exported as negative data; a failing classifier withholds the reply."""

from __future__ import annotations

import logging

import httpx
import pytest

from rejoinder.generation import ConversationModel
from rejoinder.safety import SafetyConfig
from rejoinder.safety.policy import FALLBACK, REFUSAL
from tests.conftest import REPEATED

WORD = REPEATED.strip()


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text(f"{WORD}\nbad idea\n")
    return str(path)


def policy(words, **settings):
    return SafetyConfig(safety_words=[words], safety_default_words=False, **settings)


@pytest.fixture(scope="module")
def barker(barker_dir, reverse_dir, words):
    return ConversationModel.from_pretrained(
        barker_dir, reverse=reverse_dir, device="cpu", safety=policy(words)
    )


def said(server, body: dict, stream: bool) -> tuple[str, str]:
    """(the reply's text, its finish reason) from chat completions."""
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, **body}
    r = httpx.post(f"{server.url}/v1/chat/completions", json={**body, "stream": stream})
    assert r.status_code == 200, r.text
    if not stream:
        choice = r.json()["choices"][0]
        return choice["message"]["content"], choice["finish_reason"]
    import json

    chunks = [json.loads(x[6:]) for x in r.text.split("\n\n") if x.startswith("data: {")]
    first = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == 0]
    return "".join(c["delta"].get("content") or "" for c in first), first[-1]["finish_reason"]


@pytest.mark.parametrize("scheduler", ["continuous", "gather"])
def test_a_model_that_only_says_a_flagged_word_never_gets_it_to_a_client(start, barker, scheduler):
    server = start(barker, scheduler=scheduler, batch_wait_ms=5)
    mmi = {"rejoinder": {"mmi": True, "mmi_candidates": 4}}
    for body in ({}, {"temperature": 0}, {"n": 2, "seed": 1}, {"seed": 5}, mmi):
        for stream in (False, True):
            text, finish = said(server, body, stream)
            assert WORD not in text.lower()
            assert (text, finish) == (FALLBACK, "content_filter")
    # Sessions, streamed or not: the fallback is stored, the drafts flagged beside it.
    sid = httpx.post(f"{server.url}/v1/sessions", json={"max_tokens": 5}).json()["id"]
    r = httpx.post(f"{server.url}/v1/sessions/{sid}/messages", json={"content": "Hi"})
    assert (r.json()["reply"], r.json()["finish_reason"]) == (FALLBACK, "content_filter")
    r = httpx.post(
        f"{server.url}/v1/sessions/{sid}/messages", json={"content": "And?", "stream": True}
    )
    assert WORD not in r.text.lower() and FALLBACK in r.text
    session = httpx.get(f"{server.url}/v1/sessions/{sid}").json()
    user, bot, user2, bot2 = session["messages"]
    assert "flagged" not in user and "flagged" not in user2
    for reply in (bot, bot2):
        assert reply["content"] == FALLBACK
        assert reply["flagged"] and all(
            f["who"] == "reply" and f["layer"] == "words" and f["label"] == WORD
            and f["text"].split()[0] == WORD for f in reply["flagged"]
        )  # fmt: skip
    health = httpx.get(f"{server.url}/health").json()["safety"]
    assert health["on"] and health["layers"] == ["words"]
    # Each of the 12 requests above stored its flagged draft (equal drafts of one reply
    # are one flag).
    assert health["flagged"]["reply"]["words"] >= 12 and not health["flagged"]["user"]


@pytest.mark.parametrize("scheduler", ["continuous", "gather"])
def test_a_flagged_user_message_is_refused_and_stored(start, repeater_dir, words, scheduler):
    bot = ConversationModel.from_pretrained(repeater_dir, device="cpu", safety=policy(words))
    server = start(bot, scheduler=scheduler, batch_wait_ms=5)
    sid = httpx.post(f"{server.url}/v1/sessions", json={"max_tokens": 4}).json()["id"]
    r = httpx.post(f"{server.url}/v1/sessions/{sid}/messages", json={"content": "What a bad idea!"})
    assert (r.json()["reply"], r.json()["usage"]["completion_tokens"]) == (REFUSAL, 0)
    user, reply = httpx.get(f"{server.url}/v1/sessions/{sid}").json()["messages"]
    [flag] = user["flagged"]
    assert (flag["who"], flag["label"], flag["text"]) == ("user", "bad idea", "What a bad idea!")
    assert reply["content"] == REFUSAL and "flagged" not in reply


def test_stopped_replies_become_negative_pairs(start, repeater_dir, words, tmp_path):
    """The repeater's greedy reply ("dog dog …") is flagged and a sampled one sent:
    `data build feedback` pairs them, the sent one chosen."""
    from rejoinder.data.build import BuildConfig, Source, build
    from rejoinder.data.pairs import read_pairs

    bot = ConversationModel.from_pretrained(repeater_dir, device="cpu", safety=policy(words))
    db = f"sqlite:///{tmp_path / 'chats.db'}"
    server = start(bot, db=db)
    for greeting in ("Hi", "Hello", "Hey", "Good morning"):
        sid = httpx.post(f"{server.url}/v1/sessions", json={"temperature": 0}).json()["id"]
        r = httpx.post(
            f"{server.url}/v1/sessions/{sid}/messages",
            json={"content": greeting, "max_tokens": 4},
        )
        assert WORD not in r.json()["reply"].lower().split()
    out = tmp_path / "pairs"
    build(BuildConfig(sources=[Source("feedback", {"db": db})], out=str(out), valid=0, test=0))
    pairs = read_pairs(out, "train")
    assert len(pairs) == 4
    for pair in pairs:
        assert pair.kind == "flagged" and pair.rejected.split()[0] == WORD
        assert WORD not in pair.chosen.lower().split() and len(pair.context) == 1


def test_a_failing_classifier_withholds_the_reply(start, repeater_dir, safety_classifier, caplog):
    bot = ConversationModel.from_pretrained(
        repeater_dir, device="cpu", safety=SafetyConfig(safety_classifier=str(safety_classifier))
    )

    def broken(*a, **k):
        raise RuntimeError("CUDA error: device-side assert")

    bot.safety.classifier.probabilities = broken
    server = start(bot)
    with caplog.at_level(logging.ERROR, logger="rejoinder.safety"):
        r = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        )
    assert r.status_code == 503 and "withheld" in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "safety_unavailable"
    assert any("safety classifier failed" in m for m in caplog.messages)
