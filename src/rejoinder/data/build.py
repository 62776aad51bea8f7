"""`rejoinder data build`: sources -> filtered dialogues -> DIR/{train,valid,test}/*.parquet.

The dataset appears complete or not at all: the engine writes it into a temporary
directory that is renamed to the output only when the build succeeds, and its work
files (buckets, spools) go in another temporary directory that is always removed.
"""

from __future__ import annotations

import datetime
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rejoinder.atomic import atomic_directory
from rejoinder.data.config import BuildConfig, Source
from rejoinder.data.engines import engine
from rejoinder.data.report import Report
from rejoinder.errors import RejoinderError

__all__ = ["BuildConfig", "Source", "build", "summary"]


def build(config: BuildConfig) -> dict[str, Any]:
    """Builds the dataset; returns the manifest (also written to OUT/manifest.json)."""
    out = Path(config.out)
    if out.exists() and not config.force:
        raise RejoinderError(f"{out} already exists; choose another --out or add --force")
    run = engine(config.engine)
    report = Report(explain=config.explain)
    started = datetime.datetime.now(datetime.UTC)
    with (
        atomic_directory(out) as data_dir,
        tempfile.TemporaryDirectory(
            prefix=f".{out.name}.building-", dir=out.parent, ignore_cleanup_errors=True
        ) as work,
    ):
        splits = run(config, data_dir, Path(work), report)
        manifest = _manifest(config, report, splits, started)
        (data_dir / "manifest.json").write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        )
    return manifest


def summary(manifest: dict, out: Path) -> str:
    """A few lines on what a build wrote and dropped, from its manifest."""
    d = manifest["dialogues"]
    lines = [
        f"wrote {d['total']} dialogues to {out} "
        f"(train {d['train']}, valid {d['valid']}, test {d['test']}) in {manifest['seconds']} s"
    ]
    if manifest["dropped"]:
        lines.append("dropped by filter:")
        lines += [f"  {name:<12} {n:>10}" for name, n in manifest["dropped"].items()]
    if manifest["bad_input"]:
        lines.append("skipped input (bad records):")
        lines += [f"  {reason:<40} {n:>10}" for reason, n in manifest["bad_input"].items()]
    return "\n".join(lines)


def _manifest(config: BuildConfig, report: Report, splits: dict[str, int], started) -> dict:
    from rejoinder import __version__

    finished = datetime.datetime.now(datetime.UTC)
    options = {
        "filters": config.filters or "auto",
        "filter_options": config.filter_options,
        "reddit": asdict(config.reddit),
        "valid": config.valid,
        "test": config.test,
        "engine": config.engine,
    }
    manifest = {
        "rejoinder_version": __version__,
        "created": finished.isoformat(timespec="seconds"),
        "seconds": round((finished - started).total_seconds(), 2),
        "sources": [
            {"kind": s.kind, **{k: _jsonable(v) for k, v in s.args.items()}} for s in config.sources
        ],
        "options": options,
        "dialogues": {**splits, "total": sum(splits.values())},
        **report.to_dict(),
    }
    if report.samples:
        manifest["samples"] = {k: v for k, v in sorted(report.samples.items())}
    return manifest


def _jsonable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)
