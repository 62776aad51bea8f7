"""KTO (--model.objective kto): its loss against the formula on full logits, a short run
that learns held-out preferences, and the paper's advice on weights."""

import json
import logging
import random

import pytest
import torch

from rejoinder import ConversationModel
from rejoinder.cli import main
from rejoinder.data.unpaired import RawUnpaired, read_unpaired, write_unpaired
from rejoinder.formats import IGNORE
from rejoinder.modeling import init_checkpoint
from rejoinder.training.unpaired import balance_advice
from tests.test_loss import tiny

WORDS = ["movie", "pizza", "music", "rain", "work", "city", "book", "game", "coffee", "beach",
         "dog", "train", "garden", "winter", "friends", "dinner"]  # fmt: skip


def full_logps(model, ids, mask, labels):
    """Each row's log-likelihood of its labelled tokens, by hand on the whole vocabulary."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    targets = labels[:, 1:]
    logp = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return (logp * (targets != IGNORE)).sum(-1)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_kto_loss_and_gradients_equal_the_formula_on_full_logits(arch):
    """KTO through two chunked passes equals w (1 - sigmoid(±beta (r - z0))) averaged
    over rows, computed on the whole batch's logits, in value and in every gradient."""
    from rejoinder.modeling.loss import kto_loss

    model = tiny(arch).double().eval()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 97, (4, 9), generator=g)
    labels = ids.clone()
    labels[:, :5] = IGNORE  # the context; the reply is labelled
    labels[2, 7:] = IGNORE
    mask = ((labels != IGNORE) | (torch.arange(9) < 5)).long()
    desirable = torch.tensor([True, False, True, False])
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "desirable": desirable}
    reference = torch.tensor([-18.0, -17.5, -12.0, -19.5], dtype=torch.float64)
    kl, beta, wd, wu = torch.tensor(0.4, dtype=torch.float64), 0.3, 1.5, 0.7
    ours, r = kto_loss(model, batch, reference, kl, beta, wd, wu)
    ours.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    logps = full_logps(model, ids, mask, labels)
    ratio = logps - reference
    good = wd * (1 - torch.sigmoid(beta * (ratio - kl)))
    bad = wu * (1 - torch.sigmoid(beta * (kl - ratio)))
    theirs = torch.where(desirable, good, bad).mean()
    theirs.backward()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(r, ratio.detach())
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, msg=n)


def test_the_kl_reference_point_is_the_mismatched_rows_mean_ratio_clamped_at_zero():
    from rejoinder.modeling.loss import kto_kl

    policy = torch.tensor([-5.0, -7.0], requires_grad=True)
    assert kto_kl(policy, torch.tensor([-6.0, -7.0])).item() == pytest.approx(0.5)
    assert kto_kl(policy, torch.tensor([-4.0, -6.0])).item() == 0.0  # clamped
    assert not kto_kl(policy, torch.tensor([-6.0, -7.0])).requires_grad


def test_the_objective_estimates_z0_from_each_prompt_with_the_previous_reply(tmp_path):
    """The batch KTO trains on: its rows, then row i's context with row i-1's reply."""
    from rejoinder.formats import get_format
    from rejoinder.tokenizers import build_tokenizer
    from rejoinder.training.unpaired import collate_unpaired, unpaired_example

    fmt = get_format("dialogpt", build_tokenizer("gpt2"), max_tokens=64)
    rows = [unpaired_example(r, fmt, 64) for r in make_rows(3, 0, WORDS)]
    batch = collate_unpaired(rows, fmt.tokenizer.pad_token_id, fmt, 64)
    assert batch["input_ids"].shape[0] == 6 and batch["desirable"].tolist() == [True, False, True]
    texts = [fmt.tokenizer.decode([t for t in row if t != fmt.tokenizer.pad_token_id])
             for row in batch["input_ids"].tolist()]  # fmt: skip
    items = make_rows(3, 0, WORDS)
    assert texts[3].startswith(items[0].context[0]) and items[2].reply in texts[3]
    assert texts[4].startswith(items[1].context[0]) and items[0].reply in texts[4]


