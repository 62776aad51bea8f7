"""Training and decoding throughput on one GPU: tokens/s and model FLOPs utilisation.

    python benchmarks/gpu_throughput.py [--json FILE] [--seconds 150] [--device cuda|cpu]

Training: GPT-2 124M as `rejoinder train --model.init 124M` makes it (GPT-2's vocabulary,
random weights, dropout 0.1), on dense rows of 1,024 random token ids, each step what
`--trainer.precision bf16-mixed` runs without Lightning's loop around it: bf16 autocast
over float32 weights, backward, gradient clipping at 1.0, AdamW (fused). Variants:
- eager with rejoinder's chunked loss (`modeling.loss.mean_lm_loss`, the training
  default), at batch 8, 16, 32, ... up to the largest that fits in memory;
- eager with transformers' own loss (the whole batch's logits at once), at that batch
  or the largest below it that fits;
- the chunked loss with TF32 allowed for float32 products (rejoinder leaves PyTorch's
  default, "highest": the chunked loss's output-layer gradient is a float32 product);
- torch.compile, measured last: the trunk compiled under the chunked loss, then the
  whole model with transformers' loss (nanoGPT's set-up), while time is left (an alarm
  stops a compilation that outlasts --seconds).
Each: warm-up steps, then at least 3 timed steps and a second. MFU = tokens/s x FLOPs
per token / peak, with 6N + 12 L d T FLOPs per token (PaLM's estimate, as nanoGPT: N
the parameters but the position embeddings, L layers, width d, T tokens per row). The
peak assumed is the GPU's dense bf16 tensor figure from NVIDIA's datasheet (PEAKS); the
output also gives a measured peak (one 8192^3 bf16 product) and MFU against it.

Decoding: the same 124M as a checkpoint, 33-token prompts, exactly 128 new tokens each
(greedy, min_new_tokens forcing the length), at batch 1 and 32: rejoinder's torch
backend in bf16 and CTranslate2 (int8_float16), both on the GPU, each through its
backend's `generate` (tokens counted from what it returned).

Targets: MFU >= 40% (bf16); decoding at batch 32 >= 10x batch 1 in tokens/s.

--device cpu runs it all at toy sizes (the `tiny` model, 64-token rows, float32,
CTranslate2 int8, no torch.compile), so the script and its JSON can be checked without
a GPU; no peak is assumed for a CPU. Every figure goes to --json as soon as it is
measured, so a run stopped early keeps what it had. A part that cannot run (no
CTranslate2, out of memory, out of time) is recorded with the reason.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

# Dense bf16 tensor-core FLOP/s per GPU, from NVIDIA's datasheets (without sparsity).
# The first name contained in the device's name wins.
PEAKS = [
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
]
MFU_TARGET = 0.40
DECODE_TARGET = 10.0
MIN_SECONDS = 1.0
"""Each measurement runs at least this long (--min-seconds)."""


class Report:
    """The figures so far, printed as they come and rewritten to the JSON file each time."""

    def __init__(self, path: str | None, seconds: float):
        self.path = Path(path) if path else None
        self.start = time.monotonic()
        self.deadline = self.start + seconds
        self.data: dict = {"training": {"variants": []}, "decoding": {"runs": []}, "skipped": []}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def skip(self, part: str, reason: str) -> None:
        self.data["skipped"].append({"part": part, "reason": reason})
        say(f"{part}: skipped ({reason})")
        self.save()

    def save(self) -> None:
        self.data["seconds"] = round(time.monotonic() - self.start, 2)
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1))
            tmp.replace(self.path)


def say(line: str) -> None:
    print(line, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reason_of(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]


# -- peaks ---------------------------------------------------------------------------------


def assumed_peak(device: torch.device) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "no datasheet peak is assumed for a CPU"
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAKS:
        if key in name:
            return flops, f"{key} dense bf16 tensor peak (datasheet)"
    return None, f"no datasheet peak known for {name}; see mfu_of_measured"


def measured_peak(device: torch.device, n: int, dtype: torch.dtype, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n product (the mean of `repeats` after three warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


# -- training ------------------------------------------------------------------------------


def make_model(size: str, vocab: int, device: torch.device):
    from transformers import AutoModelForCausalLM

    from rejoinder.modeling.architectures import model_config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config("gpt2", size, vocab))
    return model.to(device).train()


def flops_per_token(model, seq: int) -> tuple[int, float]:
    """(N, 6N + 12 L d T): N counts every parameter (tied ones once) but the positions'."""
    c = model.config
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    return n, 6 * n + 12 * c.n_layer * c.n_embd * seq


