"""`rejoinder train` (LightningCLI) and `rejoinder export`.

A run lives in a run directory (default: OUT.run): checkpoints/last.ckpt and best.ckpt,
logs/ (CSV and TensorBoard), the tokenizer when one is learnt, config.yaml, and at the
end curves.png. Running the same command again resumes from last.ckpt: the weights,
optimizer, scheduler, step and the place in the data order. When training ends the
model is exported as a checkpoint directory to OUT.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO

from rejoinder.errors import RejoinderError
from rejoinder.training.data import DialogueData
from rejoinder.training.module import DialogueLM


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


class TrainCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--out", required=True, help="checkpoint directory written at the end")
        parser.add_argument("--run", default=None, help="run directory (default: OUT.run)")
        parser.add_argument(
            "--checkpoint_every",
            type=int,
            default=200,
            help="save checkpoints/last.ckpt every this many steps",
        )
        parser.add_argument(
            "--early_stopping_patience",
            type=int,
            default=0,
            help="stop after this many validations without improvement (0: never)",
        )
        parser.set_defaults(
            {
                "trainer.max_steps": 1000,
                "trainer.val_check_interval": 200,
                "trainer.check_val_every_n_epoch": None,
                "trainer.gradient_clip_val": 1.0,
                "trainer.log_every_n_steps": 10,
                "trainer.num_sanity_val_steps": 0,
            }
        )

    def run_dir(self) -> Path:
        return Path(self.config["run"] or f"{self.config['out']}.run")

    def instantiate_trainer(self, **kwargs):
        from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        run = self.run_dir()
        ckpts = run / "checkpoints"
        callbacks = [
            ModelCheckpoint(
                dirpath=ckpts,
                filename="last",
                every_n_train_steps=self.config["checkpoint_every"],
                save_top_k=1,
                enable_version_counter=False,
                save_on_train_epoch_end=False,
            ),
        ]
        if self.datamodule.val_split != "none":
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
            if self.config["early_stopping_patience"]:
                callbacks.append(
                    EarlyStopping("val_loss", patience=self.config["early_stopping_patience"])
                )
        # A resumed run logs into a new version folder: the earlier logs stay, and
        # curves.png reads them all.
        loggers = [CSVLogger(run, name="logs"), TensorBoardLogger(run, name="logs")]
        if self.datamodule.val_split == "none":
            kwargs["limit_val_batches"] = 0
        kwargs.update(
            default_root_dir=str(run),
            logger=loggers,
            use_distributed_sampler=False,
            plugins=[AtomicCheckpointIO()],
            callbacks=[*(self.config_init["trainer"].get("callbacks") or []), *callbacks],
        )
        return super().instantiate_trainer(**kwargs)


def train(argv: list[str] | None = None) -> int:
    """Trains a forward or reverse dialogue model (see `rejoinder train --help`)."""
    import warnings

    # Lightning's ddp launcher starts the other ranks by running sys.argv again, which
    # is `rejoinder train …` as typed; LightningCLI parses `argv` and would warn that
    # sys.argv holds more than that.
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    # Lightning's own use of a torch API that torch deprecated: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    return _train(argv)


def _train(argv: list[str] | None) -> int:
    import logging

    # Lightning's advertising ("Tip: try litlogger") is not what a user needs to read.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    cli = TrainCLI(
        DialogueLM,
        DialogueData,
        args=argv or [],
        run=False,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            "prog": "rejoinder train",
            "description": "Trains a forward or reverse GPT-2 dialogue model.",
        },
    )
    run = cli.run_dir()
    run.mkdir(parents=True, exist_ok=True)
    model, data, trainer = cli.model, cli.datamodule, cli.trainer
    fmt = model.build(data.texts, run)
    data.attach(fmt, model.hparams.loss_on, model.hparams.max_tokens, model.head_specs)
    model.attach_heads(model.head_specs)
    last = run / "checkpoints" / "last.ckpt"
    resume = str(last) if last.is_file() else None
    if resume and trainer.is_global_zero:
        print(f"resuming from {last}", file=sys.stderr)
    trainer.fit(model, datamodule=data, ckpt_path=resume)
    if trainer.is_global_zero:
        best = run / "checkpoints" / "best.ckpt"
        source = best if best.is_file() else last if last.is_file() else None
        if source is not None:
            export(source, cli.config["out"], overwrite=True, extra={"run": str(run)})
        else:
            _export_module(model, cli.config["out"], {"run": str(run)})
        from rejoinder.training.curves import plot_curves

        plot_curves(run)
        which = "best" if source == best else "last"
        print(f"wrote {cli.config['out']} ({which} weights); run in {run}")
    return 0


def _heads_writer(model):
    from rejoinder.modeling.heads import save_heads

    if not hasattr(model, "specs"):
        return None, []
    return (lambda tmp: save_heads(model, tmp)), [h.to_dict() for h in model.specs]


def _export_module(model: DialogueLM, out, extra: dict) -> None:
    from rejoinder.modeling.checkpoint import save_checkpoint

    write, heads = _heads_writer(model.model)
    save_checkpoint(
        model.base,
        model.fmt.tokenizer,
        model.fmt,
        out,
        write_extra=write,
        heads=heads,
        overwrite=True,
        tokenizer_kind=model.tokenizer_kind,
        made_by={"command": "train", "tokens_seen": model._tokens_seen, **extra},
    )


def export(
    ckpt: str | Path, out: str | Path, overwrite: bool = False, extra: dict | None = None
) -> Path:
    """A checkpoint directory from a Lightning checkpoint of `rejoinder train`."""
    import torch
    from tokenizers import Tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from rejoinder.formats import format_from_dict
    from rejoinder.modeling.checkpoint import save_checkpoint
    from rejoinder.modeling.heads import HeadSpec, MultiHeadLM

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise RejoinderError(f"Lightning checkpoint {ckpt} does not exist")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as e:
        raise RejoinderError(
            f"{ckpt} is not a readable checkpoint ({type(e).__name__}: {e})"
        ) from None
    info = state.get("rejoinder") if isinstance(state, dict) else None
    if not info:
        raise RejoinderError(
            f"{ckpt} was not written by `rejoinder train` (no 'rejoinder' section)"
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(info["tokenizer_json"]),
        **{k: v for k, v in info["tokenizer_special"].items() if v},
    )
    fmt = format_from_dict(info["format"], tok)
    config = GPT2Config.from_dict(info["config"])
    model = GPT2LMHeadModel(config)
    specs = HeadSpec.parse(info.get("heads"))
    whole = MultiHeadLM(model, specs) if specs else model
    weights = {
        k.removeprefix("model."): v
        for k, v in state["state_dict"].items()
        if k.startswith("model.")
    }
    whole.load_state_dict(weights, strict=False)
    model.tie_weights()
    write, heads = _heads_writer(whole)
    made_by = {
        "command": "train",
        "checkpoint": str(ckpt),
        "step": state.get("global_step"),
        "tokens_seen": info.get("tokens_seen"),
        **(extra or {}),
    }
    return save_checkpoint(
        model,
        tok,
        fmt,
        out,
        made_by=made_by,
        tokenizer_kind=info.get("tokenizer_kind", "gpt2"),
        overwrite=overwrite,
        heads=heads,
        write_extra=write,
    )
