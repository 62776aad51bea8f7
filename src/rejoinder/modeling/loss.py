"""The causal LM loss through the output layer, a chunk of tokens at a time.

A plain loss makes the logits of every position of the batch: (tokens x vocabulary)
floats, 1.6 GB for 8,192 tokens of GPT-2's 50,257, and as much again for their
softmax and gradient. Here only the positions that have a label are scored, a chunk
of them at a time, and each chunk's gradients (for the hidden states and the output
layer) are computed in the forward pass, while its logits are at hand: memory is one
chunk's logits, and the backward pass only scales what the forward pass kept (the
approach of Liger's fused linear cross-entropy, in plain PyTorch so that it runs on
CPUs and GPUs alike).

>>> import torch
>>> hidden, weight = torch.randn(2, 5, 8), torch.randn(11, 8)
>>> labels = torch.tensor([[-100, 3, 4, -100, 1], [-100, -100, 2, 5, 6]])
>>> total, count = causal_lm_loss(hidden, weight, None, labels)
>>> plain = torch.nn.functional.cross_entropy(
...     (hidden[:, :-1] @ weight.T).flatten(0, 1), labels[:, 1:].flatten(), reduction="sum")
>>> bool(torch.isclose(total, plain)), int(count)
(True, 6)
"""

from __future__ import annotations

import torch

from rejoinder.formats import IGNORE

CHUNK_ROWS = 256
"""Positions scored at once. Each chunk adds its share to the output layer's gradient,
a pass over (vocabulary x width) floats, so chunks of fewer rows spend more of their
time on that pass whatever the vocabulary; 256 rows hold 51 MB of float32 logits with
GPT-2's vocabulary and 155 MB with Qwen2's."""


def _chunk(h, weight, bias, t, acc):
    """One chunk's exponentiated shifted logits, their row sums, and each row's loss.

    The softmax is made in place, with one pass of exp: the logits' memory is all a
    chunk needs.
    """
    logits = h @ weight.to(h.dtype).T  # (rows, V), in the hidden states' precision
    if bias is not None:
        logits = logits + bias.to(logits.dtype)
    logits = logits.to(acc)
    logits.sub_(logits.amax(-1, keepdim=True))
    picked = logits.gather(1, t[:, None])[:, 0]  # the target's shifted logit
    sums = logits.exp_().sum(-1)
    return logits, sums, sums.log() - picked


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over rows of row_weight * cross_entropy(hidden @ weight.T + bias, targets),
    chunk by chunk (a weight of 1 for every row when none are given)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows: int, row_weights=None):
        want = ctx.needs_input_grad
        acc = torch.promote_types(weight.dtype, torch.float32)  # sums in float32 at least
        grad_h = torch.empty_like(hidden) if want[0] else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        grad_b = None if bias is None else torch.zeros(bias.shape, dtype=acc, device=bias.device)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            h, t = hidden[start : start + rows], targets[start : start + rows]
            logits, sums, losses = _chunk(h, weight, bias, t, acc)
            w = None if row_weights is None else row_weights[start : start + rows].to(acc)
            total += (losses if w is None else losses * w).sum()
            if not any(want[:3]):
                continue
            d = logits.div_(sums[:, None])  # the softmax
            d[torch.arange(len(t), device=d.device), t] -= 1  # d loss / d logits
            if w is not None:
                d.mul_(w[:, None])
            if grad_h is not None:
                grad_h[start : start + rows] = (d @ weight.to(acc)).to(hidden.dtype)
            grad_w.addmm_(d.T, h.to(acc))
            if grad_b is not None:
                grad_b += d.sum(0)
        ctx.save_for_backward(
            grad_h if grad_h is not None else hidden.new_empty(0),
            grad_w.to(weight.dtype),
            grad_b.to(bias.dtype) if grad_b is not None else weight.new_empty(0),
        )
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        want = ctx.needs_input_grad
        return (
            grad_h * grad_out.to(grad_h.dtype) if want[0] else None,
            grad_w * grad_out.to(grad_w.dtype) if want[1] else None,
            grad_b * grad_out.to(grad_b.dtype) if want[2] else None,
            None,
            None,
            None,
        )


