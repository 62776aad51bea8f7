"""LoRA through `peft`: low-rank adapters on a frozen model, saved small, merged on demand.

A LoRA run trains only the adapters (and, when asked, the embeddings and output layer).
Its export is an adapter directory: `adapter_config.json`, `adapter_model.safetensors`,
the tokenizer and `rejoinder.json`, which names the base model. Every command that takes
a checkpoint takes such a directory too: the base is loaded and the adapter merged into
it. `rejoinder export --merge` writes the merged model as a plain directory instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rejoinder.errors import RejoinderError

ADAPTER_FILE = "adapter_config.json"

DEFAULT_TARGETS = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt-neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}
DEFAULT_TARGETS["qwen2"] = DEFAULT_TARGETS["mistral"] = DEFAULT_TARGETS["llama"]


@dataclass
class LoraOptions:
    """How a model is adapted (`--model.lora.*`)."""

    r: int = 16
    """The rank of each adapter."""
    alpha: float = 32.0
    """The adapters' scale is alpha / r."""
    dropout: float = 0.05
    """Dropout on the adapters' input."""
    target_modules: list[str] | None = None
    """Names of the layers to adapt (default: the family's attention and feed-forward
    layers, e.g. q_proj … down_proj for Llama, c_attn, c_proj, c_fc for GPT-2)."""
    train_embeddings: bool = False
    """Also train the input embeddings and the output layer, whole (tied ones become two)."""
    bits: int | None = None
    """4 or 8: QLoRA, the frozen model quantised by bitsandbytes (needs a CUDA GPU)."""

    def __post_init__(self):
        if self.r < 1:
            raise RejoinderError(f"--model.lora.r must be at least 1, got {self.r}")
        if not self.alpha > 0:
            raise RejoinderError(f"--model.lora.alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise RejoinderError(f"--model.lora.dropout must be in [0, 1), got {self.dropout}")
        if self.bits not in (None, 4, 8):
            raise RejoinderError(f"--model.lora.bits is 4 or 8 (QLoRA), got {self.bits}")

    @classmethod
    def of(cls, value: Any) -> LoraOptions | None:
        """Options from what the command line or a config file gives (None: no LoRA)."""
        if value is None or isinstance(value, LoraOptions):
            return value
        if isinstance(value, dict):
            return cls(**value)
        raise RejoinderError(f"--model.lora takes LoRA options, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _peft():
    import warnings

    try:
        import peft
    except ImportError:
        raise RejoinderError("LoRA needs peft: pip install 'rejoinder[lora]'") from None
    # peft asks transformers a question transformers 5 has renamed: nothing to act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    return peft


def unwrap(model):
    """The `transformers` model inside a PEFT model (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def check_bits(options: LoraOptions) -> None:
    """Refuses QLoRA where bitsandbytes has no working backend (never a silent fallback)."""
    if options.bits is None:
        return
    import torch

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise RejoinderError(
            f"--model.lora.bits {options.bits} needs bitsandbytes: pip install bitsandbytes"
        ) from None
    if not torch.cuda.is_available():
        raise RejoinderError(
            f"--model.lora.bits {options.bits} quantises the model with bitsandbytes, which "
            "needs a CUDA GPU; there is none here. Leave --model.lora.bits out for LoRA in "
            "full precision"
        )


def load_quantized(path: str, bits: int):
    """The model in `path` with its weights quantised by bitsandbytes (QLoRA's frozen
    base), on the current GPU, made ready for training adapters on it."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    peft = _peft()
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quantization = BitsAndBytesConfig(
        load_in_4bit=bits == 4,
        load_in_8bit=bits == 8,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute,
    )
    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=quantization, device_map={"": torch.cuda.current_device()}
    )
    return peft.prepare_model_for_kbit_training(model)


def apply_lora(model, options: LoraOptions, arch: str):
    """`model` with LoRA adapters on its target layers; only they (and, with
    train_embeddings, the embeddings and output layer) are trainable."""
    peft = _peft()
    targets = options.target_modules or DEFAULT_TARGETS.get(arch)
    if not targets:
        raise RejoinderError(
            f"there are no default LoRA targets for the {arch} family; name the layers with "
            "--model.lora.target_modules '[q_proj, v_proj]'"
        )
    names = {m: n.rsplit(".", 1)[-1] for n, m in model.named_modules()}
    embeddings = [names[model.get_input_embeddings()], names[model.get_output_embeddings()]]
    config = peft.LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(targets),
        modules_to_save=list(dict.fromkeys(embeddings)) if options.train_embeddings else None,
        fan_in_fan_out=arch == "gpt2",  # GPT-2's layers are Conv1D: weights transposed
        task_type="CAUSAL_LM",
    )
    try:
        return peft.get_peft_model(model, config)
    except ValueError as e:  # peft's NoMatchingPeftModuleError among them
        layers = sorted({n for m, n in names.items() if isinstance(m, _linear_kinds())})
        raise RejoinderError(
            f"LoRA targets {list(targets)} match no layer of this {arch} model ({e}); its "
            f"layers are named {', '.join(layers)}"
        ) from None


def _linear_kinds() -> tuple[type, ...]:
    import torch
    from transformers.pytorch_utils import Conv1D

    return (torch.nn.Linear, Conv1D)


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_FILE).is_file()


def adapter_base(path: Path, meta: dict[str, Any] | None) -> str:
    """The base model an adapter directory names, checked to be there."""
    base = ((meta or {}).get("lora") or {}).get("base")
    if not base:
        try:
            base = json.loads((path / ADAPTER_FILE).read_text()).get("base_model_name_or_path")
        except (OSError, ValueError):
            base = None
    if not base:
        raise RejoinderError(
            f"the adapter in {path} names no base model (rejoinder.json lora.base, or "
            "base_model_name_or_path in adapter_config.json); add it, or export the run "
            "with --merge"
        )
    candidate = Path(base) if Path(base).is_absolute() else path / base
    if candidate.exists():
        return str(candidate)
    if Path(base).exists():
        return base
    if "/" in base and not Path(base).is_absolute():
        return base  # a hub name: loading says whether it can be fetched
    raise RejoinderError(
        f"the adapter in {path} needs its base model {base}, which is not there; put the "
        "base back, or load a merged export (rejoinder export --merge)"
    )


def merge(model, path: str | Path):
    """The base `model` with the adapter in `path` merged into its weights."""
    peft = _peft()
    try:
        adapted = peft.PeftModel.from_pretrained(model, str(path))
    except Exception as e:  # a corrupt or mismatched adapter
        raise RejoinderError(
            f"cannot put the adapter in {path} on its base model ({type(e).__name__}: "
            f"{str(e)[:200]}); the adapter is corrupt or made for another model"
        ) from None
    return adapted.merge_and_unload()
