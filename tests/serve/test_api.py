"""The HTTP API against a real server: OpenAI's schema and client, sessions, limits."""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import pytest

from tests.conftest import PARROT

GREEDY = {"temperature": 0}


def chat(url, messages, **body):
    return httpx.post(f"{url}/v1/chat/completions", json={"messages": messages, **body}, timeout=60)


def user(text):
    return {"role": "user", "content": text}


def events(response) -> list:
    out = []
    for line in response.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


# -- OpenAI's chat completions ---------------------------------------------------------


def test_a_chat_completion_in_openai_shape(server):
    r = chat(server.url, [user("Hello")], **GREEDY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": PARROT["Hello"]}
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] > 0


def test_system_messages_stay_out_of_a_dialogpt_context(server):
    plain = chat(server.url, [user("Hello")], **GREEDY).json()
    told = chat(server.url, [{"role": "system", "content": "Be terse."}, user("Hello")], **GREEDY)
    assert told.json()["choices"][0]["message"] == plain["choices"][0]["message"]


def test_the_openai_client_works_streaming_included(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    [model] = client.models.list().data
    reply = client.chat.completions.create(
        model=model.id, messages=[user("How are you?")], temperature=0
    )
    assert reply.choices[0].message.content == PARROT["How are you?"]
    stream = client.chat.completions.create(
        model=model.id, messages=[user("How are you?")], temperature=0, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == PARROT["How are you?"]
    assert len(chunks) > 2  # a role chunk, pieces of text, and the finish
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_several_streamed_choices_each_keep_their_index(server):
    r = chat(server.url, [user("Hello")], n=3, stream=True, seed=5, temperature=1.0)
    assert r.status_code == 200
    texts = {0: "", 1: "", 2: ""}
    finished = set()
    for e in events(r):
        [choice] = e["choices"]
        texts[choice["index"]] += choice["delta"].get("content") or ""
        if choice["finish_reason"]:
            finished.add(choice["index"])
    assert finished == {0, 1, 2}
    assert all(texts.values())


def test_n_seed_and_stop(server):
    body = {"messages": [user("Hello")], "temperature": 1.5, "seed": 7, "n": 3}
    a = chat(server.url, **body).json()
    b = chat(server.url, **body).json()
    assert len(a["choices"]) == 3
    assert [c["message"] for c in a["choices"]] == [c["message"] for c in b["choices"]]
    cut = chat(server.url, [user("Hello")], stop=[","], **GREEDY).json()
    assert cut["choices"][0]["message"]["content"] == PARROT["Hello"].split(",")[0]


@pytest.mark.parametrize("scheduler", ["continuous", "gather"])
def test_rejoinder_options_and_mmi(start, parrot_dir, reverse_dir, scheduler):
    from rejoinder.generation import ConversationModel

    model = ConversationModel.from_pretrained(parrot_dir, reverse=reverse_dir)
    server = start(model, batch_wait_ms=200, scheduler=scheduler)
    r = chat(server.url, [user("Hello")], rejoinder={"mmi": True, "mmi_candidates": 4}, seed=1)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    # Unseeded MMI requests share the model's work, each still reranked on its own context.
    before = httpx.get(f"{server.url}/health").json()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        many = list(
            pool.map(
                lambda a: chat(server.url, [user(a)], rejoinder={"mmi": True, "mmi_candidates": 3}),
                list(PARROT) * 2,
            )
        )
    assert all(m.status_code == 200 and m.json()["choices"][0]["message"] for m in many)
    after = httpx.get(f"{server.url}/health").json()
    if scheduler == "gather":
        assert after["generate_calls"] - before["generate_calls"] < len(many)
    else:  # candidates of several requests in one step: more rows a step than one has
        rows = after["row_steps"] - before["row_steps"]
        assert rows / (after["steps"] - before["steps"]) > 3
        # and scored from what decoding them computed: each prompt at least ran once only
        assert after["rescored_tokens"] - before["rescored_tokens"] >= len(many)
    beams = chat(server.url, [user("Hello")], rejoinder={"preset": "beam"})
    assert beams.json()["choices"][0]["message"]["content"] == PARROT["Hello"]
    unknown = chat(server.url, [user("Hello")], rejoinder={"options": {"top_z": 3}})
    assert unknown.status_code == 422 and "top_z" in unknown.json()["error"]["message"]


def test_models_health_and_schema(server):
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "parrot"
    assert httpx.get(f"{server.url}/v1/models/parrot").status_code == 200
    assert httpx.get(f"{server.url}/v1/models/nope").status_code == 404
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["model"] == "parrot"
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"] and "/v1/sessions/{sid}" in schema["paths"]


def test_special_tokens_in_text_stay_text(server):
    plain = chat(server.url, [user("Hello")], **GREEDY).json()
    tricky = chat(server.url, [user("Hello<|endoftext|>")], **GREEDY)
    assert tricky.status_code == 200
    # "<|endoftext|>" spelt out is several tokens, not the one id that ends a turn.
    extra = tricky.json()["usage"]["prompt_tokens"] - plain["usage"]["prompt_tokens"]
    assert extra > 1


# -- batching across users -------------------------------------------------------------


def shared(health: dict, asks: list) -> bool:
    """Whether requests shared the model's work: fewer generate calls than requests
    (gather), or more than one row a decoding step (continuous)."""
    if health["scheduler"] == "gather":
        return health["generate_calls"] < len(asks) and health["mean_batch"] > 1
    return health["mean_batch"] > 1


@pytest.mark.parametrize("scheduler", ["continuous", "gather"])
def test_concurrent_requests_share_generate_calls_and_get_their_own_replies(start, scheduler):
    server = start(batch_wait_ms=200, scheduler=scheduler)
    asks = list(PARROT) * 4
    with concurrent.futures.ThreadPoolExecutor(len(asks)) as pool:
        replies = list(pool.map(lambda a: chat(server.url, [user(a)], **GREEDY).json(), asks))
    assert [r["choices"][0]["message"]["content"] for r in replies] == [PARROT[a] for a in asks]
    health = httpx.get(f"{server.url}/health").json()
    assert health["scheduler"] == scheduler and shared(health, asks)


@pytest.mark.parametrize("scheduler", ["continuous", "gather"])
def test_concurrent_streams_are_batched_and_complete(start, scheduler):
    server = start(batch_wait_ms=200, scheduler=scheduler)
    asks = list(PARROT) * 3

    def streamed(text):
        r = chat(server.url, [user(text)], stream=True, **GREEDY)
        return "".join(e["choices"][0]["delta"].get("content") or "" for e in events(r))

    with concurrent.futures.ThreadPoolExecutor(len(asks)) as pool:
        texts = list(pool.map(streamed, asks))
    assert texts == [PARROT[a] for a in asks]
    assert shared(httpx.get(f"{server.url}/health").json(), asks)


# -- sessions --------------------------------------------------------------------------


def test_a_session_keeps_the_conversation(server):
    sid = httpx.post(f"{server.url}/v1/sessions", json={"temperature": 0}).json()["id"]
    first = httpx.post(f"{server.url}/v1/sessions/{sid}/messages", json={"content": "Hello"})
    assert first.status_code == 200, first.text
    assert first.json()["reply"] == PARROT["Hello"]
    second = httpx.post(
        f"{server.url}/v1/sessions/{sid}/messages", json={"content": "How are you?"}
    )
    assert second.json()["reply"] == PARROT["How are you?"]
    history = httpx.get(f"{server.url}/v1/sessions/{sid}").json()["messages"]
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "Hello"),
        ("assistant", PARROT["Hello"]),
        ("user", "How are you?"),
        ("assistant", PARROT["How are you?"]),
    ]
    assert httpx.delete(f"{server.url}/v1/sessions/{sid}").status_code == 204
    assert httpx.get(f"{server.url}/v1/sessions/{sid}").status_code == 404
    assert httpx.delete(f"{server.url}/v1/sessions/{sid}").status_code == 404


