"""Several heads on one trunk: extra LM heads by style, classifiers of the response."""

import json

import pytest

from rejoinder import ConversationModel, RejoinderError
from rejoinder.cli import main
from rejoinder.data.build import BuildConfig, Source, build
from rejoinder.modeling.heads import HeadSpec
from tests.training.test_train import args

POLITE = {
    "style": "polite",
    "turns": [{"text": "Hello"}, {"text": "Good day to you", "emotion": "happiness"}],
}
BLUNT = {"style": "blunt", "turns": [{"text": "Hello"}, {"text": "What now", "emotion": "anger"}]}


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def trained(tmp_path_factory, request):
    """A trunk with an extra LM head and a classifier: GPT-2's, and a Llama-style one."""
    root = tmp_path_factory.mktemp(f"heads-{request.param}")
    src = root / "styles.jsonl"
    src.write_text("\n".join(json.dumps(POLITE if i % 2 else BLUNT) for i in range(16)) + "\n")
    data = root / "ds"
    build(
        BuildConfig(sources=[Source("jsonl", {"path": str(src)})], out=str(data), valid=0, test=0)
    )
    heads = json.dumps(
        [
            {"name": "polite", "kind": "lm", "column": "style"},
            {"name": "emotion", "kind": "classify", "column": "emotion", "weight": 0.5},
        ]
    )
    out = root / "model"
    argv = args(
        data,
        out,
        "--data.val_split",
        "none",
        "--model.heads",
        heads,
        "--model.lr",
        "1e-2",
        "--model.warmup_steps",
        "2",
        "--model.schedule",
        "constant",
        "--model.arch",
        request.param,
    )
    argv[argv.index("--trainer.max_steps") + 1] = "60"
    assert main(argv) == 0
    return out


def test_the_base_model_still_loads_in_transformers(trained):
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(trained)
    assert (trained / "heads.safetensors").is_file()
    meta = json.loads((trained / "rejoinder.json").read_text())
    assert [h["name"] for h in meta["heads"]] == ["polite", "emotion"]
    assert meta["heads"][1]["labels"] == ["anger", "happiness"]  # found in the data


def test_each_lm_head_learns_its_own_kind_of_reply(trained):
    bot = ConversationModel.from_pretrained(trained)
    assert bot.head_names == ["default", "polite"]
    assert bot.generate(["Hello"], head="polite", max_new_tokens=8) == "Good day to you"
    assert bot.generate(["Hello"], max_new_tokens=8) == "What now"
    with pytest.raises(RejoinderError, match="unknown head 'rude'"):
        bot.generate(["Hello"], head="rude")


def test_the_classifier_reads_the_response(trained):
    bot = ConversationModel.from_pretrained(trained)
    happy = bot.classify(["Hello"], "Good day to you", head="emotion")
    angry = bot.classify(["Hello"], "What now", head="emotion")
    assert set(happy) == {"anger", "happiness"} and abs(sum(happy.values()) - 1) < 1e-5
    assert next(iter(happy)) == "happiness" and next(iter(angry)) == "anger"
    with pytest.raises(RejoinderError, match="unknown classification head"):
        bot.classify(["Hello"], "Hi", head="act")


def test_heads_survive_save_pretrained(trained, tmp_path):
    bot = ConversationModel.from_pretrained(trained)
    bot.save_pretrained(tmp_path / "copy")
    again = ConversationModel.from_pretrained(tmp_path / "copy")
    assert again.generate(["Hello"], head="polite", max_new_tokens=8) == "Good day to you"


def test_head_specs_are_checked():
    with pytest.raises(RejoinderError, match="kind must be lm or classify"):
        HeadSpec.parse([{"name": "x", "kind": "regress"}])
    with pytest.raises(RejoinderError, match="names must differ"):
        HeadSpec.parse([{"name": "x"}, {"name": "x"}])
    with pytest.raises(RejoinderError, match="unknown keys"):
        HeadSpec.parse([{"name": "x", "colour": "red"}])
    assert HeadSpec.parse([{"name": "polite"}])[0].value == "polite"
