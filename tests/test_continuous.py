"""Continuous batching: rows joining and leaving one batch decode exactly as alone."""

from __future__ import annotations

import random

import pytest

from rejoinder.generation import ConversationModel
from rejoinder.generation.config import decoding_config
from rejoinder.generation.continuous import StepDecoder, supports

CONTEXTS = [
    ["Hello there"],
    ["How are you?", "fine", "and you, my friend, what did you do today?"],
    ["x"],
    ["A much longer opening line with many many words in it, to make a long prompt"],
]
CONFIGS = [
    decoding_config("greedy", max_new_tokens=12),
    decoding_config("nucleus", seed=3, max_new_tokens=20),
    decoding_config("top-k", seed=5, max_new_tokens=7, repetition_penalty=1.3),
    decoding_config("greedy", max_new_tokens=30, no_repeat_ngram_size=2, bad_words=["the"]),
    decoding_config("min-p", seed=11, max_new_tokens=16, temperature=0.7, stop=["a"]),
    decoding_config("typical", seed=2, max_new_tokens=10, min_new_tokens=4),
]


def run(decoder, model, wanted, per_step=2):
    """Submits `wanted` {key: (context, config)} a few per step, in a shuffled order, and
    returns each key's reply text."""
    pending = list(wanted)
    random.Random(0).shuffle(pending)
    rows, got = {}, {}
    while pending or decoder.busy:
        for _ in range(per_step):
            if pending:
                key = pending.pop()
                context, config = wanted[key]
                prompt = model.encode(context, config.max_new_tokens)
                rows[key] = decoder.submit(key, prompt, config)
        for row, token in decoder.step():
            if token is None:
                stops = [*model.format.stop_strings, *row.config.stop]
                got[row.key] = model.format.decode_reply(row.new, stops)
    return got, rows


@pytest.mark.parametrize(
    ("fmt", "chunk"),
    # Eight prompt tokens a step: long prompts are prefilled alone over several steps
    # while others decode. Sixty: short prompts are prefilled together, left-padded.
    [("dialogpt", 8), ("sep", 60)],
)
def test_every_row_decodes_as_generate_decodes_it_alone(make_checkpoint, fmt, chunk):
    model = ConversationModel.from_pretrained(make_checkpoint(fmt))
    assert StepDecoder.usable(model)
    wanted = {(i, j): (c, cfg) for i, c in enumerate(CONTEXTS) for j, cfg in enumerate(CONFIGS)}
    # Three rows at most: rows wait and join mid-way.
    decoder = StepDecoder(model, max_rows=3, prefill_chunk=chunk)
    got, _ = run(decoder, model, wanted)
    alone = {key: model.generate(c, cfg) for key, (c, cfg) in wanted.items()}
    assert got == alone
    assert 2 < decoder.row_steps / decoder.steps <= 3  # rows did share steps
    # Prompts went through the model together within the step's budget, padding counted.
    assert decoder.grouped_prompts > 0 or chunk == 8
    assert decoder.largest_group <= chunk


@pytest.mark.parametrize("fmt", ["dialogpt", "sep"])
def test_rows_of_one_prompt_are_prefilled_once_and_decode_as_alone(make_checkpoint, fmt):
    """A request's candidates share a prompt: the prefill runs it once (with the other
    prompts waiting beside it) and each row, seeded apart, decodes as generate alone."""
    model = ConversationModel.from_pretrained(make_checkpoint(fmt))
    decoder = StepDecoder(model, max_rows=8, prefill_chunk=512)
    prefilled = []
    lm = decoder.admission.lm

    class Counting:
        def __call__(self, **kwargs):
            prefilled.append(kwargs["input_ids"].shape[0])
            return lm(**kwargs)

        def __getattr__(self, name):
            return getattr(lm, name)

    decoder.admission.lm = Counting()
    wanted = {("a", k): (CONTEXTS[0], decoding_config("nucleus", seed=k, max_new_tokens=9))
              for k in range(5)}  # fmt: skip
    wanted[("b", 0)] = (CONTEXTS[1], CONFIGS[0])
    got, _ = run(decoder, model, wanted, per_step=len(wanted))
    assert prefilled == [2]  # two prompts, six rows
    assert got == {key: model.generate(c, cfg) for key, (c, cfg) in wanted.items()}


