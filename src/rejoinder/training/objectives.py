"""What a run learns (`--model.objective`): each objective is a small class whose
`loss(module, batch)` gives the batch's loss and the figures logged beside it.

- `lm`: the causal LM loss on the dialogues' labelled turns (a chunk of positions at a
  time through the output layer, or the model's own loss; extra heads add theirs);
- `rank`: a reply ranker on a pairs dataset, DialogRPT's loss: the probability that the
  chosen reply outscores the rejected one;
- `dpo`: Direct Preference Optimization of a generator on a pairs dataset, against a
  frozen reference (`DialogueLM.reference_logprobs`);
- `kto`: Kahneman-Tversky Optimization of a generator on unpaired feedback (a pairs
  dataset is read as unpaired rows too), against the same frozen reference as dpo;
- `classify`: a text classifier on a labels dataset (a safety classifier, say): the
  cross-entropy of its logits, read at the text's last token, against the text's label.

A new objective is one more class here and its name in `OBJECTIVES`.
"""

from __future__ import annotations

import torch

from rejoinder.formats import IGNORE
from rejoinder.modeling.lora import unwrap
from rejoinder.modeling.loss import dpo_loss, kto_kl, kto_loss, mean_lm_loss, sequence_logprobs


class Objective:
    """How a batch becomes a loss; `data`: the kind of dataset it learns from (dialogues,
    pairs: chosen rows, then rejected rows, labels, or unpaired: the rated replies, then
    as many mismatched rows)."""

    name = ""
    data = "dialogues"

    @property
    def pairs(self) -> bool:
        return self.data == "pairs"

    def loss(self, module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def count(self, batch: dict) -> int:
        """What a batch's loss and figures are the mean of: labelled tokens, pairs or texts."""
        if self.data in ("pairs", "unpaired"):
            return batch["input_ids"].shape[0] // 2
        if self.data == "labels":
            return batch["input_ids"].shape[0]
        return max(int((batch["labels"][:, 1:] != IGNORE).sum()), 1)


class LanguageModel(Objective):
    name = "lm"

    def loss(self, module, batch):
        model = module.model
        if hasattr(model, "specs"):  # extra heads: their losses join the LM's
            return model(**batch), {}
        if not module.hparams.chunked_loss:
            return model(**batch).loss, {}
        return mean_lm_loss(unwrap(model), batch), {}


class Rank(Objective):
    name = "rank"
    data = "pairs"

    def loss(self, module, batch):
        from rejoinder.modeling.ranker import score_at

        scores = score_at(module.model, batch, batch["score_pos"])
        n = len(scores) // 2
        diff = scores[:n] - scores[n:]
        return -torch.nn.functional.logsigmoid(diff).mean(), {"acc": (diff > 0).float().mean()}


class DPO(Objective):
    name = "dpo"
    data = "pairs"

    def loss(self, module, batch):
        reference = module.reference_logprobs(batch)
        loss, policy, ref = dpo_loss(unwrap(module.model), batch, reference, module.hparams.beta)
        return loss, {"acc": (policy > ref).float().mean(), "margin": (policy - ref).mean()}


class KTO(Objective):
    """KTO (Ethayarajh et al., 2024), as TRL's KTOTrainer computes it: each reply's
    log-ratio r to the reference against z0, the batch's KL estimate from its mismatched
    rows (no gradient, clamped at 0); see `modeling.loss.kto_loss`. Figures: the mean
    reward beta·r of desirable and of undesirable replies (where the batch has them),
    their margin, and kl (z0)."""

    name = "kto"
    data = "unpaired"

    def loss(self, module, batch):
        h = module.hparams
        n = batch["input_ids"].shape[0] // 2
        rows = {k: v[:n] for k, v in batch.items() if k != "desirable"}
        shifted = {k: v[n:] for k, v in batch.items() if k != "desirable"}
        policy = unwrap(module.model)
        kl = kto_kl(sequence_logprobs(policy, shifted), module.reference_logprobs(shifted))
        reference = module.reference_logprobs(rows)
        rows["desirable"] = batch["desirable"]
        loss, r = kto_loss(
            policy, rows, reference, kl, h.beta, h.desirable_weight, h.undesirable_weight
        )
        good, rewards = batch["desirable"], h.beta * r
        figures = {"kl": kl}
        if good.any():
            figures["rewards_desirable"] = rewards[good].mean()
        if not good.all():
            figures["rewards_undesirable"] = rewards[~good].mean()
        if len(figures) == 3:
            figures["margin"] = figures["rewards_desirable"] - figures["rewards_undesirable"]
        return loss, figures


class Classify(Objective):
    name = "classify"
    data = "labels"

    def loss(self, module, batch):
        from rejoinder.modeling.classifier import logits_at

        logits = logits_at(module.model, batch, batch["cls_pos"])  # (B, labels)
        target = batch["class_ids"]
        loss = torch.nn.functional.cross_entropy(logits, target)
        return loss, {"acc": (logits.argmax(-1) == target).float().mean()}


OBJECTIVES: dict[str, Objective] = {
    o.name: o for o in (LanguageModel(), Rank(), DPO(), KTO(), Classify())
}
