import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rejoinder import RejoinderError
from rejoinder.modeling import SIZES, init_checkpoint, load_checkpoint
from rejoinder.modeling.dialogpt import import_dialogpt


def test_init_writes_a_plain_hugging_face_directory(make_checkpoint):
    path = make_checkpoint("sep")
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "rejoinder.json"} <= names
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left
    meta = json.loads((path / "rejoinder.json").read_text())
    assert meta["format"]["name"] == "sep" and meta["tokenizer"]["kind"] == "gpt2"
    assert meta["made_by"]["command"] == "init" and meta["made_by"]["size"] == "tiny"
    hf = AutoModelForCausalLM.from_pretrained(path)
    assert hf.config.n_layer == SIZES["tiny"]["n_layer"]
    assert AutoTokenizer.from_pretrained(path)("Hello").input_ids == [15496]


def test_round_trip_keeps_weights_format_and_logits(make_checkpoint, tmp_path):
    from rejoinder.generation import ConversationModel

    path = make_checkpoint("sep", reverse=True)
    ck = load_checkpoint(path)
    assert ck.format.reverse and ck.format.name == "sep"
    bot = ConversationModel(ck)
    bot.save_pretrained(tmp_path / "again")
    again = load_checkpoint(tmp_path / "again")
    assert again.format.settings() == ck.format.settings()
    for key, value in ck.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    # Our model computes what plain transformers computes on the same directory.
    enc = ck.format.encode(["Hello", "How are you?"])
    ids, types = torch.tensor([enc.input_ids]), torch.tensor([enc.token_type_ids])
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        ours = ck.model(input_ids=ids, token_type_ids=types).logits
        theirs = hf(input_ids=ids, token_type_ids=types).logits
    torch.testing.assert_close(ours, theirs)


def test_speaker_format_grows_the_vocabulary(make_checkpoint):
    ck = load_checkpoint(make_checkpoint("speaker"))
    assert len(ck.tokenizer) == 50259 == ck.model.config.vocab_size
    assert ck.format.encode(["Hi"]).input_ids[-1] == ck.tokenizer.convert_tokens_to_ids(
        "<speaker2>"
    )


def test_learnt_tokenizers_are_saved_with_the_checkpoint(tmp_path):
    corpus = ["你好吗", "我很好，谢谢", "今天天气很好"] * 3
    path = init_checkpoint(tmp_path / "zh", tokenizer="char", corpus=corpus)
    ck = load_checkpoint(path)
    assert ck.model.config.vocab_size == len(ck.tokenizer) < 30
    assert ck.tokenizer.decode(ck.tokenizer("你好").input_ids) == "你好"
    assert json.loads((path / "rejoinder.json").read_text())["tokenizer"]["kind"] == "char"
    path = init_checkpoint(tmp_path / "bpe", tokenizer="bpe:300", corpus=["hello there"] * 50)
    assert load_checkpoint(path).model.config.vocab_size <= 300


def test_init_refuses_to_overwrite_and_unknown_sizes(make_checkpoint, tmp_path):
    with pytest.raises(RejoinderError, match="already exists.*--force"):
        init_checkpoint(make_checkpoint("dialogpt"))
    with pytest.raises(RejoinderError, match="unknown size 'huge'"):
        init_checkpoint(tmp_path / "x", size="huge")
    assert not (tmp_path / "x").exists()