def test_a_streamed_session_reply_is_stored(server):
    sid = httpx.post(f"{server.url}/v1/sessions", json={"temperature": 0}).json()["id"]
    r = httpx.post(
        f"{server.url}/v1/sessions/{sid}/messages", json={"content": "Hello", "stream": True}
    )
    got = events(r)
    assert "".join(e.get("delta", "") for e in got) == PARROT["Hello"]
    assert got[-1]["done"] and got[-1]["reply"] == PARROT["Hello"]
    history = httpx.get(f"{server.url}/v1/sessions/{sid}").json()["messages"]
    assert [m["content"] for m in history] == ["Hello", PARROT["Hello"]]


def test_a_restart_loses_nothing(start, tmp_path):
    db = f"sqlite:///{tmp_path / 'kept.db'}"
    first = start(db=db)
    sid = httpx.post(f"{first.url}/v1/sessions").json()["id"]
    httpx.post(f"{first.url}/v1/sessions/{sid}/messages", json={"content": "Hello"})
    before = httpx.get(f"{first.url}/v1/sessions/{sid}").json()
    first.stop()
    second = start(db=db)
    assert httpx.get(f"{second.url}/v1/sessions/{sid}").json() == before


def test_concurrent_messages_to_one_session_are_serialised(start):
    server = start(batch_wait_ms=50)
    sid = httpx.post(f"{server.url}/v1/sessions", json={"temperature": 0}).json()["id"]
    said = [f"message {i}" for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda t: (
                    httpx.post(
                        f"{server.url}/v1/sessions/{sid}/messages", json={"content": t}, timeout=60
                    ).status_code
                ),
                said,
            )
        )
    assert codes == [200] * 8
    history = httpx.get(f"{server.url}/v1/sessions/{sid}").json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"] * 8
    assert sorted(m["content"] for m in history[::2]) == said


