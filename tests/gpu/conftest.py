"""Fixtures of the GPU tests, and the per-test record that scripts/gpu_check.py reads.

Every test here is marked `gpu`; tests/conftest.py skips them where there is no CUDA
device unless REJOINDER_GPU_CHECK_DEVICE=cpu asks for the CPU.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.gpu.helpers import DEVICE

# -- the record: one JSON line per test phase, written as it ends ----------------------

RESULTS = os.environ.get("REJOINDER_GPU_CHECK_RESULTS")
"""Where the check wants the results (unset: nothing is written)."""


def _record(entry: dict) -> None:
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def _reason(report) -> str | None:
    if report.passed:
        return None
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    text = str(report.longrepr)
    # The failing line and its message, and the end of the full report.
    return f"{crash.message}\n{text[-3000:]}" if crash is not None else text[-3000:]


def pytest_collection_finish(session):
    if RESULTS:
        _record({"collected": [item.nodeid for item in session.items]})


def pytest_collectreport(report):
    if RESULTS and report.failed:
        _record({"test": report.nodeid, "when": "collect", "outcome": "failed",
                 "seconds": 0.0, "reason": _reason(report)})  # fmt: skip


def pytest_runtest_logreport(report):
    if RESULTS:
        _record({"test": report.nodeid, "when": report.when, "outcome": report.outcome,
                 "seconds": round(report.duration, 3), "reason": _reason(report)})  # fmt: skip


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ct2_device(make_checkpoint, tmp_path_factory):
    """The device CTranslate2 decodes on here, once it has decoded a token there (in a
    process of its own: a CTranslate2 built for another CUDA can fail to load its
    libraries, or end the process that tried). Where it cannot, the tests that need it
    skip and say why."""
    import shutil
    import subprocess
    import sys

    try:
        import ctranslate2
    except ImportError:
        pytest.skip("ctranslate2 is not installed (scripts/gpu-wheels.sh carries it)")
    if DEVICE == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        pytest.skip(f"CTranslate2 {ctranslate2.__version__} sees no CUDA device")
    from rejoinder.generation.backends.ctranslate2 import converted

    model = tmp_path_factory.mktemp("ct2-probe") / "model"
    model = converted(shutil.copytree(make_checkpoint("dialogpt"), model), "float32")
    one_token = (
        "import sys, ctranslate2; ctranslate2.Generator(sys.argv[1], device=sys.argv[2])"
        ".generate_batch([['<|endoftext|>']], max_length=1)"
    )
    done = subprocess.run([sys.executable, "-c", one_token, str(model), DEVICE],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        pytest.skip(f"CTranslate2 {ctranslate2.__version__} cannot decode on {DEVICE}: {last}")
    return DEVICE