def test_broken_checkpoints_get_one_clear_error(make_checkpoint, tmp_path):
    import shutil

    with pytest.raises(RejoinderError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RejoinderError, match="is a file"):
        load_checkpoint(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RejoinderError, match="no config.json"):
        load_checkpoint(tmp_path / "empty")

    bad_meta = tmp_path / "bad_meta"
    shutil.copytree(make_checkpoint("dialogpt"), bad_meta)
    (bad_meta / "rejoinder.json").write_text("{not json")
    with pytest.raises(RejoinderError, match="rejoinder.json is not valid JSON"):
        load_checkpoint(bad_meta)

    truncated = tmp_path / "truncated"
    shutil.copytree(make_checkpoint("dialogpt"), truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(RejoinderError, match="corrupt"):
        load_checkpoint(truncated)

    with pytest.raises(RejoinderError, match="cannot put the model on device 'floppy'"):
        load_checkpoint(make_checkpoint("dialogpt"), device="floppy")

    unknown_format = tmp_path / "unknown_format"
    shutil.copytree(make_checkpoint("dialogpt"), unknown_format)
    (unknown_format / "rejoinder.json").write_text(json.dumps({"format": {"name": "irc"}}))
    with pytest.raises(RejoinderError, match="unknown format 'irc'"):
        load_checkpoint(unknown_format)


@pytest.mark.parametrize("name", ["gpt2", "microsoft/DialoGPT-medium"])
def test_hub_names_fail_fast_when_the_hub_is_unreachable(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-cache")
    with pytest.raises(RejoinderError, match="hub cannot be reached"):
        load_checkpoint(name)


def test_a_plain_hugging_face_directory_chats_in_dialogpt_format(make_checkpoint, tmp_path):
    hf = AutoModelForCausalLM.from_pretrained(make_checkpoint("dialogpt"))
    hf.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(make_checkpoint("dialogpt")).save_pretrained(tmp_path)
    ck = load_checkpoint(tmp_path)
    assert ck.format.name == "dialogpt"


def test_original_gpt2_activation_is_swapped_for_the_fused_kernel(make_checkpoint, tmp_path):
    # Original GPT-2 and DialoGPT configs name "gelu_new"; we load them with PyTorch's
    # fused tanh GELU, which is the same function.
    hf = AutoModelForCausalLM.from_pretrained(make_checkpoint("dialogpt"))
    hf.config.activation_function = "gelu_new"
    hf.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(make_checkpoint("dialogpt")).save_pretrained(tmp_path)
    original = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert original.config.activation_function == "gelu_new"
    ck = load_checkpoint(tmp_path)
    assert ck.model.config.activation_function == "gelu_pytorch_tanh"
    ids = torch.tensor([ck.tokenizer("Hello there, how are you?").input_ids])
    with torch.no_grad():
        torch.testing.assert_close(
            ck.model.eval()(input_ids=ids).logits, original(input_ids=ids).logits
        )


def _original_dialogpt_pickle(model, path, prefix=""):
    """Writes `model` the way DialoGPT's released pickles are laid out."""
    state = {prefix + k: v.clone() for k, v in model.state_dict().items()}
    state[prefix + "lm_head.decoder.weight"] = state.pop(prefix + "lm_head.weight")
    n = model.config.n_positions
    for i in range(model.config.n_layer):
        mask = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        state[f"{prefix}transformer.h.{i}.attn.bias"] = mask
    # The legacy (non-zip) serialisation of the PyTorch of 2019.
    torch.save(state, path, _use_new_zipfile_serialization=False)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_import_dialogpt_reproduces_the_weights(make_checkpoint, tmp_path, prefix):
    original = load_checkpoint(make_checkpoint("dialogpt")).model
    pkl = tmp_path / "small_reverse.pkl"
    _original_dialogpt_pickle(original, pkl, prefix)
    out = import_dialogpt(pkl, tmp_path / "imported")
    ck = load_checkpoint(out)
    for key, value in original.state_dict().items():
        assert torch.equal(value, ck.model.state_dict()[key]), key
    assert ck.format.name == "dialogpt" and ck.format.reverse  # "reverse" in the file name
    assert ck.meta["made_by"]["size"] == "tiny"
    with pytest.raises(RejoinderError, match="not size 'medium'"):
        import_dialogpt(pkl, tmp_path / "medium", size="medium")


def test_import_refuses_pickles_that_are_not_dialogpt(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Payload()}, tmp_path / "evil.pkl")
    with pytest.raises(RejoinderError, match="will not unpickle"):
        import_dialogpt(tmp_path / "evil.pkl", tmp_path / "out")
    assert not marker.exists()

    torch.save({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "other.pkl")
    with pytest.raises(RejoinderError, match="not a DialoGPT/GPT-2 state dict"):
        import_dialogpt(tmp_path / "other.pkl", tmp_path / "out")
    (tmp_path / "text.pkl").write_text("hello")
    with pytest.raises(RejoinderError, match="not a PyTorch pickle"):
        import_dialogpt(tmp_path / "text.pkl", tmp_path / "out")
    with pytest.raises(RejoinderError, match="does not exist"):
        import_dialogpt(tmp_path / "nope.pkl", tmp_path / "out")
    assert not (tmp_path / "out").exists()
