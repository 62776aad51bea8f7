"""`rejoinder quickstart`: the whole recipe on the bundled Chit-Chat corpus, in minutes.

Stages, each skipped when a run of the same OUT already finished it:

1. data: the Chit-Chat corpus as a dataset (OUT/data);
2. plan: how many training steps fit the budget on this machine, from a few timed
   steps of the model (OUT/plan.json; kept, so a resumed run trains to the same plan);
3. forward model (OUT/forward), then 4. reverse model for MMI (OUT/reverse): trained
   with `rejoinder train`, which resumes from its last checkpoint when interrupted;
5. evaluation: test perplexity and the metric table of nucleus sampling against MMI
   (OUT/report);
6. three sample conversations, then the chat (when stdin is a terminal).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rejoinder.errors import RejoinderError


@dataclass
class Recipe:
    """What the quickstart trains. Sized for a 2-core CPU and a 15-minute budget."""

    size: str = "4x128"
    tokenizer: str = "bpe:4096"
    max_tokens: int = 256
    batch_tokens: int = 8192
    lr: float = 3e-3
    warmup_steps: int = 50
    dropout: float = 0.0
    reverse_share: float = 0.2
    """The reverse model's part of the training time (it only reranks)."""
    eval_contexts: int = 150
    eval_seconds: float = 100.0
    """Time kept back for evaluation and the samples."""
    max_steps: int | None = None
    """A cap on each model's steps (None: as many as the time allows)."""
    max_dialogues: int | None = None
    """Train on at most this many dialogues (None: all)."""


@dataclass
class Plan:
    seconds_per_step: float
    forward_steps: int
    reverse_steps: int
    forward_seconds: float
    reverse_seconds: float


_START = time.monotonic()


def _say(step: str, text: str) -> None:
    elapsed = time.monotonic() - _START
    print(
        f"[{step} {elapsed // 60:02.0f}:{elapsed % 60:02.0f}] {text}", file=sys.stderr, flush=True
    )


def build_data(out: Path) -> Path:
    data = out / "data"
    if (data / "manifest.json").is_file():
        _say("1/6", f"dataset already built: {data}")
        return data
    from rejoinder.cli import main as cli

    _say("1/6", "building the Chit-Chat dataset")
    # 3% of the conversations for testing: about 200, enough for the diversity metrics.
    command = ["data", "build", "chitchat", "--out", str(data), "--test", "0.03", "--force"]
    if cli(command) != 0:
        raise RejoinderError("building the Chit-Chat dataset failed (see above)")
    return data


