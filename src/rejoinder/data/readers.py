"""Readers for non-Reddit corpora: each turns one corpus layout into `Dialogue` records.

Every reader is a generator that takes `report=` and never crashes on bad input: a record
it cannot read is skipped and counted with `report.bad(reason, sample)` under a short,
stable reason ("invalid utf-8", "malformed json", "missing field: turns", ...). Only a
problem with the request itself (a missing path, an unknown language, a directory without
the expected files) raises `RejoinderError`.

Files are read in binary, line by line (`open_lines`, which also opens .gz, .zst, .bz2
and .xz files), and each line is decoded here, so that invalid UTF-8 is one counted bad
record and not an exception.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import io
import json
import lzma
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rejoinder.data.report import Report
from rejoinder.dialogue import Dialogue, Turn
from rejoinder.errors import RejoinderError

__all__ = [
    "READERS",
    "open_lines",
    "read_chatterbot",
    "read_chitchat",
    "read_dailydialog",
    "read_jsonl",
    "read_qa",
]

_READ_SIZE = 1 << 17  # compressed bytes fed to zstd at a time
_BUFFER_SIZE = 1 << 20  # bytes of decompressed text buffered for line splitting
_SCALARS = (str, int, float, bool)
_LABEL_VALUES = (str, int, float, bool, type(None))


class _Skip(Exception):
    """A record that cannot be read: `reason` is the report's key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------- lines


def open_lines(path: str | Path, report: Report) -> Iterator[bytes]:
    """Yields the raw lines (bytes, with their b"\\n") of a file, decompressing by extension.

    .gz, .bz2, .xz/.lzma and .zst/.zstd files are decompressed on the fly; anything else
    is read as is. Nothing is decoded here. A compressed file that ends early yields every
    complete line before the cut and is then counted as `report.bad("truncated file")`;
    one that cannot be decompressed at some point is counted as "corrupt compressed file".
    Neither raises. A missing path raises `RejoinderError`.
    """
    path = Path(path)
    if not path.is_file():
        raise RejoinderError(
            f"{path}: no such file" if not path.exists() else f"{path} is not a file"
        )
    suffix = path.suffix.lower()
    if suffix not in _COMPRESSED:
        with open(path, "rb", buffering=_BUFFER_SIZE) as f:
            yield from f
        return
    stream, errors = _open_compressed(path, suffix)
    try:
        with stream as f:
            yield from f
    except EOFError:
        report.bad("truncated file", str(path))
    except errors as e:
        report.bad("corrupt compressed file", f"{path}: {e}")


class _ZstdRaw(io.RawIOBase):
    """A raw stream of the decompressed bytes of a .zst file, frame after frame.

    zstandard's own `stream_reader` ends quietly when the input stops inside a frame, so
    this one drives a decompression object itself and raises EOFError in that case.
    """

    def __init__(self, path: Path):
        import zstandard

        self._fh = open(path, "rb")  # noqa: SIM115 (closed in close())
        self._dctx = zstandard.ZstdDecompressor(max_window_size=2**31)
        self._obj = self._dctx.decompressobj()
        self._in_frame = False
        self._view = memoryview(b"")
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._offset >= len(self._view):
            if not self._fill():
                return 0
        n = min(len(b), len(self._view) - self._offset)
        b[:n] = self._view[self._offset : self._offset + n]
        self._offset += n
        return n

    def _fill(self) -> bool:
        data = self._fh.read(_READ_SIZE)
        if not data:
            if self._in_frame:
                raise EOFError("zstd file ended before the end of its last frame")
            return False
        out = []
        while data:
            out.append(self._obj.decompress(data))
            self._in_frame = True
            if not self._obj.eof:
                break
            # The frame ended inside this chunk; the rest belongs to the next frame.
            data = self._obj.unused_data
            self._obj = self._dctx.decompressobj()
            self._in_frame = False
        self._view = memoryview(b"".join(out))
        self._offset = 0
        return True

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()


_COMPRESSED = (".gz", ".bz2", ".xz", ".lzma", ".zst", ".zstd")


