"""The engines that run a build: they group and move records, the stages do the rest.

An engine is a function `(config, data_dir, work_dir, report, classifier) -> dialogues
per split`: it writes the splits' parquet files into `data_dir`, keeps whatever it needs
between passes in `work_dir` (removed after the build), and counts into `report`.
`classifier` (a `stages.ClassifierPass`, or None) is the offensive filter's classifier,
which the engine runs as a pass of its own on the sources whose filters ask for it,
after the one-pass filters and before the bland pass. The local engine needs nothing
but this package; the Spark engine is imported only when chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rejoinder.data.config import BuildConfig
from rejoinder.data.report import Report
from rejoinder.data.stages import ClassifierPass

Run = Callable[[BuildConfig, Path, Path, Report, ClassifierPass | None], dict[str, int]]


def _local() -> Run:
    from rejoinder.data.engines import local

    return local.run


def _spark() -> Run:
    from rejoinder.data.engines import spark

    return spark.run


ENGINES: dict[str, Callable[[], Run]] = {"local": _local, "spark": _spark}
"""Each engine by name (`BuildConfig.engine`), as a function that imports it."""


def engine_for(config: BuildConfig) -> Run:
    """The engine a build runs on: `config.engine`'s (BuildConfig checks the name), but
    a labels or unpaired build (a file people labelled or rated: small, no filters) runs
    in one process on either (engines/labels.py)."""
    if config.makes_labels or config.makes_unpaired:
        from rejoinder.data.engines import labels

        return labels.run
    return ENGINES[config.engine]()
