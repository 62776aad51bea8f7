"""DDP on one device: `rejoinder train --trainer.strategy ddp` with a process group (NCCL
on a GPU), in its own process as a user starts it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import chat_dataset
from tests.gpu.helpers import DEVICE, ON_GPU
from tests.gpu.test_train import train_args
from tests.training.test_train import LINES

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[2]


def test_ddp_on_one_device_trains_and_exports(tmp_path):
    data = chat_dataset(tmp_path, LINES, 32)
    out = tmp_path / "ddp"
    argv = train_args(data, out, "--trainer.strategy", "ddp", steps=4)
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}  # the probe imports from tests
    done = subprocess.run([sys.executable, "-m", "rejoinder", *argv], capture_output=True,
                          text=True, timeout=240, cwd=ROOT, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads((tmp_path / "ddp.probe.json").read_text())
    assert facts["strategy"] == "DDPStrategy" and facts["world_size"] == 1, facts
    assert facts["backend"] == ("nccl" if ON_GPU else "gloo"), facts
    assert facts["device"].startswith(DEVICE) and facts["steps"] == 4, facts
    assert json.loads((out / "rejoinder.json").read_text())["made_by"]["command"] == "train"
