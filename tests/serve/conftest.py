"""A real server on a free loopback port, around the parrot model, for the serving tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A uvicorn server on a thread; `url` is its base address."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="session")
def parrot(parrot_dir):
    from rejoinder.generation import ConversationModel

    return ConversationModel.from_pretrained(parrot_dir)


@pytest.fixture
def start(tmp_path, parrot):
    """start(**settings) -> a Running server around the parrot (stopped after the test)."""
    from rejoinder.serve.app import create_app
    from rejoinder.serve.server import Settings

    running = []

    def make(model=None, **settings):
        settings.setdefault("db", f"sqlite:///{tmp_path / 'sessions.db'}")
        app = create_app(model or parrot, Settings(**settings))
        running.append(Running(app))
        return running[-1]

    yield make
    for r in running:
        with contextlib.suppress(Exception):
            r.stop()


@pytest.fixture
def server(start):
    return start()
