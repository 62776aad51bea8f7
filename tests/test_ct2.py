"""The CTranslate2 backend agrees with the torch backend."""

import importlib.util
import math
import shutil
import subprocess
import sys

import pytest

from rejoinder import ConversationModel, RejoinderError
from rejoinder.generation.replies import Finish

# Only look for it: importing ctranslate2 before torch has run can make the two OpenMP
# runtimes disagree (seen here: wrong greedy replies). rejoinder imports it lazily.
if importlib.util.find_spec("ctranslate2") is None:
    pytest.skip("ctranslate2 is not installed", allow_module_level=True)

CONTEXTS = [
    ["Hello"],
    ["Hi!", "Hello, how are you doing this fine evening?", "Great. Plans?"],  # end-of-text inside
    [],
]


@pytest.fixture(scope="module")
def checkpoint(make_checkpoint, tmp_path_factory):
    # A copy, so the conversion written beside it stays out of the shared fixture.
    out = tmp_path_factory.mktemp("ct2") / "model"
    shutil.copytree(make_checkpoint("dialogpt"), out)
    return out


def test_greedy_replies_equal_torch_in_float32(checkpoint):
    torch_bot = ConversationModel.from_pretrained(checkpoint)
    fast = ConversationModel.from_pretrained(
        checkpoint, backend="ctranslate2", compute_type="float32"
    )
    expected = [torch_bot.generate(c, max_new_tokens=12) for c in CONTEXTS]
    assert [fast.generate(c, max_new_tokens=12) for c in CONTEXTS] == expected
    assert fast.generate_batch(CONTEXTS, max_new_tokens=12) == expected
    assert any(expected)
    assert (checkpoint / "ctranslate2-float32" / "model.bin").is_file()  # converted once, beside it


def test_scores_agree_with_torch(checkpoint, reverse_dir):
    torch_bot = ConversationModel.from_pretrained(checkpoint)
    fast = ConversationModel.from_pretrained(
        checkpoint, backend="ctranslate2", compute_type="float32"
    )
    pairs = [(["Hello"], "Hi there"), (["Hi!", "How are you?"], "Fine")]
    for a, b in zip(torch_bot.loglikelihood(pairs), fast.loglikelihood(pairs), strict=True):
        assert math.isclose(a.total, b.total, rel_tol=1e-3, abs_tol=1e-3)


def test_mmi_and_sampling_options_run_on_ct2(checkpoint, reverse_dir, tmp_path):
    rev = tmp_path / "rev"
    shutil.copytree(reverse_dir, rev)
    bot = ConversationModel.from_pretrained(checkpoint, reverse=rev, backend="ctranslate2")
    result = bot.rerank(["Hello"], mmi_candidates=4, seed=1, max_new_tokens=6, min_new_tokens=6)
    assert 1 <= len(result.candidates) <= 4 and result.reply in [c.text for c in result.candidates]
    replies = bot.generate(
        ["Hello"], preset="nucleus", num_return_sequences=3, seed=2, max_new_tokens=5
    )
    assert len(replies) == 3
    with pytest.raises(RejoinderError, match="min_p is not available"):
        bot.generate(["Hello"], do_sample=True, min_p=0.1)


def test_formats_with_token_types_stay_on_torch(make_checkpoint):
    with pytest.raises(RejoinderError, match="token types"):
        ConversationModel.from_pretrained(make_checkpoint("sep"), backend="ctranslate2")


def test_the_device_reaches_ctranslate2(checkpoint):
    import ctranslate2

    fast = ConversationModel.from_pretrained(checkpoint, backend="ctranslate2", device="cpu")
    assert fast.decoding_device == "cpu"
    default = ConversationModel.from_pretrained(checkpoint, backend="ctranslate2")
    assert default.decoding_device == ("cuda" if ctranslate2.get_cuda_device_count() else "cpu")
    with pytest.raises(RejoinderError, match="cpu or cuda"):
        ConversationModel.from_pretrained(checkpoint, backend="ctranslate2", device="mps")


def test_ct2_leaves_the_torch_weights_unloaded_until_needed(checkpoint):
    fast = ConversationModel.from_pretrained(
        checkpoint, backend="ctranslate2", compute_type="float32"
    )
    reply = fast.generate(["Hello"], max_new_tokens=6)
    fast.loglikelihood([(["Hello"], "Hi")])
    assert "".join(fast.stream(["Hello"], max_new_tokens=6)) == reply  # streams on CTranslate2
    assert not fast.weights_loaded  # int8 decoding costs only CTranslate2's memory
    fast.inspect("Hello", steps=2, top=2)  # torch, loaded on demand
    assert fast.weights_loaded


