"""DailyDialog, with its per-turn dialog acts and emotions as turn labels."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rejoinder.data.io import (
    decode_line,
    existing,
    file_stem,
    load_json,
    open_lines,
    text_lines,
)
from rejoinder.data.readers.common import Skip, build_or_count, make_dialogue, make_turn
from rejoinder.data.report import Report
from rejoinder.dialogue import Dialogue
from rejoinder.errors import RejoinderError

DAILYDIALOG_ACTS = (None, "inform", "question", "directive", "commissive")
"""DailyDialog's dialogue acts by number; 0 is "unknown" (None)."""
DAILYDIALOG_EMOTIONS = (
    "no_emotion",
    "anger",
    "disgust",
    "fear",
    "happiness",
    "sadness",
    "surprise",
)
"""DailyDialog's emotions by number."""

_HF_SUFFIXES = (".jsonl", ".json", ".parquet")
# dialogues_text.txt or dialogues_{split}.txt, but not the label files beside them.
_DD_TEXT = re.compile(
    r"dialogues_(?:text|(?!(?:act|emotion|topic)(?:_|\.txt$))(?P<split>\w+))\.txt"
)
# What Hugging Face writes beside the data (save_to_disk, hub snapshots): not dialogues.
_HF_METADATA = {"dataset_info.json", "dataset_infos.json", "dataset_dict.json", "state.json"}
_SHARD = re.compile(r"(?P<split>.+?)-\d+-of-\d+")


def read_dailydialog(path: str | Path, *, report: Report) -> Iterator[Dialogue]:
    """DailyDialog, from Hugging Face's `daily_dialog` files or from the original release.

    `path` is a .jsonl/.json (one object per line) or .parquet file with the columns
    `dialog`, `act` and `emotion`, or a directory holding such files (the split is the
    file's stem, e.g. train.jsonl -> "train"); or a directory searched recursively for
    the original text release: `dialogues_text.txt` (or `dialogues_{split}.txt`) with
    `dialogues_act[_{split}].txt` and `dialogues_emotion[_{split}].txt` beside it.

    Turns alternate between speakers "A" and "B"; each has the labels {"act", "emotion"}
    as names (act None where DailyDialog says 0, "unknown"). Labels whose count does not
    match the turns are dropped (the dialogue is kept) and counted.
    """
    path = existing(path)
    if path.is_file():
        if path.suffix.lower() in _HF_SUFFIXES:
            yield from _dd_hf_files([path], report)
        elif _DD_TEXT.fullmatch(path.name):
            yield from _dd_text_files([path], report)
        else:
            raise RejoinderError(
                f"{path}: not a DailyDialog file; give a .jsonl, .json or .parquet file with "
                "the columns dialog/act/emotion, dialogues_text.txt, or a directory holding them"
            )
        return
    hf = sorted(
        p
        for p in path.rglob("*")
        if p.suffix.lower() in _HF_SUFFIXES and p.name not in _HF_METADATA and p.is_file()
    )
    if hf:
        yield from _dd_hf_files(hf, report)
        return
    text = sorted(p for p in path.rglob("dialogues_*.txt") if _DD_TEXT.fullmatch(p.name))
    if not text:
        raise RejoinderError(
            f"{path} holds no DailyDialog files: expected *.jsonl, *.json or *.parquet files "
            "(Hugging Face's daily_dialog), or dialogues_text.txt / dialogues_train.txt with "
            "dialogues_act*.txt and dialogues_emotion*.txt (the original release)"
        )
    # The original zip has the whole corpus in dialogues_text.txt and the same dialogues
    # again in train/, validation/ and test/: read the split files, not the whole one.
    whole = [p for p in text if p.name == "dialogues_text.txt"]
    for p in whole:
        if any(q != p and p.parent in q.parents for q in text):
            text.remove(p)
            report.count("dailydialog whole-corpus file skipped: split files present")
    yield from _dd_text_files(text, report)


def _dd_split(path: Path) -> str:
    """train.jsonl -> train; train-00000-of-00001.parquet -> train; train/0000.parquet -> train."""
    stem = file_stem(path)
    shard = _SHARD.fullmatch(stem)
    if shard:
        return shard["split"]
    if stem.isdigit() and path.parent.name:
        return path.parent.name
    return stem


def _dd_hf_files(files: list[Path], report: Report) -> Iterator[Dialogue]:
    # A split in shards (train-00000-of-00002, train-00001-of-00002) numbers on across them.
    offset: dict[str, int] = {}
    for file in files:
        split = _dd_split(file)
        base = offset.get(split, 0)
        if file.suffix.lower() == ".parquet":
            rows = _parquet_rows(file, report)
        else:
            rows = _json_rows(file, report)
        for i, row in rows:
            offset[split] = base + i + 1
            d = build_or_count(
                report, f"{file.name}:{i + 1}", _dd_hf_row, row, split, base + i, report
            )
            if d is not None:
                yield d