def chunked_loss(model, batch):
    from rejoinder.modeling.loss import mean_lm_loss

    return mean_lm_loss(model, batch)


def plain_loss(model, batch):
    return model(**batch).loss


def rows(vocab: int, batch: int, seq: int, device: torch.device) -> dict:
    ids = torch.randint(0, vocab, (batch, seq), device=device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def timed_steps(model, opt, batch, loss_fn, device, autocast, warmup: int) -> dict:
    """Warm-up steps, then timed ones (at least 3 and a second): steps, seconds, loss."""

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(warmup):
        step()
    sync(device)
    steps, start = 0, time.perf_counter()
    while steps < 3 or (time.perf_counter() - start < MIN_SECONDS and steps < 50):
        loss = step()
        steps += 1
    sync(device)
    seconds = time.perf_counter() - start
    value = float(loss.detach())
    if not math.isfinite(value):
        raise RuntimeError(f"the loss became {value}")
    return {"steps": steps, "seconds": round(seconds, 6), "loss": round(value, 4)}


def out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and ("out of memory" in text or "ALLOC_FAILED" in text)
    )


@dataclass
class Trainee:
    """What every training variant shares."""

    size: str
    vocab: int
    seq: int
    device: torch.device

    @property
    def autocast(self) -> bool:  # bf16 autocast on a GPU; float32 on a CPU
        return self.device.type == "cuda"


