"""DialoGPT's eight filters, each named, switchable and parameterised.

A dialogue is judged as (source, target): the target is its last turn (or every turn
after the first, with `targets="responses"`), the source the turns before it. Drop it:

- `url`: a URL anywhere in source or target;
- `repetition`: a target repeats a word `repetition_run` (3) or more times in a row;
- `non_english`: a target has none of the `top_words` (50) most frequent English words
  (the list comes from `wordfreq`);
- `brackets`: a target contains "[" or "]" (likely markup);
- `too_long`: source and target together exceed `max_words` (200) words;
- `offensive`: a target contains a blocklisted word (better-profanity's list, or a file),
  or, with `offensive_classifier`, a classifier reading the target in its context (the
  turns before it) gives it a probability of being unsafe above `offensive_threshold`;
- `subreddit`: the dialogue comes from a blocklisted subreddit (a file of names);
- `bland`: `bland_share` (90%) or more of a target's word trigrams occur more than
  `bland_count` (1,000) times in the whole corpus; this one needs a first pass that
  counts trigrams (`TrigramSketch`) before it can judge.

Every function here is plain Python shared by both engines (local and Spark). The
classifier is a torch model, so it is no part of `Filters.check`, which runs a record at
a time in the engines' worker processes: it is a pass of its own over the dialogues that
passed the other filters (`stages.offensive_pass`), hundreds of targets a call, and it is
loaded above this package, which sees it only as a `Scorer` (see `LoadScorer`).
"""

from __future__ import annotations

import functools
import itertools
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rejoinder.data.text import word_hashes, words
from rejoinder.errors import RejoinderError
from rejoinder.options import option

if TYPE_CHECKING:
    import numpy as np

FILTERS = (
    "url", "repetition", "non_english", "brackets", "too_long", "offensive", "subreddit", "bland",
)  # fmt: skip

_PUNCT = b'!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~'  # ASCII punctuation but the apostrophe
_URL = re.compile(r"https?://|www\.\w|\b\w+\.(?:com|org|net|io|gov|edu)(?:/|\b)", re.IGNORECASE)
_URL_TLD = re.compile(r"\.(?:com|org|net|io|gov|edu)")
"""What a lower-cased ASCII text without "://" or "www." must contain for `_URL` to match it."""


@dataclass
class FilterConfig:
    """Which filters run, and their parameters (the DialoGPT paper's by default)."""

    enabled: tuple[str, ...] = option(FILTERS, hidden=True)
    """Names of the filters to run; the others are off."""
    targets: Literal["last", "responses"] = "last"
    """Which turns the target checks look at: "last" (the paper's) or "responses"."""
    repetition_run: int = 3
    """A word this many times in a row in a target drops it."""
    top_words: int = 50
    """A target needs one of the this-many most frequent English words."""
    max_words: int = 200
    """Source and target together may have at most this many words."""
    offensive_words: str | None = option(None, metavar="FILE")
    """A file of blocklisted words or phrases, one a line (default: better-profanity's)."""
    offensive_classifier: str | None = option(None, metavar="DIR")
    """A classifier directory (`train --model.objective classify`, or any Hugging Face
    …ForSequenceClassification model) that the offensive filter also asks, target by
    target in its context, as the safety policy does (`--safety-classifier`)."""
    offensive_threshold: float = 0.5
    """A target is offensive when the classifier's probability of its unsafe labels is
    above this."""
    offensive_unsafe_labels: list[str] = option(
        default_factory=list, flag="--offensive-unsafe-label", metavar="LABEL"
    )
    """A classifier label that is unsafe (default: every label but one named safe,
    __ok__, neutral, non-toxic, …)."""
    subreddit_blocklist: str | None = option(None, metavar="FILE")
    """A file of subreddit names to leave out, one a line."""
    bland_share: float = 0.9
    """A target whose share of frequent trigrams is at least this is bland."""
    bland_count: int = 1000
    """A trigram seen more often than this in the corpus is frequent."""
    extra: dict = option(default_factory=dict, hidden=True)

    def __post_init__(self):
        unknown = [f for f in self.enabled if f not in FILTERS]
        if unknown:
            raise RejoinderError(
                f"unknown filter {unknown[0]!r}; the filters are {', '.join(FILTERS)}"
            )
        if self.targets not in ("last", "responses"):
            raise RejoinderError(f"targets must be 'last' or 'responses', got {self.targets!r}")
        for name in ("repetition_run", "top_words", "max_words", "bland_count"):
            if getattr(self, name) < 1:
                raise RejoinderError(f"filter option {name} must be at least 1")
        if not 0 < self.bland_share <= 1:
            raise RejoinderError("bland_share must be in (0, 1]")
        if not 0 <= self.offensive_threshold <= 1:
            raise RejoinderError(
                f"--offensive-threshold {self.offensive_threshold}: use a probability in [0, 1]"
            )
        if self.offensive_unsafe_labels and not self.offensive_classifier:
            raise RejoinderError("--offensive-unsafe-label needs --offensive-classifier DIR")
        self.enabled = tuple(f for f in FILTERS if f in self.enabled)

    @property
    def classifies(self) -> bool:
        """Whether the offensive filter asks a classifier too (a pass of its own)."""
        return "offensive" in self.enabled and self.offensive_classifier is not None

    @classmethod
    def parse(cls, spec: str | None, **options) -> FilterConfig:
        """From a `--filters` value: "all", "none" or names joined by commas."""
        if spec is None or spec == "all":
            enabled = FILTERS
        elif spec == "none":
            enabled = ()
        else:
            enabled = tuple(s.strip() for s in spec.split(",") if s.strip())
        return cls(enabled=enabled, **{k: v for k, v in options.items() if v is not None})


