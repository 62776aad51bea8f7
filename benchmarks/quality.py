"""Reply quality of the quickstart against a plain hand-written training loop.

    python benchmarks/quality.py [--minutes 15] [--baseline-minutes 11] [--skip-baseline]

Side by side, on the same machine and the same Chit-Chat splits:

1. `rejoinder quickstart --no-chat` with its defaults (a fresh output directory):
   test perplexity per word and per token, and Entropy-4 / Dist-2 of nucleus sampling
   against MMI reranking on the same test contexts;
2. the baseline the issue names: a plain PyTorch loop (4 layers, width 256, a
   4,096-token byte-level BPE, pad-to-longest random batches of 16 dialogues cut to
   256 tokens, AdamW at a constant 5e-4) trained for --baseline-minutes, scored on
   the same test responses the same way (each given the latest turns before it that
   fit 256 tokens) with the same per-word definition.

Per word = exp(total NLL of the reference responses / (their whitespace words + one
end of turn each)). Targets: quickstart per word <= 350; MMI raises both Entropy-4
and Dist-2 over nucleus sampling.

The diversity metrics of about 120 sampled replies move by several points from one
sampling seed to the next, as much as MMI moves them. So after the quickstart (whose
report is seed 0) the same models reply to the same test contexts with --seeds seeds
in all, and the target is judged on the means over those seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_quickstart(minutes: float, out: Path) -> tuple[dict, float]:
    start = time.monotonic()
    command = [sys.executable, "-m", "rejoinder", "quickstart", "--no-chat"]
    command += ["--minutes", str(minutes), "--out", str(out)]
    done = subprocess.run(command, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"quickstart failed with exit code {done.returncode}")
    wall = time.monotonic() - start
    return json.loads((out / "report" / "metrics.json").read_text()), wall


def run_baseline(data: Path, minutes: float) -> dict:
    """The hand-written loop; per-word and per-token perplexity on the test responses."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from rejoinder.data.records import read_dialogues
    from rejoinder.tokenizers import train_bpe

    torch.manual_seed(0)
    train = [d for d in read_dialogues(data, "train") if len(d.turns) > 1]
    test = [d for d in read_dialogues(data, "test") if len(d.turns) > 1]
    tok = train_bpe((t.text for d in train for t in d.turns), 4096)
    eos = tok.eos_token_id

    def encode(d):  # DialoGPT's format: turns joined by end-of-text, loss on responses
        ids, labels = [], []
        for i, turn in enumerate(d.turns):
            piece = tok(turn.text).input_ids + [eos]
            ids += piece
            labels += piece if i > 0 else [-100] * len(piece)
        return ids, labels

    def pad(rows, value):
        width = max(len(r) for r in rows)
        return torch.tensor([r + [value] * (width - len(r)) for r in rows])

    def batch(items):
        ids, labels = zip(*items, strict=True)
        mask = pad([[1] * len(r) for r in ids], 0)
        return pad(list(ids), eos), pad(list(labels), -100), mask

    examples = [encode(d) for d in train]
    examples = [(i[-256:], lab[-256:]) for i, lab in examples]
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok),
            n_layer=4,
            n_embd=256,
            n_head=4,
            n_positions=1024,
            bos_token_id=eos,
            eos_token_id=eos,
        )
    )
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    rng = random.Random(0)
    end = time.monotonic() + minutes * 60
    steps = 0
    model.train()
    while time.monotonic() < end:
        ids, labels, mask = batch(rng.sample(examples, 16))
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps += 1
    model.eval()
    nll = tokens = words = 0
    with torch.inference_mode():  # each response given the latest 256 tokens before it
        for d in test:
            pieces = [tok(t.text).input_ids + [eos] for t in d.turns]
            for i in range(1, len(pieces)):
                response = pieces[i][:255]
                context = [x for p in pieces[:i] for x in p][-(256 - len(response)) :]
                x = torch.tensor([context + response])
                logp = torch.log_softmax(model(x).logits[0, :-1], -1)
                target = x[0, 1:]
                n = len(response)
                nll -= float(logp[-n:].gather(1, target[-n:, None]).sum())
                tokens += n
                words += len(d.turns[i].text.split()) + 1
    return {
        "per_word": math.exp(nll / words),
        "per_token": math.exp(nll / tokens),
        "steps": steps,
    }


