"""Padding token sequences into one batch: for training, scoring and generation alike.

Training and scoring pad on the right (positions count from the start, and padding
comes after the last real token); generation pads on the left, so every row's next
token is predicted at the same last position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rejoinder.formats import IGNORE


def pad_batch(
    rows: Sequence[Any],
    pad_id: int,
    *,
    side: str = "right",
    labels: bool = False,
    device: Any = None,
) -> dict[str, Any]:
    """One batch of tensors from rows that have `input_ids`, `token_type_ids` (None for
    formats without types) and, with `labels`, `labels` (lists or arrays).

    Padding has attention 0, token type 0 and label IGNORE.

    >>> from rejoinder.formats import Encoding
    >>> b = pad_batch([Encoding([5, 6]), Encoding([7])], pad_id=0, side="left")
    >>> b["input_ids"].tolist(), b["attention_mask"].tolist()
    ([[5, 6], [0, 7]], [[1, 1], [0, 1]])
    """
    import torch

    if side not in ("left", "right"):
        raise ValueError(f"side must be left or right, got {side!r}")
    width = max(len(r.input_ids) for r in rows)

    def column(values, fill: int) -> torch.Tensor:
        out = torch.full((len(rows), width), fill, dtype=torch.long)
        for i, v in enumerate(values):
            row = torch.as_tensor(v, dtype=torch.long)
            if side == "right":
                out[i, : len(row)] = row
            else:
                out[i, width - len(row) :] = row
        return out

    lengths = torch.tensor([len(r.input_ids) for r in rows])
    positions = torch.arange(width)[None, :]
    if side == "right":
        mask = positions < lengths[:, None]
    else:
        mask = positions >= (width - lengths)[:, None]
    batch = {
        "input_ids": column((r.input_ids for r in rows), pad_id),
        "attention_mask": mask.long(),
    }
    if rows[0].token_type_ids is not None:
        batch["token_type_ids"] = column((r.token_type_ids for r in rows), 0)
    if labels:
        batch["labels"] = column((r.labels for r in rows), IGNORE)
    if device is not None:
        batch = {k: v.to(device) for k, v in batch.items()}
    return batch