def run_variant(report, t: Trainee, name, loss_fn, batches, growing=False, compile_what=None,
                tf32=False) -> dict | None:  # fmt: skip
    """Trains variant `name` at the batches of `batches` in turn: `growing`, until one
    does not fit (the figures are the last that did), else until one fits. Every try is
    recorded; returns the variant's entry, or None where no batch fitted."""
    entry = {"name": name, "tried": []}
    report.data["training"]["variants"].append(entry)
    model = make_model(t.size, t.vocab, t.device)
    n, fpt = flops_per_token(model, t.seq)
    report.data["training"].update(parameters=n, flops_per_token=fpt, seq=t.seq)
    if compile_what == "trunk":
        model.transformer = torch.compile(model.transformer)
    runner = torch.compile(model) if compile_what == "model" else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=t.device.type == "cuda")
    before = torch.get_float32_matmul_precision()
    if tf32:
        torch.set_float32_matmul_precision("high")
    warmup = 3 if compile_what else 2
    best = None
    try:
        for b in batches:
            if report.left() < 5:
                entry["tried"].append({"batch": b, "error": "out of time"})
                break
            if t.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(t.device)
            batch = rows(t.vocab, b, t.seq, t.device)
            try:
                figures = timed_steps(runner, opt, batch, loss_fn, t.device, t.autocast, warmup)
            except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
                if not out_of_memory(e):
                    raise
                entry["tried"].append({"batch": b, "error": "out of memory"})
                opt.zero_grad(set_to_none=True)
                if growing:
                    break
                continue
            finally:
                del batch
            figures.update(batch=b, tokens_per_s=round(b * t.seq * figures["steps"] /
                                                        figures["seconds"], 1))  # fmt: skip
            if t.device.type == "cuda":
                figures["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            entry["tried"].append(figures)
            best = figures
            report.save()
            if not growing:
                break
    finally:
        torch.set_float32_matmul_precision(before)
        del model, runner, opt
        free(t.device)
    if best is None:
        entry["error"] = "no batch fitted"
        say(f"train {name}: no batch fitted: {entry['tried']}")
        report.save()
        return None
    peak, measured = report.data["peak"]["assumed_flops"], report.data["peak"]["measured_flops"]
    achieved = best["tokens_per_s"] * fpt
    entry.update(best, achieved_flops=round(achieved))
    entry["mfu"] = round(achieved / peak, 4) if peak else None
    entry["mfu_of_measured"] = round(achieved / measured, 4)
    mfu = f"MFU {entry['mfu']:.1%}" if peak else "MFU n/a"
    say(
        f"train {name}: batch {best['batch']}x{t.seq}: {best['tokens_per_s']:,.0f} tok/s, {mfu}, "
        f"{entry['mfu_of_measured']:.1%} of the measured peak, loss {best['loss']}"
    )
    report.save()
    return entry


def training(report, t: Trainee, start: int, most: int) -> dict[str, list[int]]:
    """The eager variants; returns, per loss, the batches to try compiled (largest first)."""
    doubling = []
    while start <= most:
        doubling.append(start)
        start *= 2
    eager = run_variant(report, t, "eager, chunked loss", chunked_loss, doubling, growing=True)
    if eager is None:
        return {}

    def down_from(batch):  # that batch, or the halves below it where more memory is needed
        return [batch, *[x for x in reversed(doubling) if x < batch]]

    plain = run_variant(
        report, t, "eager, transformers' loss", plain_loss, down_from(eager["batch"])
    )
    if t.device.type == "cuda":
        tf32 = "eager, chunked loss, TF32"
        run_variant(report, t, tf32, chunked_loss, down_from(eager["batch"]), tf32=True)
    else:
        report.skip("eager, chunked loss, TF32", "TF32 is a CUDA setting")
    fits = {"chunked": down_from(eager["batch"])}
    if plain is not None:
        fits["plain"] = down_from(plain["batch"])
    return fits


def compiled(report, t: Trainee, fits: dict[str, list[int]], allowed: bool, needs: float):
    """The torch.compile variants, last: compiling takes the longest and may not fit."""
    for name, what, loss in (
        ("compiled trunk, chunked loss", "trunk", "chunked"),
        ("compiled model, transformers' loss", "model", "plain"),
    ):
        if loss not in fits:
            report.skip(name, "no eager batch fitted")
        elif not allowed:
            report.skip(name, "torch.compile is measured on a GPU (--compile to try it here)")
        elif report.left() < needs:
            report.skip(
                name, f"{max(report.left(), 0):.0f} s left; compiling needs about {needs:.0f}"
            )
        else:
            loss_fn = chunked_loss if loss == "chunked" else plain_loss
            # Compiling cannot be asked to hurry: at the deadline an alarm interrupts it.
            signal.signal(signal.SIGALRM, out_of_time)
            signal.setitimer(signal.ITIMER_REAL, max(report.left(), 1))
            try:
                run_variant(report, t, name, loss_fn, fits[loss], compile_what=what)
            except Exception as e:  # a compiler failure is a finding, not the end of the run
                report.data["training"]["variants"][-1]["error"] = reason_of(e)
                say(f"train {name}: failed: {reason_of(e)}")
                report.save()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)


def out_of_time(signum, frame):
    raise TimeoutError("out of time: the benchmark's deadline came first")


# -- decoding ------------------------------------------------------------------------------

CT2_PROBE = """
import sys, ctranslate2
model, device, compute_type = sys.argv[1:]
generator = ctranslate2.Generator(model, device=device, compute_type=compute_type)
generator.generate_batch([["<|endoftext|>"]], max_length=1)
"""


def contexts(bot, count: int, length: int, new: int, seed: int = 0) -> list[list[str]]:
    """`count` different one-turn contexts whose prompts are `length` tokens each, so that
    no row of a batch is padded (CTranslate2 decodes prompts of one length together)."""
    words = sorted(t[1:] for t in bot.tokenizer.get_vocab() if t[:1] == "Ġ" and t[1:].isalpha())
    rng, out = random.Random(seed), []
    while len(out) < count:
        picked: list[str] = []
        for _ in range(500):
            n = len(bot.encode([" ".join(picked)], new).input_ids)
            if n == length:
                break
            picked = picked[:-1] if n > length else [*picked, rng.choice(words)]
        out.append([" ".join(picked)])
    return out


