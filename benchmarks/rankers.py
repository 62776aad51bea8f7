"""Rankers end to end on a synthetic Reddit dump whose feedback depends on what replies say.

    python benchmarks/rankers.py [--comments 200000] [--minutes 4] [--contexts 100]

`python -m rejoinder.testing synth-reddit` makes the dump (cached beside this file);
its feedback is documented in `rejoinder.testing.feedback`: replies that end with an
informative clause ("according to the official documentation", …) earn more upvotes,
questions get more direct replies, challenges start deeper threads. Then, each step the
real CLI in a child process:

1. Extraction: `data build --pairs updown,width,depth,human_vs_rand` against the
   dialogue build of the same dump, side by side: pairs/s and comments/s.
2. Three `small` models, each trained for the same CPU budget (`--minutes`, alone on
   the machine): an updown ranker (`--model.objective rank --data.kinds [updown]`), a
   forward and a reverse generator on the dump's dialogues.
3. `eval-ranker` on the test pairs: the ranker's pairwise accuracy per kind next to
   DialogRPT's two baselines, the forward and the reverse model's likelihoods.
4. Replies to the same test contexts with nucleus sampling, MMI (the reverse model),
   the ranker (10 candidates reranked by it alone) and both: each set's mean ranker
   score, and the share of replies with an informative clause (the cue the synthetic
   upvotes reward: a judge that is not the ranker).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def dump(n: int) -> Path:
    from rejoinder.testing.reddit import synth_reddit

    path = HERE / ".cache" / f"RC_feedback_{n}.zst"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        synth_reddit(n, path, seed=0)
    return path


def cli(*argv: str) -> tuple[float, str]:
    """A rejoinder command in a child process: (seconds, stdout)."""
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "rejoinder", *argv], capture_output=True,
                          text=True, env=env)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"rejoinder {' '.join(argv[:3])} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done.stdout


def train(work: Path, name: str, data: Path, minutes: float, *extra: str) -> Path:
    out = work / name
    budget = f"00:00:{int(minutes):02d}:{int(minutes % 1 * 60):02d}"
    cli("train", "--data.path", str(data), "--model.init", "small", "--model.max_tokens", "128",
        "--data.batch_tokens", "4096", "--trainer.max_steps", "100000",
        "--trainer.max_time", budget, "--trainer.val_check_interval", "100",
        "--trainer.enable_progress_bar", "false", "--out", str(out), *extra)  # fmt: skip
    return out


def replies(forward: Path, reverse: Path, ranker: Path, contexts: list[list[str]]) -> dict:
    from rejoinder import ConversationModel
    from rejoinder.modeling.ranker import Ranker
    from rejoinder.testing.feedback import INFORMATIVE

    bot = ConversationModel.from_pretrained(forward, reverse=reverse, rankers={"updown": ranker})
    judge = Ranker.from_pretrained(ranker)
    common = dict(max_new_tokens=32, seed=0)
    systems = {
        "nucleus": dict(preset="nucleus"),
        "mmi (reverse)": dict(preset="mmi", ranker_weights={"updown": 0.0}),
        "ranker": dict(preset="mmi", reverse_weight=0.0),
        "ranker + reverse": dict(preset="mmi"),
    }
    rows = {}
    for name, options in systems.items():
        start = time.perf_counter()
        texts = bot.generate_batch(contexts, **options, **common)
        seconds = time.perf_counter() - start
        scores = judge.score_pairs(list(zip(contexts, texts, strict=True)))
        cue = sum(any(c in t for c in INFORMATIVE) for t in texts) / len(texts)
        rows[name] = {
            "ranker score": sum(scores) / len(scores),
            "informative": cue,
            "words": sum(len(t.split()) for t in texts) / len(texts),
            "seconds": seconds,
        }
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comments", type=int, default=200_000)
    ap.add_argument("--minutes", type=float, default=4.0, help="CPU budget of each model")
    ap.add_argument("--contexts", type=int, default=100)
    ap.add_argument("--work", default=str(HERE / ".cache" / "rankers"))
    args = ap.parse_args()
    from transformers.utils import logging

    logging.disable_progress_bar()  # the models this process loads: no bars in the table
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rc = dump(args.comments)
    split = ["--valid", "0.01", "--test", "0.02"]
    kinds = "updown,width,depth,human_vs_rand"
    t_pairs, _ = cli("data", "build", "reddit", "--comments", str(rc), "--pairs", kinds,
                     "--out", str(work / "pairs"), *split)  # fmt: skip
    t_dialogues, _ = cli("data", "build", "reddit", "--comments", str(rc),
                         "--out", str(work / "dialogues"), *split)  # fmt: skip
    pm = json.loads((work / "pairs" / "manifest.json").read_text())
    dm = json.loads((work / "dialogues" / "manifest.json").read_text())
    n_pairs, n_dialogues = pm["pairs"]["total"], dm["dialogues"]["total"]
    print(f"\n{args.comments:,} synthetic comments (2 cores)")
    print(f"{'build':<10} {'seconds':>8} {'records':>9} {'records/s':>10} {'comments/s':>11}")
    for name, t, n in (("pairs", t_pairs, n_pairs), ("dialogues", t_dialogues, n_dialogues)):
        print(f"{name:<10} {t:>8.1f} {n:>9,} {n / t:>10,.0f} {args.comments / t:>11,.0f}")
    print(f"pairs build / dialogues build time: {t_pairs / t_dialogues:.2f}x")
    per_kind = ", ".join(f"{k} {v['total']:,}" for k, v in pm["kinds"].items())
    print(f"pairs by kind: {per_kind}")

    ranker = train(work, "ranker", work / "pairs", args.minutes,
                   "--model.objective", "rank", "--data.kinds", "[updown]")  # fmt: skip
    forward = train(work, "forward", work / "dialogues", args.minutes)
    reverse = train(work, "reverse", work / "dialogues", args.minutes, "--model.reverse", "true")
    _, table = cli("eval-ranker", f"updown ranker={ranker}", "--data", str(work / "pairs"),
                   "--forward", str(forward), "--reverse", str(reverse),
                   "--out", str(work / "eval"))  # fmt: skip
    print(f"\npairwise accuracy on the test pairs, each model trained {args.minutes:g} min")
    print(table.strip())

    from rejoinder.data.pairs import read_pairs

    seen, contexts = set(), []
    for p in read_pairs(work / "pairs", "test"):
        if p.kind == "updown" and p.context and p.context not in seen:
            seen.add(p.context)
            contexts.append(list(p.context))
    contexts = contexts[: args.contexts]
    rows = replies(forward, reverse, ranker, contexts)
    base = rows["nucleus"]
    print(f"\nreplies to {len(contexts)} test contexts (10 candidates for the reranked ones)")
    print(f"{'system':<18} {'ranker score':>13} {'x nucleus':>10} {'informative':>12} "
          f"{'words':>6} {'seconds':>8}")  # fmt: skip
    for name, r in rows.items():
        print(f"{name:<18} {r['ranker score']:>13.3f} "
              f"{r['ranker score'] / base['ranker score']:>9.2f}x {r['informative']:>11.1%} "
              f"{r['words']:>6.1f} {r['seconds']:>8.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
