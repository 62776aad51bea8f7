"""`rejoinder serve` as a process: it starts, answers, and shuts down gracefully."""

from __future__ import annotations

import json
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


def serving(*args: str) -> tuple[subprocess.Popen, str]:
    """`rejoinder serve ARGS` on a free port, as a process; (process, its URL)."""
    port = free_port()
    command = [sys.executable, "-m", "rejoinder", "serve", *args, "--port", str(port)]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return proc, f"http://127.0.0.1:{port}"


def test_sigterm_finishes_the_request_in_flight(parrot_dir, tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    proc, url = serving(str(parrot_dir), "--db", db, "--max-tokens-limit", str(LONG))
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


def test_an_ab_server_from_the_command_line_to_the_report(parrot_dir, repeater_dir, tmp_path):
    """`serve DIR --arm NAME=DIR --split` as users start it: each session is answered by
    its arm's model, and `ab report` counts each arm's ratings as the clients gave them."""
    from rejoinder.cli import main
    from tests.conftest import PARROT, REPEATED

    db = f"sqlite:///{tmp_path / 'ab.db'}"
    proc, url = serving(str(parrot_dir), "--arm", f"beta={repeater_dir}",
                        "--split", "control=50,beta=50", "--db", db)  # fmt: skip
    liked = {"control": 0, "beta": 0}
    try:
        wait_until_up(url, proc)
        assert set(httpx.get(url + "/health").json()["arms"]) == {"control", "beta"}
        for _ in range(10):
            sid = httpx.post(f"{url}/v1/sessions", json={"temperature": 0}).json()["id"]
            r = httpx.post(f"{url}/v1/sessions/{sid}/messages", json={"content": "Hello"},
                           timeout=60).json()  # fmt: skip
            assert "arm" not in r and "arm" not in httpx.get(f"{url}/v1/sessions/{sid}").json()
            arm = "control" if r["reply"] == PARROT["Hello"] else "beta"
            if arm == "beta":
                assert r["reply"].startswith(REPEATED.strip())
            # the user likes the parrot and dislikes the repeater
            rating = "up" if arm == "control" else "down"
            f = httpx.post(f"{url}/v1/sessions/{sid}/messages/1/feedback", json={"rating": rating})
            assert f.status_code == 200, f.text
            liked[arm] += 1
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    out = tmp_path / "report"
    assert main(["ab", "report", "--db", db, "--out", str(out)]) == 0
    arms = json.loads((out / "metrics.json").read_text())["arms"]
    for arm, n in liked.items():
        up = n if arm == "control" else 0
        assert (arms[arm]["sessions"], arms[arm]["up"], arms[arm]["down"]) == (n, up, n - up)
