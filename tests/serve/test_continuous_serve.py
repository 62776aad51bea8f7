"""The server's continuous batching: clients that leave, sessions that come back."""

from __future__ import annotations

import time

import httpx

from tests.conftest import PARROT


def health(server) -> dict:
    return httpx.get(f"{server.url}/health").json()


def test_a_client_that_leaves_mid_stream_frees_its_row(start):
    server = start()
    assert health(server)["scheduler"] == "continuous"
    body = {
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": True,
        "max_tokens": 256,
        "rejoinder": {"options": {"min_new_tokens": 256}},  # would run all 256 steps
    }
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if '"content"' in line and '"content": ""' not in line:
                break  # the first piece of text: leave
    deadline = time.monotonic() + 10
    while health(server)["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    facts = health(server)
    assert facts["running"] == 0 and facts["steps"] < 256
    step = facts["step"]  # the recent steps' time in and outside the model
    assert step["steps"] == facts["steps"] and step["rows"] == 1
    assert step["forward_ms"] > 0 and 0 <= step["host_ms"] <= step["serving_host_ms"] + 1


def test_sessions_reuse_their_kept_prefix_within_its_memory(start):
    server = start(prefix_cache_mb=0.01)
    sid = httpx.post(f"{server.url}/v1/sessions", json={"temperature": 0}).json()["id"]
    for ask in PARROT:
        r = httpx.post(f"{server.url}/v1/sessions/{sid}/messages", json={"content": ask})
        assert r.json()["reply"] == PARROT[ask]
    assert health(server)["prefix_cache"]["reused_tokens"] > 0
    for _ in range(12):  # more sessions than 10 kB holds (a few kB each on the parrot)
        other = httpx.post(f"{server.url}/v1/sessions", json={"temperature": 0}).json()["id"]
        httpx.post(f"{server.url}/v1/sessions/{other}/messages", json={"content": "Hello"})
    kept = health(server)["prefix_cache"]
    assert 0 < kept["sessions"] < 13 and kept["mb"] <= 0.01


def test_ctranslate2_streams_concurrent_requests_batched(start, parrot_dir, tmp_path):
    """CTranslate2 cannot admit rows between steps: the server gathers concurrent
    streamed requests into batches, and each stream carries its own reply (that a
    batch's rows interleave is tests/test_ct2.py's)."""
    import concurrent.futures
    import json
    import shutil

    from rejoinder.generation import ConversationModel

    copy = shutil.copytree(parrot_dir, tmp_path / "parrot")  # its conversion lands beside it
    fast = ConversationModel.from_pretrained(copy, backend="ctranslate2", compute_type="float32")
    server = start(model=fast, batch_wait_ms=200)
    assert health(server)["scheduler"] == "gather"

    def ask(text: str) -> str:
        body = {"messages": [{"role": "user", "content": text}], "stream": True,
                "temperature": 0}  # fmt: skip
        pieces = []
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    pieces.append(json.loads(line[6:])["choices"][0]["delta"].get("content"))
        return "".join(p for p in pieces if p)

    asks = [*PARROT, *PARROT]
    with concurrent.futures.ThreadPoolExecutor(len(asks)) as pool:
        assert list(pool.map(ask, asks)) == [PARROT[a] for a in asks]
    assert health(server)["mean_batch"] > 1


def test_ctranslate2_streams_of_different_lengths_share_a_call(start, parrot_dir, tmp_path):
    """On CTranslate2, streams that differ only in max_tokens are one group: one call,
    each row stopped at its own length."""
    import concurrent.futures
    import json
    import shutil

    from rejoinder.generation import ConversationModel

    copy = shutil.copytree(parrot_dir, tmp_path / "parrot")
    fast = ConversationModel.from_pretrained(copy, backend="ctranslate2", compute_type="float32")
    server = start(model=fast, batch_wait_ms=300)

    def ask(tokens: int) -> tuple[str, dict]:
        body = {"messages": [{"role": "user", "content": "Hello"}], "stream": True,
                "temperature": 0, "max_tokens": tokens,
                "stream_options": {"include_usage": True}}  # fmt: skip
        pieces, usage = [], None
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    usage = event.get("usage") or usage
                    if event["choices"]:
                        pieces.append(event["choices"][0]["delta"].get("content"))
        return "".join(p for p in pieces if p), usage

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        (short, used), (whole, _), (again, _) = pool.map(ask, [2, 40, 40])
    assert whole == again == PARROT["Hello"]
    assert PARROT["Hello"].startswith(short) and short != whole
    assert used["completion_tokens"] == 2
    facts = health(server)
    assert facts["generate_calls"] == 1 and facts["mean_batch"] == 3
