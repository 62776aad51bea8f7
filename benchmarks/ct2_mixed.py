"""Why CTranslate2 serves mixed traffic slower than identical traffic: raw CTranslate2,
no server, GPT-2 124M (random weights, int8), 32 prompts, side by side in one run.

    python benchmarks/ct2_mixed.py [--repeats 3]

The same 32 prompts, decoded five ways (tokens/s, the median of --repeats, rounds
interleaved):

- identical: one call, every row 32 tokens at temperature 1 (the closed loop at 32);
- own lengths: one call, each row stopped at its own length (8..56, mean 32) by the
  callback, as rejoinder's streams are: the batch thins out as rows end;
- 3 temperatures, serial: mixed traffic as serve_load.py sends it (lengths 8..56 and
  temperatures 0.7, 0.85 or 1). A call has one temperature (CTranslate2 4.8 has no
  per-row temperature and no logits processors in Python), so one call per
  temperature, one after another, as rejoinder's gathering batcher runs them;
- 3 temperatures, 2 replicas: the same calls side by side on two replicas of the
  model (each with every core), which a server could do instead;
- identical, 2 replicas: the closed loop's call, its rows split between the replicas.

Ratios are against `identical` on one replica. Issue 28 asked for mixed traffic at
>= 0.8x identical: `own lengths` is the most any scheduler gets from CTranslate2 for
rows that end at their own lengths, and the split by temperature costs more than that;
replicas do not win it back on 2 cores (top-p sampling over the whole vocabulary is
much of each step), so rejoinder serves with one.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ROWS, TOKENS = 32, 32


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import ctranslate2
    from serve_load import checkpoint
    from tokenizers import Tokenizer

    from rejoinder.generation.backends.ctranslate2 import converted

    model = checkpoint()
    where = str(converted(model, "int8"))
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    prompts = [
        tok.encode(f"Hello there, this is user {w}, ask {w + 40}.<|endoftext|>").tokens
        for w in range(ROWS)
    ]
    rng = random.Random(ROWS)
    asks = [
        (rng.randint(TOKENS // 4, TOKENS * 7 // 4), rng.choice([0.7, 0.85, 1.0]))
        for _ in range(ROWS)
    ]
    threads = os.cpu_count() or 1
    generators = {
        n: ctranslate2.Generator(
            where, device="cpu", compute_type="int8", inter_threads=n, intra_threads=threads
        )
        for n in (1, 2)
    }

    def call(g, rows, temperature, limits, replicas) -> int:
        made = [0] * len(rows)

        def callback(step) -> bool:
            made[step.batch_id] += 1
            return made[step.batch_id] >= limits[step.batch_id]

        g.generate_batch(
            [prompts[i] for i in rows],
            max_length=max(limits),
            sampling_topk=0,
            sampling_topp=0.9,
            sampling_temperature=temperature,
            include_prompt_in_result=False,
            callback=callback,
            max_batch_size=-(-len(rows) // replicas) if replicas > 1 else 0,
        )
        return sum(made)

    groups: dict[float, list[int]] = {}
    for i, (_, t) in enumerate(asks):
        groups.setdefault(t, []).append(i)
    everyone = list(range(ROWS))

    def mixed(replicas: int) -> int:
        g = generators[replicas]
        work = [(rows, t, [asks[i][0] for i in rows]) for t, rows in groups.items()]
        if replicas == 1:
            return sum(call(g, *w, 1) for w in work)
        made: list[int] = []
        side = [
            threading.Thread(target=lambda w=w: made.append(call(g, *w, replicas))) for w in work
        ]
        for t in side:
            t.start()
        for t in side:
            t.join()
        return sum(made)

    ways = {
        "identical": lambda: call(generators[1], everyone, 1.0, [TOKENS] * ROWS, 1),
        "own lengths": lambda: call(generators[1], everyone, 1.0, [a for a, _ in asks], 1),
        "3 temperatures, serial": lambda: mixed(1),
        "3 temperatures, 2 replicas": lambda: mixed(2),
        "identical, 2 replicas": lambda: call(generators[2], everyone, 1.0, [TOKENS] * ROWS, 2),
    }
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for way in ways.values():
        way()  # warm-up
    for _ in range(args.repeats):
        for name, way in ways.items():
            start = time.perf_counter()
            tokens = way()
            rates[name].append(tokens / (time.perf_counter() - start))
    base = statistics.median(rates["identical"])
    print(f"raw CTranslate2 {ctranslate2.__version__}, GPT-2 124M int8, {ROWS} prompts, {threads} "
          f"cores, median of {args.repeats}")  # fmt: skip
    print(f"{'way':<28} {'tokens/s':>9} {'x identical':>11}")
    for name, r in rates.items():
        m = statistics.median(r)
        print(f"{name:<28} {m:>9.1f} {m / base:>10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
