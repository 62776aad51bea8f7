"""Each row's next token, as `generate` would pick it for that row alone.

A row gets the logits processors transformers builds for its own options: those that
read its ids (repetition penalty, n-gram blocking, bad words, minimum length) run on
its own ids; the warpers after them (temperature, top-k, top-p, typical, min-p) look at
the scores alone, so the rows whose options make the same warpers (`warp_key`) are
warped in one call. Then the argmax, or a draw: a seeded row's from its own generator,
the others' in one call.

Unseeded rows whose warpers are temperature, top-k and top-p only (every preset but
typical and min-p) are drawn without transformers' top-p warper, which sorts the whole
vocabulary for every row (most of a small model's step on CPU): a token is drawn from
the whole distribution (a block of tokens by the blocks' masses, then a token within
it: no cumulative sum over the vocabulary), and kept if it lies in the nucleus (the
mass of the tokens more likely than it is below top_p), else drawn again. That is
rejection sampling, so what is drawn has exactly the nucleus's distribution; seeded
rows keep the warper, so their draws stay those of `generate` with their seed.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from rejoinder.errors import RejoinderError
from rejoinder.generation.config import DecodingConfig
from rejoinder.generation.continuous.rows import Row

log = logging.getLogger("rejoinder.generation")

WARPED_BY = ("temperature", "top_k", "top_p", "typical_p", "min_p")
"""The options transformers turns into warpers: rows equal in these share them."""


def warp_key(config: DecodingConfig) -> tuple:
    """What makes a row's warpers: greedy rows have none, sampled rows these options."""
    if not config.do_sample:
        return (False,)
    return (True, *(getattr(config, name) for name in WARPED_BY))


def processors(lm, row: Row, stop_ids, pad_id) -> tuple[Any, dict[str, Any], Any]:
    """transformers' own logits processors for this row's options: (the processors that
    read its ids and must run on the row alone, what runs on all rows at once
    (`batchable`), the warpers after them)."""
    alone, warpers = split(built_processors(lm, row, stop_ids, pad_id))
    return (*batchable(alone), warpers)


def built_processors(lm, row: Row, stop_ids, pad_id):
    """Every logits processor `generate` would build for this row's options, in order."""
    from transformers.generation import LogitsProcessorList

    kwargs = row.config.generate_kwargs()
    for k in ("num_return_sequences", "use_cache"):
        kwargs.pop(k, None)
    if row.bad_ids:
        kwargs["bad_words_ids"] = row.bad_ids
    kwargs.update(eos_token_id=sorted(stop_ids), pad_token_id=pad_id)
    device = lm.device
    # The calls `generate` makes to turn options into processors (transformers keeps
    # them private; tests/test_continuous.py would see them change).
    try:
        config, _ = lm._prepare_generation_config(None, **kwargs)
        config.validate()
    except ValueError as e:
        raise RejoinderError(f"bad generation options: {e}") from None
    lm._prepare_special_tokens(config, True, device=device, batch_size=1)
    return lm._get_logits_processor(
        generation_config=config,
        input_ids_seq_length=len(row.prompt),
        encoder_input_ids=torch.tensor([row.prompt], device=device),
        logits_processor=LogitsProcessorList(),
        device=device,
    )


def split(built) -> tuple[Any, Any]:
    """(the processors that read a row's ids, the warpers after them): transformers puts
    the warpers (temperature, top-k, top-p, typical, min-p, epsilon, eta) last."""
    from transformers.generation import LogitsProcessorList
    from transformers.generation import logits_process as lp

    warper_types = tuple(
        getattr(lp, name)
        for name in (
            "TemperatureLogitsWarper",
            "TopKLogitsWarper",
            "TopPLogitsWarper",
            "MinPLogitsWarper",
            "TypicalLogitsWarper",
            "EpsilonLogitsWarper",
            "EtaLogitsWarper",
        )  # fmt: skip
        if hasattr(lp, name)
    )
    cut = len(built)
    while cut and isinstance(built[cut - 1], warper_types):
        cut -= 1
    return LogitsProcessorList(built[:cut]), LogitsProcessorList(built[cut:])


