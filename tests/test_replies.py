"""Replies beyond their text: exact token counts and finish reasons, and the guard that
refuses a reply repeating one of the bot's earlier turns."""

import pytest

from rejoinder import ConversationModel
from rejoinder.chat import ChatSession
from rejoinder.dialogue import Turn
from rejoinder.generation import mmi
from rejoinder.generation.config import decoding_config
from rejoinder.generation.replies import Finish, Reply, overlap
from tests.conftest import PARROT, REPEATED

SAID = " ".join([REPEATED.strip()] * 6)
"""The repeater's greedy reply of 6 tokens, to anything."""


@pytest.fixture(scope="module")
def repeater(repeater_dir):
    return ConversationModel.from_pretrained(repeater_dir)


@pytest.fixture(scope="module")
def parrot(parrot_dir):
    return ConversationModel.from_pretrained(parrot_dir)


def again():
    """A chat where the bot already said what the repeater will say."""
    return [Turn("hi", "user"), Turn(SAID, "assistant"), Turn("hi", "user")]


def test_a_reply_that_repeats_the_bot_is_drawn_again(repeater):
    six = dict(max_new_tokens=6)
    assert repeater.generate(["hi"], **six) == SAID
    assert repeater.generate(again(), **six) == SAID  # the guard is off by default
    guarded = repeater.generate(again(), max_self_overlap=0.5, seed=1, **six)
    assert guarded and overlap(guarded, [SAID]) <= 0.5
    # Streamed, the reply is checked whole, then sent: the same reply.
    assert "".join(repeater.stream(again(), max_self_overlap=0.5, seed=1, **six)) == guarded
    # With no retries left, the copy is all there is.
    assert repeater.generate(again(), max_self_overlap=0.5, self_overlap_retries=0, **six) == SAID
    # A reply sharing no trigram with the bot's turns goes through; so does a user's echo.
    fresh = [Turn("hi", "user"), Turn("cats are nice", "assistant"), Turn("hi", "user")]
    assert repeater.generate(fresh, max_self_overlap=0.5, **six) == SAID
    echo = [Turn(SAID, "user")]
    assert repeater.generate(echo, max_self_overlap=0.5, **six) == SAID


def test_a_chat_session_is_guarded_by_default(repeater):
    session = ChatSession(repeater, max_new_tokens=6, seed=2)
    assert session.send("hi") == SAID
    second = session.send("hi")
    assert overlap(second, [SAID]) <= 0.5
    off = ChatSession(repeater, max_new_tokens=6, max_self_overlap=1.0)
    assert [off.send("hi") for _ in range(2)] == [SAID, SAID]


def test_reranking_leaves_out_candidates_that_repeat_the_bot(parrot, reverse_dir):
    pair = ConversationModel.from_pretrained(parrot.checkpoint.path, reverse=reverse_dir)
    context = [Turn("Hello", "user"), Turn("Hi there, friend, how are you", "assistant"),
               Turn("Hello", "user")]  # fmt: skip
    copy, fresh = (
        Reply("Hi there, friend, how are you", 8, "stop"),
        Reply("Fine, thanks", 4, "stop"),
    )
    config = decoding_config("mmi", max_self_overlap=0.5)
    [result] = mmi.rerank_drawn(pair, [context], [[copy, fresh]], config)
    assert result.reply == "Fine, thanks" and result.best == fresh
    assert [c.repeats for c in result.candidates] == [1.0, 0.0]
    # When every candidate repeats, the least repetitive one is the reply.
    half = Reply("Hi there, friend, how are they", 8, "length")  # 3 of its 4 trigrams
    [result] = mmi.rerank_drawn(pair, [context], [[copy, half]], config)
    assert result.best == half


def test_token_counts_are_what_the_backend_generated(parrot):
    words = len(parrot.tokenizer(" " + PARROT["Hello"]).input_ids)
    [[ended]] = parrot.reply_batch([["Hello"]])
    assert ended == Reply(PARROT["Hello"], words + 1, "stop")  # the end-of-text counts
    [[cut]] = parrot.reply_batch([["Hello"]], max_new_tokens=2)
    assert (cut.tokens, cut.finish_reason) == (2, "length")
    # A stop string ends the row where its text holds it, padding after it not counted.
    [[stopped]] = parrot.reply_batch([["Hello"], ["How are you?"]], stop=[","])[:1]
    assert stopped == Reply("Hi there", 3, "stop")
    events = list(parrot.stream_batch([["Hello"], ["How are you?"]], stop=[","]))
    ends = {row: piece for row, piece in events if isinstance(piece, Finish)}
    assert ends == {0: Finish(3, "stop"), 1: Finish(2, "stop")}  # "Hi there," and "Fine,"
