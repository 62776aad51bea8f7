"""Shared fixtures: GPT-2's tokenizer (offline), tiny random checkpoints, a parrot model.

Everything here is built from what packages ship; nothing downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Each xdist worker takes its share of the cores (and so do the processes it starts):
# torch's default, every core in every worker, oversubscribed two cores with two workers
# and made the suite's model-heavy files a third slower.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Replies the parrot learns by heart: context -> reply.
PARROT = {
    "Hello": "Hi there, friend",
    "How are you?": "Fine, thanks",
}


def chat_dataset(root, lines: list[list[str]], count: int, valid: float = 0.0):
    """A dataset built from `count` JSONL dialogues cycling through `lines`, each ending in
    its own numbered turn (so no two are alike); returns its directory, root/ds."""
    import json

    from rejoinder.data.build import BuildConfig, Source, build

    src = root / "chats.jsonl"
    rows = (lines[i % len(lines)] + [f"number {i}"] for i in range(count))
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    sources = [Source("jsonl", {"path": str(src)})]
    build(BuildConfig(sources=sources, out=str(root / "ds"), valid=valid, test=0))
    return root / "ds"


@pytest.fixture(autouse=True, scope="session")
def _quiet():
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


@pytest.fixture(scope="session")
def gpt2():
    from rejoinder.tokenizers import gpt2_tokenizer

    return gpt2_tokenizer()


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory):
    """Makes (once per argument set) a tiny random checkpoint and returns its directory.

    The weights are drawn wide (initializer_range 0.5) so that replies depend on the
    context; GPT-2's default of 0.02 makes a random model say the same token forever.
    """
    from rejoinder.modeling import init_checkpoint

    made = {}

    def make(format="dialogpt", tokenizer="gpt2", corpus=None, **settings):
        key = (format, tokenizer, tuple(sorted(settings.items())))
        if key not in made:
            out = tmp_path_factory.mktemp("ckpt") / format
            made[key] = init_checkpoint(
                out,
                size="tiny",
                tokenizer=tokenizer,
                format=format,
                corpus=corpus,
                format_settings=settings,
                initializer_range=0.5,
            )
        return made[key]

    return make


def shared_dir(tmp_path_factory) -> Path:
    """A directory every xdist worker of this run sees (the run's base directory); the
    session's own when there are no workers. A fixture trained there under a lock is
    trained once a run, not once a worker."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def parrot_dir(tmp_path_factory, make_checkpoint):
    """A tiny dialogpt checkpoint trained until it answers PARROT's lines word for word
    (on the CPU, whatever the machine has: its tensors are made there); trained once a
    run, whichever worker asks first."""
    from filelock import FileLock

    out = shared_dir(tmp_path_factory) / "shared-parrot" / "parrot"
    with FileLock(str(out.parent) + ".lock"):
        if not (out / "rejoinder.json").exists():
            train_parrot(make_checkpoint("dialogpt"), out)
    return out


def train_parrot(start: Path, out: Path) -> None:
    import torch

    from rejoinder.generation import ConversationModel

    bot = ConversationModel.from_pretrained(start, device="cpu")
    model = bot.model
    model.train()
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    examples = [bot.format.training_example([c, r]) for c, r in PARROT.items()]
    # ... and as one conversation, so that a chat of both lines gets both replies.
    examples.append(bot.format.training_example([x for pair in PARROT.items() for x in pair]))
    for _ in range(150):
        for ex in examples:
            loss = model(
                input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels])
            ).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    bot.save_pretrained(out)


REPEATED = " dog"
"""What the repeater says, greedily, to anything: this word, over and over."""


@pytest.fixture(scope="session")
def repeater_dir(tmp_path_factory):
    """A tiny dialogpt checkpoint whose next-token logits never depend on the context:
    every weight is zero but the final layer norm's bias (one unit direction) and two
    tokens' embeddings along it. Greedy decoding says " dog dog dog …" to anything (so
    it repeats an earlier reply of its own word for word); sampling draws almost
    uniformly from the whole vocabulary (the two favoured tokens hold under 1% of it)."""
    import torch

    from rejoinder.generation import ConversationModel
    from rejoinder.modeling import init_checkpoint

    out = init_checkpoint(tmp_path_factory.mktemp("repeater") / "repeater", size="tiny")
    bot = ConversationModel.from_pretrained(out, device="cpu")
    dog, cat = (bot.tokenizer(w).input_ids[0] for w in (REPEATED, " cat"))
    with torch.no_grad():
        for p in bot.model.parameters():
            p.zero_()
        bot.model.transformer.ln_f.bias[0] = 1.0
        bot.model.transformer.wte.weight[dog, 0] = 5.0
        bot.model.transformer.wte.weight[cat, 0] = 4.9
    bot.save_pretrained(out, overwrite=True)
    return out