@torch.no_grad()
def token_losses(hidden, weight, bias, targets, rows: int = 0) -> torch.Tensor:
    """Each row's cross-entropy, (N,), chunk by chunk, without gradients."""
    rows = rows or CHUNK_ROWS
    acc = torch.promote_types(weight.dtype, torch.float32)
    out = torch.empty(hidden.shape[0], dtype=acc, device=hidden.device)
    for start in range(0, hidden.shape[0], rows):
        t = targets[start : start + rows]
        out[start : start + rows] = _chunk(hidden[start : start + rows], weight, bias, t, acc)[2]
    return out


def causal_lm_loss(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, number of labelled tokens) of predicting `labels` shifted by one.

    `hidden` (B, T, C) are the trunk's last hidden states, `weight` (V, C) and `bias`
    the output layer, `labels` (B, T) the token to predict at each position or IGNORE:
    as `transformers`' causal LM loss, position t predicts labels[t + 1].
    """
    targets = labels[:, 1:]  # (B, T-1)
    keep = targets != IGNORE
    rows = hidden[:, :-1][keep]  # (N, C): only the positions that count
    if rows.shape[0] == 0:
        return hidden.sum() * 0.0, keep.sum()
    total = _LinearCrossEntropy.apply(rows, weight, bias, targets[keep], CHUNK_ROWS)
    return total, keep.sum()


def mean_lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A `transformers` causal LM's loss on a batch with labels (the mean over labelled
    tokens, as `model(**batch).loss`), without the whole batch's logits."""
    if not plain_head(model):
        return model(**batch).loss  # its logits are more than the output layer's: plain loss
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = model.base_model(**inputs).last_hidden_state  # (B, T, C)
    layer = model.get_output_embeddings()
    total, count = causal_lm_loss(hidden, layer.weight, layer.bias, batch["labels"])
    return total / count.clamp(min=1)


def plain_head(model) -> bool:
    """Whether the model's logits are its output layer's alone (no soft-capping, scaling
    or adapter on that layer), so that the layer can run on chosen positions only."""
    config = model.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return False
    if getattr(config, "logits_scaling", 1) not in (1, None):
        return False
    return type(model.get_output_embeddings()) is torch.nn.Linear


@torch.no_grad()
def labelled_logprobs(model, batch: dict[str, torch.Tensor]) -> list[list[float]]:
    """Each row's log-probability of each of its labelled tokens, in order (position t
    predicting labels[t + 1]). The output layer runs on those positions only, a chunk at
    a time: scoring a reply after a long context no longer makes the context's logits,
    nor the whole batch's log-softmax."""
    labels = batch["labels"]
    keep = labels[:, 1:] != IGNORE
    if plain_head(model):
        hidden, targets, _ = _labelled(model, batch)
        layer = model.get_output_embeddings()
        logprobs = -token_losses(hidden, layer.weight, layer.bias, targets)
    else:  # its logits are more than the output layer's: the model's own, where labelled
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits[:, :-1][keep]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        targets = labels[:, 1:][keep]
        logprobs = torch.log_softmax(logits, -1).gather(1, targets[:, None])[:, 0]
    values = iter(logprobs.tolist())
    return [[next(values) for _ in range(n)] for n in keep.sum(1).tolist()]


def _labelled(model, batch):
    """The trunk's hidden states at the positions that predict a label, those labels, and
    the row each comes from."""
    # (position_ids and a cache: the rest of sequences whose beginnings already ran)
    taken = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "cache")
    inputs = {k: v for k, v in batch.items() if k in taken}
    hidden = model.base_model(**inputs).last_hidden_state  # (B, T, C)
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None].expand_as(targets)
    return hidden[:, :-1][keep], targets[keep], rows[keep]


