"""`rejoinder quickstart`: the whole recipe on the bundled Chit-Chat corpus, in minutes.

Stages, each skipped when a run of the same OUT already finished it:

1. data: the Chit-Chat corpus as a dataset (OUT/data);
2. plan: the training time of each model (OUT/plan.json; kept, so a resumed run
   trains to the same plan);
3. forward model (OUT/forward), then 4. reverse model for MMI (OUT/reverse): trained
   by `fit`, as `rejoinder train` does, resuming from the last checkpoint when
   interrupted;
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
    batch_tokens: int = 2048
    """Small batches: within a budget of minutes, more steps beat bigger batches."""
    loss_on: str = "all"
    """Learn every turn, the first too: Chit-Chat's many dialogues of one turn become
    training text, which lowers test perplexity within the same time."""
    lr: float = 3e-3
    warmup_steps: int = 50
    dropout: float = 0.0
    reverse_share: float = 0.1
    """The reverse model's part of the training time (it only reranks)."""
    eval_contexts: int = 150
    eval_seconds: float = 100.0
    """Time kept back for evaluation and the samples."""
    max_steps: int | None = None
    """A cap on each model's steps (None: as many as the time allows)."""
    startup_seconds: float = 30.0
    """What a training run spends before its first step (reading and encoding data)."""
    max_dialogues: int | None = None
    """Train on at most this many dialogues (None: all)."""
    precision: str = "auto"
    """Lightning's precision; auto: bf16-mixed where the processor computes in bf16
    natively (there it is faster, and reaches a lower perplexity in the same time),
    else 32-true."""


def auto_precision() -> str:
    """bf16-mixed on a GPU that has bf16 and on CPUs with native bf16 instructions
    (AVX512-BF16 or AMX), where it is faster; 32-true elsewhere, where emulated bf16
    would be slower than float32."""
    import torch

    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    cpu = torch.cpu
    native = any(
        getattr(cpu, probe, lambda: False)()
        for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )
    return "bf16-mixed" if native else "32-true"


@dataclass
class Plan:
    """Seconds of training for each model, fixed by the first run (a resumed run keeps them)."""

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
    from rejoinder.data.build import BuildConfig, Source, build, summary

    _say("1/6", "building the Chit-Chat dataset")
    # 3% of the conversations for testing: about 200, enough for the diversity metrics.
    config = BuildConfig(sources=[Source("chitchat")], out=str(data), test=0.03, force=True)
    print(summary(build(config), data))
    return data


def make_plan(out: Path, recipe: Recipe, seconds: float) -> Plan:
    """Splits the training time between the two models (kept in OUT/plan.json)."""
    path = out / "plan.json"
    if path.is_file():
        return Plan(**json.loads(path.read_text()))
    training = max(seconds - recipe.eval_seconds - 2 * recipe.startup_seconds, 60.0)
    plan = Plan(training * (1 - recipe.reverse_share), training * recipe.reverse_share)
    path.write_text(json.dumps(asdict(plan), indent=2) + "\n")
    return plan


def train_one(out: Path, data: Path, recipe: Recipe, seconds: float, reverse: bool) -> Path | None:
    """Trains one model for `seconds`; None when an earlier run already had.

    The learning rate anneals over the time itself (`anneal_minutes`), and the
    Trainer's `max_time` ends the run then: the model comes out annealed however fast
    this machine is, with as many steps as it could take.
    """
    name = "reverse" if reverse else "forward"
    model_dir = out / name
    step = "4/6" if reverse else "3/6"
    if (model_dir / "rejoinder.json").is_file():
        _say(step, f"{name} model already trained: {model_dir}")
        return None
    from rejoinder.training.data import DialogueData
    from rejoinder.training.fit import FitOptions, fit
    from rejoinder.training.module import DialogueLM

    _say(step, f"training the {name} model: {recipe.size}, {seconds / 60:.1f} min")
    whole = int(seconds)
    # The reverse model starts from the forward one: it already knows the language and
    # the vocabulary, and has only to learn to read a dialogue backwards.
    start = (
        {"init": str(out / "forward")}
        if reverse
        else {"init": recipe.size, "tokenizer": recipe.tokenizer}
    )
    model = DialogueLM(
        **start,
        reverse=reverse,
        max_tokens=recipe.max_tokens,
        loss_on=recipe.loss_on,
        lr=recipe.lr,
        warmup_steps=recipe.warmup_steps,
        dropout=recipe.dropout,
        anneal_minutes=round(0.97 * seconds / 60, 3),  # validation takes the rest
    )
    dialogues = DialogueData(
        str(data), batch_tokens=recipe.batch_tokens, max_dialogues=recipe.max_dialogues
    )
    trainer = {
        "max_steps": recipe.max_steps or 1_000_000,
        "max_time": f"00:{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}",
        "precision": auto_precision() if recipe.precision == "auto" else recipe.precision,
        "val_check_interval": min(300, recipe.max_steps or 300),
        "enable_model_summary": False,
    }
    options = FitOptions(str(model_dir), run=str(out / f"{name}.run"), checkpoint_every=100)
    print(fit(model, dialogues, options, trainer))
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
        f"plan: forward {plan.forward_seconds / 60:.1f} min, reverse "
        f"{plan.reverse_seconds / 60:.1f} min of training ({out / 'plan.json'})",
    )
    train_one(out, data, recipe, plan.forward_seconds, reverse=False)
    train_one(out, data, recipe, plan.reverse_seconds, reverse=True)
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