def test_a_streamed_batch_on_ct2_decodes_its_rows_together(checkpoint):
    fast = ConversationModel.from_pretrained(
        checkpoint, backend="ctranslate2", compute_type="float32"
    )
    contexts = [["Hello"], ["How are you today, my friend?"], ["Hello"], ["x y z"]]
    kw = dict(preset="greedy", max_new_tokens=10, min_new_tokens=10)
    events = list(fast.stream_batch(contexts, **kw))
    texts = {row: "" for row in range(len(contexts))}
    for row, piece in events:
        texts[row] += piece if isinstance(piece, str) else ""
    assert list(texts.values()) == fast.generate_batch(contexts, **kw)
    ended = [(row, piece) for row, piece in events if isinstance(piece, Finish)]
    assert sorted(ended) == [(row, Finish(10, "length")) for row in range(4)]
    # Rows of one length decode together: the second row of that length has its first
    # piece before the first row has ended.
    ends = [i for i, (row, piece) in enumerate(events) if row == 0 and isinstance(piece, Finish)]
    starts = [i for i, (row, piece) in enumerate(events) if row == 2 and piece]
    assert starts[0] < ends[0]
    # A caller that stops early stops the decoding and leaves no thread behind.
    import threading
    import time

    stream = fast.stream_batch(contexts, preset="greedy", max_new_tokens=200)
    next(stream)
    stream.close()
    deadline = time.monotonic() + 10
    while any(t.name == "ct2-stream" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "CTranslate2 went on decoding for a closed stream"
        time.sleep(0.05)


def test_streaming_on_ct2_matches_whole_replies(checkpoint):
    torch_bot = ConversationModel.from_pretrained(checkpoint)
    fast = ConversationModel.from_pretrained(
        checkpoint, backend="ctranslate2", compute_type="float32"
    )
    for context in CONTEXTS:
        whole = torch_bot.generate(context, max_new_tokens=12)
        pieces = list(fast.stream(context, max_new_tokens=12))
        assert "".join(pieces) == whole
    # A stop string cuts the streamed reply where it cuts the whole one.
    whole = torch_bot.generate(CONTEXTS[1], max_new_tokens=12)
    words = whole.split()
    assert len(words) >= 2, whole  # a wide random model says several words
    stop = words[1]
    cut = fast.generate(CONTEXTS[1], max_new_tokens=12, stop=[stop])
    assert "".join(fast.stream(CONTEXTS[1], max_new_tokens=12, stop=[stop])) == cut
    assert stop not in cut and len(cut) < len(whole) and whole.startswith(cut)


def test_a_ct2_process_never_imports_torch(checkpoint, reverse_dir, tmp_path):
    """Decoding, scoring and MMI on CTranslate2 run without torch (about 200 MB less)."""
    rev = tmp_path / "rev"
    shutil.copytree(reverse_dir, rev)
    ConversationModel.from_pretrained(checkpoint, reverse=rev, backend="ctranslate2")  # converts
    code = f"""
import sys
from rejoinder import ConversationModel
bot = ConversationModel.from_pretrained({str(checkpoint)!r}, reverse={str(rev)!r},
                                        backend="ctranslate2")
bot.generate(["Hello"], max_new_tokens=4)
"".join(bot.stream(["Hello"], max_new_tokens=4))
bot.rerank(["Hello"], mmi_candidates=3, max_new_tokens=4, seed=0)
bot.loglikelihood([(["Hello"], "Hi")])
print(sorted(m for m in ("torch", "transformers.modeling_utils") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("backend", ["torch", "ctranslate2"])
def test_rows_of_one_stream_stop_at_their_own_lengths(checkpoint, backend):
    """stream_batch(limits=...): each row ends at its own max_new_tokens with the tokens
    it would have alone with that limit (greedy), "length" as its reason; a limit above
    the config's is refused."""
    from rejoinder.errors import RejoinderError

    bot = ConversationModel.from_pretrained(checkpoint, backend=backend, compute_type="float32")
    contexts = [["Hello"], ["Hello"], ["x y z"], ["How are you today, my friend?"]]
    limits = [3, 9, 5, 1]
    kw = dict(preset="greedy", max_new_tokens=max(limits), min_new_tokens=1)
    texts, ends = {row: "" for row in range(4)}, {}
    for row, piece in bot.stream_batch(contexts, limits=limits, **kw):
        if isinstance(piece, Finish):
            ends[row] = piece
        else:
            texts[row] += piece
    for row, (context, n) in enumerate(zip(contexts, limits, strict=True)):
        alone = bot.reply_batch([context], preset="greedy", max_new_tokens=n, min_new_tokens=1)
        [[reply]] = alone
        assert texts[row] == reply.text and ends[row] == reply.finish, row
        assert ends[row].tokens <= n
    with pytest.raises(RejoinderError, match="none above the config's"):
        list(bot.stream_batch(contexts, limits=[20, 1, 1, 1], **kw))
