"""LoRA: only adapters train; an adapter directory loads everywhere; --merge is exact."""

import json
import shutil

import pytest
import torch

from rejoinder import ConversationModel, RejoinderError
from rejoinder.cli import main
from rejoinder.data.build import BuildConfig, Source, build
from rejoinder.modeling import init_checkpoint
from rejoinder.modeling.lora import DEFAULT_TARGETS, LoraOptions
from tests.conftest import chat_dataset
from tests.training.test_train import LINES


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return chat_dataset(tmp_path_factory.mktemp("lora-data"), LINES, 32)


def train_argv(dataset, base, out, *extra):
    return ["train", "--data.path", str(dataset), "--data.batch_tokens", "256",
            "--data.val_split", "none", "--model.init", str(base), "--model.lora.r", "4",
            "--model.max_tokens", "64", "--model.lr", "1e-2", "--model.warmup_steps", "2",
            "--trainer.max_steps", "12", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--checkpoint_every", "6",
            "--out", str(out), *extra]  # fmt: skip


@pytest.fixture(scope="module", params=["gpt2", "llama", "qwen2", "gpt-neox"])
def run(request, dataset, tmp_path_factory):
    """A base checkpoint, and a LoRA run on it: (arch, base, adapter dir, run dir)."""
    root = tmp_path_factory.mktemp(f"lora-{request.param}")
    base = init_checkpoint(root / "base", arch=request.param, initializer_range=0.2)
    assert main(train_argv(dataset, base, root / "adapter")) == 0
    return request.param, base, root / "adapter", root / "adapter.run"


def test_only_the_adapters_train(run):
    from transformers import AutoModelForCausalLM

    arch, base, _, run_dir = run
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    before = AutoModelForCausalLM.from_pretrained(base).state_dict()  # names as loaded
    adapters = {k: v for k, v in state.items() if ".lora_" in k}
    # Two matrices (A: r x in, B: out x r) on every target layer of every block.
    targets = [k for k in adapters if k.endswith("lora_A.default.weight")]
    assert targets and all(any(t in k for t in DEFAULT_TARGETS[arch]) for k in targets)
    assert any(v.abs().sum() > 0 for k, v in adapters.items() if "lora_B" in k)  # B starts at 0
    frozen = {k.removeprefix("model.base_model.model.").replace(".base_layer", ""): v
              for k, v in state.items() if ".lora_" not in k}  # fmt: skip
    assert set(before) <= set(frozen)
    for key, value in before.items():
        assert torch.equal(frozen[key], value), key  # the base never moved


def test_the_export_is_a_small_adapter_that_names_its_base(run):
    _, base, adapter, _ = run
    meta = json.loads((adapter / "rejoinder.json").read_text())
    assert meta["lora"]["r"] == 4 and meta["lora"]["base"] == str(base.resolve())
    size = (adapter / "adapter_model.safetensors").stat().st_size
    assert size < 0.05 * (base / "model.safetensors").stat().st_size
    assert not (adapter / "model.safetensors").exists()


def test_merge_equals_base_plus_adapter(run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, base, adapter, run_dir = run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert main(["export", str(ckpt), "--out", str(tmp_path / "merged"), "--merge"]) == 0
    ids = torch.tensor([[15496, 612, 0, 50256, 20, 30]])
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted.eval()(ids).logits)
    assert "lora" not in json.loads((tmp_path / "merged" / "rejoinder.json").read_text())


def test_an_adapter_directory_replies_on_both_backends(run):
    arch, _, adapter, _ = run
    if arch in ("qwen2", "gpt-neox"):
        # Merging happens before conversion, whatever the family, and CTranslate2 on
        # these families is test_families' (greedy equals torch's there).
        pytest.skip("the adapter path is the same for every family")
    bot = ConversationModel.from_pretrained(adapter)
    fast = ConversationModel.from_pretrained(adapter, backend="ctranslate2",
                                             compute_type="float32")  # fmt: skip
    kw = dict(max_new_tokens=6, min_new_tokens=6)
    replies = bot.generate_batch([["Hello there!"], ["Do you like pizza?"]], **kw)
    assert replies == fast.generate_batch([["Hello there!"], ["Do you like pizza?"]], **kw)


def test_bad_lora_input_gets_one_clear_error(run, dataset, tmp_path, capsys):
    arch, base, adapter, _ = run
    assert main(train_argv(dataset, "tiny", tmp_path / "a")) == 2
    assert "LoRA adapts a trained model" in capsys.readouterr().err
    argv = train_argv(dataset, base, tmp_path / "b", "--model.lora.target_modules", "[nope]")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "match no layer" in err and DEFAULT_TARGETS[arch][0] in err
    assert not (tmp_path / "b").exists()
    with pytest.raises(RejoinderError, match="needs a CUDA GPU|needs bitsandbytes"):
        from rejoinder.modeling.lora import check_bits

        check_bits(LoraOptions(bits=4))
    orphan = tmp_path / "orphan"
    shutil.copytree(adapter, orphan)
    meta = json.loads((orphan / "rejoinder.json").read_text())
    meta["lora"]["base"] = str(tmp_path / "gone")
    (orphan / "rejoinder.json").write_text(json.dumps(meta))
    with pytest.raises(RejoinderError, match="needs its base model"):
        ConversationModel.from_pretrained(orphan)


def test_reverse_models_and_heads_train_with_lora(tmp_path):
    from tests.training.test_heads import BLUNT, POLITE

    base = init_checkpoint(tmp_path / "base", arch="llama", initializer_range=0.2)
    src = tmp_path / "styles.jsonl"
    src.write_text("\n".join(json.dumps(POLITE if i % 2 else BLUNT) for i in range(16)) + "\n")
    data = tmp_path / "ds"
    build(
        BuildConfig(sources=[Source("jsonl", {"path": str(src)})], out=str(data), valid=0, test=0)
    )
    heads = json.dumps([{"name": "polite", "kind": "lm", "column": "style"},
                        {"name": "emotion", "kind": "classify", "column": "emotion"}])  # fmt: skip
    assert main(train_argv(data, base, tmp_path / "heads", "--model.heads", heads)) == 0
    bot = ConversationModel.from_pretrained(tmp_path / "heads")
    assert bot.head_names == ["default", "polite"]
    assert isinstance(bot.generate(["Hello"], head="polite", max_new_tokens=3), str)
    assert set(bot.classify(["Hello"], "What now", head="emotion")) == {"anger", "happiness"}
    assert main(train_argv(data, base, tmp_path / "rev", "--model.reverse", "true")) == 0
    pair = ConversationModel.from_pretrained(base, reverse=tmp_path / "rev")
    assert pair.reverse.format.reverse
    assert isinstance(pair.generate(["Hello"], preset="mmi", max_new_tokens=3, seed=0), str)
