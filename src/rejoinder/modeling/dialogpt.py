"""Importing DialoGPT's original pickles (`medium_ft.pkl`, `small_reverse.pkl`, …).

Microsoft released DialoGPT as `torch.save`d state dicts of pytorch-pretrained-BERT's
GPT2LMHeadModel. They differ from today's `transformers` layout in three ways: the
output layer is `lm_head.decoder.weight` (now `lm_head.weight`), each attention block
carries its causal-mask buffer (`attn.bias`, `attn.masked_bias`), which is no longer
saved, and some files were saved from a DataParallel wrapper (`module.` prefixes) or
without the `transformer.` prefix. We read them with `weights_only=True`: a pickle
that holds anything but tensors is refused, never executed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rejoinder.errors import RejoinderError
from rejoinder.modeling.architectures import SIZES, gpt2_config
from rejoinder.modeling.checkpoint import DIALOGPT_SIZES, save_checkpoint

_BLOCK = re.compile(r"^transformer\.h\.(\d+)\.")


def read_state_dict(path: str | os.PathLike, keep: tuple[str, ...] = ()) -> dict:
    """The tensors of a DialoGPT pickle, renamed to `transformers`' GPT2LMHeadModel keys;
    keys starting with one of `keep` (another head, such as DialogRPT's `score.`) stay."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise RejoinderError(f"{path} does not exist or is not a file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # the weights-only unpickler met a class or function
            raise RejoinderError(
                f"{path} holds Python objects, not only tensors; rejoinder reads only plain "
                "state dicts (weights_only) and will not unpickle arbitrary objects"
            ) from None
        raise RejoinderError(f"{path} is not a PyTorch pickle (it cannot be unpickled)") from None
    except Exception as e:
        raise RejoinderError(f"{path} is not a PyTorch pickle ({type(e).__name__}: {e})") from None
    if (
        not isinstance(raw, dict)
        or not raw
        or not all(isinstance(v, torch.Tensor) for v in raw.values())
    ):
        raise RejoinderError(f"{path} is not a state dict (a mapping from names to tensors)")

    state = {}
    for key, value in raw.items():
        key = key.removeprefix("module.")
        if not key.startswith(("transformer.", "lm_head.", *keep)):
            key = "transformer." + key
        if key == "lm_head.decoder.weight":
            key = "lm_head.weight"
        if key.endswith((".attn.bias", ".attn.masked_bias")) and value.dim() >= 2:
            continue  # causal-mask buffers, rebuilt by the model
        state[key] = value
    if "transformer.wte.weight" not in state or "transformer.wpe.weight" not in state:
        raise RejoinderError(
            f"{path} is not a DialoGPT/GPT-2 state dict: it has no token and position "
            f"embeddings (keys such as {sorted(raw)[:3]})"
        )
    if "lm_head.weight" not in state:
        state["lm_head.weight"] = state["transformer.wte.weight"]  # tied, as in GPT-2
    return state


def infer_size(state: dict) -> tuple[str | None, dict[str, int]]:
    """GPT-2's dimensions read off the weights; the size name when it is a known one."""
    vocab, n_embd = state["transformer.wte.weight"].shape
    n_positions = state["transformer.wpe.weight"].shape[0]
    layers = {int(m.group(1)) for k in state if (m := _BLOCK.match(k))}
    dims = {
        "n_layer": len(layers),
        "n_embd": n_embd,
        "vocab_size": vocab,
        "n_positions": n_positions,
    }
    for name, spec in SIZES.items():
        if spec["n_layer"] == dims["n_layer"] and spec["n_embd"] == n_embd:
            return name, dims
    return None, dims


def gpt2_from_state(path, state: dict, found: str | None, dims: dict, cls, what: str, **config):
    """A model of class `cls` (a GPT-2 head class) holding `state`, whose dimensions
    `infer_size` read, with GPT-2's tokenizer; refused when the weights do not fit.
    `what` names what the file should be, for the messages; `config` sets more of the
    GPT-2 config (e.g. num_labels)."""
    import torch

    from rejoinder.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    if dims["vocab_size"] < len(tok):
        raise RejoinderError(
            f"{path} has {dims['vocab_size']} token embeddings, fewer than GPT-2's {len(tok)}; "
            f"it is not {what}"
        )
    settings = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **config)
    gpt2 = gpt2_config(found or "tiny", dims["vocab_size"], dims["n_positions"], **settings)
    n_head = SIZES[found]["n_head"] if found else dims["n_embd"] // 64
    gpt2.n_layer, gpt2.n_embd, gpt2.n_head = dims["n_layer"], dims["n_embd"], n_head
    with torch.device("meta"):
        model = cls(gpt2)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise RejoinderError(f"{path} does not fit GPT-2's layout: {str(e)[:400]}") from None
    return model, tok


def import_dialogpt(
    pkl: str | os.PathLike,
    out: str | os.PathLike,
    size: str | None = None,
    direction: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Converts an original DialoGPT pickle into a checkpoint directory.

    Args:
        pkl: the pickle, e.g. medium_ft.pkl or small_reverse.pkl.
        out: the checkpoint directory to write.
        size: "small", "medium" or "large" (or a rejoinder size name); checked against
            the weights, which decide. None: read from the weights.
        direction: "forward", "reverse" (a backward model for MMI: its format reverses
            turns), or "auto": reverse when the file name says "reverse".
    """
    from transformers import GPT2LMHeadModel

    from rejoinder.formats import get_format

    if direction not in ("auto", "forward", "reverse"):
        raise RejoinderError(f"direction must be auto, forward or reverse, got {direction!r}")
    wanted = DIALOGPT_SIZES.get(size, size) if size else None
    if wanted is not None and wanted not in SIZES:
        raise RejoinderError(
            f"unknown size {size!r}; choose one of {', '.join([*DIALOGPT_SIZES, *SIZES])}"
        )
    state = read_state_dict(pkl)
    found, dims = infer_size(state)
    if wanted and found != wanted:
        raise RejoinderError(
            f"{pkl} holds a model with {dims['n_layer']} layers of width {dims['n_embd']}, "
            f"not size {size!r}; leave out --size to take the size from the file"
        )
    model, tok = gpt2_from_state(pkl, state, found, dims, GPT2LMHeadModel, "a DialoGPT model")
    model.tie_weights()
    reverse = direction == "reverse" or (
        direction == "auto" and "reverse" in Path(pkl).name.lower()
    )
    fmt = get_format("dialogpt", tok, reverse=reverse)
    made_by = {"command": "import-dialogpt", "source": str(pkl), "size": found, "reverse": reverse}
    return save_checkpoint(model, tok, fmt, out, made_by=made_by, overwrite=overwrite)
