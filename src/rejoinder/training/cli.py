"""`rejoinder train`: LightningCLI over `fit`.

LightningCLI parses the options of DialogueLM (--model.*), DialogueData (--data.*),
Lightning's Trainer (--trainer.*) and FitOptions (--out, --run, …), with --config and
--print_config; then `fit` does the work, as it does for the quickstart.
"""

from __future__ import annotations

import dataclasses
import typing

from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from rejoinder.options import field_docs
from rejoinder.training.data import DialogueData
from rejoinder.training.fit import TRAINER_DEFAULTS, FitOptions, fit, quiet_lightning
from rejoinder.training.module import DialogueLM


class TrainCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        docs = field_docs(FitOptions)
        hints = typing.get_type_hints(FitOptions)
        for f in dataclasses.fields(FitOptions):
            required = f.default is dataclasses.MISSING
            default = None if required else f.default
            parser.add_argument(
                f"--{f.name}",
                type=hints[f.name],
                default=default,
                required=required,
                help=docs.get(f.name),
            )
        parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})

    def instantiate_trainer(self, **kwargs):
        """The Trainer's options rather than a Trainer: `fit` makes the Trainer."""
        options = {**self.config_init["trainer"], **kwargs}
        save_config = SaveConfigCallback(self.parser, self.config, overwrite=True)
        options["callbacks"] = [*(options.get("callbacks") or []), save_config]
        return options


def train(argv: list[str] | None = None) -> int:
    """Trains a forward or reverse dialogue model (see `rejoinder train --help`)."""
    import warnings

    # Lightning's ddp launcher starts the other ranks by running sys.argv again, which
    # is `rejoinder train …` as typed; LightningCLI parses `argv` and would warn that
    # sys.argv holds more than that.
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    quiet_lightning()  # before LightningCLI, which has notes of its own
    cli = TrainCLI(
        DialogueLM,
        DialogueData,
        args=argv or [],
        run=False,
        seed_everything_default=0,
        parser_kwargs={
            "prog": "rejoinder train",
            "description": "Trains a forward or reverse GPT-2 dialogue model.",
        },
    )
    options = FitOptions(**{f.name: cli.config[f.name] for f in dataclasses.fields(FitOptions)})
    seed = cli.config["seed_everything"]
    seed = None if seed is False else seed
    result = fit(cli.model, cli.datamodule, options, cli.trainer, seed=seed)
    if result.exported:  # one process of several (DDP) exports, and says so
        print(result)
    return 0
