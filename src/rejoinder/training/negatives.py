"""`rejoinder data negatives`: a pairs dataset plus `human_vs_machine` pairs.

Each distinct (context, human reply) of the input, the real reply of a pair (its
`chosen`, and the `rejected` of a feedback pair, which is a human reply to the same
context too), is paired against a reply that a model samples for that context, as
DialogRPT's human_vs_machine data was. Contexts go through the model in batches; the
output appears complete or not at all.
"""

from __future__ import annotations

import datetime
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rejoinder.atomic import atomic_directory, check_out
from rejoinder.data.pairs import FEEDBACK_KINDS, RawPair, iter_raw_pairs, require_kind, write_pairs
from rejoinder.data.records import SPLITS
from rejoinder.data.report import Report
from rejoinder.errors import RejoinderError
from rejoinder.options import option
from rejoinder.progress import Progress


@dataclass
class NegativesConfig:
    """What `data negatives` reads, samples with and writes."""

    pairs: str = option(hidden=True)
    """The pairs dataset to add to."""
    model: str = option(hidden=True)
    """The checkpoint directory that samples the machine replies."""
    out: str = option(hidden=True)
    """The pairs dataset to write."""
    backend: str = option("torch", choices=("torch", "ctranslate2"))
    """Decode with torch or CTranslate2."""
    preset: str = "nucleus"
    """The decoding preset the machine replies are sampled with."""
    max_new_tokens: int = 40
    """The longest machine reply, in tokens (Reddit replies are short)."""
    limit: int | None = option(None, metavar="N")
    """At most this many machine replies a split (the first contexts of each)."""
    batch_size: int = 16
    """Contexts sampled in one batch."""
    seed: int = 0
    """Sampling seed: the same seed, model and data give the same replies."""
    force: bool = False
    """Replace the output directory if it exists."""

    def __post_init__(self):
        if self.batch_size < 1:
            raise RejoinderError("--batch-size must be at least 1")
        if self.limit is not None and self.limit < 0:
            raise RejoinderError("--limit must be 0 or more")


def human_replies(pairs: list[RawPair], limit: int | None) -> list[tuple[RawPair, str]]:
    """Each distinct (context, human reply) once, with the first pair it came from."""
    seen: set[tuple[tuple[str, ...], str]] = set()
    out = []
    for pair in pairs:
        replies = [pair.chosen] + ([pair.rejected] if pair.kind in FEEDBACK_KINDS else [])
        for reply in replies:
            key = (tuple(pair.context), reply)
            if key not in seen and (limit is None or len(out) < limit):
                seen.add(key)
                out.append((pair, reply))
    return out


def machine_pairs(
    model, wanted: list[tuple[RawPair, str]], config: NegativesConfig, report: Report
) -> Iterator[RawPair]:
    """`human_vs_machine` pairs: each human reply against the model's for its context."""
    with Progress("sampling replies", total=len(wanted), unit="contexts") as progress:
        for start in range(0, len(wanted), config.batch_size):
            batch = wanted[start : start + config.batch_size]
            contexts = [list(pair.context) for pair, _ in batch]
            # One seed a batch: the same batches sample the same replies again.
            replies = model.generate_batch(contexts, preset=config.preset, seed=config.seed + start)
            for (pair, human), machine in zip(batch, replies, strict=True):
                machine = machine.strip()
                if not machine:
                    report.not_made("human_vs_machine", "the model's reply is empty")
                elif machine == human:
                    report.not_made("human_vs_machine", "the model's reply is the human's")
                else:
                    which = "chosen" if human == pair.chosen else "rejected"
                    yield RawPair(
                        id=f"human_vs_machine-{pair.id}-{which}",
                        kind="human_vs_machine",
                        group=pair.group,
                        context=list(pair.context),
                        chosen=human,
                        rejected=machine,
                        source=pair.source,
                        subreddit=pair.subreddit,
                    )
            progress.advance(len(batch))


def add_negatives(config: NegativesConfig) -> dict[str, Any]:
    """Writes the input's pairs plus `human_vs_machine` pairs to `config.out`; returns the
    manifest (also in OUT/manifest.json)."""
    source = Path(config.pairs)
    require_kind(source, "pairs", "data negatives")
    out = check_out(config.out, config.force, source)
    from rejoinder.generation import ConversationModel

    model = ConversationModel.from_pretrained(config.model, backend=config.backend)
    started = datetime.datetime.now(datetime.UTC)
    manifest = json.loads((source / "manifest.json").read_text())
    report = Report()
    made: Counter[str] = Counter()
    with atomic_directory(out) as tmp:
        for split in SPLITS:
            (tmp / split).mkdir()
            for f in sorted((source / split).glob("*.parquet")):
                shutil.copy2(f, tmp / split / f.name)
            wanted = human_replies(list(iter_raw_pairs(source, split)), config.limit)
            new = list(machine_pairs(model, wanted, config, report))
            made[split] = len(new)
            if new:
                write_pairs(tmp, split, new, part=_next_part(tmp / split))
        manifest = _manifest(manifest, config, made, report, started)
        (tmp / "manifest.json").write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        )
    return manifest


def _next_part(folder: Path) -> int:
    """A part number no file of `folder` uses."""
    taken = {p.name for p in folder.glob("*.parquet")}
    return next(i for i in range(len(taken) + 1) if f"part-{i:05d}.parquet" not in taken)


def _manifest(
    manifest: dict, config: NegativesConfig, made: Counter[str], report: Report, started
) -> dict:
    finished = datetime.datetime.now(datetime.UTC)
    kinds = manifest.setdefault("kinds", {})
    before = kinds.get("human_vs_machine", {})  # a dataset given negatives once already
    counts = {s: before.get(s, 0) + made[s] for s in SPLITS}
    kinds["human_vs_machine"] = {**counts, "total": sum(counts.values())}
    totals = manifest.setdefault("pairs", dict.fromkeys((*SPLITS, "total"), 0))
    for split in SPLITS:
        totals[split] = totals.get(split, 0) + made[split]
    totals["total"] = sum(totals[s] for s in SPLITS)
    unmade = report.to_dict().get("not_made", {})
    manifest.setdefault("not_made", {}).update(unmade)
    manifest["negatives"] = {
        "from": str(config.pairs),
        "model": str(config.model),
        "backend": config.backend,
        "preset": config.preset,
        "max_new_tokens": config.max_new_tokens,
        "seed": config.seed,
        "limit": config.limit,
        "created": finished.isoformat(timespec="seconds"),
        "seconds": round((finished - started).total_seconds(), 2),
    }
    return manifest
