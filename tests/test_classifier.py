"""Classifiers: labels datasets (`data build labels`), training them (`--model.objective
classify`), loading ours and Hugging Face's (`Classifier`), and the safety policy on them."""

import json

import pytest

from rejoinder import ConversationModel, RejoinderError
from rejoinder.cli import main
from rejoinder.data.labels import labels_of, read_labels
from rejoinder.data.pairs import read_pairs
from rejoinder.data.records import read_dialogues
from rejoinder.modeling.classifier import Classifier
from rejoinder.modeling.ranker import Ranker
from rejoinder.safety import Safety, SafetyConfig
from tests.conftest import SAFETY_CUE, chat_dataset, safety_lines

# -- the labels dataset ------------------------------------------------------------------

GOOD = [
    {"context": ["Hi", {"role": "assistant", "content": "Hello!"}], "text": "you zorblat",
     "label": "unsafe"},
    {"text": "What a nice day", "label": "safe"},
    {"context": "one turn", "text": "Fine, thanks", "label": "safe", "id": 7},
    {"context": [], "text": "Go away", "label": "rude", "group": "g1"},
]  # fmt: skip
BAD = {
    "malformed json": ["{not json"],
    "wrong type: line": ["[1, 2]"],
    "missing field: text": ['{"label": "safe"}'],
    "empty text": ['{"text": "  ", "label": "safe"}'],
    "missing field: label": ['{"text": "hi"}', '{"text": "hi", "label": null}'],
    "wrong type: label": ['{"text": "hi", "label": 1}'],
    "empty label": ['{"text": "hi", "label": ""}'],
    "wrong type: context": ['{"text": "hi", "label": "safe", "context": 5}',
                            '{"text": "hi", "label": "safe", "context": [{"role": "user"}]}'],
}  # fmt: skip


@pytest.fixture(scope="module")
def labels_dir(tmp_path_factory):
    """GOOD's lines 25 times over (ids numbered apart), BAD's lines among them."""
    root = tmp_path_factory.mktemp("labels")
    lines = []
    for i in range(25):
        lines += [json.dumps({**x, "id": f"{i}-{j}"}) for j, x in enumerate(GOOD)]
    lines += [line for bad in BAD.values() for line in bad] + [""]
    (root / "in.jsonl").write_text("\n".join(lines) + "\n")
    argv = ["data", "build", "labels", str(root / "in.jsonl"), "--out", str(root / "ds"),
            "--valid", "0.2", "--test", "0.2"]  # fmt: skip
    assert main(argv) == 0
    return root / "ds"


def test_a_labels_build_counts_each_label_per_split_and_every_bad_line(labels_dir, capsys):
    manifest = json.loads((labels_dir / "manifest.json").read_text())
    assert manifest["kind"] == "labels"
    assert manifest["bad_input"] == {reason: len(lines) for reason, lines in BAD.items()}
    texts, per_label = manifest["texts"], manifest["labels"]
    assert texts["total"] == 100 and sorted(per_label) == ["rude", "safe", "unsafe"]
    assert {k: v["total"] for k, v in per_label.items()} == {"rude": 25, "safe": 50, "unsafe": 25}
    for split in ("train", "valid", "test"):
        read = read_labels(labels_dir, split)
        assert len(read) == texts[split] == sum(v[split] for v in per_label.values())
        for label, counts in per_label.items():
            assert sum(x.label == label for x in read) == counts[split]
    assert 0 < texts["test"] < texts["train"] and texts["valid"] > 0
    assert labels_of(labels_dir) == ["rude", "safe", "unsafe"]
    everything = {x.id: x for s in ("train", "valid", "test") for x in read_labels(labels_dir, s)}
    first = everything["0-0"]
    assert [(t.text, t.speaker) for t in first.context] == [("Hi", None), ("Hello!", "assistant")]
    assert (first.text, first.label) == ("you zorblat", "unsafe")
    assert [t.text for t in everything["0-2"].context] == ["one turn"]
    assert everything["0-3"].context == []
    assert main(["data", "show", str(labels_dir), "-n", "2"]) == 0
    shown = capsys.readouterr().out
    assert "labelled texts" in shown and "wrong type: label" in shown and "text:" in shown


