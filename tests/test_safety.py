"""The safety policy where replies are made (`ConversationModel` with `use_safety`).

The models: the repeater (greedy: " dog dog …" to anything; sampled: nearly uniform
tokens) and the barker, which says " dog" whatever it samples. A word list naming "dog"
makes the repeater's greedy reply unsafe and its redraws safe, and every barker reply
unsafe.
"""

from __future__ import annotations

import json

import pytest

from rejoinder.errors import RejoinderError
from rejoinder.generation import ConversationModel, mmi
from rejoinder.generation.replies import Reply
from rejoinder.safety import CONTENT_FILTER, Safety, SafetyConfig, SafetyError
from rejoinder.safety.policy import FALLBACK, REFUSAL

GREEDY = {"do_sample": False, "max_new_tokens": 6, "max_self_overlap": None}
SAMPLED = {"do_sample": True, "top_k": None, "top_p": 1.0, "max_new_tokens": 6, "seed": 3}


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text("# what the bot must not say\ndog\nbad idea\n")
    return str(path)


def policy(words, **settings) -> SafetyConfig:
    return SafetyConfig(safety_words=[words], safety_default_words=False, **settings)


@pytest.fixture(scope="module")
def repeater(repeater_dir, words):
    bot = ConversationModel.from_pretrained(repeater_dir, device="cpu")
    bot.use_safety(policy(words))
    return bot


@pytest.fixture(scope="module")
def barker(barker_dir, words):
    return ConversationModel.from_pretrained(barker_dir, device="cpu", safety=policy(words))


def test_a_flagged_reply_is_drawn_again_and_the_draft_is_kept_as_a_flag(repeater):
    [[reply]] = repeater.reply_batch([["Hi there"]], **GREEDY)
    assert "dog" not in reply.text.lower().split()
    assert reply.finish_reason != CONTENT_FILTER and reply.tokens > 0
    [draft] = reply.flags
    assert draft.who == "reply" and draft.layer == "words" and draft.label == "dog"
    assert draft.text.split()[0] == "dog"  # the greedy reply the client never saw
    # Without the policy the same call says it.
    plain = ConversationModel.from_pretrained(repeater.checkpoint.path, device="cpu")
    assert plain.generate(["Hi there"], **GREEDY).split()[0] == "dog"


def test_no_safe_draw_gives_the_fallback_and_every_draft_is_kept(barker):
    replies = barker.reply_batch([["Hi"], ["Tell me a story"]], **SAMPLED, num_return_sequences=2)
    retries = barker.safety.config.safety_retries
    for per_context in replies:
        assert len(per_context) == 2
        for reply in per_context:
            assert reply == Reply(FALLBACK, 0, CONTENT_FILTER, reply.flags)
            assert all(f.label == "dog" and f.who == "reply" for f in reply.flags)
            # The first draw and each redraw (equal texts are one flag).
            assert 1 <= len(reply.flags) <= 1 + retries
    # Streaming with the policy on sends the checked reply whole.
    events = list(barker.stream_batch([["Hi"]], **SAMPLED))
    assert [e[1] for e in events[:-1]] == [FALLBACK]
    assert events[-1][1].reason == CONTENT_FILTER and events[-1][1].flags


def test_reranking_picks_the_best_safe_candidate(repeater):
    """The repeater's forward score prefers "dog dog dog" (its favourite token) over any
    other candidate; the policy leaves it out of the pick."""
    drawn = [[Reply("dog dog dog", 3, "length"), Reply("a cat sat", 3, "stop")]]
    from rejoinder.generation.config import decoding_config

    cfg = decoding_config("mmi", reverse_weight=0.0, mmi_lambda=1.0, max_self_overlap=None)
    safety, repeater.safety = repeater.safety, None
    try:
        [unchecked] = mmi.rerank_drawn(repeater, [["Hi"]], drawn, cfg)
    finally:
        repeater.safety = safety
    assert unchecked.reply == "dog dog dog"
    [checked] = mmi.rerank_drawn(repeater, [["Hi"]], drawn, cfg)
    assert checked.reply == "a cat sat" and checked.safe
    assert [f.text for f in checked.best.flags] == ["dog dog dog"]


def test_a_flagged_user_message_is_refused_or_answered(repeater, words):
    context = ["what a bad idea that was"]
    [[refused]] = repeater.reply_batch([context], **GREEDY)
    assert refused.text == REFUSAL and refused.finish_reason == CONTENT_FILTER
    assert refused.tokens == 0
    [flag] = refused.flags
    assert (flag.who, flag.label, flag.text) == ("user", "bad idea", context[0])
    # The bot's own turn is not the user's: only the last non-bot turn is checked.
    said = ["what a bad idea", {"role": "assistant", "content": "ok"}, "fine"]
    assert repeater.safety.check_users([said]) == [None]
    going_on = ConversationModel.from_pretrained(
        repeater.checkpoint.path, device="cpu", safety=policy(words, safety_user="continue")
    )
    [[reply]] = going_on.reply_batch([context], **GREEDY)
    assert reply.text != REFUSAL and reply.flags[0].who == "user"


