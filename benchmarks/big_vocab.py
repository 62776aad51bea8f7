"""Training steps with big vocabularies: the plain loss against the chunked one; and
LoRA against full fine-tuning.

    python benchmarks/big_vocab.py [--steps 8]

Side by side, on the same Chit-Chat batches (GPT-2's tokenizer, `loss_on` responses)
and the same weights, one child process per run so that each peak is its own (VmHWM):

(a) the `small` GPT-2 (4 layers, 256 wide) with GPT-2's 50,257 tokens, 8,192 tokens a
    batch; (b) a 4x256 Qwen2-style model with Qwen2's 151,646 tokens, 4,096 a batch.

"plain" is `transformers`' own loss (`model(**batch).loss`: every position's logits);
"chunked" is rejoinder's (`rejoinder.modeling.loss`). A step is forward, backward,
clipping and an AdamW step. Figures: useful (non-padding) tokens/s, median of the
steps after the first two, peak RSS, and what the steps added to the RSS the process
had before them (interpreter, libraries, data, model and optimizer: the same for both
losses). Targets: chunked peak <= 1/3 of plain's, chunked tok/s >= 1.3x plain's.

Then GPT-2 124M (random weights) fine-tuned fully and with LoRA (r=16 on c_attn, c_proj,
c_fc), three steps each on the same batches: trainable parameters, AdamW's state
(bytes of its moments), peak RSS, and what each saves (the whole model against the
adapter). Target: the adapter <= 5% of the full checkpoint.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, time
import torch
from transformers import GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM
from transformers.utils import logging
from rejoinder.formats import get_format
from rejoinder.modeling.architectures import gpt2_config
from rejoinder.modeling.loss import mean_lm_loss
from rejoinder.tokenizers import gpt2_tokenizer
from rejoinder.training.data import DialogueData

logging.set_verbosity_error()
data, case, loss_kind, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
batch_tokens = {"gpt2-small": 8192, "qwen2-4x256": 4096}[case]
tok = gpt2_tokenizer()
fmt = get_format("dialogpt", tok, max_tokens=256)
dm = DialogueData(data, batch_tokens=batch_tokens, val_split="none")
dm.attach(fmt, "responses", 256)
batches = [b for _, b in zip(range(steps), dm.loader(dm.train, True, 0))]
torch.manual_seed(0)
if case == "gpt2-small":
    model = GPT2LMHeadModel(gpt2_config("small", len(tok)))
else:
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=151_646, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True))
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
with open("/proc/self/status") as f:
    before = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
rates = []
for batch in batches:
    start = time.perf_counter()
    loss = model(**batch).loss if loss_kind == "plain" else mean_lm_loss(model, batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    rates.append(int(batch["attention_mask"].sum()) / (time.perf_counter() - start))
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({"rates": rates, "peak": peak, "added": peak - before, "loss": float(loss)}))
"""


LORA_CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging
from rejoinder.formats import get_format
from rejoinder.modeling.lora import LoraOptions, apply_lora
from rejoinder.modeling.loss import mean_lm_loss
from rejoinder.tokenizers import gpt2_tokenizer
from rejoinder.training.data import DialogueData

logging.set_verbosity_error()
data, model_dir, mode = sys.argv[1], sys.argv[2], sys.argv[3]
fmt = get_format("dialogpt", gpt2_tokenizer(), max_tokens=256)
dm = DialogueData(data, batch_tokens=2048, val_split="none")
dm.attach(fmt, "responses", 256)
batches = [b for _, b in zip(range(3), dm.loader(dm.train, True, 0))]
model = AutoModelForCausalLM.from_pretrained(model_dir)
if mode == "lora":
    model = apply_lora(model, LoraOptions(r=16), "gpt2")
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4)
rates = []
for batch in batches:
    start = time.perf_counter()
    mean_lm_loss(getattr(model, "get_base_model", lambda: model)(), batch).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    rates.append(int(batch["attention_mask"].sum()) / (time.perf_counter() - start))
