"""Benchmark of `rejoinder data build` on a synthetic Reddit dump: local engine vs Spark.

    python benchmarks/data_pipeline.py [--comments 1000000] [--repeats 3] [--engines local,spark]

Generates the dump once (cached beside this file), then runs each engine end to end
(read, trees, filters, parquet) as the real CLI in a child process, sampling the memory
of the whole process tree (the Spark JVM included) every 50 ms. Prints the median of
the repeats. Targets for the local engine: >= 30,000 comments/s, peak RSS < 1.5 GB.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent


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


def run(engine: str, comments: Path) -> tuple[float, int, str]:
    """One build in a child process: (seconds, peak RSS of its process tree, summary)."""
    out = Path(tempfile.mkdtemp(prefix="bench-data-")) / "ds"
    cmd = [sys.executable, "-m", "rejoinder", "data", "build", "reddit",
           "--comments", str(comments), "--out", str(out), "--engine", engine]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    shutil.rmtree(out.parent, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{stderr[-2000:]}")
    return seconds, peak, stdout.splitlines()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comments", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engines", default="local,spark")
    args = ap.parse_args()
    comments = dump(args.comments)
    results = {}
    for engine in args.engines.split(","):
        runs = []
        for i in range(args.repeats):
            seconds, peak, summary = run(engine, comments)
            print(
                f"  {engine} run {i + 1}: {seconds:.1f} s, peak {peak / 2**20:.0f} MiB; {summary}"
            )
            runs.append((seconds, peak))
        results[engine] = (
            statistics.median(s for s, _ in runs),
            statistics.median(p for _, p in runs),
        )

    n = args.comments
    print(f"\n{n:,} synthetic comments, {psutil.cpu_count()} cores, median of {args.repeats}")
    print(f"{'engine':<8} {'seconds':>9} {'comments/s':>12} {'peak MiB':>10} {'vs spark':>9}")
    for engine, (seconds, peak) in results.items():
        ratio = results["spark"][0] / seconds if "spark" in results else float("nan")
        rate, mib = n / seconds, peak / 2**20
        print(f"{engine:<8} {seconds:>9.1f} {rate:>12,.0f} {mib:>10,.0f} {ratio:>8.2f}x")
    if "local" in results:
        seconds, peak = results["local"]
        ok_speed, ok_mem = n / seconds >= 30_000, peak < 1.5 * 2**30
        print(f"\nlocal target >= 30,000 comments/s: {'met' if ok_speed else 'MISSED'}; "
              f"peak RSS < 1.5 GB: {'met' if ok_mem else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
