"""Reranking: sample candidates, score them with a reverse model (DialoGPT's MMI) and/or
reply rankers (DialogRPT's), pick.

With the "weighted" recipe a candidate's score is reverse_weight times the reverse
model's mean log-likelihood of the source (the last message, or the whole history with
mmi_source="history") given the candidate, plus mmi_lambda times the forward model's
mean log-likelihood of the candidate, plus each ranker's weight times its score (the
probability, in [0, 1], that people prefer the candidate). With the "dialogrpt" recipe
it is DialogRPT's ensemble: prior x cond, where prior is the mean of the
human_vs_rand and human_vs_machine rankers and cond the weighted mean of updown (1),
depth (0.48) and width (-0.5), over those loaded. mmi_temperature 0 picks the best;
T > 0 samples from softmax(score / T). With the repetition guard on
(`max_self_overlap`), candidates that repeat one of the bot's earlier turns are left out
of the pick while any other remains; with the safety policy on (`model.safety`), so are
candidates it flags, all of a batch's checked in one pass.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rejoinder.dialogue import as_context
from rejoinder.errors import RejoinderError
from rejoinder.formats import Encoding
from rejoinder.generation import replies, scoring
from rejoinder.generation.config import DecodingConfig
from rejoinder.generation.replies import STOP, Reply
from rejoinder.generation.scoring import NOTHING, Score

MMI_ROWS = 128
"""At most this many candidates (contexts times mmi_candidates) share a generate call."""


@dataclass
class Candidate:
    """One MMI candidate with its scores (mean log-likelihoods per token)."""

    text: str
    forward: float
    reverse: float
    score: float
    rankers: dict[str, float] = field(default_factory=dict)
    """Each ranker's score of the candidate (a probability), by ranker name."""
    tokens: int = 0
    """The tokens generated for it."""
    finish_reason: str = STOP
    repeats: float = 0.0
    """Its overlap with the bot's earlier turns (see `replies.overlap`)."""
    flag: Any = None
    """What the safety policy flagged in it (a `rejoinder.safety.Flag`), if anything."""


@dataclass
class MMIResult:
    reply: str
    candidates: list[Candidate]
    chosen: int = 0
    """The index of the reply among the candidates."""

    @property
    def best(self) -> Reply:
        """The reply with its tokens and finish reason, and what the safety policy flagged
        among the candidates."""
        c = self.candidates[self.chosen]
        flags = tuple(x.flag for x in self.candidates if x.flag is not None)
        return Reply(self.reply, c.tokens, c.finish_reason, flags)

    @property
    def safe(self) -> bool:
        """Whether the chosen candidate passed the safety policy (True where it is off)."""
        return self.candidates[self.chosen].flag is None


NEEDS_REVERSE = (
    "MMI reranking needs a reverse model: ConversationModel.from_pretrained(DIR, "
    "reverse=REVERSE_DIR), or --reverse REVERSE_DIR on the command line (or a reply "
    "ranker: rankers={NAME: DIR}, --ranker NAME=DIR)"
)
PRIOR = {"human_vs_rand": 0.5, "human_vs_machine": 0.5}
COND = {"updown": 1.0, "depth": 0.48, "width": -0.5}
"""DialogRPT's ensemble weights (its restore/ensemble.yml)."""


def uses_reverse(model, config: DecodingConfig) -> bool:
    """Whether reranking scores candidates with the reverse model."""
    weighted = config.rerank_recipe == "weighted"
    return model.reverse is not None and weighted and config.reverse_weight != 0


def check_config(model, config: DecodingConfig) -> None:
    """Refuses a reranking config the model cannot score with: the one place that says so."""
    if not config.uses_mmi:
        return
    unknown = sorted(set(config.ranker_weights) - set(model.rankers))
    if unknown:
        loaded = ", ".join(model.rankers) or "none"
        raise RejoinderError(
            f"ranker_weights names {', '.join(unknown)}, but the loaded rankers are {loaded}"
        )
    if config.rerank_recipe == "dialogrpt":
        if not set(COND) & set(model.rankers):
            raise RejoinderError(
                "the dialogrpt recipe needs at least one of the rankers "
                f"{', '.join(COND)} (e.g. --ranker updown=DIR, made with `rejoinder "
                "import-dialogrpt updown.pth`)"
            )
    elif not uses_reverse(model, config) and not model.rankers:
        raise RejoinderError(NEEDS_REVERSE)


