"""A loaded model's extra heads: LM heads that reply in another way, and classifiers.

The trunk is shared, never copied: the model for an extra LM head is a second
`transformers` model object whose base model is the same module and whose output layer
is that head.
"""

from __future__ import annotations

from typing import Any

from rejoinder.dialogue import as_context
from rejoinder.errors import RejoinderError


class Heads:
    """The extra heads of a checkpoint (none for most), ready for replies and labels."""

    def __init__(self, checkpoint, width: int):
        self.specs: list = []
        self.lm: dict[str, Any] = {}
        self.classifiers: dict[str, Any] = {}
        self._models: dict[str, Any] = {}
        if checkpoint.meta.get("heads"):  # heads.py imports torch: only when there are heads
            from rejoinder.modeling.heads import HeadSpec, load_heads

            self.specs = HeadSpec.parse(checkpoint.meta["heads"])
            if checkpoint.path:
                lm, cls = load_heads(checkpoint.path, self.specs, width)
                model = checkpoint.model  # None when another backend decodes: then the CPU
                device = model.device if model is not None else "cpu"
                self.lm = {n: m.to(device).eval() for n, m in lm.items()}
                self.classifiers = {n: m.to(device).eval() for n, m in cls.items()}

    @property
    def names(self) -> list[str]:
        """The LM heads replies can come from: "default" and any extra ones."""
        return ["default", *self.lm]

    def check(self, head: str | None) -> None:
        if head not in (None, "default") and head not in self.lm:
            raise RejoinderError(
                f"unknown head {head!r}; this model's LM heads are {', '.join(self.names)}"
            )

    def model_for(self, model, head: str):
        """`model` with extra LM head `head` as its output layer, sharing everything else."""
        self.check(head)
        if head not in self._models:
            import torch

            with torch.device("meta"):  # no weights are allocated: they are all replaced
                twin = type(model)(model.config)
            setattr(twin, model.base_model_prefix, model.base_model)
            twin.set_output_embeddings(self.lm[head])
            twin.generation_config = model.generation_config
            self._models[head] = twin.eval()
        return self._models[head]

    def classify(self, model, fmt, max_tokens: int, context: Any, response: str, head: str):
        """The probability of each label of classification head `head` for `response`,
        read from the hidden state at the end of the response, as it was trained."""
        import torch

        if head not in self.classifiers:
            names = ", ".join(self.classifiers) or "none"
            raise RejoinderError(f"unknown classification head {head!r}; this model has: {names}")
        reply = as_context([response])
        if len(reply) != 1:
            raise RejoinderError("the response to classify is empty")
        enc = fmt.training_example([*as_context(context), *reply], "last", max_tokens)
        end = enc.turn_spans[-1][1] - 1
        batch = {"input_ids": torch.tensor([enc.input_ids], device=model.device)}
        if enc.token_type_ids is not None:
            batch["token_type_ids"] = torch.tensor([enc.token_type_ids], device=model.device)
        with torch.inference_mode():
            hidden = model.base_model(**batch).last_hidden_state[0, end]  # (C,)
            probs = torch.softmax(self.classifiers[head](hidden).float(), -1).tolist()
        spec = next(h for h in self.specs if h.name == head)
        return dict(sorted(zip(spec.labels, probs, strict=True), key=lambda kv: -kv[1]))

    def writer(self):
        """What save_checkpoint calls to write the heads beside the weights (None: none)."""
        if not self.specs:
            return None
        from rejoinder.modeling.heads import HeadsHolder, save_heads

        holder = HeadsHolder(self.lm, self.classifiers)
        return lambda tmp: save_heads(holder, tmp)
