"""Model families: random models of a size, and what every family's config says alike.

GPT-2 is the default and the only family whose names (`n_positions`, `n_embd`, `wte`)
appear in rejoinder, and only here, in `dialogpt.py` and in GPT-2's own code paths.
Everything else reads a config through `positions`, `width` and `takes_token_types`.

>>> model_config("llama", "tiny", vocab_size=100).num_hidden_layers
2
>>> positions(model_config("gpt-neox", "tiny", vocab_size=100))
1024
"""

from __future__ import annotations

import math
import re
from typing import Any

from rejoinder.errors import RejoinderError

SIZES: dict[str, dict[str, int]] = {
    # A two-layer model for tests and demos: the embeddings are most of it.
    "tiny": {"n_layer": 2, "n_embd": 32, "n_head": 2},
    # Sized to train on a laptop CPU in minutes.
    "small": {"n_layer": 4, "n_embd": 256, "n_head": 4},
    # GPT-2's sizes, which are DialoGPT's small, medium and large.
    "124M": {"n_layer": 12, "n_embd": 768, "n_head": 12},
    "345M": {"n_layer": 24, "n_embd": 1024, "n_head": 16},
    "762M": {"n_layer": 36, "n_embd": 1280, "n_head": 20},
}
ARCHS = ("gpt2", "llama", "qwen2", "mistral", "gpt-neox")
"""The families `rejoinder init --arch` and `--model.arch` make from a size."""
FAST_GELU = "gelu_pytorch_tanh"


def is_size(name: str) -> bool:
    """Whether `name` names a size (rather than a checkpoint to start from)."""
    return name in SIZES or re.fullmatch(r"\d+x\d+", name) is not None


def size_dims(size: str) -> dict[str, int]:
    """n_layer, n_embd and n_head of a named size, or of "LxD" (L layers, width D, heads
    of 64 dimensions, e.g. "6x192")."""
    if size in SIZES:
        return SIZES[size]
    m = re.fullmatch(r"(\d+)x(\d+)", size)
    if not m or int(m[1]) < 1 or int(m[2]) < 64 or int(m[2]) % 64:
        raise RejoinderError(
            f"unknown size {size!r}; choose one of {', '.join(SIZES)}, or LxD: L layers of "
            "width D, a multiple of 64 (e.g. 6x192)"
        )
    return {"n_layer": int(m[1]), "n_embd": int(m[2]), "n_head": int(m[2]) // 64}


def gpt2_config(size: str, vocab_size: int, n_positions: int = 1024, **overrides):
    """A GPT2Config of a named size (see SIZES) for a vocabulary of `vocab_size`.

    The activation is GPT-2's own tanh GELU, computed by PyTorch's fused kernel
    ("gelu_pytorch_tanh") rather than transformers' five-operation "gelu_new": the same
    function in one kernel instead of five, forward and backward.
    """
    from transformers import GPT2Config

    settings = {"activation_function": FAST_GELU, **overrides}
    return GPT2Config(vocab_size=vocab_size, n_positions=n_positions, **size_dims(size), **settings)


def model_config(
    arch: str,
    size: str,
    vocab_size: int,
    positions: int = 1024,
    dropout: float | None = None,
    **overrides: Any,
):
    """The config of a random model of family `arch` (see ARCHS) and `size`.

    Llama, Qwen2 and Mistral get a SwiGLU feed-forward of about 8/3 of the width and tied
    embeddings (as small models of those families have); GPT-NeoX its usual 4x width,
    rotary embeddings on a quarter of each head and untied embeddings.
    """
    if arch not in ARCHS:
        raise RejoinderError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    dims = size_dims(size)
    if dropout is not None:
        overrides = {**dropout_settings(arch, dropout), **overrides}
    if arch == "gpt2":
        return gpt2_config(size, vocab_size, positions, **overrides)
    width, layers, heads = dims["n_embd"], dims["n_layer"], dims["n_head"]
    common = dict(
        vocab_size=vocab_size,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=positions,
    )
    if arch == "gpt-neox":
        from transformers import GPTNeoXConfig

        return GPTNeoXConfig(
            **common, intermediate_size=4 * width, rotary_pct=0.25, tie_word_embeddings=False,
            **overrides,
        )  # fmt: skip
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    kind = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}[arch]
    ffn = 64 * math.ceil(8 * width / 3 / 64)
    return kind(
        **common, intermediate_size=ffn, num_key_value_heads=heads, tie_word_embeddings=True,
        **overrides,
    )  # fmt: skip


def dropout_settings(arch: str, p: float) -> dict[str, float]:
    """The config fields that set dropout to `p` in family `arch`."""
    if arch == "gpt2":
        return {"resid_pdrop": p, "embd_pdrop": p, "attn_pdrop": p}
    if arch == "gpt-neox":
        return {"hidden_dropout": p, "attention_dropout": p}
    return {"attention_dropout": p}


def arch_of(config) -> str:
    """The family of a loaded model's config ("llama", "gpt2", …; others by model_type)."""
    kind = getattr(config, "model_type", None) or "unknown"
    return "gpt-neox" if kind == "gpt_neox" else kind


def positions(config) -> int:
    """The most tokens a model of this config reads at once."""
    value = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if not value:
        raise RejoinderError(
            f"the {arch_of(config)} config names no maximum number of positions "
            "(max_position_embeddings); this model family is not supported"
        )
    return int(value)


def width(config) -> int:
    """The size of a model's hidden states."""
    return int(getattr(config, "hidden_size", None) or config.n_embd)


def takes_token_types(config) -> bool:
    """Whether the model adds token type embeddings to its input (GPT-2 does; the newer
    families take no token types, so the sep and speaker formats are GPT-2's only)."""
    return arch_of(config) == "gpt2"


def learnt_positions(model) -> list:
    """The parameters of a model's learnt position embeddings (GPT-2's `wpe`; none for
    the rotary families), which weight decay leaves alone."""
    from transformers import GPT2Model

    # Looked for among the modules: heads and LoRA wrap the trunk.
    return [p for m in model.modules() if isinstance(m, GPT2Model) for p in m.wpe.parameters()]


def use_fast_gelu(model) -> None:
    """Swaps GPT-2's "gelu_new" for the fused kernel of the same function, in place.

    Original GPT-2 and DialoGPT checkpoints name "gelu_new"; the two differ only by
    float rounding, and the fused one makes a training step cheaper.
    """
    from transformers.activations import ACT2FN

    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "gpt2" or config.activation_function != "gelu_new":
        return
    for module in model.modules():
        if hasattr(module, "act") and hasattr(module, "c_fc"):
            module.act = ACT2FN[FAST_GELU]
    config.activation_function = FAST_GELU