def batchable(built) -> tuple[Any, dict[str, Any]]:
    """A row's processors as (those it must run alone, what `choose` applies to all rows
    at once): the minimum length (its end ids while it is too short), n-gram blocking
    and the repetition penalty. Each of those either sets scores to -inf or scales the
    scores of given tokens, as every other processor a row has does too, so the order
    they run in changes nothing."""
    from transformers.generation import LogitsProcessorList
    from transformers.generation import logits_process as lp

    alone, shared = LogitsProcessorList(), {}
    for p in built:
        if type(p) is lp.MinNewTokensLengthLogitsProcessor and "min_new" not in shared:
            ends = p.eos_token_id.reshape(-1).tolist()
            shared["min_new"] = (p.prompt_length_to_skip, p.min_new_tokens, ends)
        elif type(p) is lp.NoRepeatNGramLogitsProcessor and "ngram" not in shared:
            shared["ngram"] = p.ngram_size
        elif (
            type(p) is lp.RepetitionPenaltyLogitsProcessor
            and p.prompt_ignore_length is None
            and "penalty" not in shared
        ):
            shared["penalty"] = p.penalty
        else:
            alone.append(p)
    return alone, shared


def apply_shared(rows: list[Row], scores: torch.Tensor) -> None:
    """The minimum lengths, n-gram blocks and repetition penalties of all rows, in place,
    in a few tensor operations instead of a call per row."""
    banned = [
        (i, end)
        for i, row in enumerate(rows)
        if (m := row.shared.get("min_new")) and len(row.prompt) + len(row.new) - m[0] < m[1]
        for end in m[2]
    ]
    banned += [
        (i, token)
        for i, row in enumerate(rows)
        if "ngram" in row.shared
        for token in repeated_ngram_ends(row.ids, row.shared["ngram"])
    ]
    if banned:
        at = torch.tensor(banned, device=scores.device)
        scores[at[:, 0], at[:, 1]] = -float("inf")
    penalized = [i for i, row in enumerate(rows) if "penalty" in row.shared]
    if not penalized:
        return
    vocab = scores.shape[-1]
    ids = [rows[i].ids for i in penalized]
    width = max(map(len, ids))
    # Each row's ids padded with its own first id: gathered and scattered twice, the
    # same value lands twice. Ids past the scores (a vocabulary larger than the output
    # layer) go to a spare column, dropped after, as transformers does.
    padded = torch.tensor([r + r[:1] * (width - len(r)) for r in ids], device=scores.device)
    padded.clamp_(max=vocab)
    penalty = torch.tensor([rows[i].shared["penalty"] for i in penalized], device=scores.device)[
        :, None
    ]
    index = torch.tensor(penalized, device=scores.device)
    some = torch.nn.functional.pad(scores[index], (0, 1))
    picked = some.gather(1, padded)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    scores[index] = some.scatter(1, padded, picked)[:, :vocab]


def repeated_ngram_ends(ids: list[int], n: int) -> list[int]:
    """The tokens that would repeat an n-gram of `ids` (NoRepeatNGramLogitsProcessor's
    bans): each token that followed an earlier occurrence of the last n - 1 ids."""
    if len(ids) + 1 < n:
        return []
    prefix = ids[len(ids) - n + 1 :] if n > 1 else []
    return [ids[i + n - 1] for i in range(len(ids) - n + 1) if ids[i : i + n - 1] == prefix]