def make_rows(n: int, seed: int, words: list[str]) -> list[RawUnpaired]:
    """A reply that asks back is desirable, one that only states is not: a signal in the
    reply's words, whatever the topic; desirable and undesirable alternate."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.sample(words, 2)
        good = i % 2 == 0
        reply = f"Do you like {b} too?" if good else f"I like {b}."
        out.append(RawUnpaired(f"u{seed}-{i}", "given", f"g{seed}-{i}", [f"I like {a}."],
                               reply, good))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def unpaired(tmp_path_factory):
    root = tmp_path_factory.mktemp("unpaired") / "ds"
    write_unpaired(root, "train", make_rows(160, 0, WORDS[:12]))
    write_unpaired(root, "valid", make_rows(16, 1, WORDS[12:]))
    write_unpaired(root, "test", make_rows(40, 2, WORDS[12:]))  # topics never trained on
    (root / "manifest.json").write_text(json.dumps({"kind": "unpaired"}))
    return root


def argv(data, init, out, *extra):
    return ["train", "--data.path", str(data), "--data.batch_tokens", "512",
            "--model.init", str(init), "--model.max_tokens", "64", "--model.lr", "3e-3",
            "--model.warmup_steps", "2", "--model.dropout", "0.0", "--model.objective", "kto",
            "--trainer.max_steps", "16", "--trainer.val_check_interval", "8",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.log_every_n_steps", "1", "--out", str(out), *extra]  # fmt: skip


def margins(model, test) -> torch.Tensor:
    """Each held-out context's log-likelihood of the asking reply minus the stating one."""
    bot = ConversationModel.from_pretrained(model)
    ask = [(x.context, x.reply) for x in test if x.desirable]
    state = [(x.context, x.reply.replace("Do you like", "I like").replace(" too?", "."))
             for x in test if x.desirable]  # fmt: skip
    good, bad = bot.loglikelihood(ask), bot.loglikelihood(state)
    return torch.tensor([g.total - b.total for g, b in zip(good, bad, strict=True)])


@pytest.mark.parametrize("arch, lora", [("gpt2", False), ("llama", True)])
def test_kto_raises_the_held_out_margin_of_desirable_replies(unpaired, tmp_path, arch, lora):
    base = init_checkpoint(tmp_path / "base", arch=arch, initializer_range=0.2)
    extra = ["--model.beta", "0.5"]
    extra += ["--model.lora.r", "8", "--model.lr", "1e-2"] if lora else []
    out = tmp_path / "tuned"
    assert main(argv(unpaired, base, out, *extra)) == 0
    test = read_unpaired(unpaired, "test")
    before, after = margins(base, test), margins(out, test)
    assert (after > before).float().mean() >= 0.9 and after.mean() > before.mean() + 1
    logged = (
        (tmp_path / "tuned.run" / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    )
    for name in (
        "train_kl",
        "train_rewards_desirable",
        "train_rewards_undesirable",
        "train_margin",
    ):
        assert name in logged


def test_kto_learns_from_a_pairs_dataset_too_and_warns_of_unbalanced_weights(tmp_path, caplog):
    from rejoinder.data.pairs import RawPair, write_pairs

    root = tmp_path / "pairs"
    rows = [RawPair(f"p{i}", "given", f"g{i}", ["hi"], f"Do you like {w} too?", f"I like {w}.")
            for i, w in enumerate(WORDS)]  # fmt: skip
    write_pairs(root, "train", rows)
    (root / "manifest.json").write_text(json.dumps({"kind": "pairs"}))
    base = init_checkpoint(tmp_path / "base")
    extra = ["--trainer.max_steps", "2", "--data.val_split", "none",
             "--model.desirable_weight", "2.0"]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert main(argv(root, base, tmp_path / "out", *extra)) == 0
    assert "2·16 : 1·16 = 2:1, is outside 1:1 to 4:3" in caplog.text
    assert "--model.desirable_weight between 1 and 1.33" in caplog.text


def test_kto_needs_a_trained_generator_and_unpaired_data_is_no_pairs(unpaired, tmp_path, capsys):
    assert main(argv(unpaired, "tiny", tmp_path / "x")) == 2
    assert "KTO tunes a trained generator" in capsys.readouterr().err
    base = init_checkpoint(tmp_path / "base")
    extra = ["--model.objective", "dpo"]
    assert main(argv(unpaired, base, tmp_path / "y", *extra)) == 2
    err = capsys.readouterr().err
    assert "holds unpaired" in err and "--model.objective dpo needs pairs" in err


def test_the_balance_advice_follows_the_paper():
    assert balance_advice(100, 100, 1.0, 1.0) is None
    assert balance_advice(120, 100, 1.0, 1.0) is None  # 1.2:1, within 4:3
    assert balance_advice(100, 300, 3.0, 1.0) is None  # weighted 1:1
    low = balance_advice(100, 400, 1.0, 1.0)
    assert "0.25:1" in low and "desirable_weight between 4 and 5.33" in low
    assert "undesirable_weight between 0.188 and 0.25" in low
    assert "no undesirable replies" in balance_advice(10, 0, 1.0, 1.0)
