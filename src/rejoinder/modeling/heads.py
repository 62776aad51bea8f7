"""Several heads on one GPT-2 trunk (hard parameter sharing).

Besides GPT-2's own LM head, a model can carry extra LM heads, each trained on the
dialogues whose `column` (a key of the dialogue's meta, e.g. "style") equals `value`,
and classification heads that predict a label of the response (e.g. its `emotion` or
dialog `act`) from the hidden state at the response's end. The trunk and the base LM
head stay a plain `GPT2LMHeadModel`, which `transformers` loads by itself; the extra
heads live in `heads.safetensors` beside it, described in rejoinder.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rejoinder.errors import RejoinderError
from rejoinder.formats import IGNORE
from rejoinder.modeling.lora import unwrap
from rejoinder.modeling.loss import causal_lm_loss

HEADS_FILE = "heads.safetensors"
KINDS = ("lm", "classify")


@dataclass
class HeadSpec:
    """One extra head, as `--model.heads` declares it."""

    name: str
    kind: str = "lm"
    """lm: another kind of reply; classify: a label of the response."""
    column: str = "style"
    """lm: the dialogue meta key to match; classify: the response turn's label."""
    value: str | None = None
    """lm: the value of `column` whose dialogues this head learns (default: the name)."""
    weight: float = 1.0
    """The weight of this head's loss."""
    labels: list[str] = field(default_factory=list)
    """classify: the label names, found in the training data when not given."""

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise RejoinderError(
                f"a head needs a simple name (letters, digits, - or _), got {self.name!r}"
            )
        if self.name == "default":
            raise RejoinderError("'default' is the base LM head's name; choose another")
        if self.kind not in KINDS:
            raise RejoinderError(
                f"head {self.name}: kind must be lm or classify, got {self.kind!r}"
            )
        if self.kind == "lm" and self.value is None:
            self.value = self.name
        if self.weight < 0:
            raise RejoinderError(f"head {self.name}: weight must not be negative")

    @classmethod
    def parse(cls, specs: list[dict[str, Any]] | None) -> list[HeadSpec]:
        heads = []
        for spec in specs or []:
            if not isinstance(spec, dict) or "name" not in spec:
                raise RejoinderError(f"each head is a mapping with at least a name, got {spec!r}")
            unknown = set(spec) - set(cls.__dataclass_fields__)
            if unknown:
                raise RejoinderError(f"head {spec['name']}: unknown keys {sorted(unknown)}")
            heads.append(cls(**spec))
        names = [h.name for h in heads]
        if len(set(names)) != len(names):
            raise RejoinderError(f"head names must differ, got {names}")
        return heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MultiHeadLM(nn.Module):
    """A GPT2LMHeadModel (`base`) with extra LM heads and classification heads."""

    def __init__(self, base: nn.Module, heads: list[HeadSpec]):
        super().__init__()
        self.base = base
        self.specs = heads
        vocab, width = unwrap(base).get_output_embeddings().weight.shape
        self.lm_heads = nn.ModuleDict()
        self.classifiers = nn.ModuleDict()
        for h in heads:
            if h.kind == "lm":
                layer = nn.Linear(width, vocab, bias=False)
                layer.weight.data.copy_(unwrap(base).get_output_embeddings().weight.data)
                self.lm_heads[h.name] = layer
            else:
                if not h.labels:
                    raise RejoinderError(f"classification head {h.name} has no labels")
                self.classifiers[h.name] = nn.Linear(width, len(h.labels))
        self.lm_names = ["default", *self.lm_heads]
        self.config = base.config

    def forward(
        self,
        input_ids,
        attention_mask,
        labels,
        token_type_ids=None,
        head_ids=None,
        cls_pos=None,
        **cls_labels,
    ):
        """The weighted loss: LM loss per token over every head, plus the classifiers'."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        model = unwrap(self.base)  # the transformers model (a PEFT model wraps it for LoRA)
        hidden = model.base_model(**inputs).last_hidden_state  # (B, T, C)
        total = hidden.new_zeros((), dtype=torch.float32)
        count = (labels[:, 1:] != IGNORE).sum().clamp(min=1)
        for i, name in enumerate(self.lm_names):
            rows = (head_ids == i).nonzero().squeeze(-1) if head_ids is not None else None
            if rows is not None and rows.numel() == 0:
                continue
            h = hidden if rows is None else hidden[rows]
            t = labels if rows is None else labels[rows]
            layer = model.get_output_embeddings() if name == "default" else self.lm_heads[name]
            total = total + causal_lm_loss(h, layer.weight, layer.bias, t)[0]
            if rows is None:
                break
        loss = total / count
        for spec in self.specs:
            if spec.kind != "classify" or f"cls_{spec.name}" not in cls_labels:
                continue
            y = cls_labels[f"cls_{spec.name}"]
            if (y == IGNORE).all():
                continue
            at = hidden[torch.arange(len(hidden), device=hidden.device), cls_pos]  # (B, C)
            logits = self.classifiers[spec.name](at)
            loss = loss + spec.weight * nn.functional.cross_entropy(
                logits.float(), y, ignore_index=IGNORE
            )
        return loss


@dataclass
class HeadsHolder:
    """Loaded heads in the shape `save_heads` reads (lm_heads, classifiers)."""

    lm_heads: dict
    classifiers: dict


def save_heads(model: MultiHeadLM | HeadsHolder, out: str | Path) -> None:
    from safetensors.torch import save_file

    tensors = {f"lm.{n}.weight": m.weight for n, m in model.lm_heads.items()}
    for n, m in model.classifiers.items():
        tensors[f"classify.{n}.weight"], tensors[f"classify.{n}.bias"] = m.weight, m.bias
    if tensors:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
            str(Path(out) / HEADS_FILE),
        )


def load_heads(path: str | Path, specs: list[HeadSpec], width: int) -> tuple[dict, dict]:
    """The extra heads of a checkpoint: ({name: lm Linear}, {name: classifier Linear})."""
    from safetensors.torch import load_file

    file = Path(path) / HEADS_FILE
    if not specs:
        return {}, {}
    if not file.is_file():
        raise RejoinderError(f"rejoinder.json of {path} lists heads but {HEADS_FILE} is missing")
    tensors = load_file(str(file))
    lm, cls = {}, {}
    for h in specs:
        try:
            if h.kind == "lm":
                w = tensors[f"lm.{h.name}.weight"]
                layer = nn.Linear(width, w.shape[0], bias=False)
                layer.weight.data.copy_(w)
                lm[h.name] = layer
            else:
                w, b = tensors[f"classify.{h.name}.weight"], tensors[f"classify.{h.name}.bias"]
                layer = nn.Linear(width, w.shape[0])
                layer.weight.data.copy_(w)
                layer.bias.data.copy_(b)
                cls[h.name] = layer
        except KeyError:
            raise RejoinderError(
                f"{file} has no weights for head {h.name}; the checkpoint is corrupt"
            ) from None
    return lm, cls