def test_a_labels_dataset_is_no_other_kind_and_the_reverse(labels_dir, tmp_path):
    with pytest.raises(RejoinderError, match="holds labels .*classify.*needs dialogues"):
        read_dialogues(labels_dir, "train")
    with pytest.raises(RejoinderError, match="holds labels .*needs pairs"):
        read_pairs(labels_dir, "train")
    dialogues = chat_dataset(tmp_path, [["Hi", "Hello"]], 4)
    for read in (read_labels, lambda p: labels_of(p)):
        with pytest.raises(RejoinderError, match="holds dialogues.*needs labels.*build labels"):
            read(dialogues)


def test_either_engine_builds_the_same_labels_dataset(labels_dir, tmp_path):
    """A labels file is read in one process whichever engine is asked for: Spark is not
    started for it."""
    src = labels_dir.parent / "in.jsonl"
    argv = ["data", "build", "labels", str(src), "--out", str(tmp_path / "spark"), "--valid",
            "0.2", "--test", "0.2", "--engine", "spark"]  # fmt: skip
    assert main(argv) == 0
    for split in ("train", "valid", "test"):
        assert read_labels(tmp_path / "spark", split) == read_labels(labels_dir, split)
    manifest = json.loads((tmp_path / "spark" / "manifest.json").read_text())
    assert manifest["labels"] == json.loads((labels_dir / "manifest.json").read_text())["labels"]


def test_a_labels_build_takes_no_other_source_and_no_filter(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(GOOD[1]) + "\n")
    out = ["--out", str(tmp_path / "ds")]
    assert main(["data", "build", "labels", str(src), "jsonl", str(src), *out]) == 2
    assert "labels dataset" in capsys.readouterr().err
    assert main(["data", "build", "labels", str(src), "--filters", "offensive", *out]) == 2
    assert "keeps every labelled text" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


# -- a classifier trained here -----------------------------------------------------------


def flat(rows: list[list[float]]) -> list[float]:
    return [x for row in rows for x in row]


def rates(flagged: list[bool], unsafe: list[bool]) -> tuple[float, float]:
    """(recall, precision) of the flags against the truth."""
    hits = sum(f and u for f, u in zip(flagged, unsafe, strict=True))
    return hits / max(sum(unsafe), 1), hits / max(sum(flagged), 1)


def test_a_trained_classifier_flags_held_out_cue_texts(safety_classifier):
    meta = json.loads((safety_classifier / "rejoinder.json").read_text())
    assert meta["classifies"] is True and meta["made_by"]["objective"] == "classify"
    assert not (safety_classifier / "generation_config.json").exists()
    classifier = Classifier.from_pretrained(safety_classifier, device="cpu")
    assert classifier.labels == ["safe", "unsafe"] and classifier.reads_context
    test = safety_lines(200, seed=1)  # texts never trained on
    pairs = [(x["context"], x["text"]) for x in test]
    unsafe = [x["label"] == "unsafe" for x in test]
    probs = classifier.probabilities(pairs)
    assert all(sum(p) == pytest.approx(1, abs=1e-5) for p in probs)
    recall, precision = rates([p[1] > 0.5 for p in probs], unsafe)
    assert recall >= 0.9 and precision >= 0.9
    # Batched as it is, or one at a time, the same probabilities (padding changes nothing).
    alone = [classifier.probabilities([pair])[0] for pair in pairs[:6]]
    assert flat(alone) == pytest.approx(flat(probs[:6]), abs=1e-5)
    safety = Safety(SafetyConfig(safety_classifier=str(safety_classifier),
                                 safety_default_words=False), device="cpu")  # fmt: skip
    flags = safety.check(pairs)
    recall, precision = rates([f is not None for f in flags], unsafe)
    assert recall >= 0.9 and precision >= 0.9
    flag = next(f for f, u in zip(flags, unsafe, strict=True) if f is not None and u)
    assert flag.layer == "classifier" and flag.label == "unsafe" and 0.5 < flag.score <= 1
    assert SAFETY_CUE in flag.text


