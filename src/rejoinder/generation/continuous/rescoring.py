"""Scoring rows' replies from what decoding them computed (MMI's forward log-likelihood).

A reranked request's candidates are scored by the forward model as `loglikelihood`
would score them: each reply's text encoded again (`scoring.response_encodings`), its
tokens and end-of-turn marker labelled. Decoding has computed most of that already:
the prompt's keys and values, each drawn token's log-probability under the model (its
raw logits, before any processor or warper), and the keys and values of the tokens
drawn. Wherever the encoding of the text starts as the row's own tokens did (the
prompt, then as much of the reply as re-encodes to the tokens drawn), those
log-probabilities are the encoding's; the rest runs through the model over the kept
keys and values of that shared beginning. A reply that re-encodes to its own tokens
costs two positions at most (none when it ended with its end token) instead of its whole
sequence; one that does not runs from where the two part. The log-probabilities are
those of the full pass up to floating-point rounding (tests/test_rescoring.py).

A request's prompt keys and values are kept once (`KeptPrompt`, shared by its rows),
each row's own tokens' apart (`Kept`), from the step the row ends until the caller
has scored it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rejoinder.formats import IGNORE, Encoding
from rejoinder.generation.continuous.batch import left_pad
from rejoinder.modeling.loss import labelled_logprobs
from rejoinder.padding import pad_batch

ROWS = 32
"""Candidates scored in one forward pass."""


@dataclass(eq=False)
class KeptPrompt:
    """A request's prompt keys and values, kept when the first of its rows ends."""

    layers: list | None = None


@dataclass(eq=False)
class Kept:
    """What decoding one row computed, kept to score its reply."""

    prompt: KeptPrompt
    logprobs: list[float] = field(default_factory=list)
    """The log-probability of each token drawn, under the model's raw logits."""
    layers: list | None = None
    """The keys and values of the tokens drawn and run (all but the last)."""


def record(rows: list, logits: torch.Tensor, chosen: list[tuple]) -> None:
    """Adds each kept row's drawn token's log-probability under `logits` (the step's raw
    next-token logits, which choosing does not write)."""
    at = {id(row): i for i, row in enumerate(rows) if row.kept is not None}
    picked = [(at[id(row)], token, row) for row, token in chosen if id(row) in at]
    if not picked:
        return
    index = torch.tensor([i for i, _, _ in picked], device=logits.device)
    tokens = torch.tensor([t for _, t, _ in picked], device=logits.device)
    raw = logits.float()
    if len(at) == len(rows):  # every row (a batch of candidates): no copy of the logits
        norm = torch.logsumexp(raw, -1).index_select(0, index)
    else:
        norm = torch.logsumexp(raw.index_select(0, index), -1)
    values = (raw[index, tokens] - norm).tolist()
    for (_, _, row), value in zip(picked, values, strict=True):
        row.kept.logprobs.append(value)


def keep(row, batch, i: int) -> None:
    """Keeps the keys and values of row `i` of `batch` (it has ended): its prompt's on
    its request's `KeptPrompt` if no row of the request has yet, its own tokens' on it."""
    p = len(row.prompt)
    if row.kept.prompt.layers is None:
        _, layers = batch.kept(i)
        row.kept.prompt.layers = [(k[:, :, :p], v[:, :, :p]) for k, v in layers]
        row.kept.layers = [(k[:, :, p:], v[:, :, p:]) for k, v in layers]
    else:
        row.kept.layers = batch.kept(i, start=p)[1]


def shared(row, encoding: Encoding) -> int | None:
    """Where the forward pass for `encoding` must start (it has the keys and values of
    the tokens before, and the log-probabilities of the labels up to there): the last
    token the encoding shares with the row's prompt and tokens drawn; None when the
    row's kept state cannot serve (nothing kept, nothing shared, a label in the prompt)."""
    kept = row.kept
    if kept is None or kept.layers is None or kept.prompt.layers is None:
        return None
    ids, labels = encoding.input_ids, encoding.labels
    drawn = [*row.prompt, *row.new]
    types = encoding.token_type_ids
    mine = None
    if row.prompt_types is not None:
        mine = [*row.prompt_types, *[row.token_type] * len(row.new)]
    # Up to the tokens whose log-probabilities were recorded and whose keys and values
    # were kept (all but the last token drawn), and one more: the pass's first input.
    ran = len(row.prompt) + kept.layers[0][0].shape[2]
    limit = min(len(ids), len(drawn), len(kept.logprobs) + len(row.prompt), ran + 1)
    n = 0
    while n < limit and ids[n] == drawn[n] and (mine is None or types[n] == mine[n]):
        n += 1
    p = len(row.prompt)
    if n < 2 or any(labels[j] != IGNORE for j in range(1, min(n, p))):
        return None
    return n - 1