def test_llama_rows_decode_as_alone(tmp_path):
    from rejoinder.modeling import init_checkpoint

    path = init_checkpoint(
        tmp_path / "llama", size="tiny", arch="llama", tokenizer="gpt2", initializer_range=0.5
    )
    model = ConversationModel.from_pretrained(path)
    wanted = {(i, j): (c, cfg) for i, c in enumerate(CONTEXTS) for j, cfg in enumerate(CONFIGS[:3])}
    got, _ = run(StepDecoder(model, max_rows=4), model, wanted, per_step=3)
    assert got == {key: model.generate(c, cfg) for key, (c, cfg) in wanted.items()}


def test_a_cancelled_row_leaves_at_the_next_step(make_checkpoint):
    model = ConversationModel.from_pretrained(make_checkpoint("dialogpt"))
    decoder = StepDecoder(model, max_rows=2)
    config = decoding_config("greedy", max_new_tokens=40, min_new_tokens=40)
    a = decoder.submit("a", model.encode(["Hello"]), config)
    b = decoder.submit("b", model.encode(["Bye"]), config)
    c = decoder.submit("c", model.encode(["Later"]), config)
    decoder.step()
    assert decoder.rows == [a, b] and list(decoder.waiting) == [c]  # two slots
    decoder.cancel(a)
    ended = [row for row, token in decoder.step() if token is None]
    # It is cut before the step's forward pass, and its slot goes to the waiting row.
    assert ended == [a] and decoder.rows == [b, c] and len(a.new) == 1
    assert decoder.cache.layers[0].keys.shape[0] == 2


def test_a_failing_row_fails_alone(make_checkpoint, monkeypatch):
    model = ConversationModel.from_pretrained(make_checkpoint("dialogpt"))
    decoder = StepDecoder(model, max_rows=4)
    config = decoding_config("greedy", max_new_tokens=6)
    good = decoder.submit("good", model.encode(["Hello"]), config)
    bad = decoder.submit("bad", model.encode(["Bye"]), config)

    def broken(ids, scores):
        raise RuntimeError("a broken processor")

    bad.processors = broken
    events = []
    while decoder.busy:
        events += decoder.step()
    assert isinstance(bad.failed, RuntimeError) and (bad, None) in events
    reply = model.format.decode_reply(good.new, model.format.stop_strings)
    assert good.failed is None and reply == model.generate(["Hello"], config)


def test_what_cannot_decode_in_steps_is_refused():
    assert supports(decoding_config("nucleus"))
    for config in (decoding_config("beam"), decoding_config("mmi"), decoding_config(head="x")):
        assert not supports(config)


def finish(decoder, model):
    """Steps until every row has ended; each row's reply text, by key."""
    got = {}
    while decoder.busy:
        for row, token in decoder.step():
            if token is None:
                got[row.key] = model.format.decode_reply(row.new, model.format.stop_strings)
    return got


def test_a_session_reuses_its_kept_prefix_and_replies_the_same(make_checkpoint):
    model = ConversationModel.from_pretrained(make_checkpoint("dialogpt"))
    decoder = StepDecoder(model, max_rows=4)
    config = decoding_config("greedy", max_new_tokens=8)
    history = ["Hello there"]
    for turn in range(3):
        prompt = model.encode(history, config.max_new_tokens)
        decoder.submit(turn, prompt, config, prefix_key="s1")
        reply = finish(decoder, model)[turn]
        assert reply == model.generate(history, config)
        history += [reply or "...", f"and then {turn}?"]
    # Each turn after the first ran only what was new since the last: its reply's last
    # token, the end of turn and the user's message.
    assert decoder.reused_tokens > 0
    assert list(decoder.prefixes.entries) == ["s1"]


def test_kept_prefixes_stay_within_their_memory(make_checkpoint):
    model = ConversationModel.from_pretrained(make_checkpoint("dialogpt"))
    probe = StepDecoder(model)
    config = decoding_config("greedy", max_new_tokens=4, min_new_tokens=4)
    probe.submit("p", model.encode(["one two three"]), config, prefix_key="p")
    finish(probe, model)
    one = probe.prefixes.bytes  # what one session of this length keeps
    decoder = StepDecoder(model, max_rows=8, prefix_bytes=int(2.5 * one))
    for k in range(6):  # more sessions than fit
        decoder.submit(k, model.encode(["one two three"]), config, prefix_key=f"s{k}")
    finish(decoder, model)
    assert decoder.prefixes.bytes <= decoder.prefixes.limit
    assert list(decoder.prefixes.entries) == ["s4", "s5"]  # the most recent two


