"""Outputs that appear complete or not at all, and the one check of an output's place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rejoinder.errors import RejoinderError


def check_out(out: str | os.PathLike, force: bool, source: str | os.PathLike | None = None) -> Path:
    """`out` as a command's output, checked before any work is done: an existing file or
    non-empty directory is replaced only with `force`, and never is the input `source`.

    Every verb that writes an output calls this, so the refusal reads one way.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise RejoinderError(
            f"{out} already exists; choose another --out, or --force to replace it"
        )
    same = source is not None and out.exists() and Path(source).exists()
    if same and out.resolve() == Path(source).resolve():
        raise RejoinderError(f"--out {out} is the input {source}; write elsewhere")
    return out


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary directory beside `out`, renamed to `out` when the block ends.

    An existing `out` is replaced only then; if the block raises (or is interrupted),
    the temporary directory is removed and `out` is left as it was.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        # mkdtemp makes the directory private (0700); the output gets the permissions
        # any directory made here would get.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
