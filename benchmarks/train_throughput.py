"""Training throughput of `rejoinder train` on the Chit-Chat dataset, with baselines.

    python benchmarks/train_throughput.py [--steps 20] [--size small] [--batch-tokens 2048]

Side by side, in one process, on the same data and model (GPT-2's vocabulary, the
`small` size, float32 on CPU):

1. `rejoinder train` (Lightning, token-budget batches): tokens/s, taken from its log;
2. a minimal hand-written PyTorch loop (forward, backward, clip, AdamW step) over the
   very same batches: tokens/s. Target: rejoinder >= 0.9 of it;
3. the same loop over pad-to-longest random batches of as many dialogues: the
   fraction of computed tokens that are not padding (target for rejoinder >= 0.9),
   and useful (non-padding) tokens/s.

Figures are medians over the steps after the first three (warm-up).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def dataset() -> Path:
    from rejoinder.data.build import BuildConfig, Source, build

    out = HERE / ".cache" / "chitchat"
    if not (out / "manifest.json").exists():
        build(BuildConfig(sources=[Source("chitchat")], out=str(out), force=True))
    return out


def loop(model, batches, steps: int) -> tuple[list[float], int, int]:
    """A plain training loop: per-step useful tokens/s, useful and computed tokens."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rates, useful, computed = [], 0, 0
    model.train()
    for batch in batches[:steps]:
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        n = int(batch["attention_mask"].sum())
        rates.append(n / (time.perf_counter() - start))
        useful += n
        computed += batch["input_ids"].numel()
    return rates, useful, computed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", default="small")
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    data = dataset()

    from transformers import GPT2LMHeadModel
    from transformers.utils import logging

    from rejoinder.cli import main as cli
    from rejoinder.formats import get_format
    from rejoinder.modeling.architectures import gpt2_config
    from rejoinder.tokenizers import gpt2_tokenizer
    from rejoinder.training.data import DialogueData, collate

    logging.set_verbosity_error()
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))

    # 1. rejoinder train, as a user runs it.
    cli(
        [
            "train",
            "--data.path",
            str(data),
            "--data.batch_tokens",
            str(args.batch_tokens),
            "--data.val_split",
            "none",
            "--model.init",
            args.size,
            "--model.max_tokens",
            str(args.max_tokens),
            "--trainer.max_steps",
            str(args.steps),
            "--trainer.log_every_n_steps",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            "--checkpoint_every",
            "100000",
            "--out",
            str(work / "model"),
        ]
    )
    with open(work / "model.run" / "logs" / "version_0" / "metrics.csv") as f:
        ours = [float(r["tok_s"]) for r in csv.DictReader(f) if r.get("tok_s")][3:]

    # The same batches, for the hand-written loop.
    tok = gpt2_tokenizer()
    fmt = get_format("dialogpt", tok, max_tokens=args.max_tokens)
    dm = DialogueData(str(data), batch_tokens=args.batch_tokens, val_split="none")
    dm.attach(fmt, "responses", args.max_tokens)
    loader = dm.loader(dm.train, True, 0)
    budget_batches = [b for _, b in zip(range(args.steps), loader, strict=False)]
    pad = tok.pad_token_id

    def fresh():
        torch.manual_seed(0)
        return GPT2LMHeadModel(gpt2_config(args.size, len(tok)))

    # 2. The plain loop over the same batches.
    plain, useful_b, computed_b = loop(fresh(), budget_batches, args.steps)
    # 3. Random pad-to-longest batches of as many dialogues as ours hold on average.
    per_batch = max(1, round(np.mean([len(b["input_ids"]) for b in budget_batches])))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(dm.train))
    random_batches = [
        collate([dm.train[i] for i in order[k : k + per_batch]], pad)
        for k in range(0, per_batch * args.steps, per_batch)
    ]
    rand, useful_r, computed_r = loop(fresh(), random_batches, args.steps)

    med = statistics.median
    ours_rate, plain_rate, rand_rate = med(ours), med(plain[3:]), med(rand[3:])
    print(
        f"\nChit-Chat, {args.size} model, GPT-2 vocabulary, float32, "
        f"{torch.get_num_threads()} threads, median of steps 4-{args.steps}"
    )
    print(f"{'':<34} {'useful tok/s':>13} {'non-pad share':>14} {'ratio':>7}")
    print(
        f"{'rejoinder train (token budget)':<34} {ours_rate:>13,.0f} "
        f"{useful_b / computed_b:>14.3f} {ours_rate / plain_rate:>6.2f}x"
    )
    print(
        f"{'plain loop, same batches':<34} {plain_rate:>13,.0f} {useful_b / computed_b:>14.3f} "
        f"{1:>6.2f}x"
    )
    print(
        f"{'plain loop, pad-to-longest random':<34} {rand_rate:>13,.0f} "
        f"{useful_r / computed_r:>14.3f} {rand_rate / plain_rate:>6.2f}x"
    )
    print(
        f"\nrejoinder vs plain loop >= 0.9: {'met' if ours_rate >= 0.9 * plain_rate else 'NO'}; "
        f"non-padding share >= 0.9: {'met' if useful_b / computed_b >= 0.9 else 'MISSED'}; "
        f"useful tok/s vs random batching: {ours_rate / rand_rate:.2f}x"
    )
    print("model FLOPs utilisation: needs a GPU (not measured on this machine)")


if __name__ == "__main__":
    main()
