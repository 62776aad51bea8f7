"""One decoding configuration for the Python API, every CLI verb, chat's /set and serving.

Fields are `transformers` generation options (validated here, with messages that name
the option and its valid values) plus rejoinder's own: `seed`, `bad_words`, `stop`,
`head`, and reranking of sampled candidates by a reverse model (MMI) and reply rankers
(`mmi_candidates`, `mmi_temperature`, `mmi_lambda`, `mmi_source`, `reverse_weight`,
`ranker_weights`, `rerank_recipe`). The rules that follow from a config alone (can
it stream, does it rerank) live here too, once. Named presets give common settings
that options override:

>>> decoding_config("nucleus", temperature=0.7).top_p
0.9
>>> decoding_config("mmi").uses_mmi, decoding_config("mmi").streamable
(True, False)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from rejoinder.errors import RejoinderError
from rejoinder.options import option

MIN_TEMPERATURE = 0.01
"""The lowest sampling temperature."""
SEED_LIMIT = 2**62
"""Seeds are below this."""

MMI_CANDIDATES = 10
"""How many candidates MMI reranks when nothing says otherwise."""


@dataclass
class DecodingConfig:
    """How a reply is decoded."""

    do_sample: bool = option(False, flag="--sample")
    """Sample (True) or search (False: greedy, or beam with num_beams > 1)."""
    temperature: float = 1.0
    """Divides the logits before sampling; >= 0.01."""
    top_k: int | None = None
    """Sample among the k most likely tokens (None: all of them)."""
    top_p: float | None = None
    """Sample among the most likely tokens whose probabilities add up to p; in (0, 1]."""
    typical_p: float | None = None
    """Locally typical sampling mass; in (0, 1]."""
    min_p: float | None = None
    """Drop tokens less likely than min_p times the most likely one; in [0, 1]."""
    num_beams: int = 1
    """Beam search width; >= 1."""
    length_penalty: float = 1.0
    """Beam search: exponent on length when ranking finished beams."""
    early_stopping: bool = False
    """Beam search: stop once num_beams replies are finished."""
    repetition_penalty: float = 1.0
    """Penalise tokens already in the sequence; >= 1 discourages repeats."""
    no_repeat_ngram_size: int = 0
    """Never repeat an n-gram of this size (0: off)."""
    bad_words: list[str] = option(default_factory=list, flag="--bad-word", metavar="WORD")
    """A word the reply must not contain."""
    min_new_tokens: int = 0
    """The reply is at least this many tokens long."""
    max_new_tokens: int = 64
    """The reply is at most this many tokens long."""
    stop: list[str] = option(default_factory=list, metavar="TEXT")
    """A string that ends the reply."""
    num_return_sequences: int = 1
    """Replies per context (sampled, or the best beams)."""
    seed: int | None = None
    """Makes sampling repeatable (the caller's RNG state is left alone)."""
    max_self_overlap: float | None = None
    """Refuse a reply whose word trigrams are, for more than this share, those of one of
    the bot's earlier turns in the conversation (turns whose role is "assistant"): it
    loses to any candidate that does not (reranking), else is drawn again; in (0, 1],
    None: off (chat and serve default to 0.5)."""
    self_overlap_retries: int = 3
    """How many times a reply refused by max_self_overlap is drawn again, at most."""
    use_cache: bool = option(True, hidden=True)
    """Reuse attention keys and values between steps (off only to check that it agrees)."""
    head: str | None = None
    """The LM head that replies, on a model with extra heads (None: the default one)."""
    mmi_candidates: int = 0
    """Rerank: sample this many candidates and rerank them with the reverse model (MMI)
    and/or the loaded rankers (0: off)."""
    mmi_temperature: float = 0.0
    """MMI: 0 picks the best candidate; T > 0 samples from softmax(score / T)."""
    mmi_lambda: float = 0.0
    """MMI: score = reverse log-likelihood + mmi_lambda * forward log-likelihood."""
    mmi_source: Literal["last", "history"] = "last"
    """MMI: the source the reverse model must explain: the last message, or all history."""
    reverse_weight: float = 1.0
    """Rerank: the weight of the reverse model's score, when one is loaded (0: unused)."""
    ranker_weights: dict[str, float] = option(default_factory=dict, hidden=True)
    """Rerank: the weight of each loaded ranker's score, by name; a ranker not named
    weighs 1."""
    rerank_recipe: Literal["weighted", "dialogrpt"] = "weighted"
    """Rerank: weighted (reverse_weight x reverse + mmi_lambda x forward + each ranker's
    weight x its score) or dialogrpt (DialogRPT's ensemble of the rankers named updown,
    depth, width, human_vs_rand and human_vs_machine)."""

    def __post_init__(self):
        def bad(name, valid):
            raise RejoinderError(f"{name}={getattr(self, name)!r} is invalid; {valid}")

        # Logits are divided by it: far below this floor they overflow (float16 first;
        # a temperature that underflows float32 divides by zero) and sampling fails.
        if not self.temperature >= MIN_TEMPERATURE:
            bad(
                "temperature",
                f"use a number >= {MIN_TEMPERATURE} (1.0 leaves the distribution as it is; "
                "for the single most likely reply, decode greedily)",
            )
        if self.top_p is not None and not 0 < self.top_p <= 1:
            bad("top_p", "use a number in (0, 1]")
        if self.typical_p is not None and not 0 < self.typical_p <= 1:
            bad("typical_p", "use a number in (0, 1]")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            bad("min_p", "use a number in [0, 1]")
        if self.top_k is not None and self.top_k < 1:
            bad("top_k", "use an integer >= 1")
        if self.num_beams < 1:
            bad("num_beams", "use an integer >= 1")
        if self.repetition_penalty <= 0:
            bad("repetition_penalty", "use a number > 0")
        if self.no_repeat_ngram_size < 0:
            bad("no_repeat_ngram_size", "use an integer >= 0")
        if self.max_new_tokens < 1:
            bad("max_new_tokens", "use an integer >= 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            bad("min_new_tokens", "use an integer between 0 and max_new_tokens")
        if self.num_return_sequences < 1:
            bad("num_return_sequences", "use an integer >= 1")
        if self.num_return_sequences > max(self.num_beams, 1) and not self.do_sample:
            bad("num_return_sequences", "greedy search returns one reply: sample, or use beams")
        if self.max_self_overlap is not None and not 0 < self.max_self_overlap <= 1:
            bad("max_self_overlap", "use a share in (0, 1], or None for off")
        if self.self_overlap_retries < 0:
            bad("self_overlap_retries", "use an integer >= 0")
        if self.mmi_candidates < 0 or self.mmi_candidates == 1:
            bad("mmi_candidates", "use 0 (off) or an integer >= 2")
        if self.mmi_temperature < 0:
            bad("mmi_temperature", "use 0 (pick the best) or a number > 0")
        if self.mmi_source not in ("last", "history"):
            bad("mmi_source", "use 'last' or 'history'")
        if self.rerank_recipe not in ("weighted", "dialogrpt"):
            bad("rerank_recipe", "use 'weighted' or 'dialogrpt'")
        if not isinstance(self.ranker_weights, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float)
            for k, v in self.ranker_weights.items()
        ):
            bad("ranker_weights", 'use a mapping from ranker name to weight, e.g. {"updown": 1}')
        if self.uses_mmi and not self.do_sample and self.num_beams < self.mmi_candidates:
            raise RejoinderError(
                "MMI candidates are sampled: set do_sample=true (or num_beams >= mmi_candidates)"
            )
        if isinstance(self.bad_words, str):
            self.bad_words = [self.bad_words]
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        # Bounded so that every engine takes it (torch's generator, CTranslate2's unsigned
        # seed) with room for the offsets added per batch and per MMI step.
        if self.seed is not None and (
            not isinstance(self.seed, int)
            or isinstance(self.seed, bool)
            or not 0 <= self.seed < SEED_LIMIT
        ):
            bad("seed", "use an integer from 0 to 2**62 - 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def uses_mmi(self) -> bool:
        """Whether replies are reranked by a reverse model (which must then be loaded)."""
        return self.mmi_candidates > 0

    @property
    def streamable(self) -> bool:
        """Whether the reply can be streamed: one reply, decoded left to right."""
        return not (self.uses_mmi or self.num_beams > 1 or self.num_return_sequences > 1)

    def with_mmi(self, on: bool) -> DecodingConfig:
        """This config reranked by MMI (with MMI_CANDIDATES unless it names a number) or not."""
        if not on:
            return replace(self, mmi_candidates=0)
        return self if self.uses_mmi else replace(self, mmi_candidates=MMI_CANDIDATES)

    def generate_kwargs(self) -> dict[str, Any]:
        """The `transformers` generate options (rejoinder's own ones left out)."""
        own = {
            "bad_words",
            "stop",
            "seed",
            "max_self_overlap",
            "self_overlap_retries",
            "head",
            "mmi_candidates",
            "mmi_temperature",
            "mmi_lambda",
            "mmi_source",
            "reverse_weight",
            "ranker_weights",
            "rerank_recipe",
        }
        kwargs = {k: v for k, v in asdict(self).items() if k not in own and v is not None}
        if not self.do_sample:  # sampling knobs mean nothing to search; don't warn about them
            for k in ("temperature", "top_k", "top_p", "typical_p", "min_p"):
                kwargs.pop(k, None)
        elif self.top_k is None:  # no cut, as on CTranslate2 (transformers would cut at 50)
            kwargs["top_k"] = 0
        return kwargs


PRESETS: dict[str, dict[str, Any]] = {
    "greedy": {},
    "beam": {"num_beams": 5, "early_stopping": True, "no_repeat_ngram_size": 3},
    "nucleus": {"do_sample": True, "top_p": 0.9},
    "top-k": {"do_sample": True, "top_k": 40},
    "typical": {"do_sample": True, "typical_p": 0.9},
    "min-p": {"do_sample": True, "min_p": 0.05, "temperature": 1.0},
    # DialoGPT's interactive MMI: sampled candidates, reranked by the reverse model,
    # the reply drawn from softmax(score / T).
    "dialogpt-mmi": {
        "do_sample": True,
        "top_p": 0.9,
        "mmi_candidates": MMI_CANDIDATES,
        "mmi_temperature": 0.5,
    },
    # Candidates from the whole distribution: the reverse model is the filter, and a
    # wider pool gives it more to choose from (benchmarks/quality.py compares the two).
    "mmi": {"do_sample": True, "top_p": 1.0, "mmi_candidates": MMI_CANDIDATES},
    # DialogRPT's ensemble over the same kind of candidates: engagement rankers, with
    # no reverse model.
    "dialogrpt": {
        "do_sample": True,
        "top_p": 1.0,
        "mmi_candidates": MMI_CANDIDATES,
        "rerank_recipe": "dialogrpt",
        "reverse_weight": 0.0,
    },
}


FIELDS = {f.name for f in fields(DecodingConfig)}


def decoding_config(
    preset: str | None = None, config: DecodingConfig | None = None, **options: Any
) -> DecodingConfig:
    """A DecodingConfig from a preset name, or a whole `config`, and options that override it.

    Every method that decodes takes its options this one way.
    """
    if config is not None:
        if preset is not None:
            raise RejoinderError("give a decoding config or a preset, not both")
        return decoding_config(None, **{**config.to_dict(), **options})
    if preset is not None and preset not in PRESETS:
        raise RejoinderError(f"unknown preset {preset!r}; presets are {', '.join(PRESETS)}")
    unknown = sorted(set(options) - FIELDS)
    if unknown:
        raise RejoinderError(
            f"unknown decoding option {', '.join(map(repr, unknown))}; options are "
            f"{', '.join(sorted(FIELDS))}"
        )
    given = {k: v for k, v in options.items() if v is not None}
    if (
        preset is None
        and given.get("mmi_candidates")
        and not {"do_sample", "num_beams"} & set(given)
    ):
        preset = "mmi"  # candidates to rerank are sampled (not "set do_sample=true")
    values = {**PRESETS.get(preset or "greedy", {}), **given}
    try:
        return DecodingConfig(**values)
    except TypeError as e:
        raise RejoinderError(f"bad decoding options: {e}") from None
