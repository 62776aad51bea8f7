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


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over rows of cross_entropy(hidden @ weight.T + bias, targets), chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows: int):
        want = ctx.needs_input_grad
        acc = torch.promote_types(weight.dtype, torch.float32)  # sums in float32 at least
        grad_h = torch.empty_like(hidden) if want[0] else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        grad_b = None if bias is None else torch.zeros(bias.shape, dtype=acc, device=bias.device)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            h, t = hidden[start : start + rows], targets[start : start + rows]
            logits = h @ weight.to(h.dtype).T  # (rows, V), in the hidden states' precision
            if bias is not None:
                logits = logits + bias.to(logits.dtype)
            logits = logits.to(acc)
            # The softmax in place, with one pass of exp: the logits' memory is all a
            # chunk needs.
            logits.sub_(logits.amax(-1, keepdim=True))
            picked = logits.gather(1, t[:, None])[:, 0]  # the target's shifted logit
            sums = logits.exp_().sum(-1)
            total += (sums.log() - picked).sum()
            if not any(want[:3]):
                continue
            d = logits.div_(sums[:, None])  # the softmax
            d[torch.arange(len(t), device=d.device), t] -= 1  # d loss / d logits
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
        )


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
    config = model.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return model(**batch).loss  # its logits are more than the output layer's: plain loss
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = model.base_model(**inputs).last_hidden_state  # (B, T, C)
    layer = model.get_output_embeddings()
    total, count = causal_lm_loss(hidden, layer.weight, layer.bias, batch["labels"])
    return total / count.clamp(min=1)
