"""`rejoinder serve` as a process: it starts, answers, and shuts down gracefully."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from tests.serve.conftest import free_port


def wait_until_up(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {proc.stdout.read()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the server did not come up")


LONG = 400
"""Tokens of the forced reply that is decoding when the signal comes."""


def test_sigterm_finishes_the_request_in_flight(parrot_dir, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "rejoinder",
        "serve",
        str(parrot_dir),
        "--port",
        str(port),
        "--db",
        f"sqlite:///{tmp_path / 's.db'}",
        "--max-tokens-limit",
        str(LONG),
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_until_up(url, proc)
        result = {}

        def ask():
            result["r"] = httpx.post(
                url + "/v1/chat/completions",
                json={
                    "messages": [{"role": "user", "content": "Hello"}],
                    "temperature": 0,
                    "max_tokens": LONG,
                    "rejoinder": {"options": {"min_new_tokens": LONG}},
                },
                timeout=60,
            )

        asking = threading.Thread(target=ask)
        asking.start()
        # The signal comes while the reply is decoding: its row is running.
        deadline = time.monotonic() + 30
        while httpx.get(url + "/health", timeout=5).json()["running"] == 0:
            assert time.monotonic() < deadline and "r" not in result, "never saw the row run"
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        asking.join(timeout=60)
        # uvicorn re-raises the signal once it has shut down gracefully.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Finished server process" in proc.stdout.read()
        r = result["r"]
        assert r.status_code == 200, r.text
        # The whole reply, every forced token of it.
        assert r.json()["usage"]["completion_tokens"] == LONG
        assert r.json()["choices"][0]["finish_reason"] == "length"
        # After the stop, nothing listens.
        try:
            httpx.get(url + "/health", timeout=1)
            raise AssertionError("still listening after SIGTERM")
        except httpx.HTTPError:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_bad_database_url_is_named(parrot_dir):
    r = subprocess.run(
        [sys.executable, "-m", "rejoinder", "serve", str(parrot_dir), "--db", "nosuch://x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "nosuch://x" in r.stderr and "Traceback" not in r.stderr
