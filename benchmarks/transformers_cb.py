"""transformers' continuous batching (CB) against `generate` and rejoinder's scheduler.

On 2 CPU cores with GPT-2 124M (random weights): the measurements behind issue 17.

    python benchmarks/transformers_cb.py [--quick] [--repeats 3] [--no-serve]

N requests (8 and 32) of different lengths (8 to 64 prompt tokens) arrive at once;
each wants exactly 32 new greedy tokens (no end-of-text: a random model seldom ends a
turn, and CB ignores min_new_tokens, so every method runs with eos_token_id=-1):

1. CB: `model.init_continuous_batching(...)` once, then per run `add_request` for all
   N and `get_result` until all are finished (the manager a server would keep);
2. `generate`, one request at a time (what a server without batching does);
3. `generate` on one left-padded batch of N (what rejoinder's gathering Batcher does);
4. rejoinder's own step scheduler (`generation.continuous.StepDecoder`, where the tree
   has it): rows join and leave a left-padded DynamicCache batch at every token, each
   with its own logits processors (min_new_tokens=32 keeps its end-of-text away).

Tokens/s is generated tokens over the run's wall time; a request's latency is from the
moment all N were submitted to the moment its reply was complete. One at a time serves
8 requests a run (its throughput does not depend on N); for N=32 its latencies are
projected (request i waits for the i before it). Every run is a fresh child process
(its own peak RSS) after a warm-up; the methods' runs are interleaved, each waits until
others leave the 2 shared cores alone (up to 90 s) and is run again (--retries) if its
CPU time says it lost them anyway; each figure is the run with the median throughput
of --repeats, and its CPU column says whether it had its cores. The greedy replies
are compared token for token with one at a time's (its 8 rows a run) and with the
left-padded batch's (all N).

Then (unless --no-serve) two servers on the same model, one after the other, each
loaded closed-loop by 8 httpx workers on /v1/chat/completions (max_tokens 32,
temperature 0): `transformers serve --continuous-batching` (offline, CPU, a copy of the
checkpoint with a chat template: DialoGPT's turns ended by end-of-text) and
`rejoinder serve` with its default scheduler.

CB's KV cache is sized explicitly (--page-size, --num-blocks, --max-batch-tokens): left
to itself on CPU it takes 60% of the machine's RAM (10.7 GB here) for GPT-2 124M.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serve_load import checkpoint, percentile  # this folder is the script's path

HERE = Path(__file__).resolve().parent
NEW = 32
SINGLE_CAP = 8
"""One at a time serves at most this many requests a run (latencies beyond: projected)."""
FULL_CPU = 0.85
"""A run whose CPU time is below this share of wall time x threads lost its cores to
others: it is run again (--retries times at most)."""
STEP = (HERE.parent / "src" / "rejoinder" / "generation" / "continuous.py").exists()
"""rejoinder's own step scheduler is in this tree: measure it too."""


def prompts(n: int, run: int) -> list[list[int]]:
    """n prompts of 8..64 token ids, different for every run (no prefix cache hits)."""
    rng = random.Random(1000 * run + n)
    return [[rng.randrange(50000) for _ in range(rng.randint(8, 64))] for _ in range(n)]


