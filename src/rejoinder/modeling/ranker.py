"""Reply rankers: a scalar score of how well a reply fits its context, DialogRPT's way.

A ranker is a `transformers` sequence-classification model with one output (GPT-2's
`GPT2ForSequenceClassification`, or any family's) in a checkpoint directory whose
rejoinder.json says `"ranks": true`. It reads the context and the reply in its
conversation format and is scored at the reply's last token: for the DialoGPT format,
the context turns each followed by end-of-text and the reply without one, as DialogRPT
(Gao et al., 2020) does. The score is that logit through a sigmoid: the probability
that the reply is the preferred one. Training (`rejoinder train --model.objective
rank`) maximises the probability that the chosen reply of a pair outscores the rejected
one; `import_dialogrpt` converts the original DialogRPT checkpoints.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rejoinder.errors import RejoinderError


def score_at(model, batch: dict[str, Any], positions) -> Any:
    """The ranker's logit of each row of `batch`, read at `positions` (the reply's last
    token of each row; the tokens after it, if any, cannot change it: attention is causal).

    The trunk and the one-output `score` layer are called directly, rather than the
    model's own pooling, which finds each row's end by looking for padding ids and so
    depends on the tokenizer's choice of padding.
    """
    import torch

    inputs = {
        k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")
    }
    hidden = model.base_model(**inputs).last_hidden_state
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return model.score(hidden[rows, positions]).squeeze(-1).float()


def ranker_example(fmt, context: Any, reply: str, max_tokens: int | None = None):
    """The input of (context, reply) for a ranker and the position its score is read at:
    the format's training example of the dialogue ending in `reply`, whose last token
    before the end-of-turn marker is the reply's last."""
    from rejoinder.dialogue import Turn, as_context

    enc = fmt.training_example([*as_context(context), Turn(reply)], "last", max_tokens)
    return enc, enc.turn_spans[-1][1] - 2


class Ranker:
    """A loaded ranker: `scores(context, replies)` and `score_pairs(pairs)`."""

    def __init__(self, checkpoint):
        self.checkpoint = checkpoint
        self.model, self.tokenizer, self.format = (
            checkpoint.model,
            checkpoint.tokenizer,
            checkpoint.format,
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | None = None) -> Ranker:
        """A ranker checkpoint directory (trained, imported from DialogRPT, or a hub
        `GPT2ForSequenceClassification` directory such as DialogRPT's)."""
        from rejoinder.modeling.checkpoint import load_checkpoint

        ck = load_checkpoint(path, device=device, ranker=True)
        labels = getattr(ck.model.config, "num_labels", 1)
        if labels != 1 or ck.meta.get("classifies"):
            raise RejoinderError(
                f"{path} is a text classifier ({labels} labels), not a reply ranker (which "
                "has one score); use it as --safety-classifier, or give a ranker (`rejoinder "
                "train --model.objective rank`)"
            )
        return cls(ck)

    @property
    def path(self) -> str | None:
        return self.checkpoint.path

    def scores(self, context: Any, replies: Sequence[str], batch_size: int = 16) -> list[float]:
        """The probability that each reply is the preferred one, for one context."""
        return self.score_pairs([(context, r) for r in replies], batch_size)

    def score_pairs(self, pairs: Sequence[tuple[Any, str]], batch_size: int = 16) -> list[float]:
        """The score of each (context, reply), in order; batched, longest first."""
        import torch

        return [float(x) for x in torch.sigmoid(torch.tensor(self.logits(pairs, batch_size)))]

    def logits(self, pairs: Sequence[tuple[Any, str]], batch_size: int = 16) -> list[float]:
        """The raw scores (before the sigmoid) of each (context, reply); an empty reply
        (a model may give one) scores -inf: it is never the preferred one."""
        import torch

        from rejoinder.padding import pad_batch

        budget = min(self.checkpoint.max_positions, self.format.max_tokens or 1 << 30)
        out: list[float] = [-math.inf] * len(pairs)
        said = [i for i, (_, r) in enumerate(pairs) if r.strip()]
        encoded = {i: ranker_example(self.format, *pairs[i], budget) for i in said}
        order = sorted(said, key=lambda i: -len(encoded[i][0].input_ids))
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = pad_batch([encoded[i][0] for i in chunk], pad, device=device)
                where = torch.tensor([encoded[i][1] for i in chunk], device=device)
                for i, value in zip(
                    chunk, score_at(self.model, batch, where).tolist(), strict=True
                ):
                    out[i] = value
        return out


def ranker_model(init: str, config=None):
    """A one-output sequence-classification model: from `config` (a size, randomly
    initialised) or from the checkpoint directory `init` (a generator's trunk with a new
    score layer, or a ranker as it is)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    if config is not None:
        config.num_labels = 1
        return AutoModelForSequenceClassification.from_config(config)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # "newly initialized: score.weight" is the point here
    try:
        return AutoModelForSequenceClassification.from_pretrained(init, num_labels=1)
    finally:
        logging.set_verbosity(verbosity)


def import_dialogrpt(
    pth: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Converts an original DialogRPT checkpoint (`updown.pth`, `width.pth`, `depth.pth`,
    `human_vs_rand.pth`, `human_vs_machine.pth`) into a ranker directory.

    They are state dicts of a GPT-2 trunk (`transformer.*`) and `score.weight`
    (1 x width), read with weights_only: anything but tensors is refused.
    """
    from transformers import GPT2ForSequenceClassification

    from rejoinder.formats import get_format
    from rejoinder.modeling.checkpoint import save_checkpoint
    from rejoinder.modeling.dialogpt import gpt2_from_state, infer_size, read_state_dict

    state = read_state_dict(pth, keep=("score.",))
    score = state.get("score.weight")
    if score is None or score.dim() != 2 or score.shape[0] != 1:
        raise RejoinderError(
            f"{pth} is not a DialogRPT ranker: it has no score.weight of shape 1 x width "
            "(a DialoGPT generator pickle imports with `rejoinder import-dialogpt`)"
        )
    state = {k: v for k, v in state.items() if not k.startswith("lm_head.")}
    found, dims = infer_size(state)
    if score.shape[1] != dims["n_embd"]:
        raise RejoinderError(
            f"{pth}: score.weight is 1 x {score.shape[1]} but the trunk is {dims['n_embd']} "
            "wide; the file is corrupt"
        )
    model, tok = gpt2_from_state(
        pth, state, found, dims, GPT2ForSequenceClassification, "a DialogRPT ranker", num_labels=1
    )
    model.config.pad_token_id = tok.eos_token_id  # as DialogRPT's hub directories have it
    made_by = {"command": "import-dialogrpt", "source": str(pth), "size": found}
    fmt = get_format("dialogpt", tok)
    return save_checkpoint(model, tok, fmt, out, made_by=made_by, overwrite=overwrite, ranks=True)
