"""Decoding on the device: torch in float32 and bfloat16, CTranslate2 beside it, MMI."""

import math
import shutil

import pytest
import torch

from tests.conftest import PARROT
from tests.gpu.helpers import DEVICE

pytestmark = pytest.mark.gpu

CONTEXTS = [[context] for context in PARROT]
LEARNT = list(PARROT.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_greedy_replies_on_the_device_are_the_learnt_ones(parrot_dir, dtype):
    from rejoinder import ConversationModel

    bot = ConversationModel.from_pretrained(parrot_dir, device=DEVICE, dtype=dtype)
    assert bot.device.type == DEVICE and bot.model.dtype == dtype
    assert bot.generate_batch(CONTEXTS, max_new_tokens=12) == LEARNT  # left-padded together
    assert [bot.generate(c, max_new_tokens=12) for c in CONTEXTS] == LEARNT
    assert "".join(bot.stream(CONTEXTS[0], max_new_tokens=12)) == LEARNT[0]


@pytest.mark.parametrize("compute_type", ["float16", "int8_float16", "int8"])
def test_ctranslate2_greedy_equals_torch_greedy_on_the_same_device(
    ct2_device, compute_type, tmp_path, request
):
    import ctranslate2

    from rejoinder import ConversationModel

    supported = ctranslate2.get_supported_compute_types(ct2_device)
    if compute_type not in supported:
        have = ", ".join(sorted(supported))
        pytest.skip(f"CTranslate2 has no {compute_type} on {ct2_device} (it has {have})")
    parrot_dir = request.getfixturevalue("parrot_dir")  # trained only where it will be used
    model_dir = shutil.copytree(parrot_dir, tmp_path / "parrot")  # its conversion lands beside it
    ours = ConversationModel.from_pretrained(model_dir, device=DEVICE)
    fast = ConversationModel.from_pretrained(
        model_dir, device=ct2_device, backend="ctranslate2", compute_type=compute_type
    )
    assert fast.decoding_device == ct2_device  # the device reaches CTranslate2
    kw = dict(preset="greedy", max_new_tokens=12)
    assert fast.generate_batch(CONTEXTS, **kw) == ours.generate_batch(CONTEXTS, **kw) == LEARNT


def test_mmi_on_the_device_scores_candidates_as_the_cpu_does(parrot_dir, reverse_dir):
    from rejoinder import ConversationModel

    pair = ConversationModel.from_pretrained(parrot_dir, reverse=reverse_dir, device=DEVICE)
    assert pair.device.type == DEVICE and pair.reverse.device.type == DEVICE
    kw = dict(preset="mmi", mmi_candidates=6, seed=0, max_new_tokens=8, min_new_tokens=8,
              mmi_lambda=0.5)  # fmt: skip
    result = pair.rerank(["Hello"], **kw)
    assert 1 < len(result.candidates) <= 6
    assert result.reply == max(result.candidates, key=lambda c: c.score).text
    assert pair.rerank(["Hello"], **kw) == result  # seeded draws on the device repeat
    on_cpu = ConversationModel.from_pretrained(reverse_dir, device="cpu")
    for c in result.candidates:
        assert math.isclose(c.score, c.reverse + 0.5 * c.forward, rel_tol=1e-6)
        alone = on_cpu.score_encodings([on_cpu.format.training_example(["Hello", c.text], "last")])
        assert math.isclose(c.reverse, alone[0].mean, rel_tol=1e-3, abs_tol=1e-4)
