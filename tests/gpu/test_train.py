"""`rejoinder train` on the device in bf16-mixed: GPT-2 and Llama, the chunked loss, LoRA,
a crash resumed, export."""

import csv
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rejoinder.cli import main
from tests.conftest import chat_dataset
from tests.gpu.helpers import ACCELERATOR, DEVICE, SMALL
from tests.training.test_train import LINES

pytestmark = pytest.mark.gpu

MODELS = [("gpt2", SMALL), ("llama", "tiny")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return chat_dataset(tmp_path_factory.mktemp("gpu-data"), LINES, 64)


def train_args(dataset, out, *extra, init=SMALL, steps=8):
    return [
        "train", "--data.path", str(dataset), "--data.batch_tokens", "512",
        "--data.val_split", "none", "--model.init", str(init), "--model.max_tokens", "64",
        "--model.lr", "3e-3", "--model.warmup_steps", "2", "--model.dropout", "0.0",
        "--model.chunked_loss", "true",
        "--trainer.accelerator", ACCELERATOR, "--trainer.devices", "1",
        "--trainer.precision", "bf16-mixed", "--trainer.max_steps", str(steps),
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.log_every_n_steps", "1", "--checkpoint_every", "3",
        "--trainer.callbacks+=tests.gpu.probe.Probe",
        "--trainer.callbacks.path", str(out.parent / f"{out.name}.probe.json"),
        "--out", str(out), *extra,
    ]  # fmt: skip


def probe(out) -> dict:
    return json.loads((out.parent / f"{out.name}.probe.json").read_text())


def trained_on_the_device_in_bf16(out) -> dict:
    facts = probe(out)
    assert facts["device"].startswith(DEVICE), facts
    assert facts["precision"] == "bf16-mixed" and facts["matmul_dtype"] == "torch.bfloat16"
    assert facts["weights_dtype"] == "torch.float32", facts  # bf16 compute, float32 weights
    return facts


def losses(run, first=True) -> list[tuple[int, float]]:
    """(step, loss) of a run's first log, or of its last (a resumed run's own)."""
    logs = sorted(run.glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))
    with open(logs[0 if first else -1]) as f:
        return [(int(r["step"]), float(r["train_loss"])) for r in csv.DictReader(f)
                if r.get("train_loss")]  # fmt: skip


def state(ckpt) -> dict:
    return torch.load(ckpt, weights_only=False, map_location="cpu")


@pytest.mark.parametrize("arch,size", MODELS, ids=[f"{a}-{s}" for a, s in MODELS])
def test_bf16_training_learns_and_exports_a_checkpoint_that_runs_there(dataset, tmp_path, arch,
                                                                        size):  # fmt: skip
    from transformers import AutoModelForCausalLM

    from rejoinder import ConversationModel

    out = tmp_path / "model"
    assert main(train_args(dataset, out, "--model.arch", arch, init=size)) == 0
    assert trained_on_the_device_in_bf16(out)["steps"] == 8
    curve = [loss for _, loss in losses(tmp_path / "model.run")]
    assert all(math.isfinite(x) for x in curve) and curve[-1] < curve[0]  # it learns

    # `rejoinder export` of the run's checkpoint holds exactly its float32 weights.
    ckpt = tmp_path / "model.run" / "checkpoints" / "last.ckpt"
    assert main(["export", str(ckpt), "--out", str(tmp_path / "exported")]) == 0
    trained = {k.removeprefix("model."): v for k, v in state(ckpt)["state_dict"].items()}
    exported = load_file(str(tmp_path / "exported" / "model.safetensors"))
    assert exported and set(exported) <= set(trained)
    for key, value in exported.items():
        assert value.dtype == torch.float32 and torch.equal(value, trained[key]), key
    AutoModelForCausalLM.from_pretrained(out)  # plain transformers loads it
    bot = ConversationModel.from_pretrained(out, device=DEVICE, dtype=torch.bfloat16)
    assert bot.device.type == DEVICE
    assert isinstance(bot.generate(["Hello there!"], max_new_tokens=8), str)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_lora_in_bf16_trains_only_the_adapters(dataset, tmp_path, arch):
    from rejoinder import ConversationModel
    from rejoinder.modeling import init_checkpoint

    base = init_checkpoint(tmp_path / "base", size="tiny", arch=arch, initializer_range=0.2)
    out = tmp_path / "adapter"
    lora = ["--model.lora.r", "4", "--model.lr", "1e-2"]
    assert main(train_args(dataset, out, *lora, init=base, steps=6)) == 0
    trained_on_the_device_in_bf16(out)
    weights = state(tmp_path / "adapter.run" / "checkpoints" / "last.ckpt")["state_dict"]
    assert any(v.abs().sum() > 0 for k, v in weights.items() if ".lora_B" in k)  # B starts at 0
    before = load_file(str(base / "model.safetensors"))
    frozen = {k.removeprefix("model.base_model.model.").replace(".base_layer", ""): v
              for k, v in weights.items() if ".lora_" not in k}  # fmt: skip
    for key, value in before.items():
        assert torch.equal(frozen[key], value), key  # the base never moved
    assert (out / "adapter_model.safetensors").is_file()
    ckpt = tmp_path / "adapter.run" / "checkpoints" / "last.ckpt"
    assert main(["export", str(ckpt), "--out", str(tmp_path / "merged"), "--merge"]) == 0
    bot = ConversationModel.from_pretrained(tmp_path / "merged", device=DEVICE)
    assert isinstance(bot.generate(["Hello there!"], max_new_tokens=6), str)