def choose(rows: list[Row], logits: torch.Tensor) -> tuple[list[tuple[Row, int]], list]:
    """Every row's next token from its next-token `logits` (rows, vocab): (row, token)
    pairs, and (row, error) for the rows whose processing failed, each failing alone."""
    # Processors write the scores in place; without any, the logits themselves serve
    # (nothing below writes them), and a copy of rows x vocabulary is saved.
    writes = any(row.processors or row.shared for row in rows)
    scores = logits.float().clone() if writes else logits.float()
    groups: dict[tuple, list[int]] = {}
    failed: list[tuple[Row, Exception]] = []
    failing: set[int] = set()
    try:
        apply_shared(rows, scores)
    except Exception as e:  # then each row alone, so that only the failing ones fail
        log.debug("shared processing failed (%s); row by row", e)
        scores = logits.float().clone()
        for i, row in enumerate(rows):
            try:
                apply_shared([row], scores[i : i + 1])
            except Exception as e:
                failed.append((row, e))
                failing.add(i)
    for i, row in enumerate(rows):
        if i in failing:
            continue
        try:
            if row.processors:
                ids = torch.tensor([row.ids], device=scores.device)
                scores[i : i + 1] = row.processors(ids, scores[i : i + 1])
        except Exception as e:
            failed.append((row, e))
            continue
        groups.setdefault(row.group, []).append(i)
    chosen: list[tuple[Row, int]] = []
    # Unseeded rows under temperature, top-k and top-p at most: one draw for all of
    # them, whatever their values (`draw_nucleus`); the others by warp group.
    fast = sorted(i for index in groups.values() for i in index if _fast(rows[i]))
    if fast:
        try:
            mine = scores if len(fast) == len(scores) else scores[fast]  # all: no copy
            tokens = draw_nucleus(mine, [rows[i].config for i in fast])
            chosen += zip([rows[i] for i in fast], tokens, strict=True)
        except Exception as e:
            failed += [(rows[i], e) for i in fast]
    taken = set(fast)
    for (sample, *_), index in groups.items():
        index = [i for i in index if i not in taken]
        if not index:
            continue
        group = [rows[i] for i in index]
        try:
            warped = group[0].warpers(None, scores[index])
            picked = draw(group, warped) if sample else warped.argmax(-1).tolist()
        except Exception as e:
            failed += [(row, e) for row in group]
            continue
        chosen += zip(group, picked, strict=True)
    return chosen, failed


def _fast(row: Row) -> bool:
    """Whether `draw_nucleus` draws the row: sampled, unseeded, and warped by
    temperature, top-k and top-p at most (seeded rows draw as `generate` does)."""
    c = row.config
    return c.do_sample and row.generator is None and c.typical_p is None and c.min_p is None


REDRAWS = 16
"""Draws a row gets before its nucleus is found by sorting (each draw lands in the
nucleus with probability >= top_p: 16 misses in a row at 0.9 come once in 10^16)."""

BLOCK = 128
"""Tokens per block of the two-level draw: a block is picked by the blocks' masses, then
a token within it, so no row needs the cumulative sum of its whole vocabulary."""


def draw_nucleus(scores: torch.Tensor, configs: list[DecodingConfig]) -> list[int]:
    """A token for each row of `scores` (processed, not warped), distributed as
    transformers' temperature, top-k and top-p warpers for that row's config and a
    draw would give it; rows of different configs in one pass."""
    device, vocab = scores.device, scores.shape[-1]
    logits = scores
    if any(c.temperature != 1.0 for c in configs):
        temperature = torch.tensor([[c.temperature] for c in configs], device=device)
        logits = logits / temperature
    cut = [(j, c.top_k) for j, c in enumerate(configs) if c.top_k and c.top_k < vocab]
    if cut:  # as TopKLogitsWarper: what is below the row's k-th largest goes
        rows = torch.tensor([j for j, _ in cut], device=device)
        largest = torch.topk(logits[rows], max(k for _, k in cut)).values
        kth = largest.gather(1, torch.tensor([[k - 1] for _, k in cut], device=device))
        logits = logits.clone() if logits is scores else logits
        logits[rows] = logits[rows].masked_fill(logits[rows] < kth, -float("inf"))
    probs = torch.softmax(logits, dim=-1)
    masses = block_masses(probs)
    tokens = pick(probs, masses)
    # TopPLogitsWarper only runs below 1; a row without it keeps any draw
    top_p = torch.tensor(
        [c.top_p if c.top_p is not None and c.top_p < 1.0 else float("inf") for c in configs],
        device=device,
    )
    if torch.isinf(top_p).all():
        return tokens.tolist()
    whole = bool(torch.isfinite(top_p).all())
    todo = torch.arange(len(probs), device=device)[torch.isfinite(top_p)]
    for attempt in range(REDRAWS):
        # TopPLogitsWarper drops a token when the mass below it, itself included, is
        # <= 1 - top_p: when the mass of the tokens more likely than it is >= top_p.
        # (All rows the first time: no copy of the rows' probabilities.)
        rows = probs if attempt == 0 and whole else probs[todo]
        mine = rows.gather(1, tokens[todo, None])
        above = (rows * (rows > mine)).sum(-1)
        todo = todo[above >= top_p[todo]]
        if not len(todo):
            return tokens.tolist()
        tokens[todo] = pick(probs[todo], masses[todo])
    from transformers.generation import TopPLogitsWarper

    for j in todo.tolist():  # all but never: each row from its own warper
        warped = TopPLogitsWarper(configs[j].top_p)(None, logits[j : j + 1])
        tokens[j] = torch.multinomial(torch.softmax(warped, -1), 1)[0, 0]
    return tokens.tolist()


