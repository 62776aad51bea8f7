"""Scoring, MMI reranking and streaming."""

import math

import pytest
import torch

from rejoinder import ConversationModel, RejoinderError
from rejoinder.generation.config import PRESETS, decoding_config
from tests.conftest import PARROT


@pytest.fixture(scope="module")
def parrot(parrot_dir):
    return ConversationModel.from_pretrained(parrot_dir)


@pytest.fixture(scope="module")
def pair(make_checkpoint, reverse_dir):
    return ConversationModel.from_pretrained(make_checkpoint("dialogpt"), reverse=reverse_dir)


def test_loglikelihood_is_what_the_logits_say(parrot):
    [score] = parrot.loglikelihood([(["Hello"], "Hi there, friend")])
    assert score.tokens[-1] == "<|endoftext|>"  # the end of turn is part of the reply
    assert math.isclose(score.total, sum(score.token_logprobs), rel_tol=1e-6)
    enc = parrot.format.training_example(["Hello", "Hi there, friend"], "last")
    with torch.no_grad():
        logits = parrot.model(input_ids=torch.tensor([enc.input_ids])).logits[0, :-1]
    logp = torch.log_softmax(logits, -1)
    manual = sum(
        logp[i - 1, t].item() for i, t in enumerate(enc.input_ids) if enc.labels[i] != -100
    )
    # Within float32's rounding of logits near 20 (a few 1e-6 each): scoring runs the
    # output layer on the labelled positions only, a product of other shapes.
    assert math.isclose(score.total, manual, rel_tol=1e-5, abs_tol=1e-4)


def test_batched_scores_equal_one_at_a_time(pair):
    pairs = [
        (["Hello"], "Hi"),
        (["A much longer context, with many words in it"], "Sure"),
        ([], "Hey"),
    ]
    batched = pair.loglikelihood(pairs, batch_size=3)
    single = [pair.loglikelihood([p])[0] for p in pairs]
    for a, b in zip(batched, single, strict=True):
        assert math.isclose(a.total, b.total, rel_tol=1e-5, abs_tol=1e-5)


def test_the_parrot_prefers_what_it_learnt(parrot):
    learnt, other = parrot.loglikelihood(
        [(["Hello"], "Hi there, friend"), (["Hello"], "Fine, thanks")]
    )
    assert learnt.mean > other.mean


def test_mmi_scores_every_candidate_in_batches_and_picks_the_best(pair):
    result = pair.rerank(
        ["Hello", "How are you?"],
        preset="mmi",
        mmi_candidates=6,
        seed=0,
        max_new_tokens=8,
        min_new_tokens=8,
        mmi_lambda=0.5,
    )
    assert 1 < len(result.candidates) <= 6
    best = max(result.candidates, key=lambda c: c.score)
    assert result.reply == best.text
    for c in result.candidates:
        assert math.isclose(c.score, c.reverse + 0.5 * c.forward, rel_tol=1e-6)
        # The reverse score is log P(source | candidate) under the backward model.
        enc = pair.reverse.format.training_example(["How are you?", c.text], "last")
        alone = pair.reverse.score_encodings([enc])[0]
        assert math.isclose(c.reverse, alone.mean, rel_tol=1e-4, abs_tol=1e-5)


def test_mmi_batches_draw_independent_candidates_for_every_context(pair):
    # Reranking contexts one by one with the same seed once gave every context the same
    # random draws, so the candidates of similar contexts were alike. In a batch each
    # row draws its own: identical contexts get different candidate sets.
    config = decoding_config("mmi", mmi_candidates=4, seed=0, max_new_tokens=8, min_new_tokens=8)
    results = pair.rerank_batch([["Hello"]] * 4, config)
    sets = [frozenset(c.text for c in r.candidates) for r in results]
    assert len(set(sets)) == 4
    for r in results:  # each pick is still its own candidates' best
        assert r.reply == max(r.candidates, key=lambda c: c.score).text
    # A batch of one is `rerank`, draw for draw.
    alone = pair.rerank(["Hello"], config=config)
    assert pair.rerank_batch([["Hello"]], config)[0] == alone
    replies = pair.generate_batch([["Hello"], ["How are you?"]], preset="mmi", seed=0)
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)


