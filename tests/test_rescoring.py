"""Scoring decoded rows' replies from what decoding computed: the same log-probabilities
as the model's own full pass, for less of the sequence through the model."""

from __future__ import annotations

import pytest

from rejoinder.generation import ConversationModel, scoring
from rejoinder.generation.config import decoding_config
from rejoinder.generation.continuous import StepDecoder
from rejoinder.generation.continuous.rescoring import KeptPrompt

from .conftest import PARROT


def decode(model, contexts, config, candidates=4):
    """Every context's candidates decoded together, kept for scoring: (context, row)."""
    decoder = StepDecoder(model, max_rows=8, prefill_chunk=64)
    rows = []
    for context in contexts:
        keep = KeptPrompt()
        prompt = model.encode(context, config.max_new_tokens)
        for k in range(candidates):
            row = decoder.submit((len(rows), k), prompt, config, share=candidates, keep=keep)
            rows.append((context, row))
    while decoder.busy:
        decoder.step()
    return decoder, rows


def rescore(model, decoder, rows, config):
    """Each row's reply scored by the decoder and by the model alone, and the shapes of
    the decoder's passes through the model."""
    replies = [(c, row, model.reply_of(row.new, config).text) for c, row in rows]
    replies = [(c, row, text) for c, row, text in replies if text.strip()]
    pairs = [(c, text) for c, _, text in replies]
    encodings = scoring.response_encodings(model.format, pairs, model.context_budget)
    shapes = []
    hook = model.model.base_model.register_forward_pre_hook(
        lambda _, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        kept = decoder.loglikelihood([row for _, row, _ in replies], encodings)
    finally:
        hook.remove()
    whole = [s.token_logprobs for s in model.score_encodings(encodings)]
    return kept, whole, encodings, shapes, replies


def assert_same(kept, whole):
    assert [len(k) for k in kept] == [len(w) for w in whole]
    for k, w in zip(kept, whole, strict=True):
        assert k == pytest.approx(w, abs=1e-4)


@pytest.mark.parametrize("fmt", ["dialogpt", "sep", "llama"])
def test_replies_are_scored_as_the_full_pass_scores_them(make_checkpoint, tmp_path, fmt):
    """A random model's replies seldom re-encode to the tokens drawn: the pass runs from
    where they part, over the kept keys and values, and no further back. Processors
    (a repetition penalty, n-gram blocking) change what is drawn, not what is scored.
    GPT-2 with and without token types, and Llama (rotary positions)."""
    if fmt == "llama":
        from rejoinder.modeling import init_checkpoint

        path = init_checkpoint(
            tmp_path / "llama", size="tiny", arch="llama", tokenizer="gpt2", initializer_range=0.5
        )
    else:
        path = make_checkpoint(fmt)
    model = ConversationModel.from_pretrained(path)
    config = decoding_config(
        "nucleus", max_new_tokens=12, repetition_penalty=1.3, no_repeat_ngram_size=2
    )
    contexts = [["Hello there"], ["How are you?", "fine", "and you, my friend?"], ["x"]]
    decoder, rows = decode(model, contexts, config)
    kept, whole, encodings, shapes, _ = rescore(model, decoder, rows, config)
    assert_same(kept, whole)
    # One pass, for the replies' rest only: shorter than every encoding, whose prompt
    # (at least two tokens before the reply) never runs again.
    [(n, width)] = shapes
    assert n == len(encodings)
    prompts = [len(row.prompt) for _, row in rows]
    assert width <= max(len(e.input_ids) for e in encodings) - min(prompts) + 1


def test_replies_that_re_encode_to_their_tokens_cost_one_or_two_positions(parrot_dir):
    """The parrot's replies re-encode to the tokens drawn: their log-probabilities are
    the ones recorded while drawing, and only the end-of-turn marker of a reply cut at
    its length (never drawn) goes through the model."""
    model = ConversationModel.from_pretrained(parrot_dir)
    for length, width in ((40, None), (3, 2)):
        config = decoding_config("greedy", max_new_tokens=length)
        decoder, rows = decode(model, [[c] for c in PARROT], config, candidates=2)
        kept, whole, _, shapes, replies = rescore(model, decoder, rows, config)
        assert_same(kept, whole)
        if width is None:  # every reply ended by its end token: nothing ran
            assert [text for _, _, text in replies] == [r for r in PARROT.values() for _ in "ab"]
            assert shapes == []
        else:  # cut at 3 tokens: the last token drawn and the marker after it
            assert shapes == [(len(replies), width)]


def test_what_decoding_did_not_make_is_scored_whole(make_checkpoint):
    """A history too long for the generation budget is cut further back than the scoring
    budget cuts it: the encodings do not start as the rows did, and are scored whole;
    so is a reply scored against a row that kept nothing."""
    model = ConversationModel.from_pretrained(make_checkpoint("dialogpt"))
    config = decoding_config("nucleus", max_new_tokens=model.max_positions // 2)
    # Each turn starts with a token of its own: two cuts share no beginning.
    long = [f"{i}: a turn of a long chat about the weather" for i in range(60)]
    decoder, rows = decode(model, [long], config, candidates=2)
    assert len(rows[0][1].prompt) < len(model.encode(long, 1).input_ids)  # cut further
    kept, whole, encodings, shapes, _ = rescore(model, decoder, rows, config)
    assert_same(kept, whole)
    assert shapes == [(len(encodings), max(len(e.input_ids) for e in encodings))]

    plain = StepDecoder(model)
    prompt = model.encode(["Hello"], 8)
    row = plain.submit("plain", prompt, decoding_config("greedy", max_new_tokens=8))
    while plain.busy:
        plain.step()
    text = model.reply_of(row.new, row.config).text or "hi"
    [encoding] = scoring.response_encodings(model.format, [(["Hello"], text)], 10**6)
    [score] = model.score_encodings([encoding])
    assert plain.loglikelihood([row], [encoding])[0] == pytest.approx(score.token_logprobs)
