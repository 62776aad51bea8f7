"""Text classifiers: the probability of each of a set of labels for a text in its context.

Two kinds of directory load as a `Classifier`:

- **rejoinder's own** (`rejoinder train --model.objective classify`): a causal LM trunk
  with a sequence-classification head of one output per label, in a checkpoint directory
  whose rejoinder.json says `"classifies": true`. It reads the context and the text in
  its conversation format, as a ranker does (`ranker.ranker_example`), and is read at
  the text's last token, so a reply is judged in its conversation.
- **any Hugging Face `…ForSequenceClassification` directory** (a toxicity model a user
  downloaded: BERT, RoBERTa, DistilBERT, a GPT-2 classifier, …) with its own tokenizer
  and label names (`config.id2label`). Such models were trained on texts alone, so they
  read the text alone; the context is not shown to them.

Probabilities are a softmax over the labels, a sigmoid per label where the config says
`multi_label_classification`, and a sigmoid for a model of one output. Which labels are
unsafe is the safety policy's business (`rejoinder.safety`), not the classifier's.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rejoinder.errors import RejoinderError

META_KEY = "classifies"
"""rejoinder.json's mark of a classifier trained here."""


def logits_at(model, batch: dict[str, Any], positions) -> Any:
    """Each row's logits of a sequence-classification model, read at `positions` (the
    text's last token; later tokens cannot change it: attention is causal).

    The trunk and the `score` layer are called directly, rather than the model's own
    pooling, which finds each row's end by looking for padding ids and so depends on the
    tokenizer's choice of padding."""
    import torch

    inputs = {
        k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")
    }
    hidden = model.base_model(**inputs).last_hidden_state
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return model.score(hidden[rows, positions]).float()


def classifier_model(init: str, labels: list[str], config=None, pad_token_id=None):
    """A sequence classifier of one output per label, named in `config.id2label`: from
    `config` (a size, randomly initialised) or from the checkpoint directory `init` (a
    generator's trunk with a new score layer)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    names = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {x: i for i, x in enumerate(labels)},
    }
    if config is not None:
        for key, value in names.items():
            setattr(config, key, value)
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # "newly initialized: score.weight" is the point here
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                init, ignore_mismatched_sizes=True, **names
            )
        finally:
            logging.set_verbosity(verbosity)
    if pad_token_id is not None:  # transformers' own pooling finds row ends by padding
        model.config.pad_token_id = pad_token_id
    return model


def label_names(config) -> list[str]:
    """The model's labels in output order (`id2label`; LABEL_i where it names none)."""
    n = getattr(config, "num_labels", None) or len(getattr(config, "id2label", {}) or {}) or 1
    names = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    return [names.get(i, f"LABEL_{i}") for i in range(n)]