def diversity_over_seeds(out: Path, result: dict, seeds: int) -> dict[str, dict[str, list]]:
    """Entropy-4 and Dist-2 of nucleus and MMI for seeds 0..seeds-1 (0 is the report's)."""
    from rejoinder.evaluation.metrics import score_replies
    from rejoinder.evaluation.run import generate_replies, load_test_set
    from rejoinder.generation import ConversationModel

    keys = ("entropy4", "dist2", "avg_len")
    figures = {p: {k: [result["systems"][p][k]] for k in keys} for p in ("nucleus", "mmi")}
    model = ConversationModel.from_pretrained(out / "forward", reverse=out / "reverse")
    test = load_test_set(out / "data", "test", result["contexts"])
    for seed in range(1, seeds):
        for preset in ("nucleus", "mmi"):
            replies = generate_replies(model, test.contexts, preset, seed)
            scores = score_replies(replies, test.references, result["tokenize"])
            for k in keys:
                figures[preset][k].append(scores[k])
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--baseline-minutes", type=float, default=11.0)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--seeds", type=int, default=5, help="sampling seeds for Entropy-4 / Dist-2")
    ap.add_argument("--out", help="quickstart directory (default: a fresh temporary one)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="rejoinder-quality-")) / "quickstart"
    result, wall = run_quickstart(args.minutes, out)
    base = None if args.skip_baseline else run_baseline(out / "data", args.baseline_minutes)
    seeds = diversity_over_seeds(out, result, max(args.seeds, 1))

    ppl = result["perplexity"]
    print(f"\nquickstart: {wall / 60:.1f} min wall, budget {args.minutes:g} min; {out}")
    print(f"{'figure':<44} {'quickstart':>11} {'baseline':>9} {'ratio':>7}")
    for key, label in [("per_word", "test perplexity per word"), ("per_token", "per token")]:
        ours = ppl[key]
        theirs = base[key] if base else None
        ratio = f"{theirs / ours:>6.2f}x" if theirs else ""
        shown = f"{theirs:>9.1f}" if theirs else f"{'-':>9}"
        print(f"{label:<44} {ours:>11.1f} {shown} {ratio}")
    if base:
        print(f"  (baseline: {base['steps']} steps in {args.baseline_minutes:g} min)")
    n_seeds = len(seeds["nucleus"]["dist2"])
    header = f"{'Entropy-4 nucleus -> MMI':>26} {'Dist-2 nucleus -> MMI':>24} {'length':>14}"
    print(f"\n{'seed':<6} {header}")
    for i in range(n_seeds):
        n, m = seeds["nucleus"], seeds["mmi"]
        print(
            f"{i:<6} {n['entropy4'][i]:>15.2f} -> {m['entropy4'][i]:.2f} "
            f"{n['dist2'][i]:>15.2f} -> {m['dist2'][i]:.2f} "
            f"{n['avg_len'][i]:>6.1f} -> {m['avg_len'][i]:.1f}"
        )
    means = {p: {k: statistics.mean(v) for k, v in seeds[p].items()} for p in seeds}
    n, m = means["nucleus"], means["mmi"]
    print(
        f"{'mean':<6} {n['entropy4']:>15.2f} -> {m['entropy4']:.2f} "
        f"{n['dist2']:>15.2f} -> {m['dist2']:.2f} {n['avg_len']:>6.1f} -> {m['avg_len']:.1f}"
    )
    wins = sum(
        all(seeds["mmi"][k][i] > seeds["nucleus"][k][i] for k in ("entropy4", "dist2"))
        for i in range(n_seeds)
    )
    per_word = ppl["per_word"]
    raised = all(m[k] > n[k] for k in ("entropy4", "dist2"))
    print(
        f"\nper word <= 350: {per_word:.1f} ({'met' if per_word <= 350 else 'missed'}); "
        f"MMI raises Entropy-4 and Dist-2 on the mean of {n_seeds} seeds: "
        f"{'yes' if raised else 'no'} (both raised with {wins} of {n_seeds} seeds)"
    )


if __name__ == "__main__":
    main()