def combine(candidate: Candidate, config: DecodingConfig, has_reverse: bool) -> float:
    """A candidate's final score from its parts (see the module's docstring)."""
    r = candidate.rankers
    if config.rerank_recipe == "dialogrpt":

        def mean(weights: dict[str, float]) -> float | None:
            used = [k for k in weights if k in r]
            total = sum(weights[k] for k in used)
            return sum(weights[k] * r[k] for k in used) / total if used and total else None

        prior = mean(PRIOR)
        cond = mean(COND)
        return (1.0 if prior is None else prior) * (cond or 0.0)
    score = config.mmi_lambda * candidate.forward
    if has_reverse:
        score += config.reverse_weight * candidate.reverse
    return score + sum(config.ranker_weights.get(k, 1.0) * v for k, v in r.items())


def check_reverse(forward, reverse) -> None:
    """Refuses a reverse model that cannot rerank `forward`'s candidates."""
    where = reverse.checkpoint.path
    if not reverse.format.reverse:
        raise RejoinderError(
            f"{where} is not a reverse model: its format does not reverse turns (train one "
            "with --model.reverse true, or import DialoGPT's *_reverse.pkl)"
        )
    if reverse.tokenizer.get_vocab() != forward.tokenizer.get_vocab():
        raise RejoinderError(
            f"the reverse model {where} has another tokenizer than the forward model; "
            "MMI needs both to share one vocabulary"
        )