def loglikelihood(
    lm, rows: list, encodings: list[Encoding], pad_id: int
) -> tuple[list[list[float]], int]:
    """Each encoding's labelled log-probabilities (as `loglikelihood`), the encoding of
    its row's reply: from the row's kept state where it serves, else a full pass; and
    how many of the encodings' tokens did not run through the model again."""
    out: list[list[float] | None] = [None] * len(encodings)
    starts = [shared(row, e) for row, e in zip(rows, encodings, strict=True)]
    for k, s in enumerate(starts):
        if s is not None and all(t == IGNORE for t in encodings[k].labels[s + 1 :]):
            out[k] = _known(rows[k], encodings[k], s)  # all drawn: nothing to run
    over = [k for k, s in enumerate(starts) if s is not None and out[k] is None]
    alone = [k for k, s in enumerate(starts) if s is None]
    with torch.inference_mode():
        for at in range(0, len(over), ROWS):
            chunk = over[at : at + ROWS]
            done = _over_kept(lm, [rows[k] for k in chunk], [encodings[k] for k in chunk],
                              [starts[k] for k in chunk], pad_id)  # fmt: skip
            for k, logprobs in zip(chunk, done, strict=True):
                out[k] = logprobs
        for at in range(0, len(alone), ROWS):
            chunk = alone[at : at + ROWS]
            batch = pad_batch([encodings[k] for k in chunk], pad_id, labels=True, device=lm.device)
            for k, logprobs in zip(chunk, labelled_logprobs(lm, batch), strict=True):
                out[k] = logprobs
    return out, sum(s for s in starts if s is not None)


def _known(row, encoding: Encoding, start: int) -> list[float]:
    """The log-probabilities of the encoding's labels up to `start`: tokens the row drew
    (`shared` refuses labels in the prompt), recorded as they were drawn."""
    p = len(row.prompt)
    labels = encoding.labels
    return [row.kept.logprobs[j - p] for j in range(p, start + 1) if labels[j] != IGNORE]


def _over_kept(lm, rows: list, encodings: list[Encoding], starts: list[int], pad_id: int):
    """Labelled log-probabilities of encodings whose first `starts[i]` tokens are their
    row's: known ones from decoding, the rest from one forward pass of the remainders
    over the rows' kept keys and values (left-padded together)."""
    from transformers import DynamicCache

    device = lm.device
    known, caches = [], []
    for row, e, s in zip(rows, encodings, starts, strict=True):
        p = len(row.prompt)
        known.append(_known(row, e, s))
        caches.append(
            [
                (torch.cat([pk[:, :, : min(s, p)], k[:, :, : max(0, s - p)]], 2),
                 torch.cat([pv[:, :, : min(s, p)], v[:, :, : max(0, s - p)]], 2))
                for (pk, pv), (k, v) in zip(row.kept.prompt.layers, row.kept.layers, strict=True)
            ]
        )  # fmt: skip
    past = max(starts)
    width = max(len(e.input_ids) - s for e, s in zip(encodings, starts, strict=True))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), past + width), dtype=torch.long)
    types = None if encodings[0].token_type_ids is None else torch.zeros_like(ids)
    for i, (e, s) in enumerate(zip(encodings, starts, strict=True)):
        rest = len(e.input_ids) - s
        ids[i, :rest] = torch.tensor(e.input_ids[s:])
        labels[i, :rest] = torch.tensor(e.labels[s:])
        mask[i, past - s : past + rest] = 1
        if types is not None:
            types[i, :rest] = torch.tensor(e.token_type_ids[s:])
    cache = DynamicCache(config=lm.config)
    for n, layer in enumerate(cache.layers):
        k = torch.cat([left_pad(c[n][0], past) for c in caches])
        v = torch.cat([left_pad(c[n][1], past) for c in caches])
        layer.lazy_initialization(k, v)
        layer.keys, layer.values = k, v
    start = torch.tensor(starts)[:, None]
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": start + torch.arange(width)[None],
        "labels": labels,
        **({"token_type_ids": types} if types is not None else {}),
    }
    batch = {k: t.to(device) for k, t in batch.items()}
    rest = labelled_logprobs(lm, {**batch, "cache": cache})
    return [a + b for a, b in zip(known, rest, strict=True)]
