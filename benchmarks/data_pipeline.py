"""Benchmark of `rejoinder data build` on a synthetic Reddit dump: local engine vs Spark.

    python benchmarks/data_pipeline.py [--comments 1000000] [--repeats 3] [--engines local,spark]

Generates the dump once (cached beside this file), then runs each engine end to end
(read, trees, filters, parquet) as the real CLI in a child process, sampling the memory
of the whole process tree (the Spark JVM included) every 50 ms. The local engine runs
twice each repeat, side by side: with its processes (one a core, or --workers) and in one
process (REJOINDER_WORKERS=1), so that a busy machine slows both alike; the runs
alternate. Prints the median of the repeats, with the CPU seconds of each build's
process tree (what a busy machine does not change) and the load average before the runs.

Targets for the local engine (issue 28): >= 100,000 comments/s on 2 cores, and a peak RSS
of the process tree no higher than 724 MiB for a million comments.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
TARGET_RATE = 100_000
TARGET_MIB = 724
ONE = "local-1"
"""The local engine in one process: the row it is compared with."""


def dump(n: int) -> Path:
    cache = HERE / ".cache"
    cache.mkdir(exist_ok=True)
    path = cache / f"RC_synth_{n}.zst"
    if not path.exists():
        from rejoinder.testing.reddit import synth_reddit

        t = time.perf_counter()
        synth_reddit(n, path, seed=0)
        print(f"generated {n:,} comments in {time.perf_counter() - t:.1f} s -> {path}")
    return path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(engine: str, comments: Path, workers: int | None) -> tuple[float, float, int, str]:
    """One build in a child process: (seconds, CPU seconds of its process tree, peak RSS
    of its process tree, summary)."""
    out = Path(tempfile.mkdtemp(prefix="bench-data-")) / "ds"
    cmd = [sys.executable, "-m", "rejoinder", "data", "build", "reddit",
           "--comments", str(comments), "--out", str(out),
           "--engine", "local" if engine == ONE else engine]  # fmt: skip
    env = dict(os.environ)
    if engine == ONE:
        env["REJOINDER_WORKERS"] = "1"
    elif workers is not None:
        env["REJOINDER_WORKERS"] = str(workers)
    cpu = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    stdout, stderr = proc.communicate()
    cpu = _children_cpu() - cpu  # the child's workers are reaped by it, so counted in it
    shutil.rmtree(out.parent, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{stderr[-2000:]}")
    return seconds, cpu, peak, stdout.splitlines()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comments", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engines", default="local,spark")
    ap.add_argument("--workers", type=int, default=None, help="local engine's processes")
    args = ap.parse_args()
    comments = dump(args.comments)
    engines = args.engines.split(",")
    if "local" in engines:
        engines.insert(engines.index("local") + 1, ONE)
    load = os.getloadavg()
    runs: dict[str, list[tuple[float, float, int]]] = {e: [] for e in engines}
    for i in range(args.repeats):
        for engine in engines:
            seconds, cpu, peak, summary = run(engine, comments, args.workers)
            print(
                f"  {engine} run {i + 1}: {seconds:.1f} s, {cpu:.1f} cpu s, "
                f"peak {peak / 2**20:.0f} MiB; {summary}"
            )
            runs[engine].append((seconds, cpu, peak))
    results = {
        engine: tuple(statistics.median(r[k] for r in done) for k in range(3))
        for engine, done in runs.items()
    }

    n = args.comments
    cores = psutil.cpu_count()
    print(f"\n{n:,} synthetic comments, {cores} cores, median of {args.repeats}; "
          f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    print(f"{'engine':<8} {'seconds':>8} {'cpu s':>7} {'comments/s':>11} {'peak MiB':>9} "
          f"{'vs 1 proc':>9} {'vs target':>9} {'vs spark':>8}")  # fmt: skip
    for engine, (seconds, cpu, peak) in results.items():
        ratios = [
            f"{results[o][0] / seconds:.2f}x" if o in results else "-" for o in (ONE, "spark")
        ]
        rate = n / seconds
        print(f"{engine:<8} {seconds:>8.1f} {cpu:>7.1f} {rate:>11,.0f} {peak / 2**20:>9,.0f} "
              f"{ratios[0]:>9} {rate / TARGET_RATE:>8.2f}x {ratios[1]:>8}")  # fmt: skip
    if "local" in results:
        seconds, _, peak = results["local"]
        ok_speed, ok_mem = n / seconds >= TARGET_RATE, peak <= TARGET_MIB * 2**20
        print(f"\nlocal target >= {TARGET_RATE:,} comments/s: {'met' if ok_speed else 'MISSED'}; "
              f"peak RSS <= {TARGET_MIB} MiB: {'met' if ok_mem else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