state = sum(t.nbytes for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
with tempfile.TemporaryDirectory() as out:
    model.save_pretrained(out)
    saved = sum(f.stat().st_size for f in Path(out).iterdir() if f.suffix == ".safetensors")
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({"trainable": sum(p.numel() for p in params), "state": state,
                  "saved": saved, "peak": peak, "rate": sorted(rates)[1]}))
"""


def checkpoint_124m() -> Path:
    from rejoinder.modeling import init_checkpoint

    path = HERE / ".cache" / "gpt2-124M-fwd"
    if not (path / "config.json").exists():
        init_checkpoint(path, size="124M", seed=0, overwrite=True)
    return path


def lora_versus_full(data: Path) -> None:
    model = checkpoint_124m()
    rows = {}
    for mode in ("full", "lora"):
        done = subprocess.run(
            [sys.executable, "-c", LORA_CHILD, str(data), str(model), mode],
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if done.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
        rows[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    print("\nGPT-2 124M, 2,048-token batches, median of 3 steps")
    print(f"{'':<6} {'trainable':>12} {'AdamW state MiB':>16} {'saved MiB':>10} "
          f"{'peak MiB':>9} {'tok/s':>7}")  # fmt: skip
    for mode, r in rows.items():
        print(
            f"{mode:<6} {r['trainable']:>12,} {r['state'] / 2**20:>16,.1f} "
            f"{r['saved'] / 2**20:>10,.1f} {r['peak'] / 2**20:>9,.0f} {r['rate']:>7,.0f}"
        )
    share = rows["lora"]["saved"] / rows["full"]["saved"]
    print(f"adapter / full checkpoint <= 5%: {share:.1%} ({'met' if share <= 0.05 else 'MISSED'})")


def dataset() -> Path:
    from rejoinder.data.build import BuildConfig, Source, build

    out = HERE / ".cache" / "chitchat"
    if not (out / "manifest.json").exists():
        build(BuildConfig(sources=[Source("chitchat")], out=str(out), force=True))
    return out


def measure(data: Path, case: str, loss: str, steps: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(data), case, loss, str(steps)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        raise SystemExit(f"{case} {loss} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    data = dataset()
    rows = {}
    for case in ("gpt2-small", "qwen2-4x256"):
        for loss in ("plain", "chunked"):
            r = measure(data, case, loss, args.steps)
            rows[case, loss] = r
            print(f"  {case} {loss}: peak {r['peak'] / 2**20:,.0f} MiB, loss {r['loss']:.3f}")
    print(f"\nChit-Chat batches, float32, median of steps 3-{args.steps}")
    print(
        f"{'model':<14} {'loss':<8} {'useful tok/s':>13} {'peak MiB':>9} {'added MiB':>10} "
        f"{'tok/s x':>8} {'peak x':>7} {'added x':>8}"
    )
    verdicts = []
    for case in ("gpt2-small", "qwen2-4x256"):
        base = rows[case, "plain"]
        base_rate = statistics.median(base["rates"][2:])
        for loss in ("plain", "chunked"):
            r = rows[case, loss]
            rate = statistics.median(r["rates"][2:])
            print(
                f"{case:<14} {loss:<8} {rate:>13,.0f} {r['peak'] / 2**20:>9,.0f} "
                f"{r['added'] / 2**20:>10,.0f} {rate / base_rate:>7.2f}x "
                f"{r['peak'] / base['peak']:>6.2f}x {r['added'] / base['added']:>7.2f}x"
            )
        chunked = rows[case, "chunked"]
        speed = statistics.median(chunked["rates"][2:]) / base_rate
        memory = chunked["peak"] / base["peak"]
        verdicts.append(
            f"{case}: peak <= 1/3 of plain: {memory:.2f} ({'met' if memory <= 1 / 3 else 'MISSED'})"
            f"; tok/s >= 1.3x: {speed:.2f}x ({'met' if speed >= 1.3 else 'MISSED'})"
        )
    print("\n" + "\n".join(verdicts))
    lora_versus_full(data)


if __name__ == "__main__":
    main()