@pytest.fixture(scope="session")
def barker_dir(tmp_path_factory):
    """A tiny dialogpt checkpoint that says REPEATED whatever it samples: that token's
    logit is 50 above every other's for any context (the safety tests' model that only
    says a flagged word)."""
    import torch

    from rejoinder.generation import ConversationModel
    from rejoinder.modeling import init_checkpoint

    out = init_checkpoint(tmp_path_factory.mktemp("barker") / "barker", size="tiny")
    bot = ConversationModel.from_pretrained(out, device="cpu")
    word = bot.tokenizer(REPEATED).input_ids[0]
    with torch.no_grad():
        for p in bot.model.parameters():
            p.zero_()
        bot.model.transformer.ln_f.bias[0] = 1.0
        bot.model.transformer.wte.weight[word, 0] = 50.0
    bot.save_pretrained(out, overwrite=True)
    return out


@pytest.fixture(scope="session")
def reverse_dir(make_checkpoint):
    """A tiny random backward model (its format reverses the turns)."""
    return make_checkpoint("dialogpt", reverse=True)


# -- a safety classifier -------------------------------------------------------------------

SAFETY_CUE = "zorblat"
"""The made-up word that makes a text unsafe to the `safety_classifier` (and nothing else
does: no word list knows it)."""

_FILLER = ["the", "a", "my", "your", "this", "some", "we", "they", "it", "today", "weather",
           "movie", "pizza", "music", "rain", "work", "city", "book", "game", "coffee", "beach",
           "dog", "train", "garden", "winter", "friends", "dinner", "lunch", "morning", "night",
           "really", "very", "quite", "nice", "good", "fine", "busy", "late", "early", "home",
           "school", "park", "shop", "road"]  # fmt: skip
_ASKED = ["How was your day?", "What do you think?", "Tell me more.", "Hi there!", "And then?"]


def safety_lines(n: int, seed: int, cue: str = SAFETY_CUE) -> list[dict]:
    """`n` labelled texts (`data build labels` lines), every other one unsafe: filler
    words in a random order, the unsafe ones with `cue` somewhere among them; half have
    a context turn. Seeds other than the classifier's (0) give texts it never saw."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.choices(_FILLER, k=rng.randint(3, 8))
        unsafe = i % 2 == 1
        if unsafe:
            words.insert(rng.randrange(len(words) + 1), cue)
        context = [rng.choice(_ASKED)] if rng.random() < 0.5 else []
        label = "unsafe" if unsafe else "safe"
        out.append({"context": context, "text": " ".join(words), "label": label})
    return out


def train_safety_classifier(root, steps: int = 30):
    """A tiny classifier (labels safe, unsafe) trained on `safety_lines` through the
    command line (`data build labels`, `train --model.objective classify`); returns its
    directory, root/classifier (the dataset is root/labels)."""
    import json

    from rejoinder.cli import main

    src = root / "labels.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in safety_lines(400, 0)))
    argv = ["data", "build", "labels", str(src), "--out", str(root / "labels"), "--valid",
            "0", "--test", "0"]  # fmt: skip
    assert main(argv) == 0
    argv = ["train", "--data.path", str(root / "labels"), "--data.batch_tokens", "1024",
            "--data.val_split", "none", "--model.init", "tiny", "--model.objective",
            "classify", "--model.max_tokens", "48", "--model.lr", "3e-3",
            "--model.warmup_steps", "2", "--model.dropout", "0.0", "--trainer.max_steps",
            str(steps), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--checkpoint_every", "1000",
            "--out", str(root / "classifier")]  # fmt: skip
    assert main(argv) == 0
    return root / "classifier"


@pytest.fixture(scope="session")
def safety_classifier(tmp_path_factory):
    """A trained tiny classifier directory (`"classifies": true`, labels safe and unsafe)
    that flags texts holding SAFETY_CUE; once per worker."""
    return train_safety_classifier(tmp_path_factory.mktemp("safety"))


# -- the gpu marker ----------------------------------------------------------------------


def pytest_collection_modifyitems(config, items):
    """Skips the tests marked `gpu` where torch sees no CUDA device, at once; with
    REJOINDER_GPU_CHECK_DEVICE=cpu they run on the CPU (scripts/gpu-check.sh --device cpu)."""
    marked = [item for item in items if item.get_closest_marker("gpu")]
    if not marked or os.environ.get("REJOINDER_GPU_CHECK_DEVICE") == "cpu":
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (make gpu-check runs it)")
    for item in marked:
        item.add_marker(skip)