def time_a_step(recipe: Recipe, vocab: int) -> float:
    """Seconds per optimizer step of the recipe's model on a full batch, on this machine."""
    import torch
    from transformers import GPT2LMHeadModel

    from rejoinder.modeling.checkpoint import gpt2_config

    torch.manual_seed(0)
    config = gpt2_config(recipe.size, vocab, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    length = recipe.max_tokens // 2  # Chit-Chat's examples are about half the window
    ids = torch.randint(0, vocab, (recipe.batch_tokens // length, length))
    times = []
    for _ in range(4):
        start = time.perf_counter()
        model(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[1]  # the median after a warm-up step


def make_plan(out: Path, recipe: Recipe, seconds: float) -> Plan:
    path = out / "plan.json"
    if path.is_file():
        return Plan(**json.loads(path.read_text()))
    vocab = int(recipe.tokenizer.split(":")[1]) if recipe.tokenizer.startswith("bpe:") else 50257
    step = time_a_step(recipe, vocab) * 1.1  # Lightning, data and validation on top
    training = max(seconds - recipe.eval_seconds, 60.0)
    fwd = training * (1 - recipe.reverse_share)
    rev = training * recipe.reverse_share
    cap = recipe.max_steps or 1 << 30
    plan = Plan(
        step, min(max(int(fwd / step), 20), cap), min(max(int(rev / step), 20), cap), fwd, rev
    )
    path.write_text(json.dumps(asdict(plan), indent=2) + "\n")
    return plan


def train_one(
    out: Path, data: Path, recipe: Recipe, steps: int, seconds: float, reverse: bool
) -> Path | None:
    """Trains one model; None when an earlier run already had."""
    name = "reverse" if reverse else "forward"
    model_dir = out / name
    if (model_dir / "rejoinder.json").is_file():
        _say("4/6" if reverse else "3/6", f"{name} model already trained: {model_dir}")
        return None
    from rejoinder.training.run import train

    _say(
        "4/6" if reverse else "3/6",
        f"training the {name} model: {recipe.size}, {steps} steps (about {seconds / 60:.1f} min)",
    )
    minutes = max(int(seconds // 60) + 1, 1)
    argv = [
        f"--model.init={recipe.size}",
        f"--model.tokenizer={recipe.tokenizer}",
        f"--model.reverse={str(reverse).lower()}",
        f"--model.max_tokens={recipe.max_tokens}",
        f"--model.lr={recipe.lr}",
        f"--model.warmup_steps={recipe.warmup_steps}",
        f"--model.dropout={recipe.dropout}",
        f"--data.path={data}",
        f"--data.batch_tokens={recipe.batch_tokens}",
        f"--trainer.max_steps={steps}",
        f"--trainer.max_time=00:00:{minutes:02d}:00",
        f"--trainer.val_check_interval={max(steps // 5, 1)}",
        "--trainer.enable_model_summary=false",
        f"--checkpoint_every={max(steps // 10, 10)}",
        f"--out={model_dir}",
        f"--run={out / (name + '.run')}",
    ]
    if recipe.max_dialogues:
        argv.append(f"--data.max_dialogues={recipe.max_dialogues}")
    if reverse:  # one vocabulary for both: the forward run's tokenizer
        shared = out / "forward.run" / "tokenizer"
        target = out / "reverse.run" / "tokenizer"
        if shared.is_dir() and not target.exists():
            import shutil

            shutil.copytree(shared, target)
    if train(argv) != 0:
        raise RejoinderError(f"training the {name} model failed (see above)")
    return model_dir


def evaluate_models(out: Path, data: Path, recipe: Recipe) -> dict:
    report = out / "report"
    if (report / "metrics.json").is_file():
        _say("5/6", f"already evaluated: {report}")
        return json.loads((report / "metrics.json").read_text())
    from rejoinder.evaluation.report import table, write_report
    from rejoinder.evaluation.run import evaluate
    from rejoinder.generation import ConversationModel

    _say("5/6", "evaluating: test perplexity, then nucleus sampling against MMI")
    model = ConversationModel.from_pretrained(out / "forward", reverse=out / "reverse")
    result = evaluate(model, data, "test", ["nucleus", "mmi"], recipe.eval_contexts)
    write_report(result, report, force=True)
    ppl = result["perplexity"]
    print(f"\ntest perplexity: {ppl['per_word']:.1f} per word, {ppl['per_token']:.1f} per token\n")
    print(table(result) + "\n")
    return result


def show_samples(result: dict, n: int = 3) -> None:
    _say("6/6", f"{n} sample conversations from the test set")
    for i, sample in enumerate(result["samples"][:n], 1):
        print(f"--- conversation {i}")
        for turn in sample["context"][-4:]:
            print(f"  > {turn}")
        print(f"  reference: {sample['references'][0]}")
        for system, reply in sample["replies"].items():
            print(f"  {system:>9}: {reply}")
    print()


def quickstart(
    minutes: float = 15.0,
    out: str | Path = "quickstart",
    chat: bool | None = None,
    recipe: Recipe | None = None,
) -> dict:
    """Runs every stage (skipping finished ones) and returns the evaluation."""
    if minutes < 3:
        raise RejoinderError("--minutes must be at least 3 (data, two models and evaluation)")
    global _START
    start = _START = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = recipe or Recipe()
    data = build_data(out)
    spent = time.monotonic() - start
    plan = make_plan(out, recipe, minutes * 60 - spent)
    _say(
        "2/6",
        f"plan: {plan.seconds_per_step:.2f} s a step here; forward {plan.forward_steps} steps, "
        f"reverse {plan.reverse_steps} steps ({out / 'plan.json'})",
    )
    began = time.monotonic()
    fresh = not (out / "forward.run" / "checkpoints" / "last.ckpt").exists()
    trained = train_one(out, data, recipe, plan.forward_steps, plan.forward_seconds, reverse=False)
    if trained and fresh:
        # The forward run measured this machine better than the timed steps did: the
        # reverse model gets what is left of the budget, at the forward run's pace.
        took = time.monotonic() - began
        left = minutes * 60 - (time.monotonic() - start) - recipe.eval_seconds
        steps = int(plan.forward_steps * max(left, 30.0) / took)
        plan.reverse_steps = min(max(steps, 20), recipe.max_steps or 1 << 30)
        plan.reverse_seconds = max(left, 30.0)
        (out / "plan.json").write_text(json.dumps(asdict(plan), indent=2) + "\n")
    train_one(out, data, recipe, plan.reverse_steps, plan.reverse_seconds, reverse=True)
    result = evaluate_models(out, data, recipe)
    show_samples(result)
    _say("done", f"in {(time.monotonic() - start) / 60:.1f} min; report in {out / 'report'}")
    if chat if chat is not None else sys.stdin.isatty():
        from rejoinder.chat import ChatSession, repl
        from rejoinder.generation import ConversationModel

        model = ConversationModel.from_pretrained(out / "forward", reverse=out / "reverse")
        print("chatting with the forward model, replies reranked by MMI (/help, /quit)")
        repl(ChatSession(model, preset="mmi"))
    return result
