"""Question/answer pairs, one `question<TAB>answer` a line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rejoinder.data.io import existing, file_stem, text_lines
from rejoinder.data.report import Report
from rejoinder.dialogue import Dialogue, Turn
from rejoinder.errors import RejoinderError


def read_qa(path: str | Path, *, report: Report) -> Iterator[Dialogue]:
    """`question<TAB>answer` per line, each a two-turn dialogue (split on the first tab).

    Blank lines are ignored; a line without a tab, or with an empty question or answer,
    is counted and skipped. .gz, .zst, .bz2 and .xz files are decompressed on the fly.
    """
    path = existing(path)
    if path.is_dir():
        raise RejoinderError(f"{path} is a directory; give a file of question<TAB>answer lines")
    stem = file_stem(path)
    for number, line in text_lines(path, report):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if "\t" not in line:
            report.bad("no tab", f"{path.name}:{number}: {line[:120]}")
            continue
        question, answer = (s.strip() for s in line.split("\t", 1))
        if not question or not answer:
            report.bad("empty question or answer", f"{path.name}:{number}: {line[:120]}")
            continue
        yield Dialogue((Turn(question), Turn(answer)), f"{stem}-{number}", "qa", {})
