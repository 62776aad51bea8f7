"""The safety policy's cost in serving: `rejoinder serve` with and without the
classifier, a `small` GPT-2 generator and a `small` GPT-2 classifier (random weights),
side by side in one run.

    python benchmarks/safety_serve.py [--repeats 3] [--tokens 32] [--requests 32]
                                      [--concurrency 8] [--schedulers continuous,gather]

For each scheduler, three real servers start (child processes, each its own SQLite file):

- `off`: no safety policy;
- `classifier`: `--safety --no-default-safety-words --safety-classifier DIR
  --safety-threshold 1.0`: every user message and every reply goes through the
  classifier (the replies of the requests finishing in one decoding step in one batched
  pass), and nothing can be flagged (a probability is never above 1), so the figure is
  the cost of the passes and not of replies drawn again;
- `words+classifier`: the same with better-profanity's word list on as well (the
  default). A random generator's replies hit the list now and then ("hell", "fat",
  "rum", …), and a flagged reply is drawn again: this row adds the redraws' cost, and
  /health's flag counts say how many there were.

From this process, a closed loop at `--concurrency` (each worker sends its next request
as soon as the last is answered) of `--requests` requests of `--tokens` new tokens,
streamed and not; the policy sends a streamed reply whole, once checked, so with it on
a streamed request is a whole one in an event stream. Each loop runs `--repeats` times,
the three servers of a scheduler taking turns within each repeat (so a slow spell of
the machine falls on all of them), and the run with the median throughput is shown:
replies/s, generated tokens/s (the server's own `usage`), p50/p99 latency, and the
ratio of replies/s to the `off` server's of the same scheduler and mode. After the
loops each server's /health gives its `safety` block (what it flagged, by whom and
layer) and its decoding steps.

Target (issue 26): replies/s of `serve` at concurrency 8 with the classifier >= 0.8x
without it (`small` GPT-2 generator and classifier), judged on the `classifier` rows
of every scheduler and mode. A random generator seldom ends a turn, so every reply is
as long as its request asks and the servers compare like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serve_load import percentile  # noqa: E402

LABELS = ["safe", "unsafe"]
TARGET = 0.8


def generator() -> Path:
    """A `small` GPT-2 generator, random weights (cached)."""
    from rejoinder.modeling import init_checkpoint

    path = HERE / ".cache" / "gpt2-small-fwd"
    if not (path / "config.json").exists():
        init_checkpoint(path, size="small", seed=0, overwrite=True)
    return path


def classifier(gen: Path) -> Path:
    """A `small` safe/unsafe classifier (cached), made as `rejoinder train --model.init
    GEN --model.objective classify` makes one before training: the generator's trunk with
    a new score layer of one output per label, saved as a checkpoint that classifies."""
    path = HERE / ".cache" / "gpt2-small-safety"
    if not (path / "config.json").exists():
        import torch

        from rejoinder.modeling.checkpoint import load_checkpoint, save_checkpoint
        from rejoinder.modeling.classifier import classifier_model

        ck = load_checkpoint(gen, device="cpu", weights=False)
        torch.manual_seed(1)
        model = classifier_model(str(gen), LABELS, pad_token_id=ck.tokenizer.pad_token_id)
        made_by = {"command": "benchmarks/safety_serve.py", "init": str(gen)}
        save_checkpoint(
            model, ck.tokenizer, ck.format, path, made_by=made_by, classifies=True, overwrite=True
        )
    from rejoinder.modeling.classifier import Classifier

    loaded = Classifier.from_pretrained(path, "cpu")  # the way the server loads it
    if loaded.labels != LABELS or not loaded.reads_context:
        raise SystemExit(f"{path}: labels {loaded.labels}, reads context {loaded.reads_context}")
    return path


def variants(classifier_dir: Path) -> dict[str, list[str]]:
    policy = ["--safety", "--safety-classifier", str(classifier_dir), "--safety-threshold", "1.0"]
    return {
        "off": [],
        "classifier": [*policy, "--no-default-safety-words"],
        "words+classifier": policy,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, name: str, extra: list[str], tmp: str) -> tuple:
    """A server in a child process, as serve_load starts them, with `extra` flags; its
    process and URL once /health answers."""
    port = free_port()
    command = [
        sys.executable, "-m", "rejoinder", "serve", str(model), "--port", str(port),
        "--db", f"sqlite:///{tmp}/{name}.db", "--max-batch", "32",
        "--max-message-chars", "1000", *extra,
    ]  # fmt: skip
    log = Path(tmp) / f"{name}.log"
    server = subprocess.Popen(
        command,
        stdout=log.open("w"),  # noqa: SIM115 (the server's, while it runs)
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise SystemExit(f"{name}: the server did not start\n{log.read_text()}")
        time.sleep(0.5)


async def ask(client: httpx.AsyncClient, url: str, text: str, tokens: int, stream: bool) -> dict:
    """One chat completion, streamed or not: its latency, the tokens the server says it
    generated (`usage`) and its finish reason."""
    body = {
        "messages": [{"role": "user", "content": text}],
        "max_tokens": tokens,
        "temperature": 1.0,
        "stream": stream,
        **({"stream_options": {"include_usage": True}} if stream else {}),
    }
    t = time.perf_counter()
    ok, generated, finish = True, 0, None
    if not stream:
        r = await client.post(url + "/v1/chat/completions", json=body)
        if r.status_code != 200:
            ok = False
        else:
            out = r.json()
            generated = out["usage"]["completion_tokens"]
            finish = out["choices"][0]["finish_reason"]
        return {"ok": ok, "latency": time.perf_counter() - t, "tokens": generated, "finish": finish}
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            ok = False
        else:
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    ok = False
                elif event.get("usage"):
                    generated = event["usage"]["completion_tokens"]
                elif event.get("choices") and event["choices"][0].get("finish_reason"):
                    finish = event["choices"][0]["finish_reason"]
    return {"ok": ok, "latency": time.perf_counter() - t, "tokens": generated, "finish": finish}


async def closed(url: str, concurrency: int, requests: int, tokens: int, stream: bool) -> dict:
    """A closed loop: `concurrency` workers, each sending its next request when the last
    is answered, until `requests` are done."""
    left = list(range(requests))
    done: list[dict] = []

    async def worker(client: httpx.AsyncClient, w: int):
        while left:
            i = left.pop()
            text = f"Hello there, this is user {w}, ask {i}."
            done.append(await ask(client, url, text, tokens, stream))

    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client, w) for w in range(concurrency)))
        wall = time.perf_counter() - start
    ok = [d for d in done if d["ok"]]
    latencies = [d["latency"] for d in ok] or [float("nan")]
    return {
        "requests": len(done),
        "errors": len(done) - len(ok),
        "filtered": sum(d["finish"] == "content_filter" for d in ok),
        "replies_s": len(ok) / wall,
        "tokens_s": sum(d["tokens"] for d in ok) / wall,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


def health(url: str) -> dict:
    return httpx.get(url + "/health", timeout=30).json()


def measure(servers: dict[str, str], args) -> tuple[dict, dict]:
    """Every mode's loops on every server, the servers taking turns within each repeat:
    the median run of each (server, mode), and each server's /health afterwards."""
    for url in servers.values():  # warm-up: first passes, caches, the database
        for stream in (False, True):
            asyncio.run(closed(url, 2, 4, args.tokens, stream))
    before = {name: health(url) for name, url in servers.items()}
    runs: dict[tuple[str, str], list[dict]] = {}
    order = list(servers)
    for k in range(args.repeats):
        random.Random(k).shuffle(order)  # no server always first after a pause
        for mode in ("whole", "streamed"):
            for name in order:
                run = asyncio.run(
                    closed(
                        servers[name], args.concurrency, args.requests, args.tokens,
                        mode == "streamed",
                    )
                )  # fmt: skip
                runs.setdefault((name, mode), []).append(run)
    medians = {
        key: sorted(rs, key=lambda r: r["replies_s"])[len(rs) // 2] for key, rs in runs.items()
    }
    after = {}
    for name, url in servers.items():
        h, b = health(url), before[name]
        what = "steps" if "steps" in h else "generate_calls"
        # /health's figures count from the start: the loops' own are the differences.
        passes = h.get(what, 0) - b.get(what, 0)
        rows = h.get(what, 0) * (h.get("mean_batch") or 0) - b.get(what, 0) * (
            b.get("mean_batch") or 0
        )
        after[name] = {
            "safety": h.get("safety"),
            "passes": f"{passes} {what.replace('_', ' ')}",
            "mean_batch": round(rows / passes, 1) if passes else None,
        }
    return medians, after


def table(results: dict[str, tuple[dict, dict]]) -> dict[str, list[tuple[str, float]]]:
    """Prints the table; gives each safety row's ratio to `off` (replies/s), by policy."""
    print(
        f"{'scheduler':<10} {'policy':<17} {'mode':<9} {'req':>4} {'err':>3} {'canned':>6} "
        f"{'replies/s':>9} {'tokens/s':>8} {'p50 s':>6} {'p99 s':>6} {'x off':>6}"
    )
    ratios: dict[str, list[tuple[str, float]]] = {}
    for scheduler, (medians, _) in results.items():
        for mode in ("whole", "streamed"):
            base = medians[("off", mode)]
            for name in ("off", "classifier", "words+classifier"):
                r = medians.get((name, mode))
                if r is None:
                    continue
                ratio = r["replies_s"] / base["replies_s"]
                if name != "off":
                    ratios.setdefault(name, []).append((f"{scheduler}, {mode}", ratio))
                shown = f"{mode}*" if mode == "streamed" and name != "off" else mode
                print(
                    f"{scheduler:<10} {name:<17} {shown:<9} {r['requests']:>4} {r['errors']:>3} "
                    f"{r['filtered']:>6} {r['replies_s']:>9.2f} {r['tokens_s']:>8.1f} "
                    f"{r['p50']:>6.2f} {r['p99']:>6.2f} {ratio:>5.2f}x"
                )
    print(
        "whole: not streamed; * streamed with the policy on: the reply is checked whole, then "
        "sent as one piece; canned: replies finished content_filter (a fallback or refusal)"
    )
    return ratios


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schedulers", default="continuous,gather")
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per reply (32)")
    ap.add_argument("--requests", type=int, default=32, help="requests per closed loop (32)")
    ap.add_argument("--concurrency", type=int, default=8, help="closed-loop workers (8)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each loop (3; median)")
    args = ap.parse_args()
    gen = generator()
    policies = variants(classifier(gen))
    tmp = tempfile.mkdtemp(prefix="safety-serve-")
    results: dict[str, tuple[dict, dict]] = {}
    started, load = time.perf_counter(), os.getloadavg()
    for scheduler in [s for s in args.schedulers.split(",") if s]:
        flags = ["--backend", "torch", "--scheduler", scheduler]
        procs, servers = [], {}
        try:
            for name, extra in policies.items():
                proc, url = start_server(gen, f"{scheduler}-{name}", [*flags, *extra], tmp)
                procs.append(proc)
                servers[name] = url
            results[scheduler] = measure(servers, args)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=120)
    print(
        f"`small` GPT-2 generator and classifier (random), {args.tokens} new tokens a reply, "
        f"closed loops at concurrency {args.concurrency} of {args.requests} requests, "
        f"{os.cpu_count()} cores; the median of {args.repeats} runs "
        f"({time.perf_counter() - started:.0f} s in all; load average {load[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after)"
    )
    ratios = table(results)
    print()
    for scheduler, (_, after) in results.items():
        for name, h in after.items():
            s = h["safety"] or {}
            said = (
                f"layers {','.join(s.get('layers', []))}, flagged {json.dumps(s.get('flagged'))}"
                if s.get("on")
                else "off"
            )
            print(
                f"/health {scheduler} {name}: safety {said}; {h['passes']} in the loops, "
                f"{h['mean_batch']} rows each"
            )
    print()
    where, worst = min(ratios["classifier"], key=lambda x: x[1])
    print(
        f"target (issue 26): replies/s at concurrency {args.concurrency} with the classifier "
        f">= {TARGET}x without it: {'met' if worst >= TARGET else 'missed'} (lowest "
        f"{worst:.2f}x: {where})"
    )
    where, low = min(ratios["words+classifier"], key=lambda x: x[1])
    print(
        f"with the default word list too: lowest {low:.2f}x ({where}); a reply it flags is "
        "drawn again (/health's flags above), which the target's rows leave out"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
