"""Keeping freed memory in the process while decoding, on glibc.

A decoding step allocates the same large tensors every time: the logits of every row
over the vocabulary (32 rows of GPT-2's are 6.4 MB), their probabilities, the masks of
the sampler. glibc serves an allocation that large with a fresh mapping and returns it
to the kernel when freed, and shrinks the heap's top as soon as a little is free; so
each step faults its pages in again, each page zeroed by the kernel. On a small model
that is most of a step's time outside the model (benchmarks/serve_load.py `--size
tiny` shows the step's host time). With allocations up to 32 MB served from the heap
(glibc's own ceiling for that setting) and up to 128 MB of free heap kept, a step's
tensors reuse the pages the last step freed.

The cost is memory the process keeps: at most the trim threshold beyond what it uses,
where the kernel would have had it back. Only glibc has these settings; elsewhere, or
where the user set glibc's malloc variables, nothing changes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger("rejoinder.generation")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""mallopt's parameters (malloc.h)."""

MMAP_THRESHOLD = 32 << 20
"""Allocations below this come from the heap (glibc refuses more than 32 MB here)."""

TRIM_THRESHOLD = 128 << 20
"""Free memory at the heap's top kept for the next allocations instead of returned."""

USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

_held = False


def hold_freed_memory() -> bool:
    """Sets glibc's thresholds for this process, once; whether they are in effect."""
    global _held
    if _held:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in USER_SETTINGS):
        return False  # the user's own choice stands
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    _held = bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    log.debug("freed memory %s", "kept" if _held else "returned (mallopt refused)")
    return _held
