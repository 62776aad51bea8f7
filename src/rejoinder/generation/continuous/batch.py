"""The running batch: rows decoding over one key/value cache, and its forward passes.

The cache is left-padded to its longest row (TGI's first causal-LM server did the
same): a row that joins is padded to fit, or the batch to fit it; a row that leaves is
cut out, and columns no row needs any more are trimmed. `mask` (rows, columns) is 1
where a key is real; positions count real keys only, as `generate` numbers a
left-padded batch.
"""

from __future__ import annotations

import torch

from rejoinder.generation.continuous.rows import Row


class Batch:
    """The rows decoding together, their cache and their next-token logits."""

    def __init__(self, lm):
        self.lm = lm
        self.rows: list[Row] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # (rows, columns): 1 where a key is real
        self.logits: torch.Tensor | None = None  # (rows, vocab): each row's next-token logits

    def clear(self) -> None:
        self.rows = []
        self.cache = self.mask = self.logits = None

    def join(self, rows: list[Row], cache, mask: torch.Tensor | None, logits) -> None:
        """Adds prefilled rows (their cache, their mask: None when none is padded),
        left-padding whichever is shorter."""
        if mask is None:
            length = cache.layers[0].keys.shape[2]
            mask = torch.ones(len(rows), length, dtype=torch.long, device=self.lm.device)
        if not self.rows:
            self.cache, self.mask, self.logits = cache, mask, logits
        else:
            width = max(self.mask.shape[1], mask.shape[1])
            self.mask = torch.cat([left_pad(self.mask, width), left_pad(mask, width)])
            for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
                mine.keys = torch.cat([left_pad(mine.keys, width), left_pad(theirs.keys, width)])
                mine.values = torch.cat(
                    [left_pad(mine.values, width), left_pad(theirs.values, width)]
                )
            self.logits = torch.cat([self.logits, logits])
        self.rows.extend(rows)

    def kept(self, i: int, start: int = 0) -> tuple[list[int], list]:
        """Row `i`'s real ids and its keys and values (copies), from its token `start` on:
        to keep for its session, or to score its reply (`rescoring`)."""
        length = int(self.mask[i].sum())
        skip = min(start, length)
        begin = self.mask.shape[1] - length + skip  # its real columns are the last
        layers = [
            (layer.keys[i : i + 1, :, begin:].clone(), layer.values[i : i + 1, :, begin:].clone())
            for layer in self.cache.layers
        ]
        return self.rows[i].ids[skip:length], layers

    def keep(self, keep: list[int]) -> None:
        """Keeps the rows at indices `keep`, cutting the others out, and the columns no
        remaining row uses."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = self.logits = None
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.mask = self.mask.index_select(0, index)
        if self.logits is not None:
            self.logits = self.logits.index_select(0, index)
        unused = int((self.mask.sum(0) == 0).long().cumprod(0).sum())  # leading pad columns
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, unused:]
            layer.values = layer.values.index_select(0, index)[:, :, unused:]
        self.mask = self.mask[:, unused:]

    def forward(self) -> None:
        """One decoding step for every row: their last tokens in, next-token logits out."""
        ids = torch.tensor([row.new[-1] for row in self.rows], device=self.mask.device)[:, None]
        self.mask = torch.cat([self.mask, torch.ones_like(ids)], dim=1)
        positions = (self.mask.sum(1, keepdim=True) - 1).long()
        kwargs = {"input_ids": ids, "attention_mask": self.mask, "position_ids": positions}
        types = [row.token_type for row in self.rows]
        if types[0] is not None:
            kwargs["token_type_ids"] = torch.tensor(types, device=ids.device)[:, None]
        out = self.lm(**kwargs, cache=self.cache, use_cache=True)
        self.logits = out.logits[:, -1, :]


def left_pad(t: torch.Tensor, width: int) -> torch.Tensor:
    """`t` with zeros added on the left of its sequence dimension (the last for masks,
    the third for keys and values) up to `width`."""
    dim = 1 if t.dim() == 2 else 2
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)
