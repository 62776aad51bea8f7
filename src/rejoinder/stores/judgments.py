"""Human-evaluation runs in the database: items, judges, assignments and judgments.

A run is made once (`judging.create`) and then only judged. Its items are either real
(two systems compared) or onboarding items with a known answer, which every judge
meets first; a judge who misses too many is kept out of the run from then on and out
of its results. Judgments are stored in system terms (which system won each
criterion), with the system that was shown on the left, so nothing about positions is
lost and nothing about systems ever reaches the page.

Concurrency: handing out an item (`next_item`) and recording a judgment (`judge`) each
run in one transaction that first locks the run's row (PostgreSQL's FOR UPDATE; on
SQLite the database's single writer does the same), so judges served by several
processes at once never give an item more than `judgments_per_item` judgments, and a
judge never judges an item twice (the judgments table's key refuses it as well).
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections import Counter
from dataclasses import asdict
from typing import Any

from rejoinder.db import DEFAULT_DB, Database
from rejoinder.errors import RejoinderError
from rejoinder.stores.runs import (
    CHOICES,
    Item,
    JudgeError,
    RunConfig,
    check_judge_id,
    check_reason,
    judge_tables,
)


class JudgeStore:
    """Runs, items, judges, assignments and judgments, in a `Database`."""

    def __init__(self, url: str | Database = DEFAULT_DB):
        self.db = url if isinstance(url, Database) else Database(url)
        tables = judge_tables(self.db.meta)
        self.runs, self.items, self.judges = tables.runs, tables.items, tables.judges
        self.assignments, self.judgments = tables.assignments, tables.judgments
        self.db.create_tables()

    def close(self) -> None:
        self.db.close()

    # -- runs ----------------------------------------------------------------------

    def create_run(self, config: RunConfig, items: list[Item]) -> None:
        """Stores a run and its items in one transaction; refuses a name in use."""

        def work(c):
            if self._run_row(c, config.name) is not None:
                raise RejoinderError(
                    f"there is already a run named {config.name!r} in {self.db.url}; "
                    "choose another --name"
                )
            c.execute(
                self.runs.insert().values(
                    name=config.name, created=time.time(), config=json.dumps(asdict(config))
                )
            )
            c.execute(
                self.items.insert(),
                [
                    {
                        "run": config.name,
                        "id": item.id,
                        "seq": seq,
                        "onboarding": item.onboarding,
                        "system_a": item.pair[0],
                        "system_b": item.pair[1],
                        "answer": item.answer,
                        "content": json.dumps(item.content, ensure_ascii=False),
                    }
                    for seq, item in enumerate(items)
                ],
            )

        self.db.write(work)

    def run(self, name: str) -> RunConfig:
        with self.db.read() as c:
            row = self._run_row(c, name)
        if row is None:
            raise JudgeError(404, f"no judging run {name!r}")
        return RunConfig(**json.loads(row.config))

    def run_names(self) -> list[str]:
        import sqlalchemy as sa

        with self.db.read() as c:
            return list(
                c.execute(sa.select(self.runs.c.name).order_by(self.runs.c.created)).scalars()
            )

    def _run_row(self, c, name: str, lock: bool = False):
        import sqlalchemy as sa

        query = sa.select(self.runs).where(self.runs.c.name == name)
        return c.execute(query.with_for_update() if lock else query).first()

    def _locked_run(self, c, name: str) -> RunConfig:
        row = self._run_row(c, name, lock=True)
        if row is None:
            raise JudgeError(404, f"no judging run {name!r}")
        return RunConfig(**json.loads(row.config))

    # -- handing out items ---------------------------------------------------------

    def next_item(self, run: str, judge: str) -> dict[str, Any] | None:
        """The next item for `judge` as the page shows it, or None when there is none
        (done, quota reached, every item has its judgments, or excluded by onboarding).

        An item handed out and not yet judged is handed out again (a reload resumes it).
        """
        check_judge_id(judge)
        return self.db.write(lambda c: self._next(c, run, judge))

    def _next(self, c, name: str, judge: str) -> dict[str, Any] | None:
        import sqlalchemy as sa

        run = self._locked_run(c, name)
        status = self._judge_status(c, run, judge)
        if status == "excluded":
            return None
        a = self.assignments.c
        open_ = c.execute(
            sa.select(self.assignments).where(a.run == name, a.judge == judge, a.done == sa.false())
        ).first()
        if open_ is not None:
            return self._shown(c, run, judge, open_.item, open_.left, open_.token)
        given = set(c.execute(sa.select(a.item).where(a.run == name, a.judge == judge)).scalars())
        i = self.items.c
        if status == "onboarding":
            pending = [
                row
                for row in c.execute(
                    sa.select(i.id).where(i.run == name, i.onboarding == sa.true()).order_by(i.seq)
                )
                if row.id not in given
            ]
            if not pending:  # a run without onboarding items, or one made before it
                self._set_status(c, name, judge, "kept")
                return self._next(c, name, judge)
            return self._assign(c, run, judge, pending[0].id)
        if self._judged(c, name, judge, onboarding=False) >= run.quota:
            return None
        taken = self._slots_taken(c, run)
        candidates = [
            item_id
            for item_id in c.execute(
                sa.select(i.id).where(i.run == name, i.onboarding == sa.false()).order_by(i.seq)
            ).scalars()
            if item_id not in given and taken[item_id] < run.judgments_per_item
        ]
        if not candidates:
            return None
        fewest = min(taken[x] for x in candidates)
        return self._assign(
            c, run, judge, random.choice([x for x in candidates if taken[x] == fewest])
        )

    def _slots_taken(self, c, run: RunConfig) -> Counter:
        """Per real item: judgments made plus items handed out within the lease."""
        import sqlalchemy as sa

        a = self.assignments.c
        since = time.time() - run.lease_seconds
        rows = c.execute(
            sa.select(a.item, sa.func.count())
            .where(a.run == run.name, sa.or_(a.done == sa.true(), a.assigned >= since))
            .group_by(a.item)
        )
        return Counter({item: n for item, n in rows})

    def _assign(self, c, run: RunConfig, judge: str, item_id: str) -> dict[str, Any]:
        row = self._item_row(c, run.name, item_id)
        left = random.choice((row.system_a, row.system_b))
        token = secrets.token_hex(8)
        values = dict(run=run.name, judge=judge, item=item_id, left=left, token=token,
                      assigned=time.time(), done=False)  # fmt: skip
        c.execute(self.assignments.insert().values(**values))
        return self._shown(c, run, judge, item_id, left, token)

    def _shown(self, c, run: RunConfig, judge: str, item_id: str, left: str, token: str):
        """The item as the page sees it: positions A (left) and B (right), no system names."""
        row = self._item_row(c, run.name, item_id)
        right = row.system_b if left == row.system_a else row.system_a
        content = json.loads(row.content)
        shown: dict[str, Any] = {"item": item_id, "mode": run.mode, "left": token}
        if run.mode == "turn":
            shown["context"] = content["context"]
            shown["replies"] = {"A": content["replies"][left], "B": content["replies"][right]}
        else:
            shown["conversations"] = {
                "A": content["conversations"][left],
                "B": content["conversations"][right],
            }
            shown["speaker"] = {"A": content["speaker"][left], "B": content["speaker"][right]}
        shown["criteria"] = [{"name": k, "question": run.questions[k]} for k in run.criteria]
        shown["choices"] = list(CHOICES if run.ties else CHOICES[:2])
        shown["reason"] = "required" if run.mode == "conversation" else "optional"
        shown["progress"] = self._progress(c, run, judge)
        return shown

    def _progress(self, c, run: RunConfig, judge: str) -> dict[str, int]:
        import sqlalchemy as sa

        onboarding = c.execute(
            sa.select(sa.func.count()).where(
                self.items.c.run == run.name, self.items.c.onboarding == sa.true()
            )
        ).scalar()
        real = c.execute(
            sa.select(sa.func.count()).where(
                self.items.c.run == run.name, self.items.c.onboarding == sa.false()
            )
        ).scalar()
        done = self._judged(c, run.name, judge, onboarding=None)
        return {"done": done, "total": onboarding + min(run.quota, real)}

    # -- judgments -----------------------------------------------------------------

    def judge(
        self,
        run: str,
        judge: str,
        item: str,
        choices: dict[str, str],
        left: str,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Records one judgment of an item handed to `judge`; returns what is next to know
        (whether the judge is still in the run)."""
        check_judge_id(judge)
        return self.db.write(lambda c: self._judge(c, run, judge, item, choices, left, reason))

    def _judge(self, c, name, judge, item_id, choices, token, reason) -> dict[str, Any]:
        import sqlalchemy as sa

        run = self._locked_run(c, name)
        a, j = self.assignments.c, self.judgments.c
        given = c.execute(
            sa.select(self.assignments).where(a.run == name, a.judge == judge, a.item == item_id)
        ).first()
        if given is None:
            if self._item_row(c, name, item_id, missing=None) is None:
                raise JudgeError(404, f"no item {item_id!r} in run {name!r}")
            raise JudgeError(403, f"item {item_id!r} was not given to judge {judge!r}")
        if given.done:
            raise JudgeError(409, f"judge {judge!r} has already judged item {item_id!r}")
        if token != given.token:
            raise JudgeError(
                409, "`left` does not match the item as it was shown: fetch the next item again"
            )
        reason = check_reason(run, reason)
        row = self._item_row(c, name, item_id)
        winners = self._winners(run, choices, given.left, row)
        if not row.onboarding:
            made = c.execute(
                sa.select(sa.func.count()).where(j.run == name, j.item == item_id)
            ).scalar()
            if made >= run.judgments_per_item:  # its lease ran out and others took the slots
                raise JudgeError(
                    409, f"item {item_id!r} already has its {run.judgments_per_item} judgments"
                )
        c.execute(
            self.judgments.insert().values(
                run=name,
                item=item_id,
                judge=judge,
                onboarding=row.onboarding,
                left=given.left,
                choices=json.dumps(winners),
                reason=reason,
                created=time.time(),
            )  # fmt: skip
        )
        c.execute(
            self.assignments.update()
            .where(a.run == name, a.judge == judge, a.item == item_id)
            .values(done=True)
        )
        status = self._judge_status(c, run, judge)
        if status == "onboarding":
            status = self._after_onboarding(c, run, judge)
        return {"judge": judge, "item": item_id, "excluded": status == "excluded"}

    def _winners(self, run: RunConfig, choices: dict[str, str], left: str, row) -> dict[str, str]:
        """Positions (A is the left reply) to systems, every criterion answered once."""
        if not isinstance(choices, dict):
            raise JudgeError(422, "choices must be an object: {criterion: choice}")
        missing = [k for k in run.criteria if k not in choices]
        unknown = [k for k in choices if k not in run.criteria]
        if missing or unknown:
            raise JudgeError(
                422,
                f"choices must answer exactly {', '.join(run.criteria)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(map(str, unknown))}" if unknown else ""),
            )
        allowed = CHOICES if run.ties else CHOICES[:2]
        right = row.system_b if left == row.system_a else row.system_a
        out = {}
        for criterion in run.criteria:
            choice = choices[criterion]
            if choice not in allowed:
                raise JudgeError(
                    422, f"choices.{criterion}: {choice!r} is not one of {', '.join(allowed)}"
                )
            out[criterion] = {"A": left, "B": right, "tie": "tie"}[choice]
        return out

    def _after_onboarding(self, c, run: RunConfig, judge: str) -> str:
        """Once a judge has judged every onboarding item: kept or excluded."""
        import sqlalchemy as sa

        i, j = self.items.c, self.judgments.c
        known = {
            row.id: row.answer
            for row in c.execute(
                sa.select(i.id, i.answer).where(i.run == run.name, i.onboarding == sa.true())
            )
        }
        answered = {
            row.item: json.loads(row.choices)[run.check_criterion]
            for row in c.execute(
                sa.select(j.item, j.choices).where(
                    j.run == run.name, j.judge == judge, j.onboarding == sa.true()
                )
            )
        }
        if len(answered) < len(known):
            return "onboarding"
        right = sum(answered[k] == answer for k, answer in known.items())
        status = "kept" if right >= run.onboarding_pass * len(known) - 1e-9 else "excluded"
        self._set_status(c, run.name, judge, status)
        return status

    # -- judges --------------------------------------------------------------------

    def _judge_status(self, c, run: RunConfig, judge: str) -> str:
        import sqlalchemy as sa

        row = c.execute(
            sa.select(self.judges.c.status).where(
                self.judges.c.run == run.name, self.judges.c.judge == judge
            )
        ).first()
        if row is not None:
            return row.status
        c.execute(
            self.judges.insert().values(
                run=run.name, judge=judge, created=time.time(), status="onboarding"
            )
        )
        return "onboarding"

    def _set_status(self, c, run: str, judge: str, status: str) -> None:
        c.execute(
            self.judges.update()
            .where(self.judges.c.run == run, self.judges.c.judge == judge)
            .values(status=status)
        )

    def _judged(self, c, run: str, judge: str, onboarding: bool | None) -> int:
        import sqlalchemy as sa

        j = self.judgments.c
        where = [j.run == run, j.judge == judge]
        if onboarding is not None:
            where.append(j.onboarding == (sa.true() if onboarding else sa.false()))
        return c.execute(sa.select(sa.func.count()).where(*where)).scalar()

    def _item_row(self, c, run: str, item_id: str, missing: Any = JudgeError):
        import sqlalchemy as sa

        row = c.execute(
            sa.select(self.items).where(self.items.c.run == run, self.items.c.id == item_id)
        ).first()
        if row is None and missing is JudgeError:
            raise JudgeError(404, f"no item {item_id!r} in run {run!r}")
        return row

    # -- what the report reads -----------------------------------------------------

    def export(self, name: str) -> tuple[dict[str, Any], list[dict], list[dict]]:
        """(run, items, judgments) as `evaluation.human.summarize` takes them: real items,
        and the judgments of kept judges only; excluded judges are counted in run."""
        import sqlalchemy as sa

        config = self.run(name)
        i, j, g = self.items.c, self.judgments.c, self.judges.c
        with self.db.read() as c:
            items = [
                {
                    "id": row.id,
                    "mode": config.mode,
                    "pair": [row.system_a, row.system_b],
                    **json.loads(row.content),
                }  # fmt: skip
                for row in c.execute(
                    sa.select(self.items)
                    .where(i.run == name, i.onboarding == sa.false())
                    .order_by(i.seq)
                )
            ]
            statuses = dict(
                c.execute(sa.select(g.judge, g.status).where(g.run == name)).tuples().all()
            )
            judgments = [
                {
                    "item": row.item,
                    "judge": row.judge,
                    "left": row.left,
                    "choices": json.loads(row.choices),
                    "reason": row.reason,
                    "created": row.created,
                }  # fmt: skip
                for row in c.execute(
                    sa.select(self.judgments)
                    .where(j.run == name, j.onboarding == sa.false())
                    .order_by(j.created)
                )
                if statuses.get(row.judge) == "kept"
            ]
        counts = Counter(statuses.values())
        excluded = sorted(k for k, v in statuses.items() if v == "excluded")
        run = {
            **asdict(config),
            "judges": {
                "kept": counts["kept"],
                "excluded": counts["excluded"],
                "excluded_ids": excluded,
                "reasons": {"failed onboarding": counts["excluded"]} if excluded else {},
                "in_onboarding": counts["onboarding"],
            },
        }
        return run, items, judgments
