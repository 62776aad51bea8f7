"""Each row's next token, as `generate` would pick it for that row alone.

A row gets the logits processors transformers builds for its own options: those that
read its ids (repetition penalty, n-gram blocking, bad words, minimum length) run on
its own ids; the warpers after them (temperature, top-k, top-p, typical, min-p) look at
the scores alone, so the rows whose options make the same warpers (`warp_key`) are
warped in one call. Then the argmax, or a draw: a seeded row's from its own generator,
the others' in one call.
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


def processors(lm, row: Row, stop_ids, pad_id) -> tuple[Any, Any]:
    """transformers' own logits processors for this row's options: (the processors that
    read its ids, the warpers after them)."""
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
    built = lm._get_logits_processor(
        generation_config=config,
        input_ids_seq_length=len(row.prompt),
        encoder_input_ids=torch.tensor([row.prompt], device=device),
        logits_processor=LogitsProcessorList(),
        device=device,
    )
    return split(built)


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


def choose(rows: list[Row], logits: torch.Tensor) -> tuple[list[tuple[Row, int]], list]:
    """Every row's next token from its next-token `logits` (rows, vocab): (row, token)
    pairs, and (row, error) for the rows whose processing failed, each failing alone."""
    scores = logits.float().clone()
    groups: dict[tuple, list[int]] = {}
    failed: list[tuple[Row, Exception]] = []
    for i, row in enumerate(rows):
        try:
            if row.processors:
                ids = torch.tensor([row.ids], device=scores.device)
                scores[i : i + 1] = row.processors(ids, scores[i : i + 1])
        except Exception as e:
            failed.append((row, e))
            continue
        groups.setdefault(row.group, []).append(i)
    chosen: list[tuple[Row, int]] = []
    for (sample, *_), index in groups.items():
        group = [rows[i] for i in index]
        try:
            warped = group[0].warpers(None, scores[index])
            picked = draw(group, warped) if sample else warped.argmax(-1).tolist()
        except Exception as e:
            failed += [(row, e) for row in group]
            continue
        chosen += zip(group, picked, strict=True)
    return chosen, failed


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