def _open_compressed(path: Path, suffix: str) -> tuple[Any, tuple[type[BaseException], ...]]:
    """A binary stream of the decompressed file, and the exceptions that mean corrupt data."""
    if suffix == ".gz":
        return gzip.GzipFile(path, "rb"), (OSError, zlib.error)
    if suffix == ".bz2":
        return bz2.BZ2File(path, "rb"), (OSError, ValueError)
    if suffix in (".xz", ".lzma"):
        return lzma.LZMAFile(path, "rb"), (lzma.LZMAError, OSError)
    try:
        import zstandard
    except ImportError:
        raise RejoinderError(
            f"{path}: reading .zst files needs the zstandard package: pip install zstandard"
        ) from None
    stream = io.BufferedReader(_ZstdRaw(path), buffer_size=_BUFFER_SIZE)
    return stream, (zstandard.ZstdError,)


def _decode(raw: bytes, report: Report, where: str) -> str | None:
    """The line as text, or None (counted as "invalid utf-8") when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        report.bad("invalid utf-8", f"{where}: {raw[:120]!r}")
        return None


def _text_lines(path: Path, report: Report) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line) for each line that is valid UTF-8."""
    for number, raw in enumerate(open_lines(path, report), start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a byte order mark
        text = _decode(raw, report, f"{path.name}:{number}")
        if text is not None:
            yield number, text


def _existing(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise RejoinderError(f"{p}: no such file or directory")
    return p


def _stem(path: Path) -> str:
    """The file name without its extensions: train.jsonl.gz -> train."""
    name = path.name
    if Path(name).suffix.lower() in _COMPRESSED:
        name = name[: -len(Path(name).suffix)]
    return Path(name).stem


# ---------------------------------------------------------------------------- turns


def _turn(text: Any, speaker: Any, labels: Mapping[str, Any], report: Report) -> Turn | None:
    """A stripped Turn, None for an empty one (counted); _Skip for a text that is no text."""
    if text is None:
        report.count("empty turns skipped")
        return None
    if not isinstance(text, str):
        raise _Skip("wrong type: text")
    text = text.strip()
    if not text:
        report.count("empty turns skipped")
        return None
    if speaker is not None and not isinstance(speaker, str):
        if not isinstance(speaker, int | float) or isinstance(speaker, bool):
            raise _Skip("wrong type: speaker")
        speaker = str(speaker)
    plain = {}
    for key, value in labels.items():
        if isinstance(value, _LABEL_VALUES):
            plain[str(key)] = value
        else:
            report.count("non-scalar turn labels dropped")
    return Turn(text, speaker, plain)


def _dialogue(
    turns: Iterable[Turn | None], id: str, source: str, meta: Mapping[str, Any]
) -> Dialogue:
    kept = tuple(t for t in turns if t is not None)
    if not kept:
        raise _Skip("empty dialogue")
    return Dialogue(kept, id, source, dict(meta))


def _build(report: Report, sample: Any, make: Callable[..., Dialogue], *args: Any):
    """`make(*args)`, or None with a counted bad record when the record cannot be read."""
    try:
        return make(*args)
    except _Skip as e:
        report.bad(e.reason, sample)
    except RejoinderError as e:  # a check of Turn/Dialogue that the reader did not foresee
        report.bad("invalid dialogue", f"{sample}: {e}")
    return None


# ---------------------------------------------------------------------------- DailyDialog

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
    path = _existing(path)
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
    stem = _stem(path)
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
            d = _build(report, f"{file.name}:{i + 1}", _dd_hf_row, row, split, base + i, report)
            if d is not None:
                yield d


def _json_rows(file: Path, report: Report) -> Iterator[tuple[int, Any]]:
    """(0-based line number, parsed object) for each line that can be read; others counted."""
    for number, line in _text_lines(file, report):
        if not line.strip():
            continue
        try:
            yield number - 1, json.loads(line)
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
        turns.append(_turn(text, "AB"[i % 2], labels, report))
    return _dialogue(turns, f"dailydialog-{split}-{index}", "dailydialog", {"split": split})


def _dd_hf_row(row: Any, split: str, index: int, report: Report) -> Dialogue:
    if not isinstance(row, Mapping):
        raise _Skip("wrong type: line")
    if "dialog" not in row:
        raise _Skip("missing field: dialog")
    texts = row["dialog"]
    if not isinstance(texts, list):
        raise _Skip("wrong type: dialog")
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
            line = _decode(raw, report, f"{file.name}:{number + 1}")
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
            d = _build(report, sample, _dd_dialogue, pieces, act, emo, split, number, report)
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


# ---------------------------------------------------------------------------- Chit-Chat


def read_chitchat(path: str | Path | None = None, *, report: Report) -> Iterator[Dialogue]:
    """The BYU Chit-Chat corpus (the `chitchat-dataset` package's dataset.json).

    Consecutive messages from one sender, in one message group or across groups, are one
    turn, their texts joined with a space; the speaker is the sender's id. The meta holds
    the conversation's prompt, start time and ratings (rating_witty, ...) when present.
    """
    if path is None:
        spec = importlib.util.find_spec("chitchat_dataset")
        if spec is None or not spec.origin:
            raise RejoinderError(
                "the Chit-Chat corpus is not installed: pip install chitchat-dataset, "
                "or give the path of its dataset.json"
            )
        path = Path(spec.origin).parent / "dataset.json"
    path = _existing(path)
    if path.is_dir():
        if not (path / "dataset.json").is_file():
            raise RejoinderError(f"{path} holds no dataset.json (the Chit-Chat corpus)")
        path = path / "dataset.json"
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        report.bad("invalid utf-8", str(path))
        return
    except (ValueError, RecursionError) as e:
        report.bad("malformed json", f"{path}: {e}")
        return
    if not isinstance(data, Mapping):
        report.bad("wrong type: dataset", f"{path}: a {type(data).__name__}, not an object")
        return
    for cid, conv in data.items():
        d = _build(report, cid, _chitchat, str(cid), conv, report)
        if d is not None:
            yield d


def _chitchat(cid: str, conv: Any, report: Report) -> Dialogue:
    if not isinstance(conv, Mapping):
        raise _Skip("wrong type: conversation")
    if "messages" not in conv:
        raise _Skip("missing field: messages")
    groups = conv["messages"]
    if not isinstance(groups, list):
        raise _Skip("wrong type: messages")
    speakers: list[str] = []
    texts: list[list[str]] = []
    for group in groups:
        if not isinstance(group, list):
            raise _Skip("wrong type: message group")
        for message in group:
            if not isinstance(message, Mapping):
                raise _Skip("wrong type: message")
            if "text" not in message:
                raise _Skip("missing field: text")
            if "sender" not in message:
                raise _Skip("missing field: sender")
            text, sender = message["text"], message["sender"]
            if text is not None and not isinstance(text, str):
                raise _Skip("wrong type: text")
            if not isinstance(sender, str | int) or isinstance(sender, bool):
                raise _Skip("wrong type: sender")
            text = (text or "").strip()
            if not text:
                report.count("empty turns skipped")
                continue
            sender = str(sender)
            if speakers and speakers[-1] == sender:
                texts[-1].append(text)
            else:
                speakers.append(sender)
                texts.append([text])
    turns = [Turn(" ".join(parts), speaker) for speaker, parts in zip(speakers, texts, strict=True)]
    meta: dict[str, Any] = {}
    for key in ("prompt", "start"):
        if isinstance(conv.get(key), str):
            meta[key] = conv[key]
    ratings = conv.get("ratings")
    if isinstance(ratings, Mapping):
        for key, value in ratings.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                meta[f"rating_{key}"] = value
    return _dialogue(turns, f"chitchat-{cid}", "chitchat", meta)


# ---------------------------------------------------------------------------- JSON lines


def read_jsonl(path: str | Path, *, report: Report) -> Iterator[Dialogue]:
    """One dialogue per line, in any of three shapes:

    - a list of strings: ["Hi", "Hello!"];
    - {"turns": [...]} with strings or {"text", "speaker", other labels} objects;
    - {"messages": [{"role", "content"}, ...]} (OpenAI's chat format; role -> speaker,
      "system" messages are skipped and counted).

    An object's `id` (else "{file stem}-{line number}") and `source` (else "jsonl") are
    used; its other keys with a string, number or boolean value go into the meta.
    Blank lines are ignored. .gz, .zst, .bz2 and .xz files are decompressed on the fly.
    """
    path = _existing(path)
    if path.is_dir():
        raise RejoinderError(f"{path} is a directory; give a .jsonl file")
    stem = _stem(path)
    for number, line in _text_lines(path, report):
        if not line.strip():
            continue
        sample = f"{path.name}:{number}: {line[:120]}"
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            report.bad("malformed json", sample)
            continue
        d = _build(report, sample, _jsonl, obj, stem, number, report)
        if d is not None:
            yield d


def _jsonl(obj: Any, stem: str, number: int, report: Report) -> Dialogue:
    default_id = f"{stem}-{number}"
    if isinstance(obj, list):
        return _dialogue(_jsonl_turns(obj, report), default_id, "jsonl", {})
    if not isinstance(obj, Mapping):
        raise _Skip("wrong type: line")
    if "turns" in obj:
        if not isinstance(obj["turns"], list):
            raise _Skip("wrong type: turns")
        turns = _jsonl_turns(obj["turns"], report)
    elif "messages" in obj:
        if not isinstance(obj["messages"], list):
            raise _Skip("wrong type: messages")
        turns = _jsonl_messages(obj["messages"], report)
    else:
        raise _Skip("missing field: turns")
    id = obj.get("id")
    if id is None or id == "":
        id = default_id
    elif isinstance(id, int) and not isinstance(id, bool):
        id = str(id)
    elif not isinstance(id, str):
        raise _Skip("wrong type: id")
    source = obj.get("source")
    if source is None or source == "":
        source = "jsonl"
    elif not isinstance(source, str):
        raise _Skip("wrong type: source")
    meta = {}
    for key, value in obj.items():
        if key in ("id", "source", "turns", "messages"):
            continue
        if isinstance(value, _SCALARS):
            meta[key] = value
        else:
            report.count("non-scalar meta keys dropped")
    return _dialogue(turns, id, source, meta)


def _jsonl_turns(items: list[Any], report: Report) -> list[Turn | None]:
    turns = []
    for item in items:
        if item is None or isinstance(item, str):
            turns.append(_turn(item, None, {}, report))
        elif isinstance(item, Mapping):
            if "text" in item:
                text_key, speaker_key = "text", "speaker"
            elif "content" in item:
                text_key, speaker_key = "content", "role"
            else:
                raise _Skip("missing field: text")
            labels = {k: v for k, v in item.items() if k not in (text_key, speaker_key)}
            turns.append(_turn(item[text_key], item.get(speaker_key), labels, report))
        else:
            raise _Skip("wrong type: turn")
    return turns


def _jsonl_messages(messages: list[Any], report: Report) -> list[Turn | None]:
    turns = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise _Skip("wrong type: message")
        if "role" not in message:
            raise _Skip("missing field: role")
        if "content" not in message:
            raise _Skip("missing field: content")
        role, content = message["role"], message["content"]
        if not isinstance(role, str):
            raise _Skip("wrong type: role")
        if role == "system":
            report.count("system messages skipped")
            continue
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
            parts = [
                p["text"]
                for p in content
                if isinstance(p, Mapping) and p.get("type", "text") == "text" and "text" in p
            ]
            if not all(isinstance(p, str) for p in parts):
                raise _Skip("wrong type: content")
            content = " ".join(p.strip() for p in parts if p.strip())
        elif content is not None and not isinstance(content, str):
            raise _Skip("wrong type: content")
        labels = {k: v for k, v in message.items() if k not in ("role", "content")}
        turns.append(_turn(content, role, labels, report))
    return turns


# ---------------------------------------------------------------------------- Q&A pairs


def read_qa(path: str | Path, *, report: Report) -> Iterator[Dialogue]:
    """`question<TAB>answer` per line, each a two-turn dialogue (split on the first tab).

    Blank lines are ignored; a line without a tab, or with an empty question or answer,
    is counted and skipped. .gz, .zst, .bz2 and .xz files are decompressed on the fly.
    """
    path = _existing(path)
    if path.is_dir():
        raise RejoinderError(f"{path} is a directory; give a file of question<TAB>answer lines")
    stem = _stem(path)
    for number, line in _text_lines(path, report):
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


# ---------------------------------------------------------------------------- ChatterBot


def chatterbot_languages() -> list[str]:
    """The languages of the installed chatterbot-corpus package (its data folders)."""
    return sorted(p.name for p in _chatterbot_root().iterdir() if p.is_dir())


def _chatterbot_root() -> Path:
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.origin:
        raise RejoinderError(
            "the ChatterBot corpus is not installed: pip install chatterbot-corpus"
        )
    root = Path(spec.origin).parent / "data"
    if not root.is_dir():
        raise RejoinderError(f"the chatterbot-corpus package has no data folder at {root}")
    return root


def read_chatterbot(language: str, *, report: Report) -> Iterator[Dialogue]:
    """The conversations of one language of the `chatterbot-corpus` package.

    Every conversation of every data/{language}/*.yml file is a dialogue (meta category =
    the file's stem). Numbers become text; nulls are empty turns. The language is matched
    case-insensitively; an unknown one raises RejoinderError listing those available.
    """
    import yaml

    root = _chatterbot_root()
    available = chatterbot_languages()
    matches = [name for name in available if name.lower() == str(language).strip().lower()]
    if not matches:
        raise RejoinderError(
            f"no chatterbot corpus for the language {language!r}; available: {', '.join(available)}"
        )
    name = matches[0]
    folder = root / name
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".yml", ".yaml"))
    if not files:
        raise RejoinderError(f"{folder} holds no .yml files")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for file in files:
        category = file.stem
        try:
            data = yaml.load(file.read_bytes().decode("utf-8-sig"), Loader=loader)
        except UnicodeDecodeError:
            report.bad("invalid utf-8", str(file))
            continue
        except yaml.YAMLError as e:
            report.bad("malformed yaml", f"{file}: {e}")
            continue
        if not isinstance(data, Mapping) or "conversations" not in data:
            report.bad("missing field: conversations", str(file))
            continue
        conversations = data["conversations"]
        if not isinstance(conversations, list):
            report.bad("wrong type: conversations", str(file))
            continue
        for i, conv in enumerate(conversations):
            sample = f"{file.name}[{i}]: {conv!r:.120}"
            id = f"chatterbot-{name}-{category}-{i}"
            d = _build(report, sample, _chatterbot, conv, id, category, report)
            if d is not None:
                yield d


def _chatterbot(conv: Any, id: str, category: str, report: Report) -> Dialogue:
    if not isinstance(conv, list):
        raise _Skip("wrong type: conversation")
    turns = []
    for item in conv:
        if isinstance(item, int | float) and not isinstance(item, bool):
            item = str(item)
        elif isinstance(item, bool):
            item = str(item).lower()  # YAML 1.1 reads yes/no/on/off as booleans
        elif item is not None and not isinstance(item, str):
            raise _Skip("wrong type: turn")
        turns.append(_turn(item, None, {}, report))
    return _dialogue(turns, id, "chatterbot", {"category": category})


READERS: dict[str, Callable[..., Iterator[Dialogue]]] = {
    "dailydialog": read_dailydialog,
    "chitchat": read_chitchat,
    "jsonl": read_jsonl,
    "qa": read_qa,
    "chatterbot": read_chatterbot,
}
"""The readers by corpus name, for the CLI (`rejoinder data --corpus NAME`)."""
