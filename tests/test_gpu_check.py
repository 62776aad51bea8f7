"""scripts/gpu-check.sh without a GPU: its one-line skip, and a toy run on the CPU
(--device cpu) whose JSON holds the real figures of what ran."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def gpu_check(*args, **env):
    """Runs the script with this interpreter; returns (exit status, stdout, the JSON)."""
    out = Path(env.pop("out"))
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env},
    )
    report = json.loads((out / "gpu-check.json").read_text())
    return done.returncode, done.stdout, report, done.stderr


def test_without_a_cuda_device_it_skips_in_one_line(tmp_path):
    code, stdout, report, stderr = gpu_check(CUDA_VISIBLE_DEVICES="", out=tmp_path)
    assert code == 0, stderr
    assert stdout.startswith("gpu-check: skipped: no CUDA device") and stdout.count("\n") == 1
    assert report["status"] == "skipped" and report["log"] == stdout.splitlines()
    facts = report["environment"]
    assert facts["torch"] == torch.__version__ and facts["executable"] == sys.executable
    assert facts["cuda_available"] is False and facts["gpus"] == []
    assert "tests" not in report and "benchmark" not in report


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """The check on the CPU: the chunked-loss test and the CTranslate2 tests (which skip
    on a CPU but for int8), and the benchmark with short measurements."""
    out = tmp_path_factory.mktemp("gpu-check")
    bench = ["--min-seconds", "0.2", "--max-batch", "2", "--new", "4"]
    return gpu_check(
        "--device", "cpu", "-k", "chunked_loss or (ctranslate2 and float16)",
        *[f"--bench-arg={a}" for a in bench], out=out,
    )  # fmt: skip


def test_a_cpu_run_reports_each_test_with_its_outcome(cpu_run):
    code, stdout, report, stderr = cpu_run
    assert code == 0, stdout[-3000:] + stderr[-3000:]
    assert report["status"] == "passed" and report["problems"] == []
    assert report["device"] == "cpu" and report["environment"]["torch"] == torch.__version__
    assert report["environment"]["python"] == platform.python_version()
    assert report["log"] == stdout.splitlines()  # everything printed is in the JSON
    assert [p["name"] for p in report["phases"]] == ["tests", "benchmark"]
    assert all(p["returncode"] == 0 and p["seconds"] > 0 for p in report["phases"])

    results = report["tests"]["results"]
    tally = {}
    for r in results:
        tally[r["outcome"]] = tally.get(r["outcome"], 0) + 1
        path, _, name = r["test"].partition("::")
        assert f"def {name.split('[')[0]}(" in (ROOT / path).read_text()  # a real test
    assert report["tests"]["summary"] == tally
    chunked = [r for r in results if "chunked_loss" in r["test"]]
    assert [r["outcome"] for r in chunked] == ["passed"] and chunked[0]["seconds"] > 0
    skipped = [r for r in results if r["outcome"] == "skipped"]
    assert skipped and all("float16" in r["reason"] or "ctranslate2" in r["reason"]
                           for r in skipped)  # fmt: skip
    assert f"{tally['passed']} passed" in stdout


def test_a_cpu_run_reports_figures_that_add_up(cpu_run):
    from transformers import AutoModelForCausalLM

    from rejoinder.modeling.architectures import model_config

    bench = cpu_run[2]["benchmark"]
    assert bench["device"]["kind"] == "cpu" and bench["peak"]["assumed_flops"] is None
    settings, training = bench["settings"], bench["training"]
    # FLOPs per token as the benchmark's docstring defines them, from the model itself.
    model = AutoModelForCausalLM.from_config(
        model_config("gpt2", settings["size"], settings["vocab"])
    )
    c = model.config
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    assert training["flops_per_token"] == 6 * n + 12 * c.n_layer * c.n_embd * settings["seq"]
    measured = [v for v in training["variants"] if "tokens_per_s" in v]
    assert {v["name"] for v in measured} >= {"eager, chunked loss", "eager, transformers' loss"}
    for v in measured:
        tokens = v["batch"] * settings["seq"] * v["steps"]
        assert v["tokens_per_s"] == pytest.approx(tokens / v["seconds"], rel=1e-3)
        achieved = v["tokens_per_s"] * training["flops_per_token"]
        assert v["mfu_of_measured"] == pytest.approx(achieved / bench["peak"]["measured_flops"],
                                                     rel=1e-2)  # fmt: skip
        assert v["mfu"] is None and 0 < v["loss"] < 20

    runs = bench["decoding"]["runs"]
    new = bench["decoding"]["new_tokens"]
    assert {(r["engine"], r["batch"]) for r in runs} >= {("torch", 1), ("torch", 32)}
    for r in runs:
        assert r["new_tokens_per_row"] == [new, new]  # min_new_tokens held every row
        assert r["tokens"] == r["batch"] * new * r["runs"]
        assert r["tokens_per_s"] == pytest.approx(r["tokens"] / r["seconds"], rel=1e-3)
    rate = {r["batch"]: r["tokens_per_s"] for r in runs if r["engine"] == "torch"}
    target = next(t for t in cpu_run[2]["targets"] if t["target"].endswith("(torch)"))
    assert target["value"] == pytest.approx(rate[32] / rate[1], abs=0.01)
    assert target["met"] == (target["value"] >= 10)
    assert {s["part"] for s in bench["skipped"]} >= {"compiled trunk, chunked loss"}
