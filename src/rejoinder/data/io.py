"""Reading corpus files line by line, compressed or not, without ever crashing on their bytes.

Files are read in binary (`open_lines`, which also opens .gz, .zst, .bz2 and .xz files)
and each line is decoded by the caller (`decode_line`, `text_lines`), so that invalid
UTF-8 is one counted bad record and not an exception.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    path = Path(path)
    if not path.is_file():
        raise RejoinderError(
            f"{path}: no such file" if not path.exists() else f"{path} is not a file"
        )
    suffix = path.suffix.lower()
    if suffix not in COMPRESSED:
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