@torch.no_grad()
def sequence_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each row's log-likelihood of its labelled tokens, (B,), without the batch's logits."""
    hidden, targets, row = _labelled(model, batch)
    layer = model.get_output_embeddings()
    losses = token_losses(hidden, layer.weight, layer.bias, targets)
    total = torch.zeros(batch["labels"].shape[0], dtype=losses.dtype, device=losses.device)
    return -total.index_add_(0, row, losses)


def dpo_loss(model, batch: dict[str, torch.Tensor], reference: torch.Tensor, beta: float):
    """Direct Preference Optimization's loss (Rafailov et al., 2023) on a batch whose first
    half of rows are the chosen replies and second half the rejected ones, labelled on
    the reply only; `reference` holds each row's log-likelihood under the frozen
    reference model. Returns (loss, policy margins, reference margins), margins being
    chosen minus rejected log-likelihoods per pair.

    The loss is -log sigmoid(beta * (policy margin - reference margin)), averaged over
    pairs. Its gradient is a weighted sum of the rows' token losses, with weight
    beta * sigmoid(-z) / pairs for chosen tokens and minus that for rejected ones: the
    weights are computed in a first pass without gradients, then the fused chunked loss
    runs once with them, so no pass holds the whole batch's logits.
    """
    hidden, targets, row = _labelled(model, batch)
    layer = model.get_output_embeddings()
    n = batch["labels"].shape[0] // 2
    losses = token_losses(hidden.detach(), layer.weight, layer.bias, targets)
    logps = -torch.zeros(2 * n, dtype=losses.dtype, device=losses.device).index_add_(0, row, losses)
    policy = logps[:n] - logps[n:]
    ref = (reference[:n] - reference[n:]).to(policy.dtype)
    z = beta * (policy - ref)
    value = -torch.nn.functional.logsigmoid(z).mean()
    g = beta * torch.sigmoid(-z) / n
    weights = torch.cat([g, -g])[row]
    weighted = _LinearCrossEntropy.apply(
        hidden, layer.weight, layer.bias, targets, CHUNK_ROWS, weights
    )
    # The value is DPO's loss; the gradient is the weighted loss's, which equals DPO's.
    return value + (weighted - weighted.detach()), policy, ref


def kto_loss(
    model,
    batch: dict[str, torch.Tensor],
    reference: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
):
    """Kahneman-Tversky Optimization's loss (Ethayarajh et al., 2024) on a batch of
    replies, each labelled on the reply only, `batch["desirable"]` (B,) saying which are
    desirable; `reference` holds each row's log-likelihood under the frozen reference
    and `kl` the reference point z0 (the policy's KL from the reference, estimated on
    mismatched rows without gradient and clamped at 0: `kto_kl`). Returns (loss, r), r
    being each row's log-ratio log πθ(y|x) - log πref(y|x), summed over its tokens.

    A desirable row's loss is w_d (1 - sigmoid(beta (r - z0))), an undesirable one's
    w_u (1 - sigmoid(beta (z0 - r))); the loss is their mean over the batch's rows (TRL's
    KTOTrainer's normalisation, not a mean per class). As for DPO (`dpo_loss`), the
    gradient is a weighted sum of the rows' token losses, the weights computed in a first
    pass without gradients, then the fused chunked loss runs once with them.
    """
    hidden, targets, row = _labelled(model, batch)
    layer = model.get_output_embeddings()
    n = batch["labels"].shape[0]
    losses = token_losses(hidden.detach(), layer.weight, layer.bias, targets)
    logps = -torch.zeros(n, dtype=losses.dtype, device=losses.device).index_add_(0, row, losses)
    r = logps - reference.to(logps.dtype)
    desirable = batch["desirable"].to(torch.bool)
    sign = desirable.to(logps.dtype) * 2 - 1  # +1 desirable, -1 undesirable
    weight = torch.where(desirable, desirable_weight, undesirable_weight).to(logps.dtype)
    s = torch.sigmoid(sign * beta * (r - kl.to(logps.dtype)))
    value = (weight * (1 - s)).mean()
    # d value / d (a row's token loss) = -(d value / d r): r rises as token losses fall.
    g = weight * s * (1 - s) * sign * beta / n
    weighted = _LinearCrossEntropy.apply(
        hidden, layer.weight, layer.bias, targets, CHUNK_ROWS, g[row]
    )
    return value + (weighted - weighted.detach()), r


def kto_kl(policy: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z0 from mismatched rows' log-likelihoods under the policy and
    the reference (each prompt with another row's completion): the mean log-ratio,
    clamped at 0 and without gradient, as TRL estimates it per batch."""
    return (policy - reference.to(policy.dtype)).mean().clamp(min=0).detach()
