import json
import subprocess
import sys

import pytest

from rejoinder.cli import main


def test_help_lists_the_verbs():
    proc = subprocess.run(
        [sys.executable, "-m", "rejoinder", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    for verb in ["init", "import-dialogpt", "encode", "chat"]:
        assert verb in proc.stdout


def test_encode_prints_what_the_model_sees(capsys):
    assert main(["encode", "--tokenizer", "gpt2", "--format", "sep", "Hello", "How are you"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input_ids"] == [50256, 15496, 50256, 2437, 389, 345, 50256]
    assert out["token_type_ids"] == [0, 0, 1, 1, 1, 1, 0]
    assert out["attention_mask"] == [1] * 7


def test_encode_training_example_with_tokens(capsys):
    assert (
        main(["encode", "--format", "dialogpt", "--loss-on", "last", "--tokens", "Hi", "Yo"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == ["Hi", "<|endoftext|>", "Yo", "<|endoftext|>"]
    assert out["labels"] == [-100, -100, out["input_ids"][2], 50256]


def test_init_then_encode_with_its_format(tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["init", "--size", "tiny", "--format", "speaker", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["encode", "--model", str(out), "Hi"]) == 0
    ids = json.loads(capsys.readouterr().out)["input_ids"]
    assert ids[0] == 50257 and ids[-1] == 50258  # <speaker1> Hi <speaker2>


@pytest.mark.parametrize(
    "argv, message",
    [
        (["init", "--size", "huge", "--out", "{tmp}/x"], "unknown size 'huge'"),
        (["init", "--tokenizer", "bpe:100", "--out", "{tmp}/x"], "learnt from a corpus"),
        (["chat", "{tmp}/missing"], "does not exist"),
        (["import-dialogpt", "{tmp}/missing.pkl", "--out", "{tmp}/x"], "does not exist"),
        (["encode", "--format", "chat-template", "Hi"], "no chat template"),
    ],
)
def test_user_errors_exit_2_with_one_line(argv, message, tmp_path, capsys):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_argument_errors_exit_2():
    with pytest.raises(SystemExit) as e:
        main(["init", "--format", "irc", "--out", "x"])
    assert e.value.code == 2


def test_score_inspect_and_decoding_flags(parrot_dir, capsys):
    assert (
        main(["score", str(parrot_dir), "--context", "Hello", "--response", "Hi there, friend"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"][-1][0] == "<|endoftext|>"
    assert abs(out["logprob"] - sum(lp for _, lp in out["tokens"])) < 1e-2
    assert main(["inspect", str(parrot_dir), "Hello", "--turn", "--steps", "3", "--top", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 4 and "'Hi'" in table[1]  # step 1 chooses the learnt reply's first token
    assert main(["chat", str(parrot_dir), "--top-p", "1.5"]) == 2
    assert "top_p=1.5 is invalid" in capsys.readouterr().err
    assert main(["chat", str(parrot_dir), "--preset", "mmi"]) == 2
    assert "needs a reverse model" in capsys.readouterr().err
