"""Shared fixtures: GPT-2's tokenizer (offline), tiny random checkpoints, a parrot model.

Everything here is built from what packages ship; nothing downloads.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
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


@pytest.fixture(scope="session")
def parrot_dir(tmp_path_factory, make_checkpoint):
    """A tiny dialogpt checkpoint trained until it answers PARROT's lines word for word
    (on the CPU, whatever the machine has: its tensors are made there)."""
    import torch

    from rejoinder.generation import ConversationModel

    bot = ConversationModel.from_pretrained(make_checkpoint("dialogpt"), device="cpu")
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
    out = tmp_path_factory.mktemp("parrot") / "parrot"
    bot.save_pretrained(out)
    return out


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
def reverse_dir(make_checkpoint):
    """A tiny random backward model (its format reverses the turns)."""
    return make_checkpoint("dialogpt", reverse=True)


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
