"""What a human-evaluation run is made of, and its tables: the records the store keeps
and the checks of what judges send."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

CHOICES = ("A", "B", "tie")
JUDGE_ID = re.compile(r"^[A-Za-z0-9_.@:-]{1,64}$")
MAX_REASON = 2000


class JudgeError(Exception):
    """A request the run refuses: `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class RunConfig:
    """What a run asks of its judges; stored with the run as JSON."""

    name: str
    mode: str
    """"turn" (one context, two replies) or "conversation" (two conversations)."""
    systems: list[str]
    criteria: list[str]
    questions: dict[str, str]
    """Each criterion's question as the page asks it."""
    judgments_per_item: int = 3
    quota: int = 50
    """The most real items one judge may judge."""
    onboarding_pass: float = 1.0
    """The share of onboarding items a judge must answer right to be kept."""
    check_criterion: str = ""
    """The criterion whose answer onboarding checks (the known answer is the real reply)."""
    lease_seconds: float = 1800.0
    """How long an item handed to a judge holds one of its judgment slots."""
    source: dict[str, Any] = field(default_factory=dict)
    """Where the items came from (dataset, split, systems' settings): for the report."""

    @property
    def ties(self) -> bool:
        return self.mode == "turn"


@dataclass
class Item:
    """One thing to judge. `pair` is its two systems in the run's order; `content` is
    what the page shows, keyed by system."""

    id: str
    pair: tuple[str, str]
    content: dict[str, Any]
    onboarding: bool = False
    answer: str | None = None
    """For onboarding items, the system a careful judge prefers."""


def judge_tables(meta) -> SimpleNamespace:
    """The judging tables on a `Database`'s metadata: runs, items, judges, assignments,
    judgments (every table but runs keyed by its run, deleted with it)."""
    import sqlalchemy as sa

    text, string, real = sa.Text, sa.String, sa.Float
    runs = sa.Table(
        "rejoinder_judge_runs",
        meta,
        sa.Column("name", string(64), primary_key=True),
        sa.Column("created", real, nullable=False),
        sa.Column("config", text, nullable=False),
    )

    def in_run(name: str, *columns):
        return sa.Table(
            name,
            meta,
            sa.Column(
                "run",
                string(64),
                sa.ForeignKey("rejoinder_judge_runs.name", ondelete="CASCADE"),
                primary_key=True,
            ),
            *columns,
        )

    items = in_run(
        "rejoinder_judge_items",
        sa.Column("id", string(32), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("onboarding", sa.Boolean, nullable=False),
        sa.Column("system_a", string(64), nullable=False),
        sa.Column("system_b", string(64), nullable=False),
        sa.Column("answer", string(64)),
        sa.Column("content", text, nullable=False),
    )
    judges = in_run(
        "rejoinder_judge_judges",
        sa.Column("judge", string(64), primary_key=True),
        sa.Column("created", real, nullable=False),
        sa.Column("status", string(16), nullable=False),  # onboarding, kept, excluded
    )
    assignments = in_run(
        "rejoinder_judge_assignments",
        sa.Column("judge", string(64), primary_key=True),
        sa.Column("item", string(32), primary_key=True),
        sa.Column("left", string(64), nullable=False),
        sa.Column("token", string(32), nullable=False),
        sa.Column("assigned", real, nullable=False),
        sa.Column("done", sa.Boolean, nullable=False),
    )
    judgments = in_run(
        "rejoinder_judge_judgments",
        sa.Column("item", string(32), primary_key=True),
        sa.Column("judge", string(64), primary_key=True),
        sa.Column("onboarding", sa.Boolean, nullable=False),
        sa.Column("left", string(64), nullable=False),
        sa.Column("choices", text, nullable=False),
        sa.Column("reason", text),
        sa.Column("created", real, nullable=False),
    )
    return SimpleNamespace(
        runs=runs, items=items, judges=judges, assignments=assignments, judgments=judgments
    )


def check_judge_id(judge: str) -> None:
    if not isinstance(judge, str) or not JUDGE_ID.match(judge):
        raise JudgeError(
            422, "judge must be 1 to 64 letters, digits or _ . @ : - (the page makes one)"
        )


def check_reason(run: RunConfig, reason: str | None) -> str | None:
    reason = (reason or "").strip() or None
    if reason is not None and len(reason) > MAX_REASON:
        raise JudgeError(422, f"reason has {len(reason)} characters; at most {MAX_REASON}")
    if reason is None and run.mode == "conversation":
        raise JudgeError(422, "reason: say in a few words why (conversation mode asks for one)")
    return reason
