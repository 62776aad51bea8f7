"""`rejoinder train` end to end on CPU with a two-layer model and GPT-2's vocabulary."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from rejoinder.cli import main
from rejoinder.data.build import BuildConfig, Source, build
from tests.conftest import chat_dataset

LINES = [
    ["Hello there!", "Hi, how are you?", "Fine, thanks. And you?", "Great."],
    ["What are you doing tonight?", "Watching a movie with friends."],
    ["Do you like pizza?", "I love it, especially with mushrooms.", "Me too!"],
    ["Where do you live?", "In a small town near the mountains."],
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return chat_dataset(tmp_path_factory.mktemp("train-data"), LINES, 48, valid=0.2)


def args(dataset, out, *extra):
    return [
        "train", "--data.path", str(dataset), "--data.batch_tokens", "256",
        "--model.init", "tiny", "--model.max_tokens", "64", "--model.lr", "3e-3",
        "--model.warmup_steps", "2", "--model.dropout", "0.0",
        "--trainer.max_steps", "8", "--trainer.val_check_interval", "4",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.log_every_n_steps", "1", "--checkpoint_every", "3", "--out", str(out), *extra,
    ]  # fmt: skip


def weights(out):
    return load_file(str(out / "model.safetensors"))


def test_train_exports_a_checkpoint_and_a_run(dataset, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "model"
    assert main(args(dataset, out)) == 0
    run = tmp_path / "model.run"
    assert {"last.ckpt", "best.ckpt"} <= {p.name for p in (run / "checkpoints").iterdir()}
    assert (run / "curves.png").stat().st_size > 0
    assert (run / "logs" / "version_0" / "metrics.csv").is_file()
    meta = json.loads((out / "rejoinder.json").read_text())
    assert meta["made_by"]["command"] == "train" and meta["format"]["name"] == "dialogpt"
    AutoModelForCausalLM.from_pretrained(out)  # plain transformers loads it
    rows = (run / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    losses = [float(r.split(",")[header.index("train_loss")]) for r in rows[1:]
              if r.split(",")[header.index("train_loss")]]  # fmt: skip
    assert losses and losses[-1] < losses[0]  # it learns


def test_print_config_round_trips_through_a_file(dataset, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*args(dataset, tmp_path / "m"), "--print_config"])
    config = capsys.readouterr().out
    assert "max_tokens: 64" in config and "loss_on: responses" in config
    path = tmp_path / "config.yaml"
    path.write_text(config)
    with pytest.raises(SystemExit):
        main(["train", "--config", str(path), "--model.reverse", "true", "--print_config"])
    again = capsys.readouterr().out
    assert "reverse: true" in again and "max_tokens: 64" in again


def test_a_crashed_run_resumes_to_the_same_weights(dataset, tmp_path):
    whole = tmp_path / "whole"
    assert main(args(dataset, whole, "--data.val_split", "none")) == 0

    broken = tmp_path / "broken"
    crash = ["--data.val_split", "none", "--trainer.callbacks+=tests.training.helpers.CrashAt",
             "--trainer.callbacks.step", "5"]  # fmt: skip
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(args(dataset, broken, *crash))
    last = tmp_path / "broken.run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 3
    assert main(args(dataset, broken, "--data.val_split", "none")) == 0  # the same command
    # Both exports hold all 8 steps, though the last checkpoint every 3 steps was at 6.
    for out in (whole, broken):
        assert json.loads((out / "rejoinder.json").read_text())["made_by"]["step"] == 8
    a, b = weights(whole), weights(broken)
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_reverse_and_export(dataset, tmp_path):
    out = tmp_path / "rev"
    assert main(args(dataset, out, "--model.reverse", "true")) == 0
    assert json.loads((out / "rejoinder.json").read_text())["format"]["reverse"] is True
    again = tmp_path / "exported"
    ckpt = tmp_path / "rev.run" / "checkpoints" / "last.ckpt"
    assert main(["export", str(ckpt), "--out", str(again)]) == 0
    # Every exported weight is the one the run's checkpoint holds, and none is left out.
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    exported = weights(again)
    trained = {k.removeprefix("model."): v for k, v in state.items()}
    assert set(exported) <= set(trained)
    assert set(trained) - set(exported) <= {"lm_head.weight"}  # tied to the embeddings
    for key, value in exported.items():
        assert torch.equal(value, trained[key]), key
    from rejoinder import ConversationModel

    bot = ConversationModel.from_pretrained(again)
    assert bot.format.reverse
    torch.testing.assert_close(bot.model.lm_head.weight, trained["transformer.wte.weight"])


def test_bad_runs_get_clear_errors(dataset, tmp_path, capsys):
    empty = tmp_path / "empty"
    build(BuildConfig(sources=[Source("qa", {"path": str(_write(tmp_path / "q.tsv", ""))})],
                      out=str(empty)))  # fmt: skip
    assert main(args(empty, tmp_path / "a")) == 2
    assert "no training dialogues" in capsys.readouterr().err

    single = tmp_path / "single"
    src = _write(tmp_path / "one.jsonl", '["just one turn"]\n' * 5)
    build(BuildConfig(sources=[Source("jsonl", {"path": str(src)})], out=str(single)))
    assert main(args(single, tmp_path / "b")) == 2
    assert "no response tokens" in capsys.readouterr().err

    assert main(args(dataset, tmp_path / "c")) == 0
    assert main(args(dataset, tmp_path / "d", "--model.init", str(tmp_path / "c"),
                     "--model.format", "sep")) == 2  # fmt: skip
    assert "differs from the format" in capsys.readouterr().err

    poison = [
        "--trainer.callbacks+=tests.training.helpers.PoisonAt",
        "--trainer.callbacks.step",
        "4",
    ]
    assert main(args(dataset, tmp_path / "e", *poison)) == 2
    err = capsys.readouterr().err
    assert "loss became nan" in err and "Traceback" not in err
    ckpt = torch.load(tmp_path / "e.run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_kill_9_then_the_same_command_finishes(dataset, tmp_path):
    import signal
    import time

    def command(max_steps):
        argv = args(dataset, tmp_path / "k", "--checkpoint_every", "2")
        argv[argv.index("--trainer.max_steps") + 1] = str(max_steps)
        return [sys.executable, "-m", "rejoinder", *argv]

    last = tmp_path / "k.run" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(command(400), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = torch.load(last, weights_only=False)["global_step"]  # never a torn file
    assert 0 < step < 400
    done = subprocess.run(command(step + 4), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr
    assert torch.load(last, weights_only=False)["global_step"] == step + 4


def _write(path, text):
    path.write_text(text)
    return path


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    """Two gloo ranks, each a batch a step, equal one process accumulating two batches."""
    src = tmp_path / "chats.jsonl"
    src.write_text("\n".join(json.dumps(LINES[i % 4] + [f"number {i}"]) for i in range(200)) + "\n")
    data = tmp_path / "ds"
    build(
        BuildConfig(sources=[Source("jsonl", {"path": str(src)})], out=str(data), valid=0, test=0)
    )

    def run(out, *extra):
        argv = args(data, out, "--data.val_split", "none", "--trainer.max_steps", "3", *extra)
        done = subprocess.run([sys.executable, "-m", "rejoinder", *argv], capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return weights(out), json.loads((out / "rejoinder.json").read_text())["made_by"]

    one, one_meta = run(tmp_path / "one", "--trainer.accumulate_grad_batches", "2")
    two, two_meta = run(tmp_path / "two", "--trainer.strategy", "ddp", "--trainer.devices", "2",
                        "--trainer.accelerator", "cpu")  # fmt: skip
    assert one_meta["tokens_seen"] == two_meta["tokens_seen"]
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-4, atol=1e-5, msg=key)


def test_a_full_disk_never_leaves_a_torn_checkpoint(tmp_path, monkeypatch):
    import errno

    from rejoinder.errors import RejoinderError
    from rejoinder.training.fit import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    good = path.read_bytes()

    def full_disk(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(
        RejoinderError, match="No space left on device.*previous checkpoint is intact"
    ):
        io.save_checkpoint({"step": 2}, path)
    assert path.read_bytes() == good
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary left


def test_from_scratch_with_a_tokenizer_learnt_from_the_data(dataset, tmp_path):
    out = tmp_path / "bpe"
    argv = args(dataset, out, "--model.tokenizer", "bpe:300")
    argv[argv.index("--trainer.max_steps") + 1] = "2"
    assert main(argv) == 0
    meta = json.loads((out / "rejoinder.json").read_text())
    assert meta["tokenizer"]["kind"] == "bpe:300"
    assert (tmp_path / "bpe.run" / "tokenizer" / "tokenizer.json").is_file()  # reused on resume
    from rejoinder import ConversationModel

    bot = ConversationModel.from_pretrained(out)
    assert len(bot.tokenizer) <= 300 and bot.model.config.vocab_size == len(bot.tokenizer)
