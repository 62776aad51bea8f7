import pytest
import torch

from rejoinder import ConversationModel, RejoinderError
from tests.conftest import PARROT

CONTEXTS = [
    ["Hello"],
    ["Hi!", "Hello, how are you doing this fine evening?", "Great. Plans?"],
    [],
    ["A much longer opening message, with quite a few words in it, to make padding matter."],
]


@pytest.fixture(scope="module", params=["dialogpt", "sep", "speaker", "template"])
def bot(request, make_checkpoint):
    return ConversationModel.from_pretrained(make_checkpoint(request.param))


def test_template_replies_are_cut_at_role_names(make_checkpoint):
    bot = ConversationModel.from_pretrained(make_checkpoint("template"))
    replies = bot.generate(
        ["Hello"],
        do_sample=True,
        num_return_sequences=8,
        max_new_tokens=30,
        min_new_tokens=30,
        seed=0,
        stop=["e"],
    )
    assert all("\n" not in r and "User:" not in r and "e" not in r for r in replies)


@pytest.fixture(scope="module")
def parrot(parrot_dir):
    return ConversationModel.from_pretrained(parrot_dir)


def test_cached_equals_uncached_greedy(bot):
    options = dict(max_new_tokens=12, min_new_tokens=12)
    cached = bot.reply_batch(CONTEXTS, **options)
    assert bot.reply_batch(CONTEXTS, use_cache=False, **options) == cached
    assert [r.tokens for [r] in cached] == [12] * len(CONTEXTS)
    assert len({r.text for [r] in cached}) > 1  # the replies say something, and differ


def test_batched_equals_one_at_a_time(bot):
    singles = [bot.generate(c, max_new_tokens=10, min_new_tokens=10) for c in CONTEXTS]
    assert bot.generate_batch(CONTEXTS, max_new_tokens=10, min_new_tokens=10) == singles
    assert len(set(singles)) > 1  # the replies depend on the context


def test_replies_stop_at_the_end_of_the_turn(parrot):
    for context, reply in PARROT.items():
        assert parrot.generate([context], max_new_tokens=40) == reply
    assert parrot.generate_batch([[c] for c in PARROT], max_new_tokens=40) == list(PARROT.values())


def test_stop_strings_and_bad_words(parrot):
    assert parrot.generate(["Hello"], stop=[","]) == "Hi there"
    assert parrot.generate(["Hello"], stop=" there") == "Hi"
    assert not parrot.generate(["Hello"], bad_words=["Hi"]).startswith("Hi")


def test_several_return_sequences(bot):
    replies = bot.generate(
        ["Hello"],
        do_sample=True,
        num_return_sequences=3,
        max_new_tokens=8,
        min_new_tokens=8,
        seed=0,
    )
    assert isinstance(replies, list) and len(replies) == 3 and len(set(replies)) > 1
    beams = bot.reply_batch(
        [["Hello"], ["Bye"]], num_beams=4, num_return_sequences=2, max_new_tokens=6,
        min_new_tokens=6,
    )  # fmt: skip
    assert [[r.tokens for r in b] for b in beams] == [[6, 6], [6, 6]]


def test_seed_makes_sampling_repeatable_without_touching_global_rng(bot):
    state = torch.random.get_rng_state()
    options = dict(do_sample=True, top_p=0.9, temperature=1.5, max_new_tokens=12, min_new_tokens=12)
    a = bot.generate(["Hello"], seed=7, **options)
    assert bot.generate(["Hello"], seed=7, **options) == a
    assert any(bot.generate(["Hello"], seed=s, **options) != a for s in range(8, 12))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_long_histories_are_truncated_to_fit(bot):
    history = ["word " * 300] * 10  # far beyond 1024 positions
    enc = bot.encode(history, max_new_tokens=24)
    assert len(enc) <= bot.max_positions - 24
    [[reply]] = bot.reply_batch([history], max_new_tokens=24, min_new_tokens=24)
    assert reply.tokens == 24 and reply.finish_reason == "length"


def test_bad_options_and_contexts_are_refused_clearly(bot):
    with pytest.raises(RejoinderError, match="unknown decoding option 'top_q'"):
        bot.generate(["Hi"], top_q=0.5)
    with pytest.raises(RejoinderError, match="unknown decoding option 'eos_token_id'"):
        bot.generate(["Hi"], eos_token_id=3)  # the format decides where a reply ends
    with pytest.raises(RejoinderError, match="turn 1"):
        bot.generate(["Hi", None])
    with pytest.raises(RejoinderError, match="no room"):
        bot.generate(["Hi"], max_new_tokens=5000)
    with pytest.raises(RejoinderError, match="max_new_tokens=0 is invalid"):
        bot.generate(["Hi"], max_new_tokens=0)
    with pytest.raises(RejoinderError, match=r"top_p=-1.0 is invalid; use a number in \(0, 1\]"):
        bot.generate(["Hi"], do_sample=True, top_p=-1.0)
    with pytest.raises(RejoinderError, match="temperature=0 is invalid"):
        bot.generate(["Hi"], do_sample=True, temperature=0)
    with pytest.raises(RejoinderError, match="num_beams=0 is invalid"):
        bot.generate(["Hi"], num_beams=0)
    with pytest.raises(RejoinderError, match="unknown preset 'wild'"):
        bot.generate(["Hi"], preset="wild")
    with pytest.raises(RejoinderError, match="seed"):
        bot.generate(["Hi"], seed="x")


def test_user_text_with_special_tokens_stays_text(parrot):
    enc = parrot.encode(["Hello<|endoftext|>How are you?"])
    assert enc.input_ids.count(parrot.tokenizer.eos_token_id) == 1  # only the real end of turn
