"""`rejoinder data build`: sources -> filtered dialogues (or preference pairs, labelled
texts, unpaired rated replies) -> DIR/{train,valid,test}/*.parquet + DIR/manifest.json.

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
from rejoinder.data.engines import engine_for
from rejoinder.data.filters import LoadScorer
from rejoinder.data.records import SPLITS
from rejoinder.data.report import Report
from rejoinder.data.stages import classifier_pass

__all__ = ["BuildConfig", "Source", "build", "summary"]


def build(config: BuildConfig, load_classifier: LoadScorer | None = None) -> dict[str, Any]:
    """Builds the dataset; returns the manifest (also written to OUT/manifest.json).

    `load_classifier` loads the offensive filter's `--offensive-classifier` (see
    `filters.LoadScorer`; the command line passes `commands.offensive_scorer`)."""
    out = check_out(config.out, config.force)
    run = engine_for(config)
    classifier = classifier_pass(config, load_classifier)  # bad settings fail now
    report = Report(explain=config.explain)
    started = datetime.datetime.now(datetime.UTC)
    with (
        atomic_directory(out) as data_dir,
        tempfile.TemporaryDirectory(
            prefix=f".{out.name}.building-", dir=out.parent, ignore_cleanup_errors=True
        ) as work,
    ):
        splits = run(config, data_dir, Path(work), report, classifier)
        manifest = _manifest(config, report, splits, started)
        (data_dir / "manifest.json").write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        )
    return manifest


def summary(manifest: dict, out: Path) -> str:
    """A few lines on what a build wrote and dropped, from its manifest."""
    kind = manifest.get("kind", "dialogues")
    what = {"pairs": "pairs", "labels": "texts", "unpaired": "replies"}.get(kind, "dialogues")
    d = manifest[what]
    said = {"labels": "labelled texts", "unpaired": "rated replies"}.get(kind, what)
    lines = [
        f"wrote {d['total']} {said} to {out} "
        f"(train {d['train']}, valid {d['valid']}, test {d['test']}) in {manifest['seconds']} s"
    ]
    labelled = kind in ("labels", "unpaired")
    per = manifest.get("labels" if labelled else "kinds") or {}
    for name, n in per.items():
        shown = "".join(f", {s} {n[s]}" for s in SPLITS) if labelled else ""
        lines.append(f"  {name:<16} {n['total']:>10}{shown}")
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
    if config.makes_pairs and not config.makes_labels:
        options["pairs"] = list(config.pair_kinds)
        options["pair_options"] = asdict(config.pair_options)
    kind = (
        "labels"
        if config.makes_labels
        else "unpaired"
        if config.makes_unpaired
        else "pairs"
        if config.makes_pairs
        else "dialogues"
    )
    manifest = {
        "kind": kind,
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
    """What the engine counted, as the manifest says it: dialogues per split, pairs per
    split and per kind (the engine counts pairs as "split/kind"; every kind asked of
    Reddit is listed, made or not), or labelled texts per split and per label ("split/label"),
    or unpaired replies per split and as desirable or undesirable (the same way)."""
    labelled = config.makes_labels or config.makes_unpaired
    if not (config.makes_pairs or labelled):
        return {"dialogues": {**counts, "total": sum(counts.values())}}
    splits = dict.fromkeys(SPLITS, 0)
    kinds: dict[str, dict[str, int]] = {}
    for kind in () if labelled else config.pair_kinds:
        kinds[kind] = {**dict.fromkeys(SPLITS, 0), "total": 0}
    for key, n in sorted(counts.items()):
        split, _, kind = key.partition("/")
        splits[split] += n
        per = kinds.setdefault(kind, {**dict.fromkeys(SPLITS, 0), "total": 0})
        per[split] += n
        per["total"] += n
    total = {**splits, "total": sum(splits.values())}
    if config.makes_unpaired:
        return {"replies": total, "labels": kinds}
    if config.makes_labels:
        return {"texts": total, "labels": kinds}
    return {"pairs": total, "kinds": kinds}


def _jsonable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)
