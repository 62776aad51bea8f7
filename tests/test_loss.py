"""The chunked causal LM loss equals the plain one, its gradients too."""

import pytest
import torch

from rejoinder.formats import IGNORE
from rejoinder.modeling import loss as chunked
from rejoinder.modeling.loss import causal_lm_loss


def plain(hidden, weight, bias, labels):
    logits = torch.nn.functional.linear(hidden[:, :-1], weight, bias)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # as transformers
    targets = labels[:, 1:]
    total = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum"
    )
    return total, (targets != IGNORE).sum()


def inputs(bias: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 9, 16, generator=g, dtype=torch.float64).requires_grad_()
    weight = torch.randn(37, 16, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(37, generator=g, dtype=torch.float64).requires_grad_() if bias else None
    labels = torch.randint(0, 37, (3, 9), generator=g)
    labels[torch.rand(3, 9, generator=g) < 0.4] = IGNORE  # padding and context
    return hidden, weight, b, labels


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 4, 1000])  # one row a chunk .. all in one
def test_equals_the_plain_loss_and_its_gradients(bias, rows, monkeypatch):
    monkeypatch.setattr(chunked, "CHUNK_ROWS", rows)
    hidden, weight, b, labels = inputs(bias)
    ours, count = causal_lm_loss(hidden, weight, b, labels)
    (ours / count).backward()
    got = [t.grad.clone() for t in (hidden, weight, b) if t is not None]
    for t in (hidden, weight, b):
        if t is not None:
            t.grad = None
    theirs, theirs_count = plain(hidden, weight, b, labels)
    (theirs / theirs_count).backward()
    want = [t.grad for t in (hidden, weight, b) if t is not None]
    assert count == theirs_count
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-6, atol=1e-6)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


def test_a_batch_without_labels_has_zero_loss_and_gradients():
    hidden, weight, _, labels = inputs(False)
    total, count = causal_lm_loss(hidden, weight, None, torch.full_like(labels, IGNORE))
    total.backward()
    assert count == 0 and total == 0 and not hidden.grad.any()


def test_without_gradients_only_the_loss_is_computed():
    hidden, weight, _, labels = inputs(False)
    with torch.no_grad():
        total, _ = causal_lm_loss(hidden, weight, None, labels)
    torch.testing.assert_close(total, plain(hidden, weight, None, labels)[0])


def test_tied_weights_get_both_gradients():
    """GPT-2's output layer is its input embedding: the gradient must reach it once."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(37, 16, dtype=torch.float64)
    ids = torch.randint(0, 37, (2, 6))
    labels = ids.clone()
    for use_chunked in (True, False):
        emb.weight.grad = None
        hidden = torch.tanh(emb(ids))
        fn = causal_lm_loss if use_chunked else plain
        total, count = fn(hidden, emb.weight, None, labels)
        (total / count).backward()
        if use_chunked:
            ours = emb.weight.grad.clone()
    torch.testing.assert_close(ours, emb.weight.grad)


def tiny(arch: str):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=32, n_embd=16, n_layer=2,
                                          n_head=2))  # fmt: skip
    config = LlamaConfig(vocab_size=97, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=32, tie_word_embeddings=False)  # fmt: skip
    return LlamaForCausalLM(config)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_models_loss_and_gradients_equal_transformers_own(arch):
    from rejoinder.modeling.loss import mean_lm_loss

    model = tiny(arch).double().eval()  # no dropout: both losses see one network
    ids = torch.randint(0, 97, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[2, 7:] = 0  # right padding
    labels = ids.clone()
    labels[:, :4] = IGNORE  # the context
    labels[mask == 0] = IGNORE
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    ours = mean_lm_loss(model, batch)
    ours.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    theirs = model(**batch).loss
    theirs.backward()
    torch.testing.assert_close(ours, theirs.to(ours.dtype))
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, msg=n)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_dpo_loss_and_gradients_equal_the_formula_on_full_logits(arch):
    """DPO through two chunked passes equals -log sigmoid(beta * margin) computed on the
    whole batch's logits, in value and in every gradient."""
    from rejoinder.modeling.loss import dpo_loss, sequence_logprobs

    model = tiny(arch).double().eval()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 97, (4, 9), generator=g)  # 2 chosen rows, then 2 rejected
    labels = ids.clone()
    labels[:, :5] = IGNORE  # the shared context; the reply is labelled
    labels[3, 7:] = IGNORE
    mask = (labels != IGNORE) | (torch.arange(9) < 5)
    batch = {"input_ids": ids, "attention_mask": mask.long(), "labels": labels}
    reference = torch.tensor([-9.0, -7.5, -8.0, -9.5], dtype=torch.float64)
    ours, policy, _ = dpo_loss(model, batch, reference, beta=0.3)
    ours.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = labels[:, 1:]
    token = -torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), targets.clamp(min=0), reduction="none"
    )
    logps = (token * (targets != IGNORE)).sum(-1)
    margin = (logps[:2] - logps[2:]) - (reference[:2] - reference[2:])
    theirs = -torch.nn.functional.logsigmoid(0.3 * margin).mean()
    theirs.backward()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(policy, (logps[:2] - logps[2:]).detach())
    torch.testing.assert_close(sequence_logprobs(model, batch), logps.detach())
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, msg=n)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_labelled_logprobs_are_the_full_logits_log_softmax_where_labelled(arch, monkeypatch):
    """Scoring runs the output layer on labelled positions only: each row's values are
    log_softmax(the model's logits) at its labelled tokens, in order, rows of different
    lengths and a row with no label included; so are those of a model whose logits are
    more than its output layer (soft-capped), made from its whole logits."""
    from rejoinder.modeling.loss import labelled_logprobs

    model = tiny(arch).double().eval()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 97, (4, 9), generator=g)
    labels = ids.clone()
    labels[:, :4] = IGNORE  # the context
    labels[1, 6:] = IGNORE  # a shorter row, right-padded
    labels[2] = IGNORE  # nothing to score
    mask = (labels != IGNORE) | (torch.arange(9) < 4)
    batch = {"input_ids": ids, "attention_mask": mask.long(), "labels": labels}
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask.long()).logits, -1)
    want = [
        [logp[r, t - 1, labels[r, t]].item() for t in range(1, 9) if labels[r, t] != IGNORE]
        for r in range(4)
    ]
    assert [len(w) for w in want] == [5, 2, 0, 5]
    whole = []  # calls of the output layer over every position (the model's own logits)
    model.get_output_embeddings().register_forward_hook(lambda *a: whole.append(1))
    for capped in (False, True):
        if capped:
            monkeypatch.setattr(model.config, "final_logit_softcapping", 30.0, raising=False)
        got = labelled_logprobs(model, batch)
        for row, expected in zip(got, want, strict=True):
            assert row == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert len(whole) == capped  # the plain head never makes every position's logits