def test_the_store_keeps_more_than_the_model_sees(start):
    server = start(max_message_chars=10_000)
    sid = httpx.post(f"{server.url}/v1/sessions", json={"max_tokens": 4}).json()["id"]
    long = "word " * 600  # several times the tiny model's context
    for _ in range(3):
        r = httpx.post(f"{server.url}/v1/sessions/{sid}/messages", json={"content": long})
        assert r.status_code == 200, r.text
    history = httpx.get(f"{server.url}/v1/sessions/{sid}").json()["messages"]
    assert len(history) == 6 and history[0]["content"] == long


# -- bad input and limits --------------------------------------------------------------


def test_malformed_and_invalid_bodies_get_422_with_a_reason(server):
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=b'{"messages": [',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "JSON" in r.json()["error"]["message"]
    r = chat(server.url, [])
    assert r.status_code == 422 and "messages" in r.json()["error"]["message"]
    r = chat(server.url, [{"role": "wizard", "content": "hi"}])
    assert r.status_code == 422 and "role" in r.json()["error"]["message"]
    r = chat(server.url, [user("Hello")], temperature=-1)
    assert r.status_code == 422 and "temperature" in r.json()["error"]["message"]


def test_limits(start):
    server = start(max_body_kb=2000 / 1024, max_message_chars=100, max_tokens=16)
    r = chat(server.url, [user("x" * 3000)])
    assert r.status_code == 413 and "2000 bytes" in r.json()["error"]["message"]

    def chunked():
        yield b'{"messages": [{"role": "user", "content": "'
        yield b"y" * 3000
        yield b'"}]}'

    r = httpx.post(f"{server.url}/v1/chat/completions", content=chunked())
    assert r.status_code == 413
    r = chat(server.url, [user("x" * 101)])
    assert r.status_code == 413 and "100" in r.json()["error"]["message"]
    r = chat(server.url, [user("Hello")], max_tokens=17)
    assert r.status_code == 422 and "16" in r.json()["error"]["message"]
    assert chat(server.url, [user("Hello")], max_tokens=16).status_code == 200


def test_unknown_sessions_routes_and_mmi_without_a_reverse_model(server):
    r = httpx.post(f"{server.url}/v1/sessions/nope/messages", json={"content": "hi"})
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]
    assert httpx.get(f"{server.url}/v1/nothing").status_code == 404
    r = chat(server.url, [user("Hello")], rejoinder={"mmi": True})
    assert r.status_code == 422 and "--reverse" in r.json()["error"]["message"]
    r = chat(server.url, [user("Hello")], rejoinder={"preset": "fancy"})
    assert r.status_code == 422 and "nucleus" in r.json()["error"]["message"]


def test_an_api_key_guards_the_api_but_not_health(start):
    server = start(api_key="s3cret")
    assert chat(server.url, [user("Hello")]).status_code == 401
    bad = httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
    good = httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer s3cret"})
    assert good.status_code == 200
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_cors_is_off_unless_asked_for(start):
    origin = {"Origin": "http://elsewhere.example"}
    closed = start()
    r = httpx.get(f"{closed.url}/v1/models", headers=origin)
    assert "access-control-allow-origin" not in r.headers
    open_ = start(cors_origins=["http://elsewhere.example"])
    r = httpx.get(f"{open_.url}/v1/models", headers=origin)
    assert r.headers["access-control-allow-origin"] == "http://elsewhere.example"


def test_the_chat_page_is_served(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "/v1/sessions" in r.text


def test_values_that_would_break_sampling_are_client_errors(server):
    """Found by the fuzz test (HTTP 500 before): a seed below int64 overflowed torch's
    generator, and a temperature of 6e-173 divided the logits by zero."""
    bad = [{"seed": s} for s in (-(2**63) - 1, -1, 2**62)] + [{"temperature": 6.4e-173}]
    for options in bad:
        r = chat(server.url, [user("Hello")], **options)
        assert r.status_code == 422, r.text
        assert next(iter(options)) in r.json()["error"]["message"]
