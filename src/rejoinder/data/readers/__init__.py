"""The kinds of source a build reads: the registry, and one reader module per corpus.

`SOURCES` is the only list of source kinds. Each entry says how the command line names
the source (a PATH after it, the options it needs), what `--filters auto` runs on it,
and how the engines read it: through its reader, which yields `Dialogue`s, or, for
Reddit, as comments that the engines group into threads and walk.

Every reader is a generator that takes `report=` and never crashes on bad input: a
record it cannot read is skipped and counted with `report.bad(reason, sample)` under a
short, stable reason ("invalid utf-8", "malformed json", "missing field: turns", ...).
Only a problem with the request itself (a missing path, an unknown language, a
directory without the expected files) raises `RejoinderError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rejoinder.data.labels import RawLabel
from rejoinder.data.pairs import RawPair
from rejoinder.data.readers.chatterbot import read_chatterbot
from rejoinder.data.readers.chitchat import read_chitchat
from rejoinder.data.readers.dailydialog import read_dailydialog
from rejoinder.data.readers.feedback import read_feedback
from rejoinder.data.readers.jsonl import read_jsonl
from rejoinder.data.readers.labels import read_labels_jsonl
from rejoinder.data.readers.pairs import read_pairs_jsonl
from rejoinder.data.readers.qa import read_qa
from rejoinder.data.readers.unpaired import read_unpaired_jsonl
from rejoinder.data.unpaired import RawUnpaired
from rejoinder.dialogue import Dialogue
from rejoinder.errors import RejoinderError


@dataclass(frozen=True)
class SourceKind:
    """One kind of source: how it is named, configured, filtered and read."""

    name: str
    description: str
    """One line, for the command line's help."""
    read: Callable[..., Iterator[Dialogue | RawPair | RawLabel | RawUnpaired]] | None = None
    """`read(**source.args, report=report)` yields its dialogues (or pairs, labelled
    texts, unpaired rows); None for threads."""
    path: bool = False
    """On the command line, a PATH follows its name (`jsonl FILE`); source.args["path"]."""
    needs: tuple[str, ...] = ()
    """Command-line options it cannot do without, by their argparse dest ("language")."""
    takes: tuple[str, ...] = ()
    """Command-line options it reads too when given, by their dest ("submissions")."""
    filters: str = "none"
    """What `--filters auto`, the default, runs on it: "all" or "none"."""
    threads: bool = False
    """The engines group its records into threads and walk them (Reddit's comment trees)."""
    pairs: bool = False
    """Its reader yields preference pairs (`RawPair`s), so a build of it writes a pairs
    dataset."""
    labels: bool = False
    """Its reader yields labelled texts (`RawLabel`s), so a build of it writes a labels
    dataset."""
    unpaired: bool = False
    """Its reader yields unpaired rows (`RawUnpaired`s), so a build of it writes an
    unpaired dataset."""

    def makes(self, args: Mapping[str, Any]) -> str:
        """What a build of it writes given its arguments: "labels", "unpaired", "pairs" or
        "dialogues" (the feedback source makes pairs, or unpaired rows with --kind
        unpaired)."""
        if self.labels:
            return "labels"
        if self.unpaired or (self.pairs and args.get("makes") == "unpaired"):
            return "unpaired"
        return "pairs" if self.pairs else "dialogues"


SOURCES: dict[str, SourceKind] = {
    kind.name: kind
    for kind in (
        SourceKind(
            "reddit",
            "Pushshift comment dumps, every root-to-leaf path of a thread a dialogue",
            needs=("comments",),
            takes=("submissions",),
            filters="all",
            threads=True,
        ),
        SourceKind(
            "dailydialog",
            "DailyDialog (Hugging Face's files or the original release), acts and emotions",
            read=read_dailydialog,
            path=True,
        ),
        SourceKind(
            "chitchat",
            "the BYU Chit-Chat corpus of the installed chitchat-dataset package",
            read=read_chitchat,
        ),
        SourceKind(
            "jsonl",
            'one dialogue a line: a list of turns, {"turns": ...} or {"messages": ...}',
            read=read_jsonl,
            path=True,
        ),
        SourceKind(
            "pairs",
            'preference pairs, one a line: {"context": [...], "chosen": "...", "rejected": "..."}',
            read=read_pairs_jsonl,
            path=True,
            pairs=True,
        ),
        SourceKind(
            "unpaired",
            'unpaired feedback, one a line: {"context": [...], "reply": "...", "label": true}',
            read=read_unpaired_jsonl,
            path=True,
            unpaired=True,
        ),
        SourceKind(
            "feedback",
            "preference pairs (or with --kind unpaired, rated replies) from chat sessions' "
            "thumbs up/down, better replies and regenerated replies",
            read=read_feedback,
            needs=("db",),
            takes=("makes",),
            pairs=True,
        ),
        SourceKind(
            "labels",
            'labelled texts for a classifier, one a line: {"context": [...], "text": "...", '
            '"label": "unsafe"}',
            read=read_labels_jsonl,
            path=True,
            labels=True,
        ),
        SourceKind(
            "qa", "question<TAB>answer lines, each a two-turn dialogue", read=read_qa, path=True
        ),
        SourceKind(
            "chatterbot",
            "the chatterbot-corpus package's conversations in one language",
            read=read_chatterbot,
            needs=("language",),
        ),
    )
}
"""Every kind of source, by name, in the order the command line lists them."""


def source_kind(name: str) -> SourceKind:
    """The registry's entry for `name`; a `RejoinderError` naming the known kinds otherwise."""
    kind = SOURCES.get(name)
    if kind is None:
        raise RejoinderError(f"unknown source {name!r}; sources are {', '.join(SOURCES)}")
    return kind