def test_a_classifier_is_neither_a_ranker_nor_a_generator(safety_classifier):
    with pytest.raises(RejoinderError, match="is a text classifier .2 labels., not a reply ranker"):
        Ranker.from_pretrained(safety_classifier, device="cpu")
    with pytest.raises(RejoinderError, match="is a text classifier: it labels texts"):
        ConversationModel.from_pretrained(safety_classifier, device="cpu")


def test_export_makes_the_same_classifier_of_the_run_checkpoint(safety_classifier, tmp_path):
    run = safety_classifier.parent / "classifier.run"
    out = tmp_path / "exported"
    assert main(["export", str(run / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 0
    assert json.loads((out / "rejoinder.json").read_text())["classifies"] is True
    pairs = [(x["context"], x["text"]) for x in safety_lines(8, seed=2)]
    ours = Classifier.from_pretrained(safety_classifier, device="cpu").probabilities(pairs)
    theirs = Classifier.from_pretrained(out, device="cpu").probabilities(pairs)
    assert flat(theirs) == pytest.approx(flat(ours), abs=1e-6)


def test_a_classifier_starts_from_a_generators_trunk(labels_dir, make_checkpoint, tmp_path):
    """Three classes, a trunk from a checkpoint: the outputs are the dataset's classes,
    and the policy takes each label not named safe as unsafe."""
    out = tmp_path / "three"
    argv = ["train", "--data.path", str(labels_dir), "--model.init",
            str(make_checkpoint("dialogpt")), "--model.objective", "classify",
            "--model.max_tokens", "32", "--trainer.max_steps", "2",
            "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    classifier = Classifier.from_pretrained(out, device="cpu")
    assert classifier.labels == ["rude", "safe", "unsafe"] and classifier.format.name == "dialogpt"
    assert Safety(SafetyConfig(safety_classifier=str(out)), device="cpu").unsafe == [0, 2]


def test_classify_needs_a_labels_dataset_of_two_labels_and_no_lora(labels_dir, tmp_path, capsys):
    def train(data, *extra) -> int:
        return main(["train", "--data.path", str(data), "--model.init", "tiny",
                     "--model.max_tokens", "32", "--trainer.max_steps", "1",
                     "--trainer.enable_progress_bar", "false", "--out", str(tmp_path / "out"),
                     *extra])  # fmt: skip

    dialogues = chat_dataset(tmp_path, [["Hi", "Hello"]], 4)
    assert train(dialogues, "--model.objective", "classify") == 2
    assert "holds dialogues, but --model.objective classify needs labels" in capsys.readouterr().err
    assert train(labels_dir) == 2
    assert "holds labels (labelled texts train classifiers" in capsys.readouterr().err
    assert train(labels_dir, "--model.objective", "classify", "--model.lora.r", "4") == 2
    assert "a classifier trains without" in capsys.readouterr().err
    one = tmp_path / "one.jsonl"
    one.write_text("".join(json.dumps({"text": f"hi {i}", "label": "s"}) + "\n" for i in range(3)))
    assert main(["data", "build", "labels", str(one), "--out", str(tmp_path / "one")]) == 0
    assert train(tmp_path / "one", "--model.objective", "classify") == 2
    assert "has 1 label (s); a classifier learns to tell at least two apart" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


# -- Hugging Face classifiers ------------------------------------------------------------

WORDS = ["hello", "there", "you", "are", "nice", "awful", "i", "hate", "love", "this", "movie"]


def bert_dir(root, labels: dict[int, str]):
    """A tiny random BertForSequenceClassification with a WordPiece tokenizer, saved as
    a download is."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=64)  # fmt: skip
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=37, max_position_embeddings=64,
                        initializer_range=0.5, id2label=labels,
                        label2id={v: k for k, v in labels.items()})  # fmt: skip
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(root)
    fast.save_pretrained(root)
    return root


TEXTS = [([], "i hate you"), (["hello"], "you are nice and i love this movie"), ([], "awful")]


def test_a_bert_classifier_loads_with_its_labels(tmp_path):
    path = bert_dir(tmp_path / "bert", {0: "non-toxic", 1: "toxic"})
    classifier = Classifier.from_pretrained(path, device="cpu")
    assert classifier.labels == ["non-toxic", "toxic"] and not classifier.reads_context
    probs = classifier.probabilities([*TEXTS, ([], "  ")])
    assert all(sum(p) == pytest.approx(1, abs=1e-5) for p in probs[:3]) and probs[3] == [0, 0]
    assert len({round(p[1], 6) for p in probs[:3]}) == 3  # the texts are read
    alone = [classifier.probabilities([t])[0] for t in TEXTS]
    assert flat(alone) == pytest.approx(flat(probs[:3]), abs=1e-5)
    safety = Safety(SafetyConfig(safety_classifier=str(path), safety_default_words=False,
                                 safety_threshold=0.0), device="cpu")  # fmt: skip
    assert safety.unsafe == [1]
    flags = safety.check(TEXTS)
    assert [(f.layer, f.label) for f in flags] == [("classifier", "toxic")] * 3
    assert [f.score for f in flags] == pytest.approx([p[1] for p in probs[:3]], abs=1e-5)


def test_a_gpt2_classifier_without_rejoinder_json_loads_with_its_labels(tmp_path, gpt2):
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    labels = {0: "neutral", 1: "insult", 2: "threat"}
    config = GPT2Config(vocab_size=len(gpt2), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        initializer_range=0.5, id2label=labels,
                        label2id={v: k for k, v in labels.items()})  # fmt: skip
    torch.manual_seed(0)
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path / "gpt2")
    gpt2.save_pretrained(tmp_path / "gpt2")
    classifier = Classifier.from_pretrained(tmp_path / "gpt2", device="cpu")
    assert classifier.labels == ["neutral", "insult", "threat"] and not classifier.reads_context
    probs = classifier.probabilities(TEXTS)
    assert all(len(p) == 3 and sum(p) == pytest.approx(1, abs=1e-5) for p in probs)
    alone = [classifier.probabilities([t])[0] for t in TEXTS]  # padding's place is ignored
    assert flat(alone) == pytest.approx(flat(probs), abs=1e-5)
    safety = Safety(SafetyConfig(safety_classifier=str(tmp_path / "gpt2")), device="cpu")
    assert safety.unsafe == [1, 2]


# -- clear errors ------------------------------------------------------------------------


def test_what_is_no_usable_classifier_is_refused_clearly(tmp_path, make_checkpoint):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RejoinderError, match="no such model directory .it needs config.json"):
        Classifier.from_pretrained(tmp_path / "empty")
    with pytest.raises(RejoinderError, match="is not a sequence classifier .*GPT2LMHeadModel"):
        Classifier.from_pretrained(make_checkpoint("dialogpt"))
    bert = bert_dir(tmp_path / "bert", {0: "non-toxic", 1: "toxic"})
    config = SafetyConfig(safety_classifier=str(bert), safety_unsafe_labels=["nope"])
    with pytest.raises(RejoinderError, match="label nope: .*labels are non-toxic, toxic"):
        Safety(config, device="cpu")
    odd = bert_dir(tmp_path / "odd", {0: "insult", 1: "threat"})
    with pytest.raises(RejoinderError, match="none of them a safe label.*--safety-unsafe-label"):
        Safety(SafetyConfig(safety_classifier=str(odd)), device="cpu")
    chosen = Safety(SafetyConfig(safety_classifier=str(odd), safety_unsafe_labels=["threat"]),
                    device="cpu")  # fmt: skip
    assert chosen.unsafe == [1]
