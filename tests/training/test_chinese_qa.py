"""The Q&A path in another script: ChatterBot's Chinese corpus, a character vocabulary,
a model trained from scratch that answers the questions it was trained on."""

from rejoinder import ConversationModel
from rejoinder.cli import main
from rejoinder.data.records import read_dialogues

QUESTIONS = 24


def test_a_char_model_answers_its_chinese_training_questions(tmp_path):
    data, out = tmp_path / "zh", tmp_path / "model"
    build = ["data", "build", "chatterbot", "--language", "chinese", "--out", str(data)]
    assert main([*build, "--valid", "0", "--test", "0"]) == 0
    train = [
        "train", "--data.path", str(data), "--data.max_dialogues", str(QUESTIONS),
        "--data.batch_tokens", "1024", "--data.val_split", "none",
        "--model.init", "tiny", "--model.tokenizer", "char", "--model.max_tokens", "96",
        "--model.lr", "1e-2", "--model.warmup_steps", "10", "--model.dropout", "0.0",
        "--trainer.max_steps", "400", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--out", str(out),
    ]  # fmt: skip
    assert main(train) == 0

    pairs = {}
    for d in read_dialogues(data, "train", QUESTIONS):
        pairs.setdefault(d.turns[0].text, set()).add(d.turns[1].text)
    unique = {q: a.pop() for q, a in pairs.items() if len(a) == 1}
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in q) for q in unique)  # Chinese, really

    bot = ConversationModel.from_pretrained(out)
    assert bot.checkpoint.meta["tokenizer"]["kind"] == "char"
    questions = list(unique)
    replies = bot.generate_batch([[q] for q in questions], max_new_tokens=80)
    right = sum(r == unique[q] for q, r in zip(questions, replies, strict=True))
    assert right >= 0.8 * len(questions), list(zip(questions, replies, strict=True))[:5]