def decode_rate(backend, job, device, batch: int) -> dict:
    backend.generate(job)  # warm-up
    sync(device)
    runs, tokens, start = 0, 0, time.perf_counter()
    lengths: list[int] = []
    while runs < 2 or (time.perf_counter() - start < MIN_SECONDS and runs < 20):
        out = backend.generate(job)
        lengths = [len(seqs[0]) for seqs in out]
        tokens += sum(lengths)
        runs += 1
    sync(device)
    seconds = time.perf_counter() - start
    return {
        "batch": batch,
        "runs": runs,
        "tokens": tokens,
        "seconds": round(seconds, 6),
        "tokens_per_s": round(tokens / seconds, 1),
        "new_tokens_per_row": [min(lengths), max(lengths)],
    }


def decoding(report, args, device, work: Path) -> None:
    from rejoinder import ConversationModel
    from rejoinder.generation.backends import Job
    from rejoinder.generation.backends.torch import TorchBackend
    from rejoinder.generation.config import decoding_config
    from rejoinder.modeling import init_checkpoint

    cuda = device.type == "cuda"
    ckpt = init_checkpoint(work / args.size, size=args.size, seed=0)
    dtype = torch.bfloat16 if cuda else torch.float32
    bot = ConversationModel.from_pretrained(ckpt, device=str(device), dtype=dtype)
    fmt = bot.format
    prompts = [bot.encode(c, args.new) for c in contexts(bot, max(args.batches), 33, args.new)]
    config = decoding_config("greedy", max_new_tokens=args.new, min_new_tokens=args.new)
    d = report.data["decoding"]
    d.update(new_tokens=args.new, prompt_tokens=sorted({len(p.input_ids) for p in prompts}))

    def measure(engine, detail, backend):
        for b in args.batches:
            if report.left() < 5:
                report.skip(f"decoding {engine} batch {b}", "out of time")
                continue
            run = {
                "engine": engine,
                **detail,
                **decode_rate(backend, Job.of(fmt, prompts[:b], config), device, b),
            }
            d["runs"].append(run)
            say(
                f"decode {engine} ({', '.join(map(str, detail.values()))}) batch {b}: "
                f"{run['tokens_per_s']:,.0f} tok/s"
            )
            report.save()

    measure(
        "torch",
        {"dtype": str(dtype).removeprefix("torch.")},
        TorchBackend(bot.model, bot.tokenizer, fmt.stop_ids),
    )
    tokenizer = bot.tokenizer
    del bot
    free(device)
    compute_type = args.compute_type or ("int8_float16" if cuda else "int8")
    try:
        import ctranslate2  # after torch: the two OpenMP runtimes then agree

        from rejoinder.generation.backends.ctranslate2 import Ct2Backend, converted
    except ImportError:
        report.skip("decoding ctranslate2", "ctranslate2 is not installed")
        return
    if report.left() < 20:
        report.skip("decoding ctranslate2", f"{max(report.left(), 0):.0f} s left")
        return
    # One token in a process of its own first: a CTranslate2 built for another CUDA can
    # fail to load its libraries there, or end the process that tried.
    where = converted(ckpt, compute_type)
    probe = subprocess.run(
        [sys.executable, "-c", CT2_PROBE, str(where), device.type, compute_type],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode != 0:
        lines = probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"]
        report.skip(
            "decoding ctranslate2",
            f"CTranslate2 {ctranslate2.__version__} cannot decode {compute_type} on "
            f"{device.type}: {lines[-1][:400]}",
        )
        return
    fast = Ct2Backend(ckpt, tokenizer, fmt.stop_ids, compute_type, device=device.type)
    measure("ctranslate2", {"compute_type": compute_type}, fast)


# -- targets -------------------------------------------------------------------------------


def targets(report) -> None:
    out = []
    for v in report.data["training"]["variants"]:
        if "tokens_per_s" not in v:
            continue
        mfu = v.get("mfu")
        out.append(
            {
                "target": f"training MFU >= {MFU_TARGET:.0%} ({v['name']})",
                "value": mfu,
                "met": None if mfu is None else mfu >= MFU_TARGET,
                **({} if mfu is not None else {"reason": report.data["peak"]["assumed_source"]}),
            }
        )
    runs = report.data["decoding"]["runs"]
    for engine in dict.fromkeys(r["engine"] for r in runs):
        rate = {r["batch"]: r["tokens_per_s"] for r in runs if r["engine"] == engine}
        if 1 in rate and 32 in rate:
            ratio = rate[32] / rate[1]
            out.append(
                {
                    "target": f"decoding batch 32 >= {DECODE_TARGET:.0f}x batch 1 ({engine})",
                    "value": round(ratio, 2),
                    "met": ratio >= DECODE_TARGET,
                }
            )
    report.data["targets"] = out
    for t in out:
        verdict = {True: "met", False: "MISSED", None: "not judged"}[t["met"]]
        value = "n/a" if t["value"] is None else t["value"]
        say(f"target {t['target']}: {value} -> {verdict}")
    report.save()


def main() -> int:
    global MIN_SECONDS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--json", help="write the figures here (rewritten as they come)")
    ap.add_argument("--seconds", type=float, default=150.0, help="time budget for all parts")
    ap.add_argument("--size", help="GPT-2 size (default: 124M on cuda, tiny on cpu)")
    ap.add_argument("--seq", type=int, help="tokens per training row (default 1024; cpu 64)")
    ap.add_argument("--start-batch", type=int, help="first training batch (default 8; cpu 2)")
    ap.add_argument("--max-batch", type=int, help="largest batch tried (default 256; cpu 4)")
    ap.add_argument("--new", type=int, help="new tokens per reply (default 128; cpu 8)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="decoding batches")
    ap.add_argument("--compute-type", help="CTranslate2's (default int8_float16; cpu int8)")
    ap.add_argument("--min-seconds", type=float, default=MIN_SECONDS, help="per measurement")
    ap.add_argument("--compile", action="store_true", help="measure torch.compile on a CPU too")
    ap.add_argument(
        "--compile-seconds",
        type=float,
        default=60.0,
        help="time a torch.compile variant needs; skipped with less left",
    )
    args = ap.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device (--device cpu runs it at toy sizes)", file=sys.stderr)
        return 2
    args.size = args.size or ("124M" if cuda else "tiny")
    args.seq = args.seq or (1024 if cuda else 64)
    args.start_batch = args.start_batch or (8 if cuda else 2)
    args.max_batch = args.max_batch or (256 if cuda else 4)
    args.new = args.new or (128 if cuda else 8)
    MIN_SECONDS = args.min_seconds
    device = torch.device(args.device)
    report = Report(args.json, args.seconds)

    from transformers.utils import logging

    from rejoinder.tokenizers import gpt2_tokenizer

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    vocab = len(gpt2_tokenizer())
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    report.data["device"] = {"kind": device.type, "name": name}
    report.data["settings"] = {
        "size": args.size,
        "seq": args.seq,
        "vocab": vocab,
        "precision": "bf16 autocast, float32 weights" if cuda else "float32",
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    peak, source = assumed_peak(device)
    n, dtype = (8192, torch.bfloat16) if cuda else (512, torch.float32)
    measured = measured_peak(device, n, dtype)
    report.data["peak"] = {
        "assumed_flops": peak,
        "assumed_source": source,
        "measured_flops": round(measured),
        "measured_product": f"{n}^3 {str(dtype).removeprefix('torch.')}",
    }
    say(
        f"device {name}: peak assumed {peak / 1e12 if peak else 'n/a'} TFLOP/s ({source}); "
        f"measured {measured / 1e12:.1f} TFLOP/s on {n}^3 {dtype}"
    )
    report.save()
    status = 0
    with tempfile.TemporaryDirectory(prefix="gpu-throughput-") as work:
        t = Trainee(args.size, vocab, args.seq, device)
        fits: dict[str, list[int]] = {}
        parts = {
            "training": lambda: fits.update(training(report, t, args.start_batch, args.max_batch)),
            "decoding": lambda: decoding(report, args, device, Path(work)),
            "compiled training": lambda: compiled(
                report, t, fits, cuda or args.compile, args.compile_seconds
            ),
        }
        for part, run in parts.items():
            try:
                run()
            except Exception as e:
                status = 1
                report.data.setdefault("errors", []).append(
                    {"part": part, "error": reason_of(e), "traceback": traceback.format_exc()}
                )
                say(f"{part} failed: {reason_of(e)}")
                report.save()
    targets(report)
    return status


if __name__ == "__main__":
    sys.exit(main())
