"""The GPU check's driver: the tests marked `gpu`, then benchmarks/gpu_throughput.py, with
everything printed and every figure in one JSON file, DIR/gpu-check.json.

Run it through scripts/gpu-check.sh (`make gpu-check`), which picks the Python and
installs carried wheels first. Where torch sees no CUDA device it prints one line and
exits 0; `--device cpu` runs the whole check on the CPU at toy sizes instead.

Each phase runs in its own process with a time limit taken from one budget (--budget,
five minutes less some slack, counted from when gpu-check.sh started): a phase that
runs out is stopped, and what it had reported stays in the JSON, the tests not reached
listed as "not run". Stdlib only: the Python it runs under may hold nothing else.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STARTED = float(os.environ.get("GPU_CHECK_STARTED") or time.time())
BENCH_SECONDS = 120.0
"""What the benchmark is kept at least: the tests get the rest of the budget first."""
LOG_LINES = 20000
"""Lines of output kept in the JSON (the first tenth and the last of them)."""

PROBE = r"""
import importlib.metadata as md, json, os, platform, subprocess, sys

facts = {"python": platform.python_version(), "executable": sys.executable,
         "platform": platform.platform(), "cpus": os.cpu_count()}
names = ("torch", "transformers", "lightning", "peft", "tokenizers", "safetensors", "triton",
         "ctranslate2", "fastapi", "uvicorn", "pydantic", "sqlalchemy", "jsonargparse",
         "pytest", "numpy")
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
facts["packages"] = {name: version(name) for name in names}
try:
    import torch
except Exception as e:
    facts["torch_error"] = f"{type(e).__name__}: {e}"
else:
    facts.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                 cuda_available=torch.cuda.is_available(), gpus=[])
    if facts["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            facts["gpus"].append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                                  "capability": f"{p.major}.{p.minor}",
                                  "multiprocessors": p.multi_processor_count})
        facts["cudnn"] = torch.backends.cudnn.version()
        facts["bf16_supported"] = torch.cuda.is_bf16_supported()
    try:
        import ctranslate2
        facts["ctranslate2_cuda_devices"] = ctranslate2.get_cuda_device_count()
    except Exception as e:
        facts["ctranslate2_error"] = f"{type(e).__name__}: {e}"
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    facts["nvidia_smi"] = (smi.stdout or smi.stderr).strip() or None
except (OSError, subprocess.SubprocessError):
    facts["nvidia_smi"] = None
