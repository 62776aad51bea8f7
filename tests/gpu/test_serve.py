"""The server answering from a model on the device, with its batching."""

import concurrent.futures

import pytest

from tests.conftest import PARROT
from tests.gpu.helpers import DEVICE

pytestmark = pytest.mark.gpu

NEW = 32
"""Tokens per reply, forced: long enough that concurrent requests overlap."""


@pytest.mark.parametrize("scheduler", ["continuous", "gather"])
def test_concurrent_requests_share_batches_on_the_device(parrot_dir, tmp_path, scheduler):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from rejoinder import ConversationModel
    from rejoinder.serve.app import create_app
    from rejoinder.serve.server import Settings
    from tests.serve.conftest import Running

    model = ConversationModel.from_pretrained(parrot_dir, device=DEVICE)
    assert model.device.type == DEVICE
    settings = Settings(db=f"sqlite:///{tmp_path / 'sessions.db'}", scheduler=scheduler,
                        max_batch=8, batch_wait_ms=300, preset="greedy")  # fmt: skip
    server = Running(create_app(model, settings))
    asks = [list(PARROT)[i % len(PARROT)] for i in range(8)]

    def ask(text):
        body = {"messages": [{"role": "user", "content": text}], "max_tokens": NEW,
                "rejoinder": {"preset": "greedy", "options": {"min_new_tokens": NEW}}}  # fmt: skip
        r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    try:
        with concurrent.futures.ThreadPoolExecutor(len(asks)) as pool:
            replies = list(pool.map(ask, asks))
        health = httpx.get(f"{server.url}/health").json()
    finally:
        server.stop()
    # Past its learnt words a forced reply goes on in near-ties, where a batch's float
    # rounding may pick differently from a lone reply's; the learnt words are decisive.
    for text, reply in zip(asks, replies, strict=True):
        assert reply.startswith(PARROT[text]), (text, reply)
    assert health["scheduler"] == scheduler
    assert health["mean_batch"] > 1, health  # requests shared steps (or generate calls)