def test_mmi_sampling_by_temperature_is_seeded(pair):
    kw = dict(preset="dialogpt-mmi", mmi_candidates=5, max_new_tokens=6, min_new_tokens=6)
    a = pair.generate(["Hello"], seed=3, **kw)
    assert pair.generate(["Hello"], seed=3, **kw) == a


def test_mmi_needs_a_fitting_reverse_model(make_checkpoint):
    fwd = ConversationModel.from_pretrained(make_checkpoint("dialogpt"))
    with pytest.raises(RejoinderError, match="needs a reverse model"):
        fwd.generate(["Hi"], preset="mmi")
    with pytest.raises(RejoinderError, match="is not a reverse model"):
        ConversationModel.from_pretrained(
            make_checkpoint("dialogpt"), reverse=make_checkpoint("dialogpt")
        )
    other = make_checkpoint(
        "dialogpt", tokenizer="bpe:300", corpus=["hello there"] * 40, reverse=True
    )
    with pytest.raises(RejoinderError, match="another tokenizer"):
        ConversationModel.from_pretrained(make_checkpoint("dialogpt"), reverse=other)


def test_streaming_gives_the_same_reply_in_pieces(parrot):
    for context, reply in PARROT.items():
        pieces = list(parrot.stream([context], max_new_tokens=20))
        assert "".join(pieces) == reply == parrot.generate([context], max_new_tokens=20)
        assert len(pieces) > 1
    assert "".join(parrot.stream(["Hello"], stop=",")) == "Hi there"
    # The same options as generate: bad words too.
    assert "".join(parrot.stream(["Hello"], bad_words=["Hi"])) == parrot.generate(
        ["Hello"], bad_words=["Hi"]
    )
    with pytest.raises(RejoinderError, match="stream one reply"):
        list(parrot.stream(["Hello"], num_beams=3))


def test_presets_are_valid_configs():
    for name in PRESETS:
        decoding_config(name)
    assert decoding_config("beam", num_beams=3).num_beams == 3


def test_unset_top_k_means_no_cut_on_every_backend():
    # transformers cuts sampling at its default top_k=50 unless told 0; CTranslate2 does
    # not cut. One config must mean one distribution, so unset is sent as 0 (off).
    assert decoding_config("nucleus").generate_kwargs()["top_k"] == 0
    assert decoding_config("top-k").generate_kwargs()["top_k"] == 40
    assert "top_k" not in decoding_config("greedy").generate_kwargs()


def test_dialogrpts_ensemble_is_prior_times_cond():
    from rejoinder.generation.config import decoding_config
    from rejoinder.generation.mmi import Candidate, combine

    config = decoding_config("dialogrpt")
    five = {"human_vs_rand": 0.9, "human_vs_machine": 0.7, "updown": 0.6, "depth": 0.5,
            "width": 0.2}  # fmt: skip
    prior = (0.9 + 0.7) / 2
    cond = (1 * 0.6 + 0.48 * 0.5 - 0.5 * 0.2) / (1 + 0.48 - 0.5)
    assert combine(Candidate("x", -2.0, -3.0, 0.0, five), config, False) == pytest.approx(
        prior * cond
    )
    # Without prior rankers the prior is 1; only the cond rankers that are loaded count.
    only = Candidate("x", -2.0, -3.0, 0.0, {"updown": 0.6})
    assert combine(only, config, False) == pytest.approx(0.6)
    weighted = decoding_config(mmi_candidates=4, mmi_lambda=0.5, ranker_weights={"updown": 2})
    assert combine(only, weighted, True) == pytest.approx(0.5 * -2.0 + -3.0 + 2 * 0.6)
    assert combine(only, weighted, False) == pytest.approx(0.5 * -2.0 + 2 * 0.6)


def test_asking_for_candidates_samples_them():
    from rejoinder.generation.config import decoding_config

    config = decoding_config(mmi_candidates=6)  # no preset: sampled as the mmi preset does
    assert config.do_sample and config.mmi_candidates == 6
    assert not decoding_config(mmi_candidates=6, num_beams=6).do_sample  # beams, as asked