def block_masses(probs: torch.Tensor) -> torch.Tensor:
    """Each row's probability mass in each block of BLOCK tokens (the last block may be
    shorter): (rows, blocks), read from `probs` without copying it."""
    rows, vocab = probs.shape
    whole = vocab // BLOCK * BLOCK
    parts = [probs[:, :whole].reshape(rows, -1, BLOCK).sum(-1)] if whole else []
    if whole < vocab:
        parts.append(probs[:, whole:].sum(-1, keepdim=True))
    return torch.cat(parts, 1) if len(parts) > 1 else parts[0]


def pick(probs: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """A token for each row drawn from `probs` (rows, vocab) by inverse transform in two
    levels: a block by the cumulative sum of the blocks' `masses`, then a token by the
    cumulative sum within that block. Never a token of probability zero: the first
    cumulative sum above the draw is past a token of positive mass, and a draw that
    rounding carries past the end is held to the last such token."""
    device, (rows, vocab) = probs.device, probs.shape
    cum = masses.cumsum(-1)
    u = torch.rand((rows, 1), device=device, dtype=cum.dtype) * cum[:, -1:]
    lasts = torch.arange(masses.shape[1], device=device).expand_as(masses)
    last_block = torch.where(masses > 0, lasts, 0).amax(-1, keepdim=True)
    block = torch.minimum(torch.searchsorted(cum, u, right=True), last_block)
    before = torch.where(block > 0, cum.gather(1, (block - 1).clamp(min=0)), 0)
    index = block * BLOCK + torch.arange(BLOCK, device=device)
    inside = probs.gather(1, index.clamp(max=vocab - 1))
    inside = torch.where(index < vocab, inside, 0)
    offsets = torch.arange(BLOCK, device=device).expand_as(inside)
    last_token = torch.where(inside > 0, offsets, 0).amax(-1, keepdim=True)
    at = torch.searchsorted(inside.cumsum(-1), (u - before).clamp(min=0), right=True)
    return (block * BLOCK + torch.minimum(at, last_token))[:, 0]


def draw(rows: list[Row], warped: torch.Tensor) -> list[int]:
    """A token for each row from softmax(warped): a seeded row's from its own generator,
    the others' in one call."""
    probs = torch.softmax(warped, dim=-1)
    out = [0] * len(rows)
    free = [j for j, row in enumerate(rows) if row.generator is None]
    if free:
        for j, token in zip(free, torch.multinomial(probs[free], 1)[:, 0].tolist(), strict=True):
            out[j] = token
    for j, row in enumerate(rows):
        if row.generator is not None:
            out[j] = int(torch.multinomial(probs[j : j + 1], 1, generator=row.generator)[0, 0])
    return out
