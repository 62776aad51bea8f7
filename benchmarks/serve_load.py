"""Serving under load: `rejoinder serve` with GPT-2 124M (random weights) on this machine.

    python benchmarks/serve_load.py [--backend torch] [--tokens 32] [--soak 1000]

Starts a real server (a child process, its own SQLite file), then from this process:

1. chat completions at concurrency 1, 8 and 32 (each worker sends its next request
   as soon as the last is answered): replies/s, generated tokens/s, and p50/p95/p99
   latency, each level run 3 times (the median run is shown). The baseline is the
   same server at concurrency 1; the target is >= 3x its throughput at 8, which only
   batching across users can give on 2 cores;
2. a soak: 1,000 session messages at concurrency 32, spread over 100 sessions, that
   must end with 0 errors and every session's history complete and in order.

A random model seldom ends a turn, so every reply is `--tokens` tokens long and the
figures compare like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent


def checkpoint() -> Path:
    from rejoinder.modeling import init_checkpoint

    path = HERE / ".cache" / "gpt2-124M-fwd"
    if not (path / "config.json").exists():
        init_checkpoint(path, size="124M", seed=0, overwrite=True)
    return path


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


async def load(url: str, concurrency: int, requests: int, tokens: int) -> dict:
    latencies: list[float] = []
    generated = errors = 0
    left = list(range(requests))

    async def worker(client: httpx.AsyncClient, w: int):
        nonlocal generated, errors
        while left:
            i = left.pop()
            body = {
                "messages": [
                    {"role": "user", "content": f"Hello there, this is user {w}, ask {i}."}
                ],
                "max_tokens": tokens,
                "temperature": 1.0,
            }
            t = time.perf_counter()
            r = await client.post(url + "/v1/chat/completions", json=body)
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                errors += 1
                continue
            generated += r.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client, w) for w in range(concurrency)))
        wall = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": requests,
        "errors": errors,
        "replies_s": requests / wall,
        "tokens_s": generated / wall,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
    }


async def soak(url: str, messages: int, concurrency: int, sessions: int, tokens: int) -> dict:
    async with httpx.AsyncClient(timeout=600) as client:
        ids = []
        for _ in range(sessions):
            r = await client.post(url + "/v1/sessions", json={"max_tokens": tokens})
            ids.append(r.json()["id"])
        # Message k goes to session k % sessions; a session's messages are sent in order
        # (each waits for the one before), so its history must read m0, m1, ... exactly.
        queues = {
            sid: [f"m{k}" for k in range(messages) if k % sessions == s]
            for s, sid in enumerate(ids)
        }
        pending = list(ids)
        errors = 0
        latencies: list[float] = []

        async def worker():
            nonlocal errors
            while pending:
                sid = pending.pop(0)
                for text in queues[sid]:
                    t = time.perf_counter()
                    r = await client.post(
                        f"{url}/v1/sessions/{sid}/messages", json={"content": text}
                    )
                    latencies.append(time.perf_counter() - t)
                    errors += r.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
        incomplete = 0
        for sid in ids:
            history = (await client.get(f"{url}/v1/sessions/{sid}")).json()["messages"]
            said = [m["content"] for m in history if m["role"] == "user"]
            roles = [m["role"] for m in history]
            if said != queues[sid] or roles != ["user", "assistant"] * len(queues[sid]):
                incomplete += 1
    return {
        "messages": messages,
        "sessions": sessions,
        "errors": errors,
        "incomplete": incomplete,
        "wall": wall,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="torch", choices=["torch", "ctranslate2"])
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per reply (32)")
    ap.add_argument("--soak", type=int, default=1000, help="soak messages (1000; 0: skip)")
    ap.add_argument("--soak-tokens", type=int, default=8, help="new tokens per soak reply (8)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each level (3; median)")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--batch-wait-ms", type=float, help="the server's (default: its own)")
    args = ap.parse_args()
    model = checkpoint()
    url = f"http://127.0.0.1:{args.port}"
    tmp = tempfile.mkdtemp(prefix="serve-load-")
    command = [
        sys.executable,
        "-m",
        "rejoinder",
        "serve",
        str(model),
        "--port",
        str(args.port),
        "--db",
        f"sqlite:///{tmp}/sessions.db",
        "--backend",
        args.backend,
        "--max-batch",
        "32",
        "--max-message-chars",
        "1000",
    ]
    if args.batch_wait_ms is not None:
        command += ["--batch-wait-ms", str(args.batch_wait_ms)]
    log_path = Path(tmp) / "server.log"
    server = subprocess.Popen(
        command,
        stdout=log_path.open("w"),  # noqa: SIM115 (the server's, while it runs)
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())},
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print(log_path.read_text())
                return 1
            time.sleep(0.5)
        asyncio.run(load(url, 2, 4, args.tokens))  # warm-up
        rows = []
        for c, n in ((1, 12), (8, 48), (32, 96)):
            # The run with the median throughput stands for the level (the machine is noisy).
            runs = sorted(
                (asyncio.run(load(url, c, n, args.tokens)) for _ in range(args.repeats)),
                key=lambda r: r["replies_s"],
            )
            rows.append(runs[len(runs) // 2])
        base = rows[0]["replies_s"]
        print(
            f"GPT-2 124M (random), {args.backend}, {args.tokens} new tokens a reply, "
            f"{os.cpu_count()} cores, the median of {args.repeats} runs a level"
        )
        print(
            f"{'concurrency':>11} {'requests':>8} {'errors':>6} {'replies/s':>9} "
            f"{'tokens/s':>8} {'p50 s':>6} {'p95 s':>6} {'p99 s':>6} {'vs 1':>6}"
        )
        for r in rows:
            print(
                f"{r['concurrency']:>11} {r['requests']:>8} {r['errors']:>6} "
                f"{r['replies_s']:>9.2f} {r['tokens_s']:>8.1f} {r['p50']:>6.2f} "
                f"{r['p95']:>6.2f} {r['p99']:>6.2f} {r['replies_s'] / base:>5.2f}x"
            )
        health = httpx.get(url + "/health").json()
        print(f"mean requests per generate call: {health['mean_batch']}")
        ratio = rows[1]["replies_s"] / base
        print(f"\nthroughput at 8 >= 3x at 1: {ratio:.2f}x ({'met' if ratio >= 3 else 'missed'})")
        if args.soak:
            s = asyncio.run(soak(url, args.soak, 32, 100, args.soak_tokens))
            print(
                f"soak: {s['messages']} messages at concurrency 32 over {s['sessions']} "
                f"sessions in {s['wall']:.0f} s (p50 {s['p50']:.2f} s, p99 {s['p99']:.2f} s): "
                f"{s['errors']} errors, {s['incomplete']} incomplete histories "
                f"({'passed' if s['errors'] == 0 and s['incomplete'] == 0 else 'FAILED'})"
            )
    finally:
        server.terminate()
        server.wait(timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