def test_a_crashed_bf16_run_resumes_where_it_stopped(dataset, tmp_path, capfd):
    steps = 8  # not a multiple of --checkpoint_every (3): the export still holds every step
    whole = tmp_path / "whole"
    assert main(train_args(dataset, whole, steps=steps)) == 0

    broken = tmp_path / "broken"
    crash = ["--trainer.callbacks+=tests.training.helpers.CrashAt", "--trainer.callbacks.step", "5"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(train_args(dataset, broken, *crash, steps=steps))
    last = tmp_path / "broken.run" / "checkpoints" / "last.ckpt"
    saved = state(last)
    assert saved["global_step"] == 3
    capfd.readouterr()
    assert main(train_args(dataset, broken, steps=steps)) == 0  # the same command
    assert "resuming from" in capfd.readouterr().err
    assert state(last)["global_step"] == steps
    # The second run went on from step 3 (its log starts there), not from the start.
    assert min(step for step, _ in losses(tmp_path / "broken.run", first=False)) >= 3
    meta = [json.loads((d / "rejoinder.json").read_text())["made_by"] for d in (whole, broken)]
    assert meta[0]["tokens_seen"] == meta[1]["tokens_seen"]

    # It ends where the uninterrupted run does: exactly on a CPU; on a GPU, whose
    # reductions may add in another order from run to run, far closer than the steps
    # after the checkpoint moved the weights.
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(broken / "model.safetensors"))
    at_crash = {k.removeprefix("model."): v for k, v in saved["state_dict"].items()}

    def distance(x, y):
        return math.sqrt(sum(float(((x[k] - y[k]).double() ** 2).sum()) for k in x))

    moved, apart = distance(a, at_crash), distance(a, b)
    assert moved > 0
    assert apart == 0 if DEVICE == "cpu" else apart < 0.05 * moved, (apart, moved)


def test_the_chunked_loss_equals_transformers_loss_under_bf16_autocast():
    from transformers import AutoModelForCausalLM

    from rejoinder.modeling.architectures import model_config
    from rejoinder.modeling.loss import mean_lm_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config("gpt2", SMALL, 50257))
    model = model.to(DEVICE).eval()  # no dropout: both passes see the same network
    ids = torch.randint(0, 50257, (4, 64), device=DEVICE)
    labels = ids.clone()
    labels[:, :20] = -100  # only the replies count
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    def loss_and_grads(loss_fn):
        model.zero_grad()
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss = loss_fn(batch)
        loss.backward()
        return loss.detach().float(), {n: p.grad.flatten() for n, p in model.named_parameters()}

    plain, plain_grads = loss_and_grads(lambda b: model(**b).loss)
    chunked, chunked_grads = loss_and_grads(lambda b: mean_lm_loss(model, b))
    torch.testing.assert_close(chunked, plain, rtol=1e-2, atol=1e-2)
    for name, grad in plain_grads.items():
        cosine = torch.nn.functional.cosine_similarity(chunked_grads[name], grad, dim=0)
        assert cosine > 0.99, (name, float(cosine))
