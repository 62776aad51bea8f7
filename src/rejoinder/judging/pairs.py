"""Turn-mode judgments as preference pairs, for `rejoinder data build feedback`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from rejoinder.data.pairs import RawPair
from rejoinder.judging.store import JudgeStore


def judged_pairs(store: JudgeStore, report) -> Iterator[RawPair]:
    """Turn-mode judgments as preference pairs (kind `judged`): per judged item, the reply
    that won more of the kept judges' decisive votes (every criterion counted) against
    the other. Items whose votes tie, or are all ties, give none and are counted under
    the report's skipped reasons; items nobody judged are not feedback and are passed."""
    for name in store.run_names():
        run, items, judgments = store.export(name)
        if run["mode"] != "turn":
            continue
        votes: dict[str, Counter] = {}
        for j in judgments:
            counter = votes.setdefault(j["item"], Counter())
            counter.update(w for w in j["choices"].values() if w != "tie")
        for item in items:
            if item["id"] not in votes:
                continue
            counter = votes[item["id"]]
            if not counter:
                report.bad("judged: only ties", f"{name}/{item['id']}")
                continue
            (best, most), *rest = counter.most_common() + [("", 0)]
            second = next((n for s, n in rest if s), 0)
            if most == second:
                report.bad("judged: votes tied", f"{name}/{item['id']}")
                continue
            other = next(s for s in item["pair"] if s != best)
            chosen, rejected = item["replies"][best], item["replies"][other]
            if chosen.strip() == rejected.strip():
                report.bad("judged: identical replies", f"{name}/{item['id']}")
                continue
            yield RawPair(
                id=f"{name}-{item['id']}",
                kind="judged",
                group=f"{name}-{item['id']}",
                context=list(item["context"]),
                chosen=chosen,
                rejected=rejected,
                chosen_feedback=float(most),
                rejected_feedback=float(second),
                source="judging",
            )
