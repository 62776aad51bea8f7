"""fit(): trains a DialogueLM on a DialogueData into a run directory, then exports it.

A run lives in a run directory (default: OUT.run): checkpoints/last.ckpt and best.ckpt,
logs/ (CSV and TensorBoard), the tokenizer when one is learnt, and at the end
curves.png. Fitting again with the same run directory resumes from last.ckpt: the
weights, optimizer, scheduler, step and the place in the data order. When training
ends the model is exported as a checkpoint directory to OUT.

`rejoinder train` (training/cli.py) is LightningCLI parsing the options of this
function; the quickstart calls it directly.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from rejoinder.errors import RejoinderError
from rejoinder.training.data import DialogueData
from rejoinder.training.module import DialogueLM

log = logging.getLogger(__name__)

TRAINER_DEFAULTS: dict[str, Any] = {
    "max_steps": 1000,
    "val_check_interval": 200,
    "check_val_every_n_epoch": None,
    "gradient_clip_val": 1.0,
    "log_every_n_steps": 10,
    "num_sanity_val_steps": 0,
}
"""Where rejoinder's defaults for Lightning's Trainer differ from Lightning's own."""


@dataclass
class FitOptions:
    """Where a run goes and how it keeps itself; each field is a `rejoinder train` option."""

    out: str
    """Checkpoint directory written at the end."""
    run: str | None = None
    """Run directory (default: OUT.run)."""
    checkpoint_every: int = 200
    """Save checkpoints/last.ckpt every this many steps."""
    early_stopping_patience: int = 0
    """Stop after this many validations without improvement (0: never)."""

    @property
    def run_dir(self) -> Path:
        return Path(self.run or f"{self.out}.run")


@dataclass
class FitResult:
    """What a fit made."""

    out: Path
    """The exported checkpoint directory."""
    run: Path
    weights: str
    """Which weights were exported: "best" (lowest validation loss) or "last"."""
    steps: int
    tokens_seen: int
    exported: bool
    """Whether this process exported (with several processes, only the first does)."""

    def __str__(self) -> str:
        return f"wrote {self.out} ({self.weights} weights); run in {self.run}"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file, syncs it, then renames it into place.

    A crash or a full disk while saving leaves the previous checkpoint as it was,
    never a truncated one under the real name.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise RejoinderError(
                f"could not save the checkpoint {path} ({e.strerror or e}); the previous "
                "checkpoint is intact. Free some disk space and run the same command to resume"
            ) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _trainer(data: DialogueData, options: FitOptions, trainer: dict[str, Any]):
    """Lightning's Trainer with `trainer`'s settings and the run's loggers and checkpoints."""
    from lightning import Trainer
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    run = options.run_dir
    ckpts = run / "checkpoints"
    callbacks = [
        ModelCheckpoint(
            dirpath=ckpts,
            filename="last",
            every_n_train_steps=options.checkpoint_every,
            save_top_k=1,
            enable_version_counter=False,
            save_on_train_epoch_end=False,
        ),
    ]
    kwargs = {**TRAINER_DEFAULTS, **trainer}
    if data.val_split != "none":
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpts,
                filename="best",
                monitor="val_loss",
                mode="min",
                save_top_k=1,
                enable_version_counter=False,
            )
        )
        if options.early_stopping_patience:
            callbacks.append(EarlyStopping("val_loss", patience=options.early_stopping_patience))
    else:
        kwargs["limit_val_batches"] = 0
    # A resumed run logs into a new version folder: the earlier logs stay, and
    # curves.png reads them all.
    kwargs.update(
        default_root_dir=str(run),
        logger=[CSVLogger(run, name="logs"), TensorBoardLogger(run, name="logs")],
        use_distributed_sampler=False,
        plugins=[AtomicCheckpointIO()],
        callbacks=[*(kwargs.get("callbacks") or []), *callbacks],
    )
    return Trainer(**kwargs)


def quiet_lightning() -> None:
    """Keeps Lightning's notes off the terminal; its warnings stay."""
    import logging
    import warnings

    # Lightning's notes ("GPU available: False", "Tip: try litlogger") are not what a
    # user needs to read; its warnings stay.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    # Lightning's own use of a torch API that torch deprecated: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def fit(
    model: DialogueLM,
    data: DialogueData,
    options: FitOptions,
    trainer: dict[str, Any] | None = None,
    seed: int | None = 0,
) -> FitResult:
    """Trains `model` on `data` (resuming the run where it stopped), then exports it.

    `trainer` holds Lightning Trainer options (max_steps, max_time, precision, …) over
    TRAINER_DEFAULTS; `seed` seeds everything first (None: leave the RNGs alone).
    """
    quiet_lightning()
    if seed is not None:
        from lightning.pytorch import seed_everything

        seed_everything(seed, workers=True, verbose=False)
    run = options.run_dir
    run.mkdir(parents=True, exist_ok=True)
    lightning = _trainer(data, options, trainer or {})
    fmt = model.build(data.texts, run, data.classes)
    h = model.hparams
    data.attach(fmt, h.loss_on, h.max_tokens, model.head_specs, h.get("objective", "lm"))
    model.attach_heads(data.head_specs)
    if data.unpaired and lightning.is_global_zero:
        from rejoinder.training.unpaired import balance_advice

        good = sum(e.desirable for e in data.train)
        advice = balance_advice(good, len(data.train) - good, h.desirable_weight,
                                h.undesirable_weight)  # fmt: skip
        if advice:
            log.warning(advice)
    last = run / "checkpoints" / "last.ckpt"
    resume = str(last) if last.is_file() else None
    if resume and lightning.is_global_zero:
        print(f"resuming from {last}", file=sys.stderr)
    lightning.fit(model, datamodule=data, ckpt_path=resume)
    # last.ckpt is written every --checkpoint_every steps; the steps since (a max_steps
    # that is no multiple of it, max_time, early stopping) would be lost to the export
    # and redone by a resumed run. Every rank takes part; the first writes.
    if lightning.global_step:
        lightning.save_checkpoint(last)
    best = run / "checkpoints" / "best.ckpt"
    source = best if best.is_file() else last if last.is_file() else None
    if lightning.is_global_zero:
        from rejoinder.training.curves import plot_curves
        from rejoinder.training.export import export, export_module

        if source is not None:
            export(source, options.out, overwrite=True, extra={"run": str(run)})
        else:
            export_module(model, options.out, {"run": str(run)})
        plot_curves(run)
    return FitResult(
        Path(options.out),
        run,
        "best" if source == best else "last",
        lightning.global_step,
        model.tokens_seen,
        lightning.is_global_zero,
    )
