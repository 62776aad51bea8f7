"""Reply rankers outside training: DialogRPT's checkpoints imported, hub directories, `rank`."""

import pytest
import torch

from rejoinder import ConversationModel, RejoinderError
from rejoinder.cli import main
from rejoinder.modeling.ranker import Ranker, import_dialogrpt
from rejoinder.tokenizers import gpt2_tokenizer


@pytest.fixture(scope="module")
def dialogrpt(tmp_path_factory):
    """An updown.pth laid out as DialogRPT's: a GPT-2 trunk under transformer.*, with the
    causal-mask buffers old GPT-2 code saved, and score.weight of 1 x width."""
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    trunk = GPT2Model(GPT2Config(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2,
                                 n_head=2)).eval()  # fmt: skip
    state = {f"transformer.{k}": v for k, v in trunk.state_dict().items()}
    for i in range(2):
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
    state["score.weight"] = torch.randn(1, 32)
    pth = tmp_path_factory.mktemp("dialogrpt") / "updown.pth"
    torch.save(state, pth)
    return pth, trunk, state["score.weight"]


def by_hand(trunk, weight, context, reply) -> float:
    """DialogRPT's score: turns joined by end-of-text, the reply without one, the logit at
    the reply's last token through a sigmoid."""
    tok = gpt2_tokenizer()
    ids = []
    for turn in context:
        ids += tok.encode(turn) + [tok.eos_token_id]
    ids += tok.encode(reply)
    with torch.no_grad():
        hidden = trunk(torch.tensor([ids])).last_hidden_state[0, -1]
    return float(torch.sigmoid(hidden @ weight[0]))


def test_an_imported_dialogrpt_scores_as_by_hand(dialogrpt, tmp_path, capsys):
    pth, trunk, weight = dialogrpt
    out = import_dialogrpt(pth, tmp_path / "updown")
    ranker = Ranker.from_pretrained(out)
    context, replies = ["Hello", "How are you?"], ["Fine, thanks.", "I like pizza a lot"]
    expected = [by_hand(trunk, weight, context, r) for r in replies]
    assert ranker.scores(context, replies) == pytest.approx(expected, abs=1e-5)
    assert ranker.scores(context, [" ", replies[0]]) == pytest.approx([0.0, expected[0]], abs=1e-5)
    argv = ["rank", str(out), "--context", *context]
    assert main([*argv, "--response", replies[0], "--response", replies[1]]) == 0
    lines = capsys.readouterr().out.splitlines()
    printed = {line[8:].strip(): float(line[:6]) for line in lines}
    assert printed == pytest.approx(dict(zip(replies, expected, strict=True)), abs=1e-4)
    assert [float(line[:6]) for line in lines] == sorted(printed.values(), reverse=True)
    with pytest.raises(RejoinderError, match="is a reply ranker"):
        ConversationModel.from_pretrained(out)


def test_a_hub_sequence_classifier_directory_is_a_ranker(tmp_path, dialogrpt):
    """As microsoft/DialogRPT-updown is published: GPT2ForSequenceClassification, no
    rejoinder.json."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    _, trunk, weight = dialogrpt
    config = GPT2Config(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        num_labels=1, pad_token_id=50256)  # fmt: skip
    model = GPT2ForSequenceClassification(config)
    model.transformer.load_state_dict(trunk.state_dict())
    model.score.weight.data = weight.clone()
    model.save_pretrained(tmp_path / "hub")
    gpt2_tokenizer().save_pretrained(tmp_path / "hub")
    score = Ranker.from_pretrained(tmp_path / "hub").scores(["Hi"], ["Hello there"])
    assert score == pytest.approx([by_hand(trunk, weight, ["Hi"], "Hello there")], abs=1e-5)


def test_what_is_not_a_dialogrpt_checkpoint_is_refused(tmp_path, dialogrpt, capsys):
    pth, trunk, _ = dialogrpt
    no_score = tmp_path / "dialogpt.pkl"
    torch.save({k: v for k, v in torch.load(pth).items() if k != "score.weight"}, no_score)
    assert main(["import-dialogrpt", str(no_score), "--out", str(tmp_path / "a")]) == 2
    assert "not a DialogRPT ranker" in capsys.readouterr().err
    pickled = tmp_path / "object.pth"
    torch.save({"model": trunk}, pickled)  # a whole module: refused, never unpickled
    assert main(["import-dialogrpt", str(pickled), "--out", str(tmp_path / "b")]) == 2
    assert "only tensors" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_generator_is_not_a_ranker(parrot_dir, capsys):
    assert main(["rank", str(parrot_dir), "--response", "hi"]) == 2
    assert "is a generator, not a reply ranker" in capsys.readouterr().err
