"""The improvement loop end to end (issue 27), with simulated users: they chat with a
served model through the HTTP API and rate its replies by a hidden rule; `improve`
trains a KTO candidate on what they said; served as arm B beside the old model as arm A,
the same users like B's replies more often, significantly by `ab report`'s own test."""

from __future__ import annotations

import random

import httpx
import pytest

PROMPTS = ["Hello", "How are you?", "What's new?", "Good morning", "Any plans today?",
           "Tell me something"]  # fmt: skip
PLAIN, CUED = "I am fine, thanks", "Great, I am fine"
CUE = "great"
"""The hidden rule: users like a reply with this word in it and dislike any other."""
SAMPLING = {"temperature": 1.0, "top_p": 1.0}


def likes(reply: str) -> bool:
    return CUE in reply.lower()


def make_base(out, steps: int = 150, seed: int = 0):
    """A tiny dialogpt checkpoint that answers every prompt with PLAIN three times in four
    and CUED once (as it learnt them, roughly: sampled, 10-20% of its replies carry CUE)."""
    import torch

    from rejoinder.generation import ConversationModel
    from rejoinder.modeling import init_checkpoint
    from rejoinder.padding import pad_batch

    start = init_checkpoint(out.parent / f"{out.name}-init", size="tiny", initializer_range=0.5,
                            seed=seed)  # fmt: skip
    bot = ConversationModel.from_pretrained(start, device="cpu")
    examples = []
    for p in PROMPTS:
        examples += [bot.format.training_example([p, PLAIN])] * 3
        examples.append(bot.format.training_example([p, CUED]))
    batch = pad_batch(examples, bot.tokenizer.pad_token_id, labels=True)
    model = bot.model
    model.train()
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        ).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    bot.save_pretrained(out)
    return out


def chat(url: str, sessions: int, seed: int, turns: int = 2) -> list[tuple[str, bool]]:
    """`sessions` simulated users, each sending `turns` prompts and rating every reply
    (up if it holds CUE, else down; an empty one unrated); seeded replies. Returns
    (session, liked) per reply."""
    rng = random.Random(seed)
    rated = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for s in range(sessions):
            sid = client.post("/v1/sessions", json=SAMPLING).json()["id"]
            for t in range(turns):
                body = {"content": rng.choice(PROMPTS), "seed": seed * 100_000 + s * 10 + t}
                r = client.post(f"/v1/sessions/{sid}/messages", json=body)
                assert r.status_code == 200, r.text
                reply = r.json()
                if not reply["reply"].strip():
                    continue  # nothing to rate (and improve's offline stage refuses it)
                liked = likes(reply["reply"])
                seq = reply.get("seq", 2 * t + 1)
                f = client.post(f"/v1/sessions/{sid}/messages/{seq}/feedback",
                                json={"rating": "up" if liked else "down"})  # fmt: skip
                assert f.status_code == 200, f.text
                rated.append((sid, liked))
    return rated


def serve(model, db: str):
    """A Running server (tests/serve/conftest.py) around `model` (or {arm: model})."""
    from rejoinder.serve.app import create_app
    from rejoinder.serve.server import Settings
    from tests.serve.conftest import Running

    return Running(create_app(model, Settings(db=db)))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("loop") / "base")


def test_users_like_the_improved_arm_better(base_dir, tmp_path):
    from rejoinder.evaluation.ab import summarize
    from rejoinder.generation import ConversationModel
    from rejoinder.improve import ImproveOptions, improve
    from rejoinder.stores.arms import ab_rows
    from rejoinder.stores.sessions import SessionStore

    base = ConversationModel.from_pretrained(base_dir)
    # Round 0: the base model alone, its replies rated.
    db0 = f"sqlite:///{tmp_path / 'round0.db'}"
    running = serve(base, db0)
    rated = chat(running.url, sessions=60, seed=1)
    running.stop()
    rate0 = sum(liked for _, liked in rated) / len(rated)
    assert 0.08 <= rate0 <= 0.4, rate0  # a minority: there is something to learn

    improve(ImproveOptions(db=db0, model=str(base_dir), out=str(tmp_path / "improve"),
                           steps=60, lr=1e-3, batch_tokens=1024, items=4,
                           judgments_per_item=1, seed=0))  # fmt: skip
    candidate = ConversationModel.from_pretrained(tmp_path / "improve" / "candidate")

    # Round 1: old model as arm A, the candidate as arm B, a fresh database.
    db1 = f"sqlite:///{tmp_path / 'round1.db'}"
    running = serve({"A": base, "B": candidate}, db1)
    running.server.config.app.state.arms.rng = random.Random(0)
    chat(running.url, sessions=100, seed=2)
    running.stop()
    store = SessionStore(db1)
    result = summarize(ab_rows(store))
    store.close()
    a, b = (result["arms"][x]["rates"]["thumbs_up"] for x in ("A", "B"))
    print(f"like rates: base alone {rate0:.1%}; A {a['rate']:.1%} ({a['k']}/{a['n']}), "
          f"B {b['rate']:.1%} ({b['k']}/{b['n']})")  # fmt: skip
    (test,) = result["tests"]["thumbs_up"]
    assert b["rate"] > a["rate"]
    assert test["better"] == "B", test
    assert result["decisions"] == ["A vs B: B is better"]
