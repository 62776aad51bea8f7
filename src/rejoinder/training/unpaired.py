"""KTO's data: rated replies as examples, batches with their mismatched rows, and the
paper's advice on how desirable and undesirable replies should be weighted.

An unpaired dataset (`data build unpaired`, `data build feedback --kind unpaired`) gives
one row a reply; a pairs dataset gives two (its chosen reply desirable, its rejected one
undesirable), as the KTO paper and TRL read paired data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rejoinder.data.unpaired import iter_unpaired
from rejoinder.dialogue import Turn
from rejoinder.formats import Format
from rejoinder.padding import pad_batch
from rejoinder.training.examples import Example, example


@dataclass
class UnpairedExample:
    """A rated reply laid out as the dialogue ending in it, labelled on the reply; its
    context and reply are kept for the batch's mismatched rows."""

    row: Example
    desirable: bool
    context: list[Turn]
    reply: str

    def __len__(self) -> int:
        return len(self.row)


def unpaired_example(item, fmt: Format, max_tokens: int) -> UnpairedExample | None:
    """An `Unpaired` row as an example (None: its reply is empty)."""
    if not item.reply.strip():
        return None
    context = [Turn(t) for t in item.context if t and t.strip()]
    row = example(fmt, [*context, Turn(item.reply)], "last", max_tokens)
    return UnpairedExample(row, bool(item.desirable), context, item.reply)


def unpaired_examples(
    path, split: str, fmt: Format, max_tokens: int, limit: int | None = None
) -> tuple[list[UnpairedExample], int]:
    """The examples of one split of an unpaired (or pairs) dataset, and how many rows
    were skipped for an empty reply."""
    out, skipped = [], 0
    for item in iter_unpaired(path, split, limit, from_pairs=True):
        e = unpaired_example(item, fmt, max_tokens)
        if e is None:
            skipped += 1
        else:
            out.append(e)
    return out, skipped


def collate_unpaired(rows: list[UnpairedExample], pad_id: int, fmt: Format, max_tokens: int):
    """The batch's rows, then as many mismatched rows (row i's context with row i-1's
    reply: KTO's estimate of the policy's KL from the reference, as TRL shifts its
    completions by one); `desirable` (B,) says which of the first rows are desirable."""
    n = len(rows)
    mismatched = [
        example(fmt, [*rows[i].context, Turn(rows[(i - 1) % n].reply)], "last", max_tokens)
        for i in range(n)
    ]
    batch = pad_batch([r.row for r in rows] + mismatched, pad_id, labels=True)
    batch["desirable"] = torch.tensor([r.desirable for r in rows], dtype=torch.bool)
    return batch


def balance_advice(
    desirable: int, undesirable: int, desirable_weight: float, undesirable_weight: float
) -> str | None:
    """What to change when the weighted ratio w_d·n_d : w_u·n_u falls outside 1:1 to 4:3,
    the range the KTO paper advises (Ethayarajh et al., 2024, section 4.2); None within.

    >>> balance_advice(100, 100, 1.0, 1.0) is None
    True
    >>> print(balance_advice(300, 100, 1.0, 1.0))  # doctest: +ELLIPSIS
    KTO: ... = 3:1, is outside ...; set --model.desirable_weight between 0.333 and 0.444 (or ...)
    """
    if not desirable or not undesirable:
        missing = "desirable" if not desirable else "undesirable"
        return (
            f"KTO: the training data has no {missing} replies, so it can only push "
            f"{'down' if missing == 'desirable' else 'up'} what it has; add some"
        )
    d, u = desirable_weight * desirable, undesirable_weight * undesirable
    if u <= d <= 4 / 3 * u:
        return None
    low_d, high_d = u / desirable, 4 / 3 * u / desirable
    low_u, high_u = 3 / 4 * d / undesirable, d / undesirable
    return (
        f"KTO: the weighted ratio of desirable to undesirable replies, "
        f"{desirable_weight:g}·{desirable} : {undesirable_weight:g}·{undesirable} = "
        f"{d / u:.3g}:1, is outside 1:1 to 4:3 (the KTO paper's advice); set "
        f"--model.desirable_weight between {low_d:.3g} and {high_d:.3g} (or "
        f"--model.undesirable_weight between {low_u:.3g} and {high_u:.3g})"
    )