def _json_rows(file: Path, report: Report) -> Iterator[tuple[int, Any]]:
    """(0-based line number, parsed object) for each line that can be read; others counted."""
    for number, line in text_lines(file, report):
        if not line.strip():
            continue
        try:
            yield number - 1, load_json(line, report)
        except (ValueError, RecursionError):
            report.bad("malformed json", f"{file.name}:{number}: {line[:120]}")


def _parquet_rows(file: Path, report: Report) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise RejoinderError(
            f"{file}: reading .parquet files needs pyarrow: pip install pyarrow"
        ) from None

    try:
        pf = pq.ParquetFile(file)
        columns = [c for c in ("dialog", "act", "emotion") if c in pf.schema_arrow.names]
        if "dialog" not in columns:
            report.bad("missing field: dialog", f"{file}: columns {pf.schema_arrow.names}")
            return
        i = 0
        for batch in pf.iter_batches(batch_size=1024, columns=columns):
            for row in batch.to_pylist():
                yield i, row
                i += 1
    except (pa.ArrowException, OSError) as e:
        report.bad("unreadable parquet", f"{file}: {e}")


def _dd_labels(values: Any, names: tuple[str | None, ...], n: int) -> list | None:
    """Label names for n turns, or None when they cannot be matched to the turns."""
    if not isinstance(values, list) or len(values) != n:
        return None
    out = []
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(names):
            out.append(names[v])
        elif isinstance(v, str) and v.replace(" ", "_") in names:
            out.append(v.replace(" ", "_"))
        elif isinstance(v, str) and v.strip().isdigit() and int(v) < len(names):
            out.append(names[int(v)])
        else:
            return None
    return out


def _dd_dialogue(
    texts: list[Any], acts: Any, emotions: Any, split: str, index: int, report: Report
) -> Dialogue:
    n = len(texts)
    act_names = _dd_labels(acts, DAILYDIALOG_ACTS, n) if acts is not None else None
    emo_names = _dd_labels(emotions, DAILYDIALOG_EMOTIONS, n) if emotions is not None else None
    if acts is None or emotions is None:
        report.count("dailydialog labels missing")
    if (acts is not None and act_names is None) or (emotions is not None and emo_names is None):
        report.count("dailydialog labels dropped: length mismatch")
        act_names = emo_names = None
    turns = []
    for i, text in enumerate(texts):
        labels = {}
        if act_names is not None:
            labels["act"] = act_names[i]
        if emo_names is not None:
            labels["emotion"] = emo_names[i]
        turns.append(make_turn(text, "AB"[i % 2], labels, report))
    return make_dialogue(turns, f"dailydialog-{split}-{index}", "dailydialog", {"split": split})


def _dd_hf_row(row: Any, split: str, index: int, report: Report) -> Dialogue:
    if not isinstance(row, Mapping):
        raise Skip("wrong type: line")
    if "dialog" not in row:
        raise Skip("missing field: dialog")
    texts = row["dialog"]
    if not isinstance(texts, list):
        raise Skip("wrong type: dialog")
    return _dd_dialogue(texts, row.get("act"), row.get("emotion"), split, index, report)


def _dd_text_files(files: list[Path], report: Report) -> Iterator[Dialogue]:
    for file in files:
        split = _DD_TEXT.fullmatch(file.name)["split"]
        if split is None:  # dialogues_text.txt: the split is the folder it lies in
            split = file.parent.name or "text"
            acts = _dd_label_lines(file.with_name("dialogues_act.txt"), report)
            emotions = _dd_label_lines(file.with_name("dialogues_emotion.txt"), report)
        else:
            acts = _dd_label_lines(file.with_name(f"dialogues_act_{split}.txt"), report)
            emotions = _dd_label_lines(file.with_name(f"dialogues_emotion_{split}.txt"), report)
        for number, raw in enumerate(open_lines(file, report)):
            line = decode_line(raw, report, f"{file.name}:{number + 1}")
            if line is None:
                continue
            if not line.strip():
                continue
            pieces = line.split("__eou__")
            if len(pieces) > 1 and not pieces[-1].strip():
                pieces.pop()  # the line ends with __eou__
            act = acts[number] if acts is not None and number < len(acts) else None
            emo = emotions[number] if emotions is not None and number < len(emotions) else None
            # A label file that exists but lacks this line is a mismatch, not a missing file.
            if acts is not None and act is None:
                act = []
            if emotions is not None and emo is None:
                emo = []
            sample = f"{file.name}:{number + 1}: {line[:120]}"
            d = build_or_count(
                report, sample, _dd_dialogue, pieces, act, emo, split, number, report
            )
            if d is not None:
                yield d


def _dd_label_lines(file: Path, report: Report) -> list[list[int] | list[str]] | None:
    """The space-separated labels of each line of a small label file; None if it is absent."""
    if not file.is_file():
        report.count(f"dailydialog label file missing: {file.name}")
        return None
    out = []
    for raw in file.read_bytes().split(b"\n"):
        try:
            values = raw.decode("utf-8").split()
            out.append([int(v) for v in values])
        except ValueError:  # not UTF-8 or not numbers: the dialogue's labels are dropped
            out.append(["?"])
    return out
