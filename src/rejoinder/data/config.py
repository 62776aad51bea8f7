"""What a build is asked to do: its sources and its options, as manifest.json records them.

These live apart from `build` because the stages and both engines take them too, and
`build` calls the engines.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from rejoinder.data.feedback import PairOptions, parse_kinds
from rejoinder.data.readers import source_kind
from rejoinder.data.reddit import RedditOptions
from rejoinder.errors import RejoinderError
from rejoinder.options import option

Engine = Literal["local", "spark"]
"""The engines a build can run on (`rejoinder.data.engines`)."""


@dataclass
class Source:
    """One corpus to read: a kind of the registry (`readers.SOURCES`) and its arguments."""

    kind: str
    args: dict[str, Any] = field(default_factory=dict)
    """What its reader takes (path, language); for reddit, comments and submissions, each
    a list of dump paths."""


@dataclass
class BuildConfig:
    """Everything a build needs; manifest.json records it."""

    sources: list[Source] = option(hidden=True)
    out: str = option(hidden=True)
    """The dataset directory to write."""
    filters: str | None = option(None, metavar="SPEC")
    """auto (each kind of source's default), all, none, or filter names joined by commas."""
    filter_options: dict[str, Any] = option(default_factory=dict, hidden=True)
    """The filter parameters that were given (fields of FilterConfig)."""
    reddit: RedditOptions = option(default_factory=RedditOptions, hidden=True)
    pairs: str | None = option(None, metavar="KINDS")
    """Make preference pairs from Reddit threads instead of dialogues: kinds joined by
    commas, among updown, width, depth and human_vs_rand."""
    pair_options: PairOptions = option(default_factory=PairOptions, hidden=True)
    valid: float = 0.01
    """The validation fraction."""
    test: float = 0.01
    """The test fraction."""
    explain: int = option(0, metavar="N")
    """Keep this many dropped dialogues per filter in the manifest."""
    force: bool = False
    """Replace the output directory if it exists."""
    engine: Engine = "local"
    """local (embedded, one machine) or spark."""
    master: str | None = option(None, metavar="URL")
    """Spark master URL (engine spark): local[*] by default."""

    def __post_init__(self):
        if not self.sources:
            raise RejoinderError("give at least one source to build from")
        for source in self.sources:
            source_kind(source.kind)
        if not (0 <= self.valid < 1 and 0 <= self.test < 1 and self.valid + self.test < 1):
            raise RejoinderError("--valid and --test are fractions whose sum is below 1")
        self._check_output_kind()
        engines = typing.get_args(Engine)
        if self.engine not in engines:
            raise RejoinderError(f"unknown engine {self.engine!r}; choose {' or '.join(engines)}")

    @property
    def pair_kinds(self) -> tuple[str, ...]:
        """The kinds of pairs asked of Reddit sources (none: they make dialogues)."""
        return parse_kinds(self.pairs) if self.pairs is not None else ()

    @property
    def makes_pairs(self) -> bool:
        """Whether the build writes a pairs dataset (and not dialogues)."""
        return self.pairs is not None or any(_makes(s) == "pairs" for s in self.sources)

    @property
    def makes_labels(self) -> bool:
        """Whether the build writes a labels dataset (labelled texts, for classifiers)."""
        return any(source_kind(s.kind).labels for s in self.sources)

    @property
    def makes_unpaired(self) -> bool:
        """Whether the build writes an unpaired dataset (rated replies, for KTO)."""
        return any(_makes(s) == "unpaired" for s in self.sources)

    def _check_output_kind(self) -> None:
        """Every source must make what the build writes: pairs, labelled texts or
        dialogues, never two of them."""
        self.pair_kinds  # noqa: B018 (refuses unknown kinds now, before anything runs)
        if self.makes_labels:
            return self._check_labels()
        if self.makes_unpaired:
            return self._check_unpaired()
        for source in self.sources:
            kind = source_kind(source.kind)
            if self.pairs is not None and not (kind.threads or kind.pairs):
                raise RejoinderError(
                    f"--pairs makes preference pairs from Reddit threads, and the source "
                    f"{source.kind} has no feedback to compare; build its dialogues in another "
                    "run without --pairs, or bring your own pairs as the source `pairs PATH.jsonl`"
                )
            if self.makes_pairs and not (kind.pairs or (kind.threads and self.pairs)):
                fix = (
                    "add --pairs KINDS to make pairs from it too"
                    if kind.threads
                    else "build its dialogues in another run"
                )
                makers = ", ".join(s.kind for s in self.sources if source_kind(s.kind).pairs)
                raise RejoinderError(
                    f"the source {makers or 'reddit --pairs'} makes a pairs dataset, but "
                    f"{source.kind} makes dialogues; {fix}"
                )

    def _check_labels(self) -> None:
        others = [source_kind(s.kind) for s in self.sources if not source_kind(s.kind).labels]
        if others or self.pairs is not None:
            made = (
                f"{others[0].name} makes {'pairs' if others[0].pairs else 'dialogues'}"
                if others
                else "--pairs makes pairs"
            )
            raise RejoinderError(
                f"the source labels makes a labels dataset (texts and their classes), but "
                f"{made}; build them in another run"
            )
        if self.filters not in (None, "auto", "none"):
            raise RejoinderError(
                f"--filters {self.filters}: a labels dataset keeps every labelled text (the "
                "filters would drop the very texts a safety classifier must learn); leave "
                "--filters out"
            )

    def _check_unpaired(self) -> None:
        others = [s for s in self.sources if _makes(s) != "unpaired"]
        if others or self.pairs is not None:
            made = (
                f"{others[0].kind} makes {_makes(others[0])}" if others else "--pairs makes pairs"
            )
            raise RejoinderError(
                f"an unpaired dataset (rated replies, for KTO) is being built, but {made}; "
                "build them in another run"
            )
        if self.filters not in (None, "auto", "none"):
            raise RejoinderError(
                f"--filters {self.filters}: an unpaired dataset keeps every rated reply (the "
                "filters would drop the very replies people marked undesirable); leave "
                "--filters out"
            )


def _makes(source: Source) -> str:
    return source_kind(source.kind).makes(source.args)
