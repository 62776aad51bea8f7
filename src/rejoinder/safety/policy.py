"""The safety policy: its settings (`SafetyConfig`, the command line's and a model
directory's), what it flags (`Flag`), and the checks (`Safety`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rejoinder.dialogue import ASSISTANT, SYSTEM, Turn, as_context, role_of
from rejoinder.errors import RejoinderError
from rejoinder.options import option

log = logging.getLogger("rejoinder.safety")

CONTENT_FILTER = "content_filter"
"""The finish reason of a canned reply (OpenAI's name for a reply a filter replaced)."""

USER, REPLY = "user", "reply"
WORDS, CLASSIFIER = "words", "classifier"

SAFE_NAMES = frozenset(
    {"safe", "__ok__", "ok", "neutral", "non-toxic", "non_toxic", "not_toxic", "not toxic",
     "nontoxic", "clean", "normal", "harmless", "acceptable"}
)  # fmt: skip
"""Label names a classifier gives to what is safe; its other labels are unsafe unless
`safety_unsafe_labels` says which are."""

REFUSAL = "I'd rather not talk about that. Is there something else on your mind?"
FALLBACK = "Let's talk about something else. What have you been up to lately?"


@dataclass(frozen=True)
class Flag:
    """Something the policy flagged: whose text (`who`: "user" or "reply"), the text,
    the layer that flagged it ("words" or "classifier"), the listed word or the
    classifier's label, and the score (1 for a listed word; else the probability of the
    unsafe labels)."""

    who: str
    text: str
    layer: str
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SafetyConfig:
    """The safety policy's settings; each field is an option of chat, serve, judge and
    `data negatives`, and a model directory can carry them (`rejoinder safety DIR`)."""

    safety: bool = False
    """Check users' messages and the bot's replies: better-profanity's word list, then
    --safety-classifier if given (implied by --safety-words and --safety-classifier)."""
    safety_words: list[str] = option(default_factory=list, metavar="FILE")
    """A word list of one's own (a word or phrase a line, # comments), beside the default
    one; may be given more than once."""
    safety_default_words: bool = option(True, flag="--no-default-safety-words")
    """Check better-profanity's list too (--no-default-safety-words: only --safety-words)."""
    safety_classifier: str | None = option(None, metavar="DIR")
    """A classifier directory (`train --model.objective classify`, or any Hugging Face
    …ForSequenceClassification model) checked after the word list."""
    safety_threshold: float = 0.5
    """A text is flagged when the classifier's probability of its unsafe labels is above
    this."""
    safety_unsafe_labels: list[str] = option(
        default_factory=list, flag="--safety-unsafe-label", metavar="LABEL"
    )
    """A classifier label that is unsafe (default: every label but one named safe,
    __ok__, neutral, non-toxic, …)."""
    safety_user: str = option("refuse", choices=("refuse", "continue"))
    """What a flagged user message gets: refuse (the refusal below; the model is not
    asked) or continue (a reply as usual, checked like any other); both store the flag."""
    safety_retries: int = 2
    """How many times a reply with no safe candidate is drawn again, sampled, before the
    fallback reply is given."""
    safety_refusal: str = option(REFUSAL, metavar="TEXT")
    """The reply to a flagged user message (with --safety-user refuse)."""
    safety_fallback: str = option(FALLBACK, metavar="TEXT")
    """The reply when no draw is safe: it changes the topic."""
    no_safety: bool = False
    """Turn off the safety settings the model directory carries."""

    def __post_init__(self):
        if not 0 <= self.safety_threshold <= 1:
            raise RejoinderError(
                f"--safety-threshold {self.safety_threshold}: use a probability in [0, 1]"
            )
        if self.safety_user not in ("refuse", "continue"):
            raise RejoinderError(f"--safety-user {self.safety_user}: use refuse or continue")
        if self.safety_retries < 0:
            raise RejoinderError(f"--safety-retries {self.safety_retries}: use 0 or more")
        for name in ("safety_refusal", "safety_fallback"):
            if not getattr(self, name).strip():
                raise RejoinderError(f"--{name.replace('_', '-')} is empty: give a reply")
        if self.safety_words or self.safety_classifier:
            self.safety = True

    @property
    def enabled(self) -> bool:
        return self.safety and not self.no_safety

    def to_dict(self) -> dict[str, Any]:
        """What a model directory's rejoinder.json keeps (the defaults left out)."""
        keep = {f.name for f in fields(self)} - {"no_safety"}
        default = SafetyConfig()
        return {k: v for k, v in asdict(self).items() if k in keep and v != getattr(default, k)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: str | Path | None = None) -> SafetyConfig:
        """Settings read from a model directory `base`: files named relative to it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise RejoinderError(
                f"the safety settings of {base or 'the model'} name unknown fields "
                f"({', '.join(unknown)}); a newer rejoinder wrote them, or the file was edited"
            )
        values = dict(values)
        if base is not None:
            rel = lambda p: str(Path(base) / p) if not Path(p).is_absolute() else p  # noqa: E731
            if values.get("safety_classifier"):
                values["safety_classifier"] = rel(values["safety_classifier"])
            values["safety_words"] = [rel(p) for p in values.get("safety_words", [])]
        return cls(**values)

    def over(self, carried: SafetyConfig | None) -> SafetyConfig | None:
        """The settings in force: these (the command line's) where they turn the policy
        on, else those a model carries, unless --no-safety; None when it is off."""
        if self.no_safety:
            return None
        if self.enabled:
            return self
        return carried if carried is not None and carried.enabled else None


class SafetyError(RejoinderError):
    """The classifier failed while checking: the reply is withheld (the policy fails
    closed)."""


@dataclass
class Safety:
    """The policy, loaded: the word list and the classifier, checked at start-up."""

    config: SafetyConfig
    device: str | None = None
    words: Any = field(init=False)
    classifier: Any = field(init=False, default=None)
    unsafe: list[int] = field(init=False, default_factory=list)
    """The classifier's outputs that are unsafe labels."""

    def __post_init__(self):
        from rejoinder.safety.words import WordList

        c = self.config
        self.words = WordList(c.safety_words, c.safety_default_words)
        if c.safety_classifier:
            from rejoinder.modeling.classifier import Classifier

            self.classifier = Classifier.from_pretrained(c.safety_classifier, self.device)
            self.unsafe = unsafe_outputs(self.classifier.labels, c, c.safety_classifier)
        elif c.safety_unsafe_labels:
            raise RejoinderError("--safety-unsafe-label needs --safety-classifier")

    @classmethod
    def of(cls, config: SafetyConfig | None, device: str | None = None) -> Safety | None:
        return cls(config, device) if config is not None and config.enabled else None

    @property
    def layers(self) -> list[str]:
        return [WORDS, *([CLASSIFIER] if self.classifier is not None else [])]

    # -- checks --------------------------------------------------------------------

    def scores(self, pairs: Sequence[tuple[Any, str]]) -> list[tuple[float, str]]:
        """The classifier's probability that each (context, text) is unsafe, and its
        likeliest unsafe label: one batched pass. A failure is a SafetyError (logged)."""
        return [(score, label) for score, label, _ in self.scored(pairs)]

    def scored(self, pairs: Sequence[tuple[Any, str]]) -> list[tuple[float, str, list[float]]]:
        """`scores`, with each label's probability beside them (what `eval-safety`
        reports per class), from the same pass; (0, "", []) each without a classifier."""
        if self.classifier is None:
            return [(0.0, "", [])] * len(pairs)
        try:
            probs = self.classifier.probabilities(pairs)
        except Exception as e:
            log.exception("the safety classifier failed: replies are withheld")
            raise SafetyError(
                f"the safety classifier ({self.config.safety_classifier}) failed: "
                f"{type(e).__name__}: {str(e)[:200]}; the reply is withheld"
            ) from None
        labels = self.classifier.labels
        exclusive = not self.classifier.multi_label and len(labels) > 1
        out = []
        for p in probs:
            if not self.unsafe:  # one output, its label safe: unsafe is the rest
                out.append((1.0 - p[0], f"not {labels[0]}", p))
                continue
            top = max(self.unsafe, key=p.__getitem__)
            score = sum(p[i] for i in self.unsafe) if exclusive else p[top]
            out.append((min(1.0, score), labels[top], p))
        return out

    def check(self, pairs: Sequence[tuple[Any, str]], who: str = REPLY) -> list[Flag | None]:
        """A Flag for each (context, text) the policy flags, else None: the word list
        first; the rest through the classifier in one batched pass."""
        flags: list[Flag | None] = [None] * len(pairs)
        rest = []
        for i, (_, text) in enumerate(pairs):
            word = self.words.match(text)
            if word is not None:
                flags[i] = Flag(who, text, WORDS, word, 1.0)
            elif text.strip():
                rest.append(i)
        if self.classifier is not None and rest:
            limit = self.config.safety_threshold
            for i, (score, label) in zip(rest, self.scores([pairs[i] for i in rest]), strict=True):
                if score > limit:
                    flags[i] = Flag(who, pairs[i][1], CLASSIFIER, label, round(score, 6))
        return flags

    def check_users(self, contexts: Sequence[Any]) -> list[Flag | None]:
        """A Flag for each context whose latest user message the policy flags (the last
        turn that is not the bot's; none where the bot spoke last or nobody has)."""
        at = [(i, user_message(c)) for i, c in enumerate(contexts)]
        asked = [(i, m) for i, m in at if m is not None]
        flags: list[Flag | None] = [None] * len(contexts)
        for (i, _), flag in zip(asked, self.check([m for _, m in asked], USER), strict=True):
            flags[i] = flag
        return flags

    @property
    def refuses_users(self) -> bool:
        return self.config.safety_user == "refuse"


def user_message(context: Any) -> tuple[list[Turn], str] | None:
    """(the turns before it, its text) of the context's last turn when it is not the
    bot's, else None."""
    turns = [t for t in as_context(context) if role_of(t.speaker) not in (SYSTEM,)]
    if not turns or role_of(turns[-1].speaker) == ASSISTANT:
        return None
    return turns[:-1], turns[-1].text


def unsafe_outputs(labels: list[str], config: SafetyConfig, where: str) -> list[int]:
    """The classifier outputs that are unsafe labels; a clear error for labels it does
    not have, or when it cannot tell which of its labels are unsafe."""
    if config.safety_unsafe_labels:
        missing = [x for x in config.safety_unsafe_labels if x not in labels]
        if missing:
            raise RejoinderError(
                f"--safety-unsafe-label {', '.join(missing)}: the classifier {where} has no "
                f"such label; its labels are {', '.join(labels)}"
            )
        return [labels.index(x) for x in config.safety_unsafe_labels]
    safe = [i for i, x in enumerate(labels) if x.strip().lower() in SAFE_NAMES]
    if not safe:
        raise RejoinderError(
            f"the classifier {where} has labels {', '.join(labels)}, none of them a safe "
            "label (safe, __ok__, neutral, non-toxic, …); say which are unsafe with "
            "--safety-unsafe-label LABEL"
        )
    unsafe = [i for i in range(len(labels)) if i not in safe]
    if not unsafe and len(labels) > 1:
        raise RejoinderError(f"every label of the classifier {where} is a safe one")
    return unsafe