class Classifier:
    """A loaded classifier: `labels`, and `probabilities(pairs)` for (context, text) pairs."""

    def __init__(self, model, tokenizer, labels: list[str], fmt=None, path: str | None = None):
        self.model, self.tokenizer, self.labels = model, tokenizer, labels
        self.format = fmt
        """The conversation format of a classifier trained here (None: texts alone)."""
        self.path = path
        config = model.config
        self.multi_label = getattr(config, "problem_type", None) == "multi_label_classification"
        self.max_tokens = _max_tokens(config, tokenizer)

    @property
    def reads_context(self) -> bool:
        return self.format is not None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | None = None) -> Classifier:
        """A classifier directory; any failure is one RejoinderError naming it."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise RejoinderError(
                f"classifier {path}: no such model directory (it needs config.json); train "
                "one with `rejoinder train --model.objective classify` or give a Hugging "
                "Face …ForSequenceClassification directory"
            )
        meta = _meta(path)
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise RejoinderError(f"classifier {path}: config.json is unreadable ({e})") from None
        architectures = config.get("architectures") or []
        if not (meta or {}).get(META_KEY) and not any(
            a.endswith("ForSequenceClassification") for a in architectures
        ):
            raise RejoinderError(
                f"classifier {path} is not a sequence classifier (its config names "
                f"{', '.join(architectures) or 'no architecture'}); give a directory of a "
                "…ForSequenceClassification model"
            )
        if (meta or {}).get(META_KEY):
            from rejoinder.modeling.checkpoint import load_checkpoint

            ck = load_checkpoint(path, device=device, ranker=True)
            return cls(ck.model, ck.tokenizer, label_names(ck.model.config), ck.format, str(path))
        return cls._hub(path, device)

    @classmethod
    def _hub(cls, path: Path, device: str | None) -> Classifier:
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(path))
            model = AutoModelForSequenceClassification.from_pretrained(
                str(path), dtype=torch.float32
            )
        except Exception as e:  # transformers raises many kinds for one cause
            raise RejoinderError(
                f"cannot load the classifier in {path}: {type(e).__name__}: {str(e)[:300]}"
            ) from None
        if tok.pad_token_id is None:  # GPT-2-like tokenizers have no padding token
            tok.pad_token = tok.eos_token or tok.unk_token
        if model.config.pad_token_id is None:  # its pooling finds row ends by padding
            model.config.pad_token_id = tok.pad_token_id
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device).eval()
        return cls(model, tok, label_names(model.config), None, str(path))

    def probabilities(
        self, pairs: Sequence[tuple[Any, str]], batch_size: int = 32
    ) -> list[list[float]]:
        """Each label's probability (in `labels` order) for each (context, text), batched
        longest first. An empty text gets every probability 0."""
        import torch

        logits = self.logits(pairs, batch_size)
        out = []
        for row in logits:
            if row is None:
                out.append([0.0] * len(self.labels))
            elif self.multi_label or len(row) == 1:
                out.append([1 / (1 + math.exp(-x)) if x > -50 else 0.0 for x in row])
            else:
                out.append(torch.softmax(torch.tensor(row), -1).tolist())
        return out

    def logits(self, pairs: Sequence[tuple[Any, str]], batch_size: int = 32) -> list:
        """The raw outputs for each (context, text); None for an empty text."""
        import torch

        said = [i for i, (_, t) in enumerate(pairs) if t.strip()]
        out: list = [None] * len(pairs)
        if not said:
            return out
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            if self.format is not None:
                self._format_logits(pairs, said, out, batch_size, device)
            else:
                self._text_logits(pairs, said, out, batch_size, device)
        return out

    def _format_logits(self, pairs, said, out, batch_size, device) -> None:
        import torch

        from rejoinder.modeling.ranker import ranker_example
        from rejoinder.padding import pad_batch

        budget = min(self.max_tokens, self.format.max_tokens or self.max_tokens)
        encoded = {i: ranker_example(self.format, *pairs[i], budget) for i in said}
        order = sorted(said, key=lambda i: -len(encoded[i][0].input_ids))
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = pad_batch([encoded[i][0] for i in chunk], pad, device=device)
            where = torch.tensor([encoded[i][1] for i in chunk], device=device)
            for i, row in zip(chunk, logits_at(self.model, batch, where).tolist(), strict=True):
                out[i] = row

    def _text_logits(self, pairs, said, out, batch_size, device) -> None:
        order = sorted(said, key=lambda i: -len(pairs[i][1]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = self.tokenizer(
                [pairs[i][1] for i in chunk],
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            ).to(device)
            if not _takes_types(self.model):
                batch.pop("token_type_ids", None)
            logits = self.model(**batch).logits.float()
            for i, row in zip(chunk, logits.tolist(), strict=True):
                out[i] = row


def _meta(path: Path) -> dict | None:
    file = path / "rejoinder.json"
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise RejoinderError(f"classifier {path}: rejoinder.json is unreadable ({e})") from None


def _max_tokens(config, tokenizer) -> int:
    from rejoinder.modeling.architectures import positions

    try:
        limit = positions(config)
    except Exception:  # an encoder family the architectures module does not name
        limit = getattr(config, "max_position_embeddings", None) or 512
    told = getattr(tokenizer, "model_max_length", None)
    return min(limit, told) if isinstance(told, int) and told < 1 << 20 else limit


def _takes_types(model) -> bool:
    import inspect

    return "token_type_ids" in inspect.signature(model.forward).parameters
