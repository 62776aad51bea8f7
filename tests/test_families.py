"""Model families beyond GPT-2: Llama-, Qwen2-, Mistral- and GPT-NeoX-style checkpoints."""

import csv
import json

import pytest

from rejoinder import ConversationModel, RejoinderError
from rejoinder.cli import main
from rejoinder.modeling import init_checkpoint, load_checkpoint
from tests.conftest import chat_dataset

FAMILIES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
            "gpt-neox": "GPTNeoXForCausalLM"}  # fmt: skip
LINES = [
    ["Hello there!", "Hi, how are you?", "Fine, thanks. And you?", "Great."],
    ["What are you doing tonight?", "Watching a movie with friends."],
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return chat_dataset(tmp_path_factory.mktemp("families-data"), LINES, 32)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """Random checkpoints of each family, drawn wide so that replies depend on the context."""
    root = tmp_path_factory.mktemp("families")
    return {a: init_checkpoint(root / a, arch=a, initializer_range=0.5) for a in FAMILIES}


@pytest.mark.parametrize("arch", FAMILIES)
def test_a_family_trains_from_a_size_and_exports_a_plain_directory(arch, dataset, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "model"
    argv = ["train", "--data.path", str(dataset), "--data.batch_tokens", "256",
            "--data.val_split", "none", "--model.init", "tiny", "--model.arch", arch,
            "--model.max_tokens", "64", "--model.lr", "3e-3", "--model.warmup_steps", "2",
            "--trainer.max_steps", "50", "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert type(AutoModelForCausalLM.from_pretrained(out)).__name__ == FAMILIES[arch]
    with open(tmp_path / "model.run" / "logs" / "version_0" / "metrics.csv") as f:
        losses = [float(r["train_loss"]) for r in csv.DictReader(f) if r.get("train_loss")]
    assert losses[-1] < losses[0] - 1  # it learns
    bot = ConversationModel.from_pretrained(out)
    assert bot.max_positions == 1024 and isinstance(bot.generate(["Hello there!"]), str)


@pytest.mark.parametrize("arch", FAMILIES)
def test_ctranslate2_replies_and_scores_as_torch_does(arch, wide):
    torch_bot = ConversationModel.from_pretrained(wide[arch])
    fast = ConversationModel.from_pretrained(wide[arch], backend="ctranslate2",
                                             compute_type="float32")  # fmt: skip
    contexts = [["Hello"], ["How are you?", "Fine"], ["What is your name?"]]
    assert fast.generate_batch(contexts, max_new_tokens=8) == torch_bot.generate_batch(
        contexts, max_new_tokens=8
    )
    pair = [(["Hi"], "Hello there")]
    assert fast.loglikelihood(pair)[0].total == pytest.approx(
        torch_bot.loglikelihood(pair)[0].total, abs=1e-3
    )


def test_formats_with_token_types_are_gpt2s_only(tmp_path, wide):
    with pytest.raises(RejoinderError, match="only GPT-2 models take"):
        init_checkpoint(tmp_path / "sep", arch="llama", format="sep")
    assert not (tmp_path / "sep").exists()
    assert main(["init", "--arch", "qwen2", "--format", "speaker", "--out",
                 str(tmp_path / "x")]) == 2  # fmt: skip
    meta = wide["llama"] / "rejoinder.json"
    saved = json.loads(meta.read_text())
    meta.write_text(json.dumps({**saved, "format": {"name": "sep"}}))
    try:
        with pytest.raises(RejoinderError, match="only GPT-2 models take"):
            load_checkpoint(wide["llama"])
    finally:
        meta.write_text(json.dumps(saved))


def test_a_model_that_is_no_causal_lm_is_named(tmp_path, gpt2):
    from transformers import T5Config, T5ForConditionalGeneration

    T5ForConditionalGeneration(
        T5Config(vocab_size=64, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8)
    ).save_pretrained(tmp_path / "t5")
    gpt2.save_pretrained(tmp_path / "t5")
    with pytest.raises(RejoinderError, match="T5 model, which is not a causal language model"):
        load_checkpoint(tmp_path / "t5")


def test_an_unknown_architecture_is_refused_before_any_work(tmp_path):
    with pytest.raises(RejoinderError, match="unknown architecture 'bert'"):
        init_checkpoint(tmp_path / "b", arch="bert")
    assert not (tmp_path / "b").exists()


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module", params=FAMILIES)
def chat_dir(request, tmp_path_factory):
    """A directory as a hub download has it: a ChatML template, no rejoinder.json, and, as
    many real tokenizers, no beginning-of-text or unknown token."""
    from transformers import AutoModelForCausalLM

    from rejoinder.modeling.architectures import model_config
    from rejoinder.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    tok.bos_token = tok.unk_token = None
    config = model_config(request.param, "tiny", len(tok), eos_token_id=tok.eos_token_id,
                          initializer_range=0.5)  # fmt: skip
    out = tmp_path_factory.mktemp(f"chat-{request.param}") / "smol"
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_a_directory_with_a_chat_template_talks_in_it(chat_dir):
    bot = ConversationModel.from_pretrained(chat_dir)
    assert bot.format.name == "chat-template"
    prompt = bot.tokenizer.decode(bot.encode(["hello"]).input_ids)
    assert prompt == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    assert bot.tokenizer.convert_tokens_to_ids("<|im_end|>") in bot.format.stop_ids
    assert isinstance(bot.generate(["hello"], max_new_tokens=4), str)


def test_real_chat_data_in_a_family_without_bos_or_unk(chat_dir):
    from rejoinder.dialogue import Turn

    bot = ConversationModel.from_pretrained(chat_dir)
    assert bot.tokenizer.bos_token is None and bot.tokenizer.unk_token is None
    said = [Turn("hi there", "user"), Turn("how is my dog", "user"),
            Turn("i think my dog is good", "assistant"), Turn("and mine?", "user")]  # fmt: skip
    ex = bot.format.training_example(said)
    learnt = [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab >= 0]
    assert bot.tokenizer.decode(learnt) == "i think my dog is good<|im_end|>"
    # CTranslate2 fills the missing tokens in its config and replies as torch does.
    fast = ConversationModel.from_pretrained(chat_dir, backend="ctranslate2",
                                             compute_type="float32")  # fmt: skip
    contexts = [said[:2], [Turn("Welcome!", "assistant"), Turn("hi", "user")], said]
    assert fast.reply_batch(contexts, max_new_tokens=6) == bot.reply_batch(
        contexts, max_new_tokens=6
    )
    config = json.loads((chat_dir / "ctranslate2-float32" / "config.json").read_text())
    assert all(v is not None for k, v in config.items() if k.endswith("_token"))


@pytest.mark.parametrize("arch, missing", [("llama", ["bos"]), ("gpt-neox", ["unk"]),
                                           ("qwen2", ["bos", "unk"])])  # fmt: skip
def test_ctranslate2_takes_a_tokenizer_without_bos_or_unk(arch, missing, tmp_path):
    from transformers import AutoTokenizer

    out = init_checkpoint(tmp_path / arch, arch=arch, initializer_range=0.5)
    tok = AutoTokenizer.from_pretrained(out)
    for name in missing:
        setattr(tok, f"{name}_token", None)
    tok.save_pretrained(out)
    torch_bot = ConversationModel.from_pretrained(out)
    fast = ConversationModel.from_pretrained(out, backend="ctranslate2", compute_type="float32")
    contexts = [["Hello"], ["How are you?", "Fine"]]
    assert fast.generate_batch(contexts, max_new_tokens=6) == torch_bot.generate_batch(
        contexts, max_new_tokens=6
    )
    config = json.loads((out / "ctranslate2-float32" / "config.json").read_text())
    # Filled (with end-of-text) where the converter left them null; Qwen2's fills its own.
    assert all(isinstance(config[f"{name}_token"], str) for name in missing)


def test_a_family_keeps_the_tokenizer_it_was_made_with(wide):
    from rejoinder.tokenizers import gpt2_tokenizer

    text = "abc 12345 x, naïve"  # Qwen2's own tokenizer splits digits and normalises
    for arch, where in wide.items():
        assert (
            load_checkpoint(where).tokenizer(text).input_ids == gpt2_tokenizer()(text).input_ids
        ), arch


def test_a_config_with_nothing_to_fill_a_missing_token_is_named(tmp_path):
    from rejoinder.generation.backends.ctranslate2 import fill_special_tokens

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"bos_token": null, "eos_token": null}')
    with pytest.raises(RejoinderError, match="no bos_token, eos_token and no end-of-text"):
        fill_special_tokens(tmp_path / "model")


def test_fine_tuning_a_chat_model_keeps_its_template(chat_dir, dataset, tmp_path):
    # A reverse model for one family (Llama's), to keep the suite quick; a forward one each.
    reverse = "true" if chat_dir.parent.name.startswith("chat-llama") else "false"
    out = tmp_path / "tuned"
    argv = ["train", "--data.path", str(dataset), "--data.batch_tokens", "512",
            "--data.val_split", "none", "--model.init", str(chat_dir),
            "--model.format", "chat-template", "--model.reverse", reverse,
            "--model.max_tokens", "128", "--trainer.max_steps", "3",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    fmt = json.loads((out / "rejoinder.json").read_text())["format"]
    assert fmt["name"] == "chat-template" and fmt["reverse"] == (reverse == "true")
    # Another format for a directory that has none yet is a choice, not a conflict.
    again = [a if a != "chat-template" else "template" for a in argv]
    again[again.index(str(out))] = str(tmp_path / "plain")
    assert main(again) == 0


def test_mmi_and_the_server_on_a_llama_pair_on_ctranslate2(wide, tmp_path):
    from fastapi.testclient import TestClient

    from rejoinder.serve.app import create_app
    from rejoinder.serve.server import Settings

    rev = init_checkpoint(tmp_path / "rev", arch="llama", initializer_range=0.5,
                          format_settings={"reverse": True})  # fmt: skip
    pair = ConversationModel.from_pretrained(wide["llama"], reverse=rev, backend="ctranslate2",
                                             compute_type="float32")  # fmt: skip
    result = pair.rerank(["Hello"], mmi_candidates=3, max_new_tokens=4, seed=0)
    assert result.reply in [c.text for c in result.candidates]
    app = create_app(pair, Settings(db=f"sqlite:///{tmp_path}/sessions.db"))
    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4,
            "rejoinder": {"mmi": True}}  # fmt: skip
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.parametrize("chat_dir", ["llama"], indirect=True)
def test_system_messages_are_a_chat_templates_system_prompt(chat_dir, tmp_path):
    from fastapi.testclient import TestClient

    from rejoinder.serve.app import create_app
    from rejoinder.serve.server import Settings

    bot = ConversationModel.from_pretrained(chat_dir)
    system = {"role": "system", "content": "Be terse."}
    prompt = bot.tokenizer.decode(bot.encode([system, "hello"]).input_ids)
    assert prompt == ("<|im_start|>system\nBe terse.<|im_end|>\n"
                      "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n")  # fmt: skip
    greedy = {"temperature": 0, "max_tokens": 4}
    with TestClient(create_app(bot, Settings(db=f"sqlite:///{tmp_path}/s.db"))) as client:
        asked = [client.post("/v1/chat/completions", json={"messages": m, **greedy}).json()
                 for m in ([{"role": "user", "content": "hello"}],
                           [system, {"role": "user", "content": "hello"}])]  # fmt: skip
        plain, told = (a["usage"]["prompt_tokens"] for a in asked)
        assert told - plain == len(bot.encode([system])) - len(bot.encode([]))
        sid = client.post("/v1/sessions", json={"system": "Be terse."}).json()["id"]
        said = client.post(f"/v1/sessions/{sid}/messages", json={"content": "hello", **greedy})
    assert said.json()["reply"] == asked[1]["choices"][0]["message"]["content"]