Scorer = Callable[[Sequence[tuple[list[str], str]]], list[float]]
"""The offensive filter's classifier, loaded: for each (context, target) pair, the
target's probability of being unsafe, read after the context's turns."""

LoadScorer = Callable[[FilterConfig], Scorer]
"""Loads the classifier a FilterConfig names (`offensive_classifier`, with its
`offensive_unsafe_labels`) as a `Scorer`.

The classifier and the safety policy that says which of its labels are unsafe live
above this package (rejoinder.modeling, rejoinder.safety), which must not import them;
so the command line, which may import anything, passes one in
(`rejoinder.data.commands.offensive_scorer`: `build(config, load_classifier=...)`).
It is called once at the start of a build, which checks the settings before anything is
read, then in each process that scores (Spark's executors): it should keep what it
loaded for the process, and must pickle (a module's function does).
"""


def read_list(path: str, what: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise RejoinderError(f"{what} file {path} does not exist")
    lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    return [x.strip().lower() for x in lines if x.strip() and not x.startswith("#")]


def default_offensive_words() -> list[str]:
    """better-profanity's maintained word list, read from the installed package."""
    import importlib.util

    spec = importlib.util.find_spec("better_profanity")
    if spec is None or spec.origin is None:
        raise RejoinderError(
            "the offensive filter's default list comes from better-profanity; "
            "pip install better-profanity, or give --offensive-words FILE"
        )
    path = Path(spec.origin).parent / "profanity_wordlist.txt"
    return [w.strip().lower() for w in path.read_text().splitlines() if w.strip()]


def top_english_words(n: int) -> frozenset[str]:
    try:
        from wordfreq import top_n_list
    except ImportError:
        raise RejoinderError(
            "the non_english filter takes its word list from wordfreq; pip install wordfreq"
        ) from None
    return frozenset(top_n_list("en", n))


class Filters:
    """The configured filters, with their word lists loaded once."""

    def __init__(self, config: FilterConfig):
        self.config = config
        on = set(config.enabled)
        self.top = top_english_words(config.top_words) if "non_english" in on else frozenset()
        self.offensive_single: frozenset[str] = frozenset()
        self.offensive_phrases: tuple[str, ...] = ()
        if "offensive" in on:
            listed = (
                read_list(config.offensive_words, "offensive words")
                if config.offensive_words
                else default_offensive_words()
            )
            self.offensive_single = frozenset(w for w in listed if " " not in w)
            self.offensive_phrases = tuple(f" {w} " for w in listed if " " in w)
        # A phrase can only be in a text that has its first word: only those are looked for.
        self._phrases_by_word: dict[str, tuple[str, ...]] = {}
        for phrase in self.offensive_phrases:
            first = phrase[1:].split(" ", 1)[0]
            self._phrases_by_word[first] = (*self._phrases_by_word.get(first, ()), phrase)
        self.blocked_subreddits = frozenset()
        if "subreddit" in on and config.subreddit_blocklist:
            self.blocked_subreddits = frozenset(
                read_list(config.subreddit_blocklist, "subreddit blocklist")
            )

    def _targets(self, texts: Sequence[str]) -> Sequence[str]:
        return texts[-1:] if self.config.targets == "last" else texts[1:]

    def check(self, texts: Sequence[str], subreddit: str | None = None) -> str | None:
        """The name of the first filter (bland aside) that drops this dialogue, or None."""
        on = self.config.enabled
        if not on:
            return None
        # map() rather than generators: this runs for every dialogue of a corpus.
        targets = self._targets(texts)
        target_words = list(map(words, targets))
        if "url" in on and any(map(_has_url, texts)):
            return "url"
        run = itertools.repeat(self.config.repetition_run)
        if "repetition" in on and any(map(_repeats, target_words, run)):
            return "repetition"
        if "non_english" in on and any(map(self.top.isdisjoint, target_words)):
            return "non_english"
        if "brackets" in on and any(map(_bracketed, targets)):
            return "brackets"
        if "too_long" in on and _too_long(texts, self.config.max_words):
            return "too_long"
        if "offensive" in on and any(map(self._offensive, targets, target_words)):
            return "offensive"
        if "subreddit" in on and subreddit and subreddit.lower() in self.blocked_subreddits:
            return "subreddit"
        return None

    def offensive(self, text: str) -> bool:
        """Whether `text` holds a blocklisted word or phrase."""
        return self._offensive(text, words(text))

    def _offensive(self, text: str, text_words: list[str]) -> bool:
        if not self.offensive_single.isdisjoint(text_words):
            return True
        by_word = self._phrases_by_word
        if by_word and not by_word.keys().isdisjoint(text_words):
            padded = f" {' '.join(text_words)} "
            return any(p in padded for w in set(text_words) for p in by_word.get(w, ()))
        return False

    def bland_targets(self, texts: Sequence[str]) -> Sequence[str]:
        return self._targets(texts) if "bland" in self.config.enabled else ()


@functools.lru_cache(maxsize=1 << 16)
def _has_url(text: str) -> bool:
    # Cached: a Reddit comment is the source of every path below it. Most texts are
    # ASCII without any hint of a URL, which plain substring tests rule out faster than
    # the pattern (on ASCII, ignoring case is lower-casing).
    if text.isascii():
        low = text.lower()
        if not ("://" in low or "www." in low or _URL_TLD.search(low)):
            return False
    return _URL.search(text) is not None


def _bracketed(text: str) -> bool:
    return "[" in text or "]" in text


def _too_long(texts: Sequence[str], max_words: int) -> bool:
    # A word and the space after it take two characters at least: short dialogues are
    # let through without splitting their turns.
    if (sum(map(len, texts)) + len(texts)) // 2 <= max_words:
        return False
    return sum(len(t.split()) for t in texts) > max_words


def _repeats(ws: list[str], run: int) -> bool:
    if run > 1 and not any(map(operator.eq, ws, itertools.islice(ws, 1, None))):
        return False  # no word is followed by itself
    count = 1
    for a, b in itertools.pairwise(ws):
        count = count + 1 if a == b else 1
        if count >= run:
            return True
    return False


class TrigramSketch:
    """Counts of word trigrams over a corpus in fixed memory (a count-min sketch).

    Counts can only be over-estimated, by collisions, and two rows of 4M counters keep
    that far below the threshold of 1,000 for corpora of hundreds of millions of words.
    Hashes are stable (CRC-32 of the words), so workers' sketches add up exactly and
    both engines agree: a worker counts into its own sketch, and the engine ships it
    (pickled, pending texts counted) and combines them with `merge`.
    """

    # numpy is imported where it is used, so that the command line, which only needs
    # FilterConfig's fields, starts without it.
    _MIX = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F)

    COUNT_EVERY = 1 << 21
    """Trigrams hashed before they are counted into the table at once: a count passes
    over the whole table, whatever the number of trigrams."""

    def __init__(self, width_bits: int = 22, depth: int = 2, batch: int = 5_000):
        import numpy as np

        self.width_bits, self.depth, self.batch = width_bits, depth, batch
        self._table = np.zeros((depth, 1 << width_bits), dtype=np.uint32)
        self._pending: list[str] = []
        self._hashed: list[np.ndarray] = []  # table columns (depth x n) not yet counted
        self._hashed_count = 0

    def _keys(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Trigram keys of all texts, and for each the index of the text it came from.

        Words are lower-cased, ASCII punctuation is dropped, and each word is hashed
        with CRC-32 (`text.word_hashes`): all in C, which matters at a billion words.
        """
        import numpy as np

        h, o = word_hashes(list(texts), _PUNCT)
        if len(h) < 3:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        same = o[:-2] == o[2:]  # the three words belong to one text
        with np.errstate(over="ignore"):
            keys = (h[:-2] * np.uint64(1_000_003) + h[1:-1]) * np.uint64(1_000_033) + h[2:]
        return keys[same], o[:-2][same]

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        import numpy as np

        mix = np.array(self._MIX[: self.depth], dtype=np.uint64)
        with np.errstate(over="ignore"):
            mixed = keys[None, :] * mix[:, None]
        return (mixed >> np.uint64(64 - self.width_bits)).astype(np.int64)

    def add(self, texts: Iterable[str]) -> None:
        """Counts the trigrams of `texts` (in batches: a count touches the whole table)."""
        self._pending.extend(texts)
        if len(self._pending) >= self.batch:
            self._hash()
            if self._hashed_count >= self.COUNT_EVERY:
                self._count()

    def _hash(self) -> None:
        import numpy as np

        keys, _ = self._keys(self._pending)
        self._pending = []
        if len(keys):
            self._hashed.append(self._rows(keys).astype(np.int32))
            self._hashed_count += len(keys)

    def _count(self) -> None:
        import numpy as np

        if not self._hashed:
            return
        columns = np.concatenate(self._hashed, axis=1)
        self._hashed, self._hashed_count = [], 0
        for r, idx in enumerate(columns):
            counts = np.bincount(idx, minlength=self._table.shape[1])
            np.add(self._table[r], counts, out=self._table[r], casting="unsafe")

    def _flush(self) -> None:
        if self._pending:
            self._hash()
        self._count()

    def merge(self, other: TrigramSketch) -> TrigramSketch:
        """Adds `other`'s counts to this sketch's (workers' sketches add up exactly)."""
        if (other.width_bits, other.depth) != (self.width_bits, self.depth):
            raise ValueError("only sketches of the same width and depth can be merged")
        self._flush()
        other._flush()
        self._table += other._table
        return self

    def __getstate__(self) -> dict:
        # What is shipped to another process counts what is still pending.
        self._flush()
        return self.__dict__.copy()

    def frequent_share(self, texts: Sequence[str], count: int) -> list[float | None]:
        """For each text, the share of its trigrams seen more than `count` times.

        None for a text of fewer than three words: it has no trigrams to judge.
        """
        import numpy as np

        keys, owner = self._keys(texts)
        share: list[float | None] = [None] * len(texts)
        if not len(keys):
            return share
        rows = self._rows(keys)
        self._flush()
        table = self._table
        est = np.min(np.stack([table[r][idx] for r, idx in enumerate(rows)]), axis=0)
        frequent = np.bincount(owner, weights=(est > count), minlength=len(texts))
        total = np.bincount(owner, minlength=len(texts))
        for i in np.nonzero(total)[0]:
            share[i] = float(frequent[i] / total[i])
        return share
