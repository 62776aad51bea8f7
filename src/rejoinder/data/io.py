"""Reading corpus files line by line, compressed or not, without ever crashing on their bytes.

Files are read in binary (`open_lines`, which also opens .gz, .zst, .bz2 and .xz files)
and each line is decoded by the caller (`decode_line`, `text_lines`), so that invalid
UTF-8 is one counted bad record and not an exception.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rejoinder.data.report import Report
from rejoinder.errors import RejoinderError

COMPRESSED = (".gz", ".bz2", ".xz", ".lzma", ".zst", ".zstd")
"""The extensions `open_lines` decompresses."""

_READ_SIZE = 1 << 17  # compressed bytes fed to zstd at a time
_BUFFER_SIZE = 1 << 20  # bytes of decompressed text buffered for line splitting


def open_lines(path: str | Path, report: Report) -> Iterator[bytes]:
    """Yields the raw lines (bytes, with their b"\\n") of a file, decompressing by extension.

    .gz, .bz2, .xz/.lzma and .zst/.zstd files are decompressed on the fly; anything else
    is read as is. Nothing is decoded here. A compressed file that ends early yields every
    complete line before the cut and is then counted as `report.bad("truncated file")`;
    one that cannot be decompressed at some point is counted as "corrupt compressed file".
    Neither raises. A missing path raises `RejoinderError`.
    """
    return iter(Lines(path, report))


class Lines:
    """The lines of a file as `open_lines` yields them, and how far into the file they are.

    `position()` is the number of bytes of the file itself (compressed bytes, for a
    compressed file) read so far: what a progress line compares with the file's size.
    """

    def __init__(self, path: str | Path, report: Report):
        self.path = Path(path)
        self.report = report
        self._raw = None

    def position(self) -> int:
        raw = self._raw
        return raw.tell() if raw is not None and not raw.closed else 0

    def __iter__(self) -> Iterator[bytes]:
        path = self.path
        if not path.is_file():
            raise RejoinderError(
                f"{path}: no such file" if not path.exists() else f"{path} is not a file"
            )
        suffix = path.suffix.lower()
        with open(path, "rb", buffering=_BUFFER_SIZE) as raw:
            self._raw = raw
            if suffix not in COMPRESSED:
                yield from raw
                return
            stream, errors = _open_compressed(raw, path, suffix)
            try:
                with stream as f:
                    yield from f
            except EOFError:
                self.report.bad("truncated file", str(path))
            except errors as e:
                self.report.bad("corrupt compressed file", f"{path}: {e}")


class _ZstdRaw(io.RawIOBase):
    """A raw stream of the decompressed bytes of a .zst file, frame after frame.

    zstandard's own `stream_reader` ends quietly when the input stops inside a frame, so
    this one drives a decompression object itself and raises EOFError in that case.
    """

    def __init__(self, raw: IO[bytes]):
        import zstandard

        self._fh = raw
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


def _open_compressed(
    raw: IO[bytes], path: Path, suffix: str
) -> tuple[Any, tuple[type[BaseException], ...]]:
    """A binary stream of the decompressed file read from `raw` (which the caller closes),
    and the exceptions that mean corrupt data."""
    if suffix == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb"), (OSError, zlib.error)
    if suffix == ".bz2":
        return bz2.BZ2File(raw, "rb"), (OSError, ValueError)
    if suffix in (".xz", ".lzma"):
        return lzma.LZMAFile(raw, "rb"), (lzma.LZMAError, OSError)
    try:
        import zstandard
    except ImportError:
        raise RejoinderError(
            f"{path}: reading .zst files needs the zstandard package: pip install zstandard"
        ) from None
    stream = io.BufferedReader(_ZstdRaw(raw), buffer_size=_BUFFER_SIZE)
    return stream, (zstandard.ZstdError,)


def decode_line(raw: bytes, report: Report, where: str) -> str | None:
    """The line as text, or None (counted as "invalid utf-8") when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        report.bad("invalid utf-8", f"{where}: {raw[:120]!r}")
        return None


def text_lines(path: Path, report: Report) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line) for each line that is valid UTF-8."""
    for number, raw in enumerate(open_lines(path, report), start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a byte order mark
        text = decode_line(raw, report, f"{path.name}:{number}")
        if text is not None:
            yield number, text


def existing(path: str | Path) -> Path:
    """`path` as a Path (~ expanded); a `RejoinderError` when nothing is there."""
    p = Path(path).expanduser()
    if not p.exists():
        raise RejoinderError(f"{p}: no such file or directory")
    return p


def file_stem(path: Path) -> str:
    """The file name without its extensions: train.jsonl.gz -> train."""
    name = path.name
    if Path(name).suffix.lower() in COMPRESSED:
        name = name[: -len(Path(name).suffix)]
    return Path(name).stem


# Lone UTF-16 surrogates: JSON may escape them ("\\ud800" is valid JSON) but they are no
# Unicode text, and nothing downstream (UTF-8, parquet, tokenizers) can hold them.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
REPAIRED = "texts with lone surrogates repaired"
"""The report's count of strings whose lone surrogates became U+FFFD."""


def has_surrogate_escape(line: bytes | str) -> bool:
    """Whether a JSON line escapes a UTF-16 surrogate (half of a pair, or a lone one)."""
    if isinstance(line, str):
        line = line.encode("utf-8", "surrogatepass")
    return _SURROGATE_ESCAPE.search(line) is not None


def repair_surrogates(value: Any, report: Report) -> Any:
    """`value` (parsed JSON or YAML) with each lone surrogate in its strings, keys included,
    replaced by U+FFFD; each string repaired is counted under `REPAIRED`.

    >>> r = Report()
    >>> repair_surrogates({"body": "a\\ud800b", "n": [1, "ok"]}, r), r.counts[REPAIRED]
    ({'body': 'a\ufffdb', 'n': [1, 'ok']}, 1)
    """
    if isinstance(value, str):
        fixed, n = _LONE_SURROGATE.subn("\ufffd", value)
        if n:
            report.count(REPAIRED)
        return fixed
    if isinstance(value, list):
        return [repair_surrogates(v, report) for v in value]
    if isinstance(value, dict):
        return {
            repair_surrogates(k, report): repair_surrogates(v, report) for k, v in value.items()
        }
    return value


def load_json(text: str | bytes, report: Report) -> Any:
    """`json.loads(text)`, lone surrogates repaired (`repair_surrogates`); raises ValueError
    or RecursionError as json.loads does."""
    value = json.loads(text)
    if has_surrogate_escape(text):
        value = repair_surrogates(value, report)
    return value


def write_part(out: Path, split: str, rows: list[tuple], schema, part: int = 0) -> None:
    """Writes rows (tuples in `schema`'s order) as one parquet file of a split: what
    `write_pairs`, `write_labels` and `write_unpaired` do for tests and small tools (the
    builds write their own)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(zip(*rows, strict=True)) or [[] for _ in schema]
    arrays = [pa.array(list(c), type=f.type) for c, f in zip(columns, schema, strict=True)]
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), folder / f"part-{part:05d}.parquet")
