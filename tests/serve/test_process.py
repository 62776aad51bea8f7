"""`rejoinder serve` as a process: it starts, answers, and shuts down gracefully."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from tests.conftest import PARROT
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


def test_sigterm_finishes_the_request_in_flight(parrot_dir, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # A long batch wait keeps the request in flight when the signal comes.
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
        "--batch-wait-ms",
        "1500",
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
                json={"messages": [{"role": "user", "content": "Hello"}], "temperature": 0},
                timeout=60,
            )

        asking = threading.Thread(target=ask)
        asking.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        asking.join(timeout=60)
        # uvicorn re-raises the signal once it has shut down gracefully.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Finished server process" in proc.stdout.read()
        r = result["r"]
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == PARROT["Hello"]
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
