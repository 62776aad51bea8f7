"""The DSTC-7 metrics, checked against their definitions on cases small enough to do by hand."""

import math

import pytest

from rejoinder import RejoinderError
from rejoinder.evaluation.metrics import (
    bleu,
    distinct,
    entropy,
    f1,
    nist,
    score_human,
    score_replies,
    tokenize,
)


def test_default_tokenization_splits_punctuation_and_lowercases():
    assert tokenize("Hi, you! Don't go.") == ["hi", ",", "you", "!", "don't", "go", "."]
    assert tokenize("Hi, you!", "none") == ["Hi,", "you!"]
    assert tokenize("你好 吗", "char") == ["你", "好", "吗"]
    with pytest.raises(RejoinderError, match="unknown tokenization"):
        tokenize("x", "moses")


def test_bleu_by_hand():
    hyp = ["the", "cat", "sat", "on", "the", "mat"]
    ref = ["the", "cat", "is", "on", "the", "mat"]
    # unigrams 5/6 match, bigrams 3/5, equal lengths: BLEU-2 = sqrt(5/6 * 3/5)
    assert math.isclose(bleu([hyp], [[ref]], 2), math.sqrt(5 / 6 * 3 / 5))
    assert bleu([ref], [[ref]], 4) == 1.0
    assert bleu([["a", "b"]], [[["c", "d"]]], 2) == 0.0


def test_bleu_clips_by_the_best_reference_and_penalises_brevity():
    hyp = ["the", "the", "the"]
    refs = [["the", "cat"], ["the", "the", "dog"]]
    # "the" counts at most twice (the second reference); the closest length is 3.
    assert math.isclose(bleu([hyp], [refs], 1), 2 / 3)
    short = ["the"]
    # 1 word against a closest reference of 2: BP = exp(1 - 2/1).
    assert math.isclose(bleu([short], [refs], 1), math.exp(1 - 2))


def test_nist_by_hand():
    ref = ["a", "b"]
    # info(a) = info(b) = log2(2 words / 1) = 1, info(a b) = log2(count(a) / count(a b)) = 0
    assert math.isclose(nist([ref], [[ref]], 1), 1.0)
    assert math.isclose(nist([ref], [[ref]], 2), 1.0)
    assert nist([["c"]], [[ref]], 2) == 0.0
    # Half the reference length: NIST's penalty exp(beta * ln(1/2)^2) < 1.
    assert nist([["a"]], [[ref]], 1) < 1.0


def test_entropy_and_distinct_pool_all_hypotheses():
    hyps = [["a", "b", "c", "d", "e"], ["a", "b", "c", "d"]]
    # 4-grams: (a b c d) twice, (b c d e) once
    p = [2 / 3, 1 / 3]
    assert math.isclose(entropy(hyps, 4), -sum(q * math.log(q) for q in p))
    assert math.isclose(distinct(hyps, 1), 5 / 9)
    assert math.isclose(distinct(hyps, 2), 4 / 7)
    assert entropy([["a"]], 4) == 0.0 and distinct([[]], 2) == 0.0


def test_parlai_f1():
    assert math.isclose(f1("The cat sat.", ["a cat sat down"]), 0.8)
    assert f1("The cat sat.", ["dog", "the cat sat"]) == 1.0
    assert f1("", ["anything"]) == 0.0


def test_score_replies_and_the_human_ceiling():
    refs = [["i am fine , thanks", "good , you ?"], ["it is sunny", "sunny and warm"]]
    hyps = ["i am fine", "it is sunny today"]
    scores = score_replies(hyps, refs)
    assert scores["avg_len"] == 3.5
    assert 0 < scores["bleu2"] <= 100 and scores["f1"] > 0
    human = score_human(refs)
    assert human["bleu2"] is not None and human["avg_len"] == 4.0
    one_ref = score_human([[r[0]] for r in refs])
    assert one_ref["bleu2"] is None and one_ref["f1"] is None  # never a reference against itself
    assert one_ref["dist1"] == human["dist1"]
    with pytest.raises(RejoinderError, match="2 hypotheses but 1"):
        score_replies(hyps, refs[:1])
