"""`rejoinder data build`: sources -> filtered dialogues (or preference pairs) ->
DIR/{train,valid,test}/*.parquet + DIR/manifest.json.

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

from rejoinder.atomic import atomic_directory, check_out
from rejoinder.data.config import BuildConfig, Source
from rejoinder.data.engines import engine
from rejoinder.data.records import SPLITS
from rejoinder.data.report import Report

__all__ = ["BuildConfig", "Source", "build", "summary"]


def build(config: BuildConfig) -> dict[str, Any]:
    """Builds the dataset; returns the manifest (also written to OUT/manifest.json)."""
    out = check_out(config.out, config.force)
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
    what = "pairs" if manifest.get("kind") == "pairs" else "dialogues"
    d = manifest[what]
    lines = [
        f"wrote {d['total']} {what} to {out} "
        f"(train {d['train']}, valid {d['valid']}, test {d['test']}) in {manifest['seconds']} s"
    ]
    for kind, n in (manifest.get("kinds") or {}).items():
        lines.append(f"  {kind:<16} {n['total']:>10}")
    for kind, why in (manifest.get("notes") or {}).items():
        lines.append(f"no {kind} pairs: {why}")
    if manifest.get("not_made"):
        lines.append("pairs not made:")
        for kind, reasons in manifest["not_made"].items():
            lines += [f"  {kind:<16} {reason:<40} {n:>10}" for reason, n in reasons.items()]
    if manifest["dropped"]:
        lines.append("dropped by filter:")
        lines += [f"  {name:<12} {n:>10}" for name, n in manifest["dropped"].items()]
    if manifest["bad_input"]:
        lines.append("skipped input (bad records):")
        lines += [f"  {reason:<40} {n:>10}" for reason, n in manifest["bad_input"].items()]
    return "\n".join(lines)


def _manifest(config: BuildConfig, report: Report, splits: dict[str, int], started) -> dict:
    from rejoinder.version import __version__

    finished = datetime.datetime.now(datetime.UTC)
    options = {
        "filters": config.filters or "auto",
        "filter_options": config.filter_options,
        "reddit": asdict(config.reddit),
        "valid": config.valid,
        "test": config.test,
        "engine": config.engine,
    }
    if config.makes_pairs:
        options["pairs"] = list(config.pair_kinds)
        options["pair_options"] = asdict(config.pair_options)
    manifest = {
        "kind": "pairs" if config.makes_pairs else "dialogues",
        "rejoinder_version": __version__,
        "created": finished.isoformat(timespec="seconds"),
        "seconds": round((finished - started).total_seconds(), 2),
        "sources": [
            {"kind": s.kind, **{k: _jsonable(v) for k, v in s.args.items()}} for s in config.sources
        ],
        "options": options,
        **_counted(splits, config),
        **report.to_dict(),
    }
    if report.samples:
        manifest["samples"] = {k: v for k, v in sorted(report.samples.items())}
    return manifest


def _counted(counts: dict[str, int], config: BuildConfig) -> dict[str, Any]:
    """What the engine counted, as the manifest says it: dialogues per split, or pairs per
    split and per kind (the engine counts pairs as "split/kind"; every kind asked of
    Reddit is listed, made or not)."""
    if not config.makes_pairs:
        return {"dialogues": {**counts, "total": sum(counts.values())}}
    splits = dict.fromkeys(SPLITS, 0)
    kinds: dict[str, dict[str, int]] = {}
    for kind in config.pair_kinds:
        kinds[kind] = {**dict.fromkeys(SPLITS, 0), "total": 0}
    for key, n in sorted(counts.items()):
        split, _, kind = key.partition("/")
        splits[split] += n
        per = kinds.setdefault(kind, {**dict.fromkeys(SPLITS, 0), "total": 0})
        per[split] += n
        per["total"] += n
    return {"pairs": {**splits, "total": sum(splits.values())}, "kinds": kinds}


def _jsonable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)
