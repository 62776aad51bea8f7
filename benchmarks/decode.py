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
3. peak RSS of each child (its own VmHWM, not the parent's carried over);
4. side by side in one process, calls interleaved (so both sides see the same machine
   at the same moment), at batch 1 and 8, top-k 50 and pure top-p: rejoinder's
   CTranslate2 backend against raw CTranslate2 (the same Generator, the same prompt
   ids and sampling options, called directly), and rejoinder's torch backend against
   plain `generate` on the same weights.
Targets: fastest backend >= 2.5x transformers; MMI >= 5x faster; int8 <= half the
memory of float32 torch; rejoinder's CTranslate2 >= 0.97x raw CTranslate2 and torch
>= 1.0x plain generate, at batch 1 and 8.
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
import json, random, sys, time
mode, fwd, rev, top_k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
CONTEXT, NEW = 64, 64
# A text whose DialoGPT encoding (its tokens, then end-of-text) is exactly CONTEXT ids,
# so every run, rejoinder's (which encodes text) and the baselines' (which take ids),
# sees the same prompt.
from tokenizers import Tokenizer
tok = Tokenizer.from_file(fwd + "/tokenizer.json")
words = sorted(t[1:] for t in tok.get_vocab() if t[:1] == "\u0120" and t[1:].isalpha())
rng, picked = random.Random(0), []
while True:
    n = len(tok.encode(" ".join(picked)).ids) if picked else 0
    if n == CONTEXT - 1:
        break
    picked = picked[:-1] if n > CONTEXT - 1 else picked + [rng.choice(words)]
text = " ".join(picked)
prompt = tok.encode(text).ids + [50256]
if mode in ("transformers", "torch", "mmi-dialogpt"):  # the CTranslate2 runs never load torch
    import torch
    torch.set_num_threads(2)
    ids = torch.tensor([prompt])
def peak():
    # This process's own peak: VmHWM starts again at execve, while ru_maxrss carries
    # the peak of the parent that forked it (which may have built 124M checkpoints).
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
if mode == "transformers":
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(fwd, attn_implementation="eager").eval()
    kw = dict(do_sample=True, top_p=0.9, max_new_tokens=NEW, min_new_tokens=NEW, pad_token_id=50256)
    if top_k >= 0:  # -1: leave it out, as a plain call does (transformers then cuts at 50)
        kw["top_k"] = top_k
    with torch.inference_mode():
        m.generate(ids, **kw)  # warm-up
        t = time.perf_counter(); m.generate(ids, **kw); dt = time.perf_counter() - t
elif mode in ("torch", "ctranslate2"):
    from rejoinder import ConversationModel
    bot = ConversationModel.from_pretrained(fwd, backend=mode, compute_type="int8")
    kw = dict(preset="nucleus", max_new_tokens=NEW, min_new_tokens=NEW, top_k=top_k or None)
    assert bot.encode([text], NEW).input_ids == prompt
    bot.generate([text], **kw)
    t = time.perf_counter(); bot.generate([text], **kw); dt = time.perf_counter() - t
elif mode == "mmi-rejoinder":
    from rejoinder import ConversationModel
    bot = ConversationModel.from_pretrained(
        fwd, reverse=rev, backend="ctranslate2", compute_type="int8")
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
            inp = torch.tensor([c + [50256] + prompt])
            labels = inp.clone(); labels[:, : len(c) + 1] = -100
            losses.append(r(inp, labels=labels).loss.item())
        return cands[min(range(10), key=losses.__getitem__)]
    with torch.inference_mode():
        run()
        t = time.perf_counter(); run(); dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "peak": peak()}))
"""


SIDE = r"""
import json, statistics, sys, time
kind, fwd, text = sys.argv[1], sys.argv[2], sys.argv[6]
top_k, batch, rounds = (int(x) for x in sys.argv[3:6])
NEW = 64
from rejoinder import ConversationModel
bot = ConversationModel.from_pretrained(fwd, backend=kind, compute_type="int8")
prompt = bot.encode([text], NEW).input_ids
contexts = [[text]] * batch
kw = dict(preset="nucleus", max_new_tokens=NEW, min_new_tokens=NEW, top_k=top_k or None)
def ours():
    bot.generate_batch(contexts, **kw)
if kind == "ctranslate2":
    gen, tok = bot._ct2.generator, bot.tokenizer
    start = [tok.convert_ids_to_tokens(prompt)] * batch
    end = tok.convert_ids_to_tokens(bot.format.stop_ids)
    def theirs():
        gen.generate_batch(start, max_length=NEW, min_length=NEW, end_token=end,
                           include_prompt_in_result=False, sampling_topk=top_k,
                           sampling_topp=0.9)
else:
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(2)
    plain = AutoModelForCausalLM.from_pretrained(fwd).eval()
    ids = torch.tensor([prompt] * batch)
    gkw = dict(do_sample=True, top_p=0.9, top_k=top_k, max_new_tokens=NEW, min_new_tokens=NEW,
               pad_token_id=50256, attention_mask=torch.ones_like(ids))
    def theirs():
        with torch.inference_mode():
            plain.generate(ids, **gkw)
ours(); theirs()  # warm-up
times = {"ours": [], "theirs": []}
order = [("ours", ours), ("theirs", theirs)]
for r in range(rounds):
    for name, fn in order if r % 2 == 0 else order[::-1]:  # each goes first half the time
        t = time.perf_counter(); fn(); times[name].append(time.perf_counter() - t)