def busy(seconds: float = 0.5) -> float:
    """The share of the machine's CPU time that was not idle over `seconds`."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # idle + iowait

    (t0, i0), _, (t1, i1) = sample(), time.sleep(seconds), sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def quiet(limit: float = 90) -> float:
    """Waits (at most `limit` s) until others leave the cores alone; their busy share."""
    deadline = time.monotonic() + limit
    while (b := busy()) > 0.2 and time.monotonic() < deadline:
        time.sleep(2)
    return b


# -- the child: one method, one run after a warm-up, one JSON line -------------------


def child(method: str, n: int, run_index: int, path: str, cb: dict, attn: str) -> dict:
    import resource

    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # eos_token_id=-1 warns on every generate call
    torch.manual_seed(0)
    if method == "step":
        from rejoinder.formats import Encoding
        from rejoinder.generation.config import DecodingConfig
        from rejoinder.generation.continuous import StepDecoder
        from rejoinder.generation.model import ConversationModel

        decoder = StepDecoder(ConversationModel.from_pretrained(path), max_rows=64, prefix_bytes=0)
        # min_new_tokens: the format's end-of-text must not end a row early (eos=-1 elsewhere)
        step_config = DecodingConfig(max_new_tokens=NEW, min_new_tokens=NEW)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn).eval()
    config = GenerationConfig(
        do_sample=False, max_new_tokens=NEW, eos_token_id=-1, pad_token_id=50256
    )
    if method == "cb":
        from transformers import ContinuousBatchingConfig

        manager = model.init_continuous_batching(
            generation_config=config,
            continuous_batching_config=ContinuousBatchingConfig(allow_block_sharing=False, **cb),
        )
        manager.start()

    def run(batch: list[list[int]]) -> tuple[float, list[float], list[list[int]]]:
        start = time.perf_counter()
        done: dict[int, tuple[float, list[int]]] = {}
        if method == "cb":
            ids = {manager.add_request(p, max_new_tokens=NEW): i for i, p in enumerate(batch)}
            while len(done) < len(batch):
                result = manager.get_result(timeout=60)
                if result is None:
                    raise RuntimeError(
                        f"CB stalled: {manager.background_thread_status.fatal_error}"
                    )
                if result.error is not None:
                    raise RuntimeError(result.error)
                if result.is_finished():
                    done[ids[result.request_id]] = (
                        time.perf_counter() - start,
                        list(result.generated_tokens),
                    )
        elif method == "step":
            for i, p in enumerate(batch):
                decoder.submit(i, Encoding(input_ids=p), step_config)
            while decoder.busy:
                for row, token in decoder.step():
                    if token is None:
                        done[row.key] = (time.perf_counter() - start, list(row.new))
        elif method == "single":
            for i, p in enumerate(batch):
                out = model.generate(torch.tensor([p]), generation_config=config)
                done[i] = (time.perf_counter() - start, out[0, len(p) :].tolist())
        else:  # "batch": one left-padded generate call
            width = max(map(len, batch))
            ids = torch.tensor([[50256] * (width - len(p)) + p for p in batch])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
            out = model.generate(ids, attention_mask=mask, generation_config=config)
            wall = time.perf_counter() - start
            done = {i: (wall, out[i, width:].tolist()) for i in range(len(batch))}
        wall = time.perf_counter() - start
        return (
            wall,
            [done[i][0] for i in range(len(batch))],
            [done[i][1] for i in range(len(batch))],
        )

    batch = prompts(n, run_index)
    if method == "single":
        batch = batch[:SINGLE_CAP]  # one at a time is slow; throughput does not depend on n
    with torch.inference_mode():
        run(prompts(2, -1))  # warm-up
        cpu = time.process_time()
        wall, latencies, outputs = run(batch)
        cpu = time.process_time() - cpu
    if method == "cb":
        manager.stop(block=True, timeout=10)
    assert all(len(o) == NEW for o in outputs), [len(o) for o in outputs]
    if method == "single" and len(batch) < n:
        # The queue of n served one at a time: request i waits for the i before it.
        mean = wall / len(batch)
        latencies = [(i + 1) * mean for i in range(n)]
    return {
        "tokens_s": len(batch) * NEW / wall,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "outputs": outputs,
        "measured": len(batch),
        "cpu_share": cpu / wall / torch.get_num_threads(),
        "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def measure(method: str, n: int, run_index: int, args, path: Path) -> dict:
    cb = {
        "page_size": args.page_size,
        "num_blocks": args.num_blocks,
        "max_batch_tokens": args.max_batch_tokens,
    }
    spec = [method, n, run_index, str(path), cb, args.attn]
    best = None
    for attempt in range(1 + (args.retries if args.wait_quiet else 0)):
        others = quiet() if args.wait_quiet else None
        out = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{method} {n} failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["others_busy"], result["attempts"] = others, attempt + 1
        if best is None or result["cpu_share"] > best["cpu_share"]:
            best = result
        if result["cpu_share"] >= FULL_CPU:
            break
    return best


# -- transformers serve ----------------------------------------------------------------

CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{{ eos_token }}{% endfor %}"


def chat_copy(path: Path) -> Path:
    """The checkpoint with a chat template (DialoGPT's: turns ended by end-of-text)."""
    out = HERE / ".cache" / "gpt2-124M-chat"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
        if not (out / name).exists():
            try:
                os.link(path / name, out / name)
            except OSError:
                shutil.copy(path / name, out / name)
    tok = json.loads((path / "tokenizer_config.json").read_text())
    tok["chat_template"] = CHAT_TEMPLATE
    (out / "tokenizer_config.json").write_text(json.dumps(tok, indent=2))
    return out


async def load(url: str, model: str, concurrency: int, requests: int) -> dict:
    import httpx

    latencies: list[float] = []
    generated = errors = 0
    left = list(range(requests))
    first_error = None

    async def worker(client, w: int):
        nonlocal generated, errors, first_error
        while left:
            i = left.pop()
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"Hello there, user {w}, ask {i}."}],
                "max_tokens": NEW,
                "temperature": 0,
            }
            t = time.perf_counter()
            r = await client.post(url + "/v1/chat/completions", json=body)
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                errors += 1
                first_error = first_error or f"{r.status_code} {r.text[:300]}"
                continue
            generated += r.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client, w) for w in range(concurrency)))
        wall = time.perf_counter() - start
    return {
        "requests": requests,
        "errors": errors,
        "first_error": first_error,
        "tokens_s": generated / wall,
        "tokens": generated,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


def server_cpu(pid: int) -> float:
    """CPU seconds (user and system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(args, path: Path, which: str) -> dict | str:
    """One closed-loop point (concurrency 8) against `transformers serve
    --continuous-batching` or `rejoinder serve` (its default scheduler); a string says why
    there is none."""
    import httpx

    url = f"http://127.0.0.1:{args.port}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{which}-serve-"))
    if which == "transformers":
        model = chat_copy(path)
        command = [
            str(Path(sys.executable).parent / "transformers"),
            "serve",
            str(model),
            "--continuous-batching",
            "--device",
            "cpu",
            "--attn-implementation",
            args.attn,
            "--cb-num-blocks",
            str(args.num_blocks),
            "--cb-max-batch-tokens",
            str(args.max_batch_tokens),
            "--port",
            str(args.port),
            "--host",
            "127.0.0.1",
        ]
    else:
        model = path
        command = [
            sys.executable,
            "-m",
            "rejoinder",
            "serve",
            str(path),
            "--port",
            str(args.port),
            "--db",
            f"sqlite:///{tmp}/sessions.db",
            "--max-batch",
            "32",
        ]
    log_path = tmp / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    server = subprocess.Popen(
        command,
        stdout=log_path.open("w"),  # noqa: SIM115 (the server's, while it runs)
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                return "did not start:\n" + log_path.read_text()[-3000:]
            time.sleep(0.5)
        warm = asyncio.run(load(url, str(model), 2, 2))  # loads the model, starts CB
        if warm["errors"]:
            return f"warm-up failed: {warm['first_error']}\n" + log_path.read_text()[-3000:]
        runs = []
        for _ in range(args.repeats):
            others = quiet() if args.wait_quiet else None
            cpu, wall = server_cpu(server.pid), time.perf_counter()
            runs.append(asyncio.run(load(url, str(model), 8, args.serve_requests)))
            wall = time.perf_counter() - wall
            runs[-1]["others_busy"] = others
            runs[-1]["cpu_share"] = (server_cpu(server.pid) - cpu) / wall / (os.cpu_count() or 1)
        runs.sort(key=lambda r: r["tokens_s"])
        return runs[len(runs) // 2]
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


# -- the table -------------------------------------------------------------------------


NAMES = {
    "single": "generate, one at a time",
    "batch": "generate, left-padded batch",
    "cb": "transformers CB",
    "step": "rejoinder StepDecoder",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="N=8 only, 1 run, no serve")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each figure (3; median)")
    ap.add_argument("--sizes", default="8,32", help="concurrent requests (8,32)")
    ap.add_argument(
        "--methods",
        default="single,batch,cb" + (",step" if STEP else ""),
        help="of single,batch,cb,step (default: all there are)",
    )
    ap.add_argument(
        "--attn",
        default="sdpa",
        help="sdpa (default) or eager (CB: paged|eager); generate and CB only",
    )
    ap.add_argument("--page-size", type=int, default=64, help="CB tokens per page (64)")
    ap.add_argument("--num-blocks", type=int, default=128, help="CB cache blocks (128)")
    ap.add_argument("--max-batch-tokens", type=int, default=1024, help="CB tokens a step (1024)")
    ap.add_argument(
        "--no-wait-quiet",
        dest="wait_quiet",
        action="store_false",
        help="run at once, even while others use the cores (default: wait up to 90 s)",
    )
    ap.add_argument(
        "--retries", type=int, default=3, help="reruns of a run that lost its cores (3)"
    )
    ap.add_argument("--no-serve", action="store_true", help="skip the two servers")
    ap.add_argument("--serve-requests", type=int, default=32, help="requests a serve run (32)")
    ap.add_argument("--port", type=int, default=8766)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return 0
    if args.quick:
        args.sizes, args.repeats, args.no_serve = "8", 1, True
    path = checkpoint()
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = args.methods.split(",")
    print(
        f"GPT-2 124M (random), {NEW} new greedy tokens a request, prompts of 8-64 tokens, "
        f"{os.cpu_count()} cores (load {os.getloadavg()[0]:.1f}), median of {args.repeats} "
        f"runs; attention {args.attn}; CB page_size={args.page_size} "
        f"num_blocks={args.num_blocks} max_batch_tokens={args.max_batch_tokens}",
        flush=True,
    )
    print(
        f"{'method':<28} {'N':>3} {'tokens/s':>9} {'p50 s':>7} {'p99 s':>7} {'CPU':>5} "
        f"{'RSS GB':>6}  greedy rows equal to"
    )
    for n in sizes:
        runs: dict[str, list[dict]] = {m: [] for m in methods}
        for r in range(args.repeats):  # interleaved: a busy spell on the machine hits all alike
            for m in methods:
                runs[m].append(measure(m, n, r, args, path))
        best = {}
        for m in methods:
            best[m] = x = sorted(runs[m], key=lambda x: x["tokens_s"])[len(runs[m]) // 2]
            same = []
            for ref in ("single", "batch"):
                if m not in ("single", ref) and ref in runs:
                    pairs = [
                        (a, b)
                        for ra, rb in zip(runs[m], runs[ref], strict=True)
                        for a, b in zip(ra["outputs"], rb["outputs"], strict=False)
                    ]
                    same.append(f"{sum(a == b for a, b in pairs)}/{len(pairs)} {ref}")
            same = ", ".join(same)
            star = "*" if x["measured"] < n else " "
            print(
                f"{NAMES[m]:<28} {n:>3} {x['tokens_s']:>9.1f} {x['p50']:>6.2f}{star} "
                f"{x['p99']:>6.2f}{star} {x['cpu_share']:>5.0%} {x['rss_gb']:>6.2f}  {same}",
                flush=True,
            )
        if "single" in best:
            base = best["single"]["tokens_s"]
            gains = ", ".join(
                f"{m} {best[m]['tokens_s'] / base:.2f}x" for m in methods if m != "single"
            )
            print(f"{'':<32} vs one at a time: {gains}", flush=True)
    if any(x["measured"] < max(sizes) for x in runs.get("single", [])):
        print(
            f"* one at a time serves {SINGLE_CAP} requests a run; the latencies of a queue of "
            "N are projected from its mean time a request"
        )
    print(
        "CPU: the run's CPU time over wall time x threads (well below 100%: others held the cores)"
    )
    if not args.no_serve:
        print(
            f"closed loop on /v1/chat/completions, concurrency 8, {args.serve_requests} requests "
            f"a run, max_tokens {NEW}, temperature 0, median of {args.repeats} runs:"
        )
        for which, name in (
            ("transformers", "transformers serve --continuous-batching"),
            ("rejoinder", "rejoinder serve"),
        ):
            r = serve(args, path, which)
            if isinstance(r, str):
                print(f"{name}: {r}")
                continue
            print(
                f"{name:<42} {r['tokens_s']:>6.1f} tokens/s ({r['tokens']} tokens), "
                f"p50 {r['p50']:.2f} s, p99 {r['p99']:.2f} s, CPU {r['cpu_share']:.0%}, "
                f"{r['errors']} errors" + (f" (first: {r['first_error']})" if r["errors"] else ""),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
