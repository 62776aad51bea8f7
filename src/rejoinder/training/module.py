"""The LightningModule: a thin shell that trains a plain `transformers` model (any family):
its loss is an objective's (`objectives`), its model made by `factory.build_model`."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from rejoinder.errors import RejoinderError
from rejoinder.formats import LOSS_ON, Format
from rejoinder.modeling.lora import LoraOptions, unwrap
from rejoinder.modeling.loss import sequence_logprobs
from rejoinder.training.objectives import OBJECTIVES

SCHEDULES = ("cosine", "linear", "constant", "noam")


class DialogueLM(L.LightningModule):
    """A dialogue model (GPT-2 or any `transformers` causal LM) and how to train it."""

    def __init__(
        self,
        init: str = "small",
        tokenizer: str = "gpt2",
        format: str | None = None,
        loss_on: str = "responses",
        reverse: bool = False,
        max_tokens: int = 512,
        lr: float = 5e-4,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        schedule: str = "cosine",
        min_lr_ratio: float = 0.1,
        dropout: float | None = None,
        heads: list[dict[str, Any]] | None = None,
        anneal_minutes: float | None = None,
        chunked_loss: bool = True,
        arch: str = "gpt2",
        lora: LoraOptions | None = None,
        objective: str = "lm",
        beta: float = 0.1,
        reference: str | None = None,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0,
    ):
        """
        Args:
            init: a checkpoint directory to fine-tune (GPT-2, an imported DialoGPT, a
                rejoinder checkpoint or adapter, any Hugging Face causal LM directory) or
                a size to start from scratch (tiny, small, 124M, 345M, 762M, or LxD
                such as 6x192).
            tokenizer: from scratch only: gpt2, bpe:N (learnt from the training split)
                or char.
            format: the conversation format (default: the checkpoint's, else dialogpt).
            loss_on: responses (the assistant's turns, never the user's; turns whose
                speaker names no role: every turn after the first, or in a chat
                template those that alternate to the assistant), last (the latest turn
                that is not the user's), or all.
            reverse: train the backward model of MMI: the same data, turns reversed.
            max_tokens: tokens per training example; longer dialogues are windowed.
            lr: peak learning rate (AdamW).
            weight_decay: AdamW weight decay, never on biases, LayerNorm or embeddings'
                positions.
            betas: AdamW betas.
            warmup_steps: linear warm-up steps.
            schedule: cosine or linear decay to min_lr_ratio * lr, constant, or noam
                (DialoGPT's: lr * min(step / warmup^1.5, 1 / sqrt(step)) * sqrt(warmup)).
            min_lr_ratio: where cosine and linear decay end, as a fraction of lr.
            dropout: overrides the model's dropout (GPT-2's is 0.1).
            heads: extra heads on the trunk, e.g. [{name: polite, kind: lm, column:
                style}] (an LM head for the dialogues whose style is "polite") or
                [{name: emotion, kind: classify, column: emotion, weight: 0.5}] (the
                response's emotion, from the hidden state at its end).
            anneal_minutes: cosine and linear decay end after this much training time
                or after max_steps, whichever comes first. With --trainer.max_time set to
                the same, a run ends annealed however fast the machine is.
            arch: from a size only: the model family, gpt2, llama, qwen2, mistral or
                gpt-neox.
            chunked_loss: compute the loss a chunk of tokens at a time through the output
                layer, never holding the whole batch's logits (false: transformers' own
                loss, which does).
            lora: train LoRA adapters on the frozen checkpoint instead of all its weights,
                e.g. --model.lora.r 16 (see rejoinder.modeling.lora.LoraOptions); the run
                exports the adapter, `rejoinder export --merge` a merged model.
            objective: lm (learn the dialogues' replies), rank (a reply ranker learnt
                from a pairs dataset: the chosen reply should outscore the rejected one),
                dpo (tune a generator on a pairs dataset with Direct Preference
                Optimization against a frozen reference), kto (tune a generator on
                unpaired feedback, each reply desirable or not: `data build unpaired`,
                `data build feedback --kind unpaired`, or a pairs dataset read as such;
                Kahneman-Tversky Optimization against the same reference) or classify (a
                text classifier,
                a safety classifier say, learnt from a labels dataset: `data build
                labels`; one output per label, read at the text's last token).
            beta: dpo and kto: how far the policy may move from the reference (DPO's and
                KTO's beta; smaller lets it move further).
            reference: dpo and kto: the frozen reference model (default: the checkpoint
                given as init; with LoRA, that checkpoint is the trunk with the
                adapters switched off, so no second copy is loaded).
            desirable_weight: kto only: the weight of desirable replies' losses (KTO's
                lambda_D). The paper advises desirable_weight * desirable replies between
                1 and 4/3 times undesirable_weight * undesirable replies; training warns
                at its start when the data falls outside, saying what to set.
            undesirable_weight: kto only: the weight of undesirable replies' losses
                (KTO's lambda_U).
        """
        super().__init__()
        if loss_on not in LOSS_ON:
            raise RejoinderError(f"--model.loss_on must be one of {', '.join(LOSS_ON)}")
        if schedule not in SCHEDULES:
            raise RejoinderError(f"--model.schedule must be one of {', '.join(SCHEDULES)}")
        if anneal_minutes is not None and not anneal_minutes > 0:
            raise RejoinderError("--model.anneal_minutes must be a positive number of minutes")
        if objective not in OBJECTIVES:
            raise RejoinderError(f"--model.objective must be one of {', '.join(OBJECTIVES)}")
        if not beta > 0:
            raise RejoinderError("--model.beta must be positive")
        if objective in ("rank", "classify") and (heads or lora):
            what = "a ranker" if objective == "rank" else "a classifier"
            raise RejoinderError(
                f"{what} trains without --model.heads and --model.lora (its whole trunk "
                "and its score layer learn)"
            )
        if reference is not None and objective not in ("dpo", "kto"):
            raise RejoinderError(
                "--model.reference is the reference of --model.objective dpo or kto"
            )
        if not (desirable_weight > 0 and undesirable_weight > 0):
            raise RejoinderError(
                "--model.desirable_weight and --model.undesirable_weight must be positive"
            )
        from rejoinder.modeling.heads import HeadSpec

        self.head_specs = HeadSpec.parse(heads)  # checked now, before any data is read
        self.lora = LoraOptions.of(lora)
        # Plain values only: Lightning reloads checkpoints with weights_only=True.
        self.save_hyperparameters(ignore=["lora"])
        self.hparams["lora"] = self.lora.to_dict() if self.lora else None
        self.model = None
        self.fmt: Format | None = None
        self.tokenizer_kind = tokenizer
        self.tokens_seen = 0
        self.base_path: str | None = None
        """The checkpoint LoRA adapts (its adapter names it as its base)."""
        self._step_tokens = 0
        self._figures: dict[str, torch.Tensor] = {}
        self._clock: float | None = None
        self._train_seconds = 0.0
        """Training time so far (resumed runs included), for anneal_minutes."""
        self._reference = None
        """DPO's and KTO's frozen reference model, kept out of the module's parameters and state."""

    # -- building the model --------------------------------------------------------

    def build(self, texts_for_tokenizer=None, run_dir: Path | None = None, classes=None) -> Format:
        """Creates or loads the model, its tokenizer and format (`factory.build_model`);
        returns the format. A tokenizer learnt from data is saved in `run_dir`, so a
        resumed run reuses it; `classes()` gives a classifier's labels."""
        from rejoinder.training.factory import build_model

        built = build_model(self.hparams, self.lora, texts_for_tokenizer, run_dir, classes)
        self.model, self.fmt = built.model, built.fmt
        self.tokenizer_kind, self.base_path = built.tokenizer_kind, built.base_path
        if built.reference is not None:
            # Set past nn.Module's bookkeeping: a submodule would be saved with every
            # checkpoint and moved, trained and switched to train mode with the policy.
            object.__setattr__(self, "_reference", built.reference)
        self.model.train()
        return built.fmt

    # -- training ------------------------------------------------------------------

    def attach_heads(self, specs) -> None:
        """Puts the extra heads on the trunk (their labels are known once data is read)."""
        from rejoinder.modeling.heads import MultiHeadLM

        if specs:
            self.model = MultiHeadLM(self.model, specs)

    @property
    def base(self):
        """The model without extra heads: a `transformers` model, or a PEFT model around
        one when LoRA trains."""
        return getattr(self.model, "base", self.model)

    @property
    def objective(self):
        """What the run learns (`objectives.OBJECTIVES`)."""
        return OBJECTIVES[self.hparams.objective]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's loss (its other figures, for the objectives that have them, go to
        `_figures`)."""
        loss, self._figures = self.objective.loss(self, batch)
        return loss

    def reference_logprobs(self, batch) -> torch.Tensor:
        """Each row's log-likelihood under DPO's (or KTO's) frozen reference."""
        if self._reference is None:  # LoRA: the trunk without its adapters is the reference
            with self.model.disable_adapter():
                return sequence_logprobs(unwrap(self.model), batch)
        if next(self._reference.parameters()).device != self.device:
            self._reference.to(self.device)
        return sequence_logprobs(self._reference, batch)

    def training_step(self, batch, batch_idx):
        loss = self(batch)
        if not torch.isfinite(loss):
            raise RejoinderError(
                f"the training loss became {loss.item()} at step {self.global_step}; stopping. "
                "The last good checkpoint is kept; lower --model.lr or use bf16 rather than fp16"
            )
        tokens = batch["attention_mask"].sum()
        if self.trainer.world_size > 1:  # every rank's tokens, not rank 0's times world size
            tokens = self.trainer.strategy.reduce(tokens, reduce_op="sum")
        self._step_tokens = int(tokens)
        self.tokens_seen += self._step_tokens
        self.log("train_loss", loss, prog_bar=True)
        for name, value in self._figures.items():
            self.log(f"train_{name}", value, prog_bar=name == "acc")
        self.log("tokens_seen", float(self.tokens_seen))
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # Tokens (not padding, all ranks) over the time from the end of the previous
        # batch to the end of this one: data, forward, backward and optimizer step.
        now = time.perf_counter()
        if self._clock is not None:
            self._train_seconds += now - self._clock
            self.log("tok_s", self._step_tokens / max(now - self._clock, 1e-9), prog_bar=True)
        self._clock = now

    def on_validation_epoch_end(self) -> None:
        self._clock = None  # validation time is not training time

    def validation_step(self, batch, batch_idx):
        loss = self(batch)
        n = self.objective.count(batch)  # labelled tokens, pairs or texts
        self.log("val_loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        for name, value in self._figures.items():
            self.log(f"val_{name}", value, prog_bar=name == "acc", batch_size=n, sync_dist=True)
        if self.objective.data == "dialogues":
            self.log("val_ppl", torch.exp(loss.detach()), batch_size=n, sync_dist=True)
        self.log("tokens_seen", float(self.tokens_seen), batch_size=n)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Everything `rejoinder export` needs to make a checkpoint directory of this one.
        checkpoint["rejoinder"] = {
            "config": unwrap(self.base).config.to_dict(),
            "objective": self.hparams.objective,
            "lora": {**self.lora.to_dict(), "base": self.base_path} if self.lora else None,
            "heads": [h.to_dict() for h in getattr(self.model, "specs", [])],
            "format": self.fmt.to_dict(),
            "tokenizer_json": self.fmt.tokenizer.backend_tokenizer.to_str(),
            "tokenizer_special": {
                k: getattr(self.fmt.tokenizer, k)
                for k in ("bos_token", "eos_token", "unk_token", "pad_token")
            },
            "tokenizer_kind": self.tokenizer_kind,
            # A chat-template format reads it from the tokenizer, which the JSON lacks.
            "chat_template": getattr(self.fmt.tokenizer, "chat_template", None),
            "tokens_seen": self.tokens_seen,
            "train_seconds": self._train_seconds,
            "rng": _rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get("rejoinder", {})
        self.tokens_seen = info.get("tokens_seen", 0)
        self._train_seconds = info.get("train_seconds", 0.0)
        if "rng" in info:  # dropout after a resume draws what it would have drawn
            _set_rng_state(info["rng"])

    def configure_optimizers(self):
        h = self.hparams
        from rejoinder.modeling.architectures import learnt_positions

        decay, no_decay = [], []
        positions = {id(p) for p in learnt_positions(self.model)}
        for p in self.model.parameters():
            # Heads' weight matrices decay like the trunk's; their biases do not.
            if not p.requires_grad:
                continue
            # Biases, norms' gains and position embeddings are not decayed.
            (no_decay if p.ndim < 2 or id(p) in positions else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": h.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=h.lr, betas=tuple(h.betas))
        total = (
            self.trainer.max_steps
            if self.trainer.max_steps and self.trainer.max_steps > 0
            else None
        )
        if total is None:
            total = self.trainer.estimated_stepping_batches
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lr_lambda(
                h.schedule,
                h.warmup_steps,
                int(total),
                h.min_lr_ratio,
                (lambda: self._train_seconds / (60 * h.anneal_minutes))
                if h.anneal_minutes
                else None,
            ),
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _rng_state() -> dict[str, Any]:
    import random

    import numpy as np

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    # Plain types only: Lightning reloads checkpoints with torch.load(weights_only=True).
    numpy_state = [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)]
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def lr_lambda(schedule: str, warmup: int, total: int, floor: float, elapsed=None):
    """The learning-rate multiplier at each step for a schedule (see DialogueLM).

    `elapsed`, when given, returns the fraction of the time budget used: the decay's
    progress is then the larger of the steps' and the time's.
    """

    def f(step: int) -> float:
        s = step + 1
        if schedule == "noam":
            w = max(warmup, 1)
            return min(s / w**1.5, 1 / math.sqrt(s)) * math.sqrt(w)
        if s <= warmup:
            return s / max(warmup, 1)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (s - warmup) / max(total - warmup, 1))
        if elapsed is not None:
            progress = min(1.0, max(progress, elapsed()))
        if schedule == "linear":
            return 1.0 - (1.0 - floor) * progress
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f