print(json.dumps(facts))
"""


class Check:
    """The check's record: what it printed, its phases, and the JSON written from them."""

    def __init__(self, out: Path | None, device: str):
        self.out = out
        self.log: list[str] = []
        self.lock = threading.Lock()
        self.data: dict = {
            "check": "rejoinder gpu-check",
            "status": "running",
            "device": device,
            "started": datetime.fromtimestamp(STARTED, UTC).isoformat(timespec="seconds"),
            "phases": [],
        }

    def say(self, line: str) -> None:
        with self.lock:
            print(line, flush=True)
            self.log.append(line)

    def write(self) -> None:
        if self.out is None:
            return
        self.data["seconds"] = round(time.time() - STARTED, 1)
        log = self.log
        if len(log) > LOG_LINES:
            head = LOG_LINES // 10
            cut = len(log) - LOG_LINES
            log = [*log[:head], f"[{cut} lines left out]", *log[head + cut :]]
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "gpu-check.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.data, "log": log}, indent=1))
        tmp.replace(path)

    def run(self, name: str, command: list[str], env: dict, timeout: float) -> dict:
        """Runs a phase, its output printed and logged as it comes; stops it at `timeout`."""
        self.say(f"== {name} (at most {timeout:.0f} s): {' '.join(command)}")
        start = time.monotonic()
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )

        def pump():
            for line in proc.stdout:
                self.say(line.rstrip("\n"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            code = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            timed_out = True
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                    code = proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    code = proc.wait()
                    break
        reader.join(timeout=10)
        seconds = round(time.monotonic() - start, 1)
        phase = {
            "name": name,
            "command": command,
            "returncode": code,
            "timed_out": timed_out,
            "seconds": seconds,
        }
        if timed_out:
            self.say(f"== {name}: stopped at its limit of {timeout:.0f} s")
        self.data["phases"].append(phase)
        self.write()
        return phase


def environment(python: str) -> dict:
    try:
        done = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=120)
        facts = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as e:
        return {"probe_error": f"{type(e).__name__}: {e}"}
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        facts["commit"] = head.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        facts["commit"] = None
    return facts


def test_results(path: Path, phase: dict) -> dict:
    """Per test: passed, failed, error (in a fixture), skipped (with the reason), or not
    run (the phase ended first); and the counts."""
    collected: list[str] = []
    results: dict[str, dict] = {}
    lines = path.read_text().splitlines() if path.is_file() else []
    for entry in map(json.loads, lines):
        if "collected" in entry:
            collected = entry["collected"]
            continue
        r = results.setdefault(
            entry["test"], {"test": entry["test"], "outcome": None, "seconds": 0.0}
        )
        r["seconds"] = round(r["seconds"] + entry["seconds"], 3)
        when, outcome = entry["when"], entry["outcome"]
        if outcome == "failed" and when in ("setup", "teardown"):
            outcome = "error"
        if r["outcome"] in (None, "passed") or outcome == "error":
            r["outcome"] = outcome
        if entry.get("reason"):
            r["reason"] = "\n".join(filter(None, [r.get("reason"), entry["reason"]]))
    ended = "it timed out" if phase["timed_out"] else f"pytest exited with {phase['returncode']}"
    for test in collected:
        if test not in results:
            results[test] = {
                "test": test,
                "outcome": "not run",
                "seconds": 0.0,
                "reason": f"the tests phase ended before it ({ended})",
            }
    order = {t: i for i, t in enumerate(collected)}
    listed = sorted(results.values(), key=lambda r: order.get(r["test"], -1))
    counts: dict[str, int] = {}
    for r in listed:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    return {"summary": counts, "results": listed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder for gpu-check.json (default: build/gpu-check)")
    ap.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default=os.environ.get("REJOINDER_GPU_CHECK_DEVICE") or "cuda",
        help="cpu: run the check on the CPU at toy sizes (no GPU needed)",
    )
    ap.add_argument("-k", dest="select", help="only the gpu tests that match (pytest's -k)")
    ap.add_argument(
        "--budget",
        type=float,
        default=285.0,
        help="seconds for the whole check, from when gpu-check.sh started",
    )
    ap.add_argument("--no-tests", action="store_true", help="leave the tests out")
    ap.add_argument("--no-bench", action="store_true", help="leave the benchmark out")
    ap.add_argument(
        "--bench-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an argument for benchmarks/gpu_throughput.py (repeatable)",
    )
    args = ap.parse_args()
    python = sys.executable
    out = Path(args.out) if args.out else ROOT / "build" / "gpu-check"
    check = Check(out, args.device)
    env = dict(os.environ)
    if importlib.util.find_spec("rejoinder") is None:  # not installed: the checkout's own
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])
        )
    env.update(
        PYTHONUNBUFFERED="1",
        REJOINDER_GPU_CHECK_DEVICE=args.device,
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
    )

    facts = environment(python)
    check.data["environment"] = facts
    setup = os.environ.get("GPU_CHECK_SETUP") or None  # what gpu-check.sh did first
    check.data["setup"] = setup
    skip = None
    if "torch" not in facts:
        skip = f"torch is not importable by {python} ({facts.get('torch_error') or facts})"
    elif args.device == "cuda" and not facts.get("cuda_available"):
        skip = (
            f"no CUDA device: torch {facts['torch']} sees none "
            "(--device cpu runs the check on the CPU at toy sizes)"
        )
    if skip:
        check.data.update(status="skipped", reason=skip)
        check.out = Path(args.out) if args.out else None  # a file only where one was asked for
        check.say(f"gpu-check: skipped: {skip}")
        check.write()
        return 0
    if setup:
        check.say(f"gpu-check: set-up: {setup}")
    gpus = ", ".join(g["name"] for g in facts.get("gpus", [])) or "no GPU"
    check.say(
        f"gpu-check on {args.device} ({gpus}): torch {facts['torch']} (CUDA "
        f"{facts.get('torch_cuda')}), python {facts['python']}; JSON in {out}"
    )
    check.write()

    def left() -> float:
        return args.budget - (time.time() - STARTED)

    problems = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        if not args.no_tests:
            results = Path(work) / "tests.jsonl"
            command = [
                python,
                "-m",
                "pytest",
                "tests/gpu",
                "-m",
                "gpu",
                "-p",
                "no:cacheprovider",
                "-q",
                "--durations=5",
            ]
            if args.select:
                command += ["-k", args.select]
            reserve = 0 if args.no_bench else BENCH_SECONDS
            phase = check.run(
                "tests",
                command,
                {**env, "REJOINDER_GPU_CHECK_RESULTS": str(results)},
                max(left() - reserve, 30),
            )
            tests = test_results(results, phase)
            check.data["tests"] = tests
            bad = [r for r in tests["results"] if r["outcome"] in ("failed", "error", "not run")]
            problems += [f"{r['test']}: {r['outcome']}" for r in bad]
            if phase["returncode"] not in (0, 5) and not bad:
                problems.append(f"pytest exited with {phase['returncode']}")
            check.write()
        if not args.no_bench:
            figures = Path(work) / "bench.json"
            timeout = max(left() - 5, 30)
            command = [
                python,
                "benchmarks/gpu_throughput.py",
                "--device",
                args.device,
                "--json",
                str(figures),
                "--seconds",
                f"{timeout - 10:.0f}",
                *args.bench_arg,
            ]
            phase = check.run("benchmark", command, env, timeout)
            bench = json.loads(figures.read_text()) if figures.is_file() else {}
            check.data["benchmark"] = bench
            check.data["targets"] = bench.get("targets", [])
            if phase["returncode"] != 0 or phase["timed_out"]:
                problems.append(
                    "the benchmark stopped at its time limit (its figures until then are kept)"
                    if phase["timed_out"]
                    else f"the benchmark exited with {phase['returncode']}"
                )

    check.data.update(status="failed" if problems else "passed", problems=problems)
    if "tests" in check.data:
        counts = check.data["tests"]["summary"]
        check.say(
            "gpu-check: tests: "
            + (", ".join(f"{n} {k}" for k, n in counts.items()) or "none collected")
        )
        for r in check.data["tests"]["results"]:
            if r["outcome"] != "passed":
                first = (r.get("reason") or "").strip().splitlines()[:1]
                check.say(f"  {r['outcome']}: {r['test']}: {first[0] if first else ''}")
    for t in check.data.get("targets", []):
        verdict = {True: "met", False: "MISSED", None: "not judged"}[t["met"]]
        value = "n/a" if t["value"] is None else t["value"]
        check.say(f"gpu-check: target {t['target']}: {value} -> {verdict}")
    for p in problems:
        check.say(f"gpu-check: problem: {p}")
    check.say(
        f"gpu-check: {check.data['status']} in {time.time() - STARTED:.0f} s; "
        f"everything is in {out / 'gpu-check.json'}"
    )
    check.write()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
