"""Decoding speed and memory: rejoinder's backends against plain transformers and
DialoGPT's own MMI loop, on 2 CPU cores with GPT-2 124M (random weights).

    python benchmarks/decode.py [--repeats 3]

Each figure is measured in a fresh child process (so peak memory is its own), with
a 64-token context and exactly 64 new tokens (min_new_tokens forces the length):

1. one top-p reply: plain `transformers` generate (float32, eager) vs rejoinder's
   torch and ctranslate2 (int8) backends, tokens/s;
2. an MMI reply with 10 candidates, 124M forward + 124M reverse: rejoinder (batched
   sampling, one padded scoring pass per model, ctranslate2 int8) vs DialoGPT's
   interactive algorithm re-implemented faithfully (one sampled candidate at a time
   with a KV cache, then one reverse-model loss per candidate), seconds;
3. peak RSS of each.
Targets: fastest backend >= 2.5x transformers; MMI >= 5x faster; int8 <= half the
memory of float32 torch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONTEXT, NEW = 64, 64


def checkpoints() -> tuple[Path, Path]:
    root = HERE / ".cache"
    fwd, rev = root / "gpt2-124M-fwd", root / "gpt2-124M-rev"
    from rejoinder.modeling import init_checkpoint

    if not (fwd / "config.json").exists():
        init_checkpoint(fwd, size="124M", seed=0, overwrite=True)
    if not (rev / "config.json").exists():
        init_checkpoint(rev, size="124M", seed=1, format_settings={"reverse": True}, overwrite=True)
    return fwd, rev


CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(2)
mode, fwd, rev = sys.argv[1], sys.argv[2], sys.argv[3]
CONTEXT, NEW = 64, 64
ids = torch.randint(0, 50000, (1, CONTEXT), generator=torch.Generator().manual_seed(0))
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if mode == "transformers":
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(fwd, attn_implementation="eager").eval()
    kw = dict(do_sample=True, top_p=0.9, max_new_tokens=NEW, min_new_tokens=NEW, pad_token_id=50256)
    with torch.inference_mode():
        m.generate(ids, **kw)  # warm-up
        t = time.perf_counter(); m.generate(ids, **kw); dt = time.perf_counter() - t
elif mode in ("torch", "ctranslate2"):
    from rejoinder import ConversationModel
    bot = ConversationModel.from_pretrained(fwd, backend=mode, compute_type="int8")
    from rejoinder.tokenizers import gpt2_tokenizer
    text = gpt2_tokenizer().decode(ids[0].tolist())
    kw = dict(preset="nucleus", max_new_tokens=NEW, min_new_tokens=NEW)
    enc = bot.encode([text], NEW)
    bot.generate([text], **kw)
    t = time.perf_counter(); bot.generate([text], **kw); dt = time.perf_counter() - t
elif mode == "mmi-rejoinder":
    from rejoinder import ConversationModel
    bot = ConversationModel.from_pretrained(
        fwd, reverse=rev, backend="ctranslate2", compute_type="int8")
    from rejoinder.tokenizers import gpt2_tokenizer
    text = gpt2_tokenizer().decode(ids[0].tolist())
    kw = dict(preset="mmi", mmi_candidates=10, max_new_tokens=NEW, min_new_tokens=NEW)
    bot.rerank([text], **kw)
    t = time.perf_counter(); bot.rerank([text], **kw); dt = time.perf_counter() - t
elif mode == "mmi-dialogpt":
    # DialoGPT's interactive MMI: sample candidates one by one with a KV cache, then one
    # reverse-model loss per candidate, pick the best.
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM
    f = AutoModelForCausalLM.from_pretrained(fwd).eval()
    r = AutoModelForCausalLM.from_pretrained(rev).eval()
    def sample_one():
        past, out, cur = None, [], ids
        for step in range(NEW):
            o = f(cur, past_key_values=past, use_cache=True)
            past, logits = o.past_key_values, o.logits[:, -1]
            if step < NEW:  # min length: never end early
                logits[:, 50256] = -float("inf")
            probs = F.softmax(logits, -1)
            sp, si = probs.sort(descending=True)
            keep = sp.cumsum(-1) - sp < 0.9
            sp = sp * keep
            tok = si.gather(-1, torch.multinomial(sp / sp.sum(), 1))
            out.append(tok.item()); cur = tok
        return out
    def run():
        cands = [sample_one() for _ in range(10)]
        losses = []
        for c in cands:
            inp = torch.tensor([c + [50256] + ids[0].tolist()])
            labels = inp.clone(); labels[:, : len(c) + 1] = -100
            losses.append(r(inp, labels=labels).loss.item())
        return cands[min(range(10), key=losses.__getitem__)]
    with torch.inference_mode():
        run()
        t = time.perf_counter(); run(); dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "peak": peak()}))
"""


def measure(mode: str, fwd: Path, rev: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(fwd), str(rev)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    fwd, rev = checkpoints()
    modes = ["transformers", "torch", "ctranslate2", "mmi-dialogpt", "mmi-rejoinder"]
    results = {}
    for mode in modes:
        runs = [measure(mode, fwd, rev) for _ in range(args.repeats)]
        results[mode] = {k: statistics.median(r[k] for r in runs) for k in ("seconds", "peak")}
        print(
            f"  {mode}: {results[mode]['seconds']:.2f} s, "
            f"peak {results[mode]['peak'] / 2**20:.0f} MiB"
        )
    base = results["transformers"]["seconds"]
    print(
        f"\nGPT-2 124M (random), {CONTEXT}-token context, {NEW} new tokens, 2 threads, "
        f"median of {args.repeats}"
    )
    print(f"{'run':<40} {'seconds':>8} {'tokens/s':>9} {'peak MiB':>9} {'speed-up':>9}")
    for mode, label in [
        ("transformers", "one top-p reply: transformers (fp32)"),
        ("torch", "one top-p reply: rejoinder torch"),
        ("ctranslate2", "one top-p reply: rejoinder ct2 int8"),
    ]:
        r = results[mode]
        print(
            f"{label:<40} {r['seconds']:>8.2f} {NEW / r['seconds']:>9.1f} "
            f"{r['peak'] / 2**20:>9.0f} {base / r['seconds']:>8.2f}x"
        )
    slow = results["mmi-dialogpt"]["seconds"]
    for mode, label in [
        ("mmi-dialogpt", "MMI x10: DialoGPT's loop (fp32)"),
        ("mmi-rejoinder", "MMI x10: rejoinder ct2 int8, batched"),
    ]:
        r = results[mode]
        print(
            f"{label:<40} {r['seconds']:>8.2f} {10 * NEW / r['seconds']:>9.1f} "
            f"{r['peak'] / 2**20:>9.0f} {slow / r['seconds']:>8.2f}x"
        )
    best = min(results["torch"]["seconds"], results["ctranslate2"]["seconds"])
    mem = results["ctranslate2"]["peak"] / results["torch"]["peak"]
    print(
        f"\nfastest backend vs transformers >= 2.5x: {base / best:.2f}x; "
        f"MMI >= 5x: {slow / results['mmi-rejoinder']['seconds']:.2f}x; "
        f"int8 memory / fp32 torch memory <= 0.5: {mem:.2f}"
    )


if __name__ == "__main__":
    main()
