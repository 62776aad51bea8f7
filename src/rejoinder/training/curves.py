"""curves.png: training and validation loss against tokens seen, from the run's CSV logs."""

from __future__ import annotations

import csv
from pathlib import Path


def _version(path: Path) -> int:
    return int(path.parent.name.removeprefix("version_") or 0)


def plot_curves(run: str | Path) -> Path | None:
    """Draws RUN/curves.png from RUN/logs/version_*/metrics.csv; None with nothing to draw.

    A run writes one version folder each time it starts (resumes included), so the
    curve is read across all of them.
    """
    run = Path(run)
    train, valid = [], []
    for metrics in sorted((run / "logs").glob("version_*/metrics.csv"), key=_version):
        with open(metrics, newline="") as f:
            for row in csv.DictReader(f):
                tokens = row.get("tokens_seen")
                if not tokens:
                    continue
                if row.get("train_loss"):
                    train.append((float(tokens), float(row["train_loss"])))
                if row.get("val_loss"):
                    valid.append((float(tokens), float(row["val_loss"])))
    if not train and not valid:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    if train:
        ax.plot(*zip(*sorted(train), strict=True), label="train loss", alpha=0.7)
    if valid:
        ax.plot(*zip(*sorted(valid), strict=True), "o-", label="validation loss")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(run.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = run / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