def test_the_step_clock_splits_each_step_into_the_model_and_the_rest(make_checkpoint):
    import time

    model = ConversationModel.from_pretrained(make_checkpoint("dialogpt"))
    decoder = StepDecoder(model, max_rows=2)
    slow = model.model.forward

    def forward(*args, **kwargs):  # a model that takes at least 20 ms a call
        time.sleep(0.02)
        return slow(*args, **kwargs)

    model.model.forward = forward
    config = decoding_config("greedy", max_new_tokens=3, min_new_tokens=3)
    decoder.submit("a", model.encode(["Hello"]), config)
    decoder.submit("b", model.encode(["Bye"]), config)
    while decoder.busy:
        decoder.step()
    figures = decoder.clock.summary()
    # 3 steps of 2 rows: the prefill, then a forward pass per step after it
    assert figures["steps"] == decoder.steps == 3 and figures["rows"] == 2
    assert figures["forward_ms"] >= 20 and figures["host_ms"] >= 0
    for wall, forward, _ in decoder.clock.steps:
        assert 0.02 <= forward <= wall


def warped_probs(logits, config):
    """What transformers' own warpers make of `logits` for `config`, as probabilities."""
    from transformers.generation import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    out = logits
    if config.temperature != 1.0:
        out = TemperatureLogitsWarper(config.temperature)(None, out)
    if config.top_k:
        out = TopKLogitsWarper(config.top_k)(None, out)
    if config.top_p is not None and config.top_p < 1.0:
        out = TopPLogitsWarper(config.top_p)(None, out)
    return out.softmax(-1)


@pytest.mark.parametrize(
    "options",
    [{"top_p": 0.9}, {"top_p": 0.5, "temperature": 0.7}, {"top_k": 3, "top_p": 0.8},
     {"top_k": 4}, {"top_p": 0.3, "temperature": 1.6}],
)  # fmt: skip
def test_unseeded_draws_have_the_warped_distribution(options, monkeypatch):
    """draw_nucleus never leaves the nucleus transformers' warpers keep, and draws each
    token of it as often as the warped distribution says (within 4 standard deviations),
    with rows of another config (another temperature, top-k and top-p) drawn in the same
    call, whatever the size of the blocks it draws through; so does its fallback, the
    warper itself, for rows that miss too often."""
    import torch

    from rejoinder.generation.continuous import sampling

    torch.manual_seed(0)
    logits = torch.randn(3, 12) * 2  # three distributions, from peaked to flat
    configs = [decoding_config(None, do_sample=True, **options),
               decoding_config(None, do_sample=True, top_k=5, top_p=0.6, temperature=1.3),
               decoding_config(None, do_sample=True)]  # fmt: skip
    draws = 3000
    # Blocks of 5 over 12 tokens: two whole blocks and a short one, some all cut away.
    for redraws, block in ((sampling.REDRAWS, sampling.BLOCK), (sampling.REDRAWS, 5), (0, 5)):
        monkeypatch.setattr(sampling, "REDRAWS", redraws)
        monkeypatch.setattr(sampling, "BLOCK", block)
        # every distribution under every config, each row `draws` times, all in one call
        rows = logits.repeat(len(configs), 1).repeat_interleave(draws, 0)
        per_row = [c for c in configs for _ in range(3 * draws)]
        tokens = torch.tensor(sampling.draw_nucleus(rows, per_row)).view(len(configs), 3, draws)
        for k, config in enumerate(configs):
            want = warped_probs(logits, config)
            for row in range(3):
                counts = torch.bincount(tokens[k, row], minlength=12).double()
                assert (counts[want[row] == 0] == 0).all()  # nothing outside the nucleus
                expected = want[row].double() * draws
                spread = (expected * (1 - want[row].double())).sqrt()
                assert ((counts - expected).abs() <= 4 * spread + 1).all(), (counts, expected)


