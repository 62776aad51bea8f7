"""Chats as real clients send them: roles as given, bad messages refused by name, token
counts as generated, no reply that repeats the bot, on both schedulers."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import PARROT, REPEATED
from tests.serve.test_api import GREEDY, chat, events, user

SCHEDULERS = ["continuous", "gather"]


def bot(text):
    return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    """A random model that never ends a reply by itself, for replies of a forced length."""
    from rejoinder.generation import ConversationModel
    from rejoinder.modeling import init_checkpoint

    out = init_checkpoint(tmp_path_factory.mktemp("counted") / "m", initializer_range=0.5)
    return ConversationModel.from_pretrained(out)


@pytest.fixture(scope="module")
def repeater(repeater_dir):
    from rejoinder.generation import ConversationModel

    return ConversationModel.from_pretrained(repeater_dir)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_usage_counts_the_tokens_generated(start, counted, scheduler, parrot):
    server = start(model=counted, scheduler=scheduler)
    forced = {"max_tokens": 7, "rejoinder": {"options": {"min_new_tokens": 7}}, **GREEDY}
    body = chat(server.url, [user("Hello")], **forced).json()
    assert body["usage"]["completion_tokens"] == 7
    assert body["choices"][0]["finish_reason"] == "length"
    sampled = chat(server.url, [user("Hi")], n=3, seed=1, temperature=1.0, **{
        k: v for k, v in forced.items() if k != "temperature"}).json()  # fmt: skip
    assert sampled["usage"]["completion_tokens"] == 21
    assert {c["finish_reason"] for c in sampled["choices"]} == {"length"}
    r = chat(server.url, [user("Hello")], stream=True, stream_options={"include_usage": True},
             **forced)  # fmt: skip
    got = events(r)
    assert got[-2]["choices"][0]["finish_reason"] == "length"
    assert got[-1]["choices"] == [] and got[-1]["usage"]["completion_tokens"] == 7
    assert got[-1]["usage"]["prompt_tokens"] == body["usage"]["prompt_tokens"]
    # A reply that ends at its end-of-text counts it; one cut at max_tokens says so.
    talker = start(scheduler=scheduler)
    words = len(parrot.tokenizer(" " + PARROT["Hello"]).input_ids)
    ended = chat(talker.url, [user("Hello")], **GREEDY).json()
    assert ended["usage"]["completion_tokens"] == words + 1
    assert ended["choices"][0]["finish_reason"] == "stop"
    cut = chat(talker.url, [user("Hello")], max_tokens=2, **GREEDY).json()
    assert (cut["usage"]["completion_tokens"], cut["choices"][0]["finish_reason"]) == (2, "length")
    sessions = [httpx.post(f"{talker.url}/v1/sessions", json={"temperature": 0}).json()["id"]
                for _ in range(2)]  # fmt: skip
    said = httpx.post(f"{talker.url}/v1/sessions/{sessions[0]}/messages", json={"content": "Hello"})
    assert said.json()["usage"]["completion_tokens"] == words + 1
    assert said.json()["finish_reason"] == "stop"
    ask = {"content": "Hello", "stream": True, "max_tokens": 2}
    streamed = events(httpx.post(f"{talker.url}/v1/sessions/{sessions[1]}/messages", json=ask))
    assert streamed[-1]["usage"]["completion_tokens"] == 2
    assert streamed[-1]["finish_reason"] == "length"


def test_the_roles_a_client_sends_are_the_roles_the_model_sees(server, parrot):
    said = [bot("Welcome!"), user("Hello"), user("How are you?")]
    r = chat(server.url, said, **GREEDY)
    assert r.status_code == 200, r.text
    want = parrot.generate([{"role": m["role"], "content": m["content"]} for m in said])
    assert r.json()["choices"][0]["message"]["content"] == want
    # The usage counts the prompt as the roles lay it out.
    prompt = len(parrot.encode([{"role": m["role"], "content": m["content"]} for m in said]))
    assert r.json()["usage"]["prompt_tokens"] == prompt


@pytest.mark.parametrize(
    "messages, names",
    [
        ([user("weather?"), {"role": "tool", "content": "sunny"}], "messages[1].role 'tool'"),
        ([user("hi"), {"role": "system", "content": "Be brief."}], "messages[1] is a system"),
        ([user("hi"), bot("  "), user("hello?")], "messages[1].content is empty"),
        ([{"role": "system", "content": "Be brief."}], "no user or assistant message"),
        ([{"role": "narrator", "content": "Once"}], "messages.0.role"),
    ],
)
def test_bad_messages_get_a_422_that_names_them(server, messages, names):
    r = chat(server.url, messages)
    assert r.status_code == 422 and names in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_no_reply_repeats_the_bot(start, repeater, scheduler):
    from rejoinder.generation.replies import overlap

    guarded = start(model=repeater, scheduler=scheduler)
    copy = chat(guarded.url, [user("hi")], max_tokens=6, **GREEDY).json()
    said = copy["choices"][0]["message"]["content"]
    assert said == " ".join([REPEATED.strip()] * 6)
    again = [user("hi"), bot(said), user("hi")]
    for stream in (False, True):
        r = chat(guarded.url, again, max_tokens=6, stream=stream, seed=3, **GREEDY)
        text = (
            "".join(e["choices"][0]["delta"].get("content") or "" for e in events(r))
            if stream
            else r.json()["choices"][0]["message"]["content"]
        )
        assert text and overlap(text, [said]) <= 0.5  # drawn again: not the bot's words
    # A fresh reply goes through: the earlier turn shares none of its words.
    fresh = chat(guarded.url, [user("hi"), bot("cats are nice"), user("hi")], max_tokens=6,
                 **GREEDY).json()  # fmt: skip
    assert fresh["choices"][0]["message"]["content"] == said
    # Sessions are guarded too; --max-self-overlap 0 turns the guard off.
    sid = httpx.post(f"{guarded.url}/v1/sessions", json={"temperature": 0, "max_tokens": 6})
    sid = sid.json()["id"]
    replies = [httpx.post(f"{guarded.url}/v1/sessions/{sid}/messages", json={"content": "hi"})
               .json()["reply"] for _ in range(2)]  # fmt: skip
    assert replies[0] == said and overlap(replies[1], [said]) <= 0.5
    off = start(model=repeater, scheduler=scheduler, max_self_overlap=0)
    r = chat(off.url, again, max_tokens=6, **GREEDY).json()
    assert r["choices"][0]["message"]["content"] == said


def test_a_persona_comes_first_and_is_kept(start, parrot):
    server = start(persona="I am a parrot.")
    r = chat(server.url, [user("Hello")], **GREEDY).json()
    with_persona = [{"role": "persona", "content": "I am a parrot."}, user("Hello")]
    assert r["choices"][0]["message"]["content"] == parrot.generate(with_persona)
    assert r["usage"]["prompt_tokens"] == len(parrot.encode(with_persona))
    own = chat(server.url, [user("Hello")], rejoinder={"persona": "I am a cat."}, **GREEDY)
    assert own.json()["usage"]["prompt_tokens"] == len(
        parrot.encode([{"role": "persona", "content": "I am a cat."}, user("Hello")])
    )
    sid = httpx.post(f"{server.url}/v1/sessions", json={"persona": "I am a cat.", "temperature": 0})
    sid = sid.json()["id"]
    said = httpx.post(f"{server.url}/v1/sessions/{sid}/messages", json={"content": "Hello"})
    assert said.json()["usage"] == own.json()["usage"]