print(json.dumps({k: statistics.median(v) for k, v in times.items()}))
"""


def side_by_side(kind: str, top_k: int, batch: int, rounds: int, fwd: Path, text: str) -> dict:
    """Median seconds of rejoinder's `kind` backend and its raw baseline, interleaved."""
    cmd = [sys.executable, "-c", SIDE, kind, str(fwd), str(top_k), str(batch), str(rounds), text]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"side by side {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def context_text(fwd: Path) -> str:
    """The CONTEXT-token text the children build (the same picking, run here)."""
    import random

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(fwd / "tokenizer.json"))
    words = sorted(t[1:] for t in tok.get_vocab() if t[:1] == "\u0120" and t[1:].isalpha())
    rng, picked = random.Random(0), []
    while True:
        n = len(tok.encode(" ".join(picked)).ids) if picked else 0
        if n == CONTEXT - 1:
            return " ".join(picked)
        picked = picked[:-1] if n > CONTEXT - 1 else picked + [rng.choice(words)]


def measure(mode: str, top_k: int, fwd: Path, rev: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(fwd), str(rev), str(top_k)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# (mode, top_k, label): top_k -1 leaves it out of a plain transformers call, which then
# cuts at its default of 50; 0 turns the cut off.
SINGLE = [
    [
        ("transformers", -1, "transformers (fp32), plain call"),
        ("torch", 50, "rejoinder torch"),
        ("ctranslate2", 50, "rejoinder ct2 int8"),
    ],
    [
        ("transformers", 0, "transformers (fp32), top_k=0"),
        ("torch", 0, "rejoinder torch"),
        ("ctranslate2", 0, "rejoinder ct2 int8"),
    ],
]
MMI = [
    ("mmi-dialogpt", 0, "DialoGPT's loop (fp32)"),
    ("mmi-rejoinder", 0, "rejoinder ct2 int8, batched"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved calls a side (5)")
    ap.add_argument("--batches", default="1,8", help="batch sizes side by side (1,8)")
    ap.add_argument("--only-side", action="store_true", help="only the side-by-side table")
    args = ap.parse_args()
    fwd, rev = checkpoints()
    if not args.only_side:
        separate(args, fwd, rev)
    text = context_text(fwd)
    print(f"\nside by side, interleaved, median of {args.rounds} calls a side, {NEW} new tokens")
    print(f"{'backend':<14} {'batch':>5} {'top_k':>5} {'rejoinder s':>11} {'raw s':>8} "
          f"{'ratio':>6}  target")  # fmt: skip
    for kind, target in (("ctranslate2", 0.97), ("torch", 1.0)):
        for batch in [int(b) for b in args.batches.split(",")]:
            for top_k in (50, 0):
                r = side_by_side(kind, top_k, batch, args.rounds, fwd, text)
                ratio = r["theirs"] / r["ours"]
                print(f"{kind:<14} {batch:>5} {top_k:>5} {r['ours']:>11.3f} {r['theirs']:>8.3f} "
                      f"{ratio:>5.2f}x  >= {target}x")  # fmt: skip


def separate(args, fwd: Path, rev: Path) -> None:
    """Each backend alone in its own process: speed and peak memory."""
    results = {}
    for mode, top_k, _ in [*SINGLE[0], *SINGLE[1], *MMI]:
        runs = [measure(mode, top_k, fwd, rev) for _ in range(args.repeats)]
        r = {k: statistics.median(x[k] for x in runs) for k in ("seconds", "peak")}
        results[mode, top_k] = r
        print(f"  {mode} top_k={top_k}: {r['seconds']:.2f} s, peak {r['peak'] / 2**20:.0f} MiB")
    print(
        f"\nGPT-2 124M (random), {CONTEXT}-token context, {NEW} new tokens, 2 threads, "
        f"median of {args.repeats}"
    )
    print(f"{'run':<48} {'seconds':>8} {'tokens/s':>9} {'peak MiB':>9} {'speed-up':>9}")

    def rows(title, group, tokens):
        print(title)
        base = results[group[0][:2]]["seconds"]
        for mode, top_k, label in group:
            r = results[mode, top_k]
            print(
                f"  {label:<46} {r['seconds']:>8.2f} {tokens / r['seconds']:>9.1f} "
                f"{r['peak'] / 2**20:>9.0f} {base / r['seconds']:>8.2f}x"
            )

    rows("one reply, top-p 0.9 and transformers' implicit top-k 50, both sides", SINGLE[0], NEW)
    rows("one reply, pure top-p 0.9 (no top-k cut on either side)", SINGLE[1], NEW)
    rows("MMI reply, 10 candidates, 124M forward + 124M reverse", MMI, 10 * NEW)

    def speedup(group):
        base = results[group[0][:2]]["seconds"]
        return base / min(results[m, k]["seconds"] for m, k, _ in group[1:])

    mmi = results[MMI[0][:2]]["seconds"] / results[MMI[1][:2]]["seconds"]
    mem = results["ctranslate2", 0]["peak"] / results["torch", 0]["peak"]
    print(
        f"\nfastest backend vs transformers >= 2.5x: {speedup(SINGLE[0]):.2f}x "
        f"(pure top-p: {speedup(SINGLE[1]):.2f}x); MMI >= 5x: {mmi:.2f}x; "
        f"int8 memory / fp32 torch memory <= 0.5: {mem:.2f}"
    )


if __name__ == "__main__":
    main()