def test_processors_run_on_all_rows_at_once_as_on_each_row_alone(make_checkpoint):
    """The minimum lengths and repetition penalties `choose` applies to all rows at once,
    then each row's other processors, give the scores that row's whole list of
    transformers processors gives it alone: rows of different lengths, some still too
    short, penalties above and below 1, n-gram blocking of 1, 2 and 3 tokens with
    n-grams that repeat, and bad words beside them."""
    import torch

    from rejoinder.generation.continuous import sampling

    model = ConversationModel.from_pretrained(make_checkpoint("dialogpt"))
    decoder = StepDecoder(model, max_rows=8)
    configs = [
        decoding_config("greedy", repetition_penalty=1.3, min_new_tokens=4),
        decoding_config("greedy", repetition_penalty=0.8),
        decoding_config("greedy", min_new_tokens=2, no_repeat_ngram_size=2),
        decoding_config("greedy", repetition_penalty=2.0, bad_words=["there"]),
        decoding_config("greedy"),
        decoding_config("greedy", no_repeat_ngram_size=1),
        decoding_config("greedy", no_repeat_ngram_size=3, repetition_penalty=1.1),
    ]
    rng = random.Random(0)
    rows = []
    for k, config in enumerate(configs):
        row = decoder.submit(k, model.encode([CONTEXTS[k % len(CONTEXTS)][0]]), config)
        row.new = [rng.randrange(50) for _ in range(k % 5)]  # 0..4 tokens made so far
        rows.append(row)
    # n-grams that repeat: the bigram row ends with a token it had, the trigram row with
    # a pair it had (each then bans what followed them)
    rows[2].new += rows[2].new[:1]
    rows[6].new = [7, 8, 9, 7, 8, 4, 7, 8]
    torch.manual_seed(0)
    logits = torch.randn(len(rows), model.model.config.vocab_size) * 3
    scores = logits.clone()
    sampling.apply_shared(rows, scores)
    stop, pad = decoder.stop_ids, model.tokenizer.pad_token_id
    for i, row in enumerate(rows):
        ids = torch.tensor([row.ids])
        if row.processors:
            scores[i : i + 1] = row.processors(ids, scores[i : i + 1])
        alone, _ = sampling.split(sampling.built_processors(model.model, row, stop, pad))
        expected = alone(ids, logits[i : i + 1].clone())
        assert torch.equal(scores[i : i + 1], expected), i
    assert rows[0].shared["min_new"][1] == 4 and rows[3].shared["penalty"] == 2.0
    assert rows[6].shared["ngram"] == 3 and not rows[6].processors  # all of it shared
    assert sorted(sampling.repeated_ngram_ends(rows[6].ids, 3)) == [4, 9]
    assert torch.isinf(scores[6, [4, 9]]).all()
    assert not torch.equal(scores, logits)  # there was something to do


def test_the_rows_of_one_request_count_as_one_against_the_cap(make_checkpoint):
    """max_rows counts requests, as the gathering batcher's max_batch does: the four
    candidates of a reranked request (share=4) take one place together."""
    model = ConversationModel.from_pretrained(make_checkpoint("dialogpt"))
    decoder = StepDecoder(model, max_rows=2)
    config = decoding_config("nucleus", max_new_tokens=5, min_new_tokens=5)
    prompt = model.encode(["Hello"])
    asked = [[decoder.submit((k, i), prompt, config, share=4) for i in range(4)] for k in range(3)]
    alone = decoder.submit("plain", prompt, config)
    decoder.step()
    assert decoder.rows == asked[0] + asked[1]  # two requests' eight rows
    assert list(decoder.waiting) == [*asked[2], alone]
    while decoder.busy:
        decoder.step()
    assert all(len(row.new) == 5 for rows in asked for row in rows)


def test_rows_of_several_warp_groups_each_get_their_own_token():
    """Rows of different temperatures (warp groups) drawn in one pass: each row's token
    comes from its own logits (row i can only draw token i)."""
    import torch

    from rejoinder.generation.continuous.rows import Row
    from rejoinder.generation.continuous.sampling import choose, warp_key

    temperatures = [0.7, 1.0, 0.7, 1.3, 1.0, 0.7]
    rows = []
    for t in temperatures:
        config = decoding_config(None, do_sample=True, temperature=t, top_p=0.9)
        rows.append(Row(key=t, prefix_key=None, prompt=[1], prompt_types=None, config=config,
                        stops=None, bad_ids=[], group=warp_key(config)))  # fmt: skip
    logits = torch.full((len(rows), 10), -50.0)
    logits[range(len(rows)), range(len(rows))] = 50.0
    chosen, failed = choose(rows, logits)
    assert not failed
    assert sorted((rows.index(r), token) for r, token in chosen) == [(i, i) for i in range(6)]