def test_the_classifier_layer_flags_what_the_word_list_misses(safety_classifier):
    from tests.conftest import SAFETY_CUE

    safety = Safety(SafetyConfig(safety_classifier=str(safety_classifier)))
    assert safety.layers == ["words", "classifier"]
    texts = [f"my {SAFETY_CUE} is here today", "my weather is here today"]
    flags = safety.check([(["How was your day?"], t) for t in texts])
    assert flags[0] is not None and flags[0].layer == "classifier"
    assert flags[0].label == "unsafe" and 0.5 < flags[0].score <= 1
    assert flags[1] is None


def test_a_failing_classifier_fails_closed(safety_classifier, repeater_dir, caplog):
    bot = ConversationModel.from_pretrained(
        repeater_dir, device="cpu", safety=SafetyConfig(safety_classifier=str(safety_classifier))
    )

    def broken(*a, **k):
        raise RuntimeError("out of memory")

    bot.safety.classifier.probabilities = broken
    with pytest.raises(SafetyError, match="withheld"):
        bot.reply_batch([["Hi"]], **SAMPLED)
    assert any("safety classifier failed" in m for m in caplog.messages)


def test_bad_settings_fail_at_start_up(tmp_path, safety_classifier, repeater_dir):
    with pytest.raises(RejoinderError, match=r"\[0, 1\]"):
        SafetyConfig(safety_threshold=1.5)
    with pytest.raises(RejoinderError, match="no such model directory"):
        Safety(SafetyConfig(safety_classifier=str(tmp_path / "nowhere")))
    with pytest.raises(RejoinderError, match="its labels are safe, unsafe"):
        Safety(
            SafetyConfig(safety_classifier=str(safety_classifier), safety_unsafe_labels=["toxic"])
        )
    with pytest.raises(RejoinderError, match="not a sequence classifier"):
        Safety(SafetyConfig(safety_classifier=str(repeater_dir)))
    with pytest.raises(RejoinderError, match="safety word list file"):
        Safety(SafetyConfig(safety_words=[str(tmp_path / "missing.txt")]))


def test_a_model_directory_carries_its_settings(tmp_path, repeater_dir, words):
    import shutil

    from rejoinder.cli import main

    model = tmp_path / "bot"
    shutil.copytree(repeater_dir, model)
    shutil.copy(words, model / "words.txt")
    assert main(["safety", str(model), "--safety-words", "words.txt",
                 "--no-default-safety-words", "--safety-retries", "1"]) == 0  # fmt: skip
    meta = json.loads((model / "rejoinder.json").read_text())
    assert meta["safety"] == {
        "safety": True, "safety_words": ["words.txt"], "safety_default_words": False,
        "safety_retries": 1,
    }  # fmt: skip
    bot = ConversationModel.from_pretrained(model, device="cpu")
    assert bot.safety is not None and bot.safety.config.safety_retries == 1
    assert bot.safety.words.match("a dog") == "dog"  # the list, found beside the model
    off = ConversationModel.from_pretrained(
        model, device="cpu", safety=SafetyConfig(no_safety=True)
    )
    assert off.safety is None
    # The command line's settings replace the carried ones.
    other = ConversationModel.from_pretrained(
        model, device="cpu", safety=SafetyConfig(safety=True, safety_retries=0)
    )
    assert other.safety.config.safety_retries == 0 and other.safety.words.match("a dog") is None
    # Settings that do not load are refused before they are written.
    assert main(["safety", str(model), "--safety-classifier", str(tmp_path / "no")]) == 2
    assert json.loads((model / "rejoinder.json").read_text()) == meta


def test_a_chat_keeps_what_was_flagged(repeater):
    from rejoinder.chat import ChatSession

    chat = ChatSession(repeater, **GREEDY)
    assert chat.send("what a bad idea") == REFUSAL
    said = chat.send("tell me about pets")
    assert "dog" not in said.lower().split()  # the greedy "dog dog …" was stopped
    assert [(f.who, f.label) for f in chat.flagged] == [("user", "bad idea"), ("reply", "dog")]
    lines, _ = chat.command("/flagged")
    assert lines[0] == "user (words: bad idea, 1.00) >> what a bad idea"