def rerank_batch(model, contexts: Sequence[Any], config: DecodingConfig) -> list[MMIResult]:
    """Reranking for many contexts with a ConversationModel that has a reverse model
    and/or rankers.

    The candidates of several contexts come from shared generate calls (every row draws
    its own samples) and are scored in shared padded batches.
    """
    model.check(config)
    n = config.mmi_candidates
    # Candidates are not redrawn by the repetition guard: the pick leaves repeats out.
    sample = replace(config, num_return_sequences=n, mmi_candidates=0, max_self_overlap=None)
    histories = [as_context(c) for c in contexts]
    per_call = max(1, MMI_ROWS // n)
    drawn: list[list[Reply]] = []
    for start in range(0, len(histories), per_call):
        seed = None if config.seed is None else config.seed + start
        drawn += model.draw(histories[start : start + per_call], replace(sample, seed=seed))
    return rerank_drawn(model, histories, drawn, config)


def rerank_drawn(
    model,
    contexts: Sequence[Any],
    drawn: Sequence[Sequence[Reply]],
    config: DecodingConfig,
    forward_of: Callable[[list[Encoding], list[tuple[int, int]]], list[list[float]]] | None = None,
) -> list[MMIResult]:
    """Reranks candidates already drawn (`drawn[i]` for `contexts[i]`), scored in shared
    batches: the second half of `rerank_batch`, for callers that sample the candidates
    their own way (the server's continuous batching samples them in shared steps).

    `forward_of(encodings, drawn_at)`, when given, makes the forward model's scores: the
    labelled log-probabilities of each candidate's encoding, `drawn_at` saying which draw
    (i, j), `drawn[i][j]`, each is the text of (the continuous decoder scores from what
    decoding computed, `StepDecoder.loglikelihood`); else `model.loglikelihood`."""
    histories = [as_context(c) for c in contexts]
    # One candidate per distinct text, with the tokens of its first draw: `firsts[i]`
    # maps each text to that draw's index.
    firsts: list[dict[str, int]] = [{} for _ in drawn]
    for first, rs in zip(firsts, drawn, strict=True):
        for j, r in enumerate(rs):
            if r.text.strip():
                first.setdefault(r.text, j)
    texts = [list(first) for first in firsts]
    pairs = [(h, t) for h, ts in zip(histories, texts, strict=True) for t in ts]
    encodings = scoring.response_encodings(model.format, pairs, model.context_budget)
    if forward_of is None:
        forward = iter(model.score_encodings(encodings))
    else:
        at = [(i, j) for i, first in enumerate(firsts) for j in first.values()]
        forward = iter(scoring.scores_of(model.tokenizer, encodings, forward_of(encodings, at)))
    has_reverse = uses_reverse(model, config)
    backward = iter(
        source_scores(model.reverse, histories, texts, config.mmi_source)
        if has_reverse
        else [NOTHING] * len(pairs)
    )
    ranked = {name: iter(r.score_pairs(pairs)) for name, r in model.rankers.items()}
    # Every candidate of every context through the safety policy in one batched pass.
    safety = model.safety
    flagged = iter(safety.check(pairs) if safety is not None else [None] * len(pairs))
    rng = random.Random(None if config.seed is None else config.seed + 1)
    results = []
    for history, ts, first, rs in zip(histories, texts, firsts, drawn, strict=True):
        if not ts:
            empty = rs[0] if rs else Reply("", 0, STOP)
            results.append(MMIResult("", [Candidate("", 0.0, 0.0, 0.0, {}, empty.tokens)]))
            continue
        earlier = replies.bot_turns(history) if config.max_self_overlap else []
        candidates = []
        for t in ts:
            f, b = next(forward), next(backward)
            c = Candidate(t, f.mean, b.mean, 0.0, {k: next(v) for k, v in ranked.items()})
            c.score = combine(c, config, has_reverse)
            c.tokens, c.finish_reason = rs[first[t]].tokens, rs[first[t]].finish_reason
            c.repeats = replies.overlap(t, earlier) if earlier else 0.0
            c.flag = next(flagged)
            candidates.append(c)
        chosen = _pick(candidates, config, rng)
        results.append(MMIResult(candidates[chosen].text, candidates, chosen))
    return results


def _pick(candidates: list[Candidate], config: DecodingConfig, rng: random.Random) -> int:
    """The chosen candidate: the best, or a draw from softmax(score / T), among the safe
    ones (all, when none is safe: the caller draws again), and of those, the ones the
    repetition guard lets through (the least repetitive, when it lets none through)."""
    allowed = [i for i, c in enumerate(candidates) if c.flag is None] or list(
        range(len(candidates))
    )
    if config.max_self_overlap is not None:
        fewest = min(candidates[i].repeats for i in allowed)
        limit = config.max_self_overlap
        allowed = [i for i in allowed if candidates[i].repeats <= limit] or [
            i for i in allowed if candidates[i].repeats == fewest
        ]
    scores = [candidates[i].score for i in allowed]
    if config.mmi_temperature > 0:  # softmax(score / T), shifted so exp never overflows
        top = max(scores)
        weights = [math.exp((s - top) / config.mmi_temperature) for s in scores]
        return allowed[rng.choices(range(len(allowed)), weights)[0]]
    return allowed[max(range(len(scores)), key=scores.__getitem__)]


def source_scores(
    reverse, histories: list[list], texts: list[list[str]], mmi_source: str
) -> list[Score]:
    """The reverse model's log-likelihood of each history's source given each of its
    candidates, in one flat list."""
    loss_on = "last" if mmi_source == "last" else "responses"
    encodings, where = [], []
    for history, ts in zip(histories, texts, strict=True):
        source = history[-1:] if mmi_source == "last" else history
        for t in ts:
            if source:
                where.append(len(encodings))
                turns = [*source, *as_context([t])]
                encodings.append(
                    reverse.format.training_example(turns, loss_on, reverse.context_budget)
                )
            else:  # nothing said yet: nothing for the reverse model to explain
                where.append(None)
    scores = reverse.score_encodings(encodings)
    return [NOTHING if i is None else scores[i] for i in where]
