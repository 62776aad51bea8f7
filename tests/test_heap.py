"""generation/heap.py: glibc keeps freed memory for the next step, unless the user chose."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
ASK = "from rejoinder.generation.heap import hold_freed_memory as h; print(h(), h())"


def held(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUN"))}
    out = subprocess.run(
        [sys.executable, "-c", ASK], env={**clean, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc settings")
def test_freed_memory_is_held_once_set_and_the_users_settings_stand():
    assert held() == ["True", "True"]
    assert held(MALLOC_TRIM_THRESHOLD_="4096") == ["False", "False"]
    assert held(GLIBC_TUNABLES="glibc.malloc.trim_threshold=4096") == ["False", "False"]
