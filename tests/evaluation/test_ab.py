"""`rejoinder ab report`: its figures against a hand count of a database written
through the stores, its tests, and its refusals."""

from __future__ import annotations

import json
import time

import pytest

from rejoinder.evaluation.ab import summarize, z_test
from rejoinder.evaluation.stats import holm
from tests.serve.test_postgres import postgres_url  # noqa: F401  (a fixture)


def fill(store) -> dict[str, str]:
    """Two arms. a: 3 sessions, 5 replies (2 up, 1 down, 1 regenerated, 1 rewritten);
    b: 2 sessions, 3 replies (0 up, 2 down); a session with no arm (left out)."""
    a1 = store.create({}, arm="a")
    store.append(a1, ("user", "hi"), ("assistant", "r1"), ("user", "more"), ("assistant", "r2"))
    store.feedback(a1, 1, rating="up")
    store.feedback(a1, 3, rating="down")
    store.replace_last_reply(a1, 3, "r2 again")  # regenerated; the new reply is not rated
    store.feedback(a1, 3, rating="up")  # ... until now: the current reply's rating counts
    a2 = store.create({}, arm="a")
    store.append(a2, ("user", "hi"), ("assistant", "r3"), ("user", "so"), ("assistant", "r4"))
    store.feedback(a2, 1, better="a better reply")
    a3 = store.create({}, arm="a")
    store.append(a3, ("user", "hey"), ("assistant", "r5"))
    b1 = store.create({}, arm="b")
    store.append(b1, ("user", "hi"), ("assistant", "s1"), ("user", "x"), ("assistant", "s2"))
    store.feedback(b1, 1, rating="down")
    store.feedback(b1, 3, rating="down")
    b2 = store.create({}, arm="b")
    store.append(b2, ("user", "hi"), ("assistant", "s3"))
    store.create({})  # a single-model server's session
    return {"a1": a1, "b1": b1}


def check(result):
    a, b = result["arms"]["a"], result["arms"]["b"]
    assert list(result["arms"]) == ["a", "b"]
    assert (a["sessions"], a["replies"], a["rated"], a["up"], a["down"]) == (3, 5, 2, 2, 0)
    assert (a["regenerated"], a["regenerations"], a["rewritten"], a["turns"]) == (1, 1, 1, 5)
    assert (b["sessions"], b["replies"], b["rated"], b["up"], b["down"]) == (2, 3, 2, 0, 2)
    assert a["rates"]["thumbs_up"]["rate"] == 1.0 and b["rates"]["thumbs_up"]["rate"] == 0.0
    assert a["rates"]["thumbs_up_per_reply"]["rate"] == pytest.approx(2 / 5)
    assert a["rates"]["rewritten"]["rate"] == pytest.approx(1 / 5)
    assert a["regenerations_per_reply"] == pytest.approx(1 / 5)
    assert a["turns_per_session"]["mean"] == pytest.approx(5 / 3)
    assert b["turns_per_session"]["mean"] == pytest.approx(3 / 2)
    low, high = a["rates"]["thumbs_up"]["low"], a["rates"]["thumbs_up"]["high"]
    assert 0 < low < 1 == high
    (test,) = result["tests"]["thumbs_up"]
    assert (test["a"], test["b"]) == ("a", "b")
    assert test["p"] == pytest.approx(z_test(2, 2, 0, 2)[1])
    assert test["p"] == test["p_holm"] == pytest.approx(0.0455, abs=1e-4)  # one pair: as it is
    assert result["decisions"] == ["a vs b: no decision"]


def test_the_report_counts_what_the_stores_hold(tmp_path):
    from rejoinder.cli import main
    from rejoinder.stores.sessions import SessionStore

    db = f"sqlite:///{tmp_path / 's.db'}"
    store = SessionStore(db)
    fill(store)
    store.close()
    assert main(["ab", "report", "--db", db, "--out", str(tmp_path / "r")]) == 0
    result = json.loads((tmp_path / "r" / "metrics.json").read_text())
    check(result)
    report = (tmp_path / "r" / "report.md").read_text()
    assert "Holm-adjusted p < 0.05" in report and "**(headline)**" in report
    assert (tmp_path / "r" / "rates.png").stat().st_size > 0
    assert main(["ab", "report", "--db", db, "--out", str(tmp_path / "r")]) == 2  # no --force
    later = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3600))
    assert main(["ab", "report", "--db", db, "--since", later, "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["arms"] == {}


def test_judged_conversations_of_each_arm_join_the_report_as_a_leaderboard(tmp_path, capsys):
    """judge create draws each arm's own sessions (sessions:URL,arm=ARM); ab report --run
    fits the Bradley-Terry board on what judges chose, with each system's arm."""
    from rejoinder.cli import main
    from rejoinder.stores.judgments import JudgeStore
    from rejoinder.stores.sessions import SessionStore

    db = f"sqlite:///{tmp_path / 's.db'}"
    store = SessionStore(db)
    fill(store)
    store.close()
    make = ["judge", "create", "--db", db, "--mode", "conversation", "--items", "10"]
    make += ["--onboarding", "0", "--turns", "2", "--judgments-per-item", "2"]
    arms = ["--system", f"A=sessions:{db},arm=a", "--system", f"B=sessions:{db},arm=b"]
    assert main([*make, "--name", "none", "--system", f"A=sessions:{db},arm=c", *arms[2:]]) == 2
    assert "has no session of arm 'c' (its arms: a, b)" in capsys.readouterr().err
    assert main([*make, "--name", "ab", *arms]) == 0
    judges = JudgeStore(db)
    chose = {"A": 0, "B": 0}
    for n, judge in enumerate(("j1", "j2")):
        while (shown := judges.next_item("ab", judge)) is not None:
            seen = {side: c[1]["text"] for side, c in shown["conversations"].items()}
            # every reply of arm a is r1..r5 (and "r2 again"), of arm b s1..s3
            assert sorted(t[0] for t in seen.values()) == ["r", "s"]
            # j1 always likes arm b's conversation, j2 arm a's in its first two items
            liked = "r" if n == 1 and chose["A"] < 2 else "s"
            pick = next(s for s, t in seen.items() if t[0] == liked)
            chose["A" if liked == "r" else "B"] += 1
            judges.judge("ab", judge, shown["item"], {"engaging": pick}, shown["left"], "why")
    judges.close()
    out = tmp_path / "r"
    assert main(["ab", "report", "--db", db, "--run", "ab", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    part = json.loads((out / "metrics.json").read_text())["judged"]
    assert part["arms"] == {"A": "a", "B": "b"}
    (board,) = part["leaderboard"]["engaging"]["boards"]
    rows = {r["system"]: r for r in board["systems"]}
    assert chose == {"A": 2, "B": 18}
    assert rows["B"]["votes"] == rows["A"]["votes"] == 20
    # two systems: the fit's strength gap is the log odds of their votes
    gap = rows["B"]["strength"] - rows["A"]["strength"]
    assert gap == pytest.approx(__import__("math").log(18 / 2), abs=1e-4)
    assert rows["B"]["rank"] == 1 and rows["B"]["low"] > rows["A"]["high"]
    assert "judged, engaging: 1. B" in printed
    report = (out / "report.md").read_text()
    assert "## Judged conversations: run ab" in report and "A: arm a, B: arm b" in report
    assert (out / "leaderboard.png").stat().st_size > 0
    # a run that draws no arm's sessions belongs to judge report
    assert main([*make, "--name", "plain", "--system", f"A=sessions:{db}", *arms[2:3],
                 f"B=sessions:{db}"]) == 0  # fmt: skip
    assert main(["ab", "report", "--db", db, "--run", "plain", "--out", str(tmp_path / "p")]) == 2
    assert "none of its systems is the sessions of an arm" in capsys.readouterr().err
    assert main(["ab", "report", "--db", db, "--run", "nope", "--out", str(tmp_path / "q")]) == 2


def test_clear_differences_are_decided_with_holm_over_pairs():
    rows = {"sessions": [], "replies": []}
    for arm, ups in (("a", 80), ("b", 40), ("c", 45)):
        rows["sessions"].append(
            {"session": arm, "arm": arm, "created": 0, "turns": 100, "replies": 100}
        )
        for i in range(100):
            rating = "up" if i < ups else "down"
            rows["replies"].append(
                {
                    "session": arm,
                    "arm": arm,
                    "seq": i,
                    "rating": rating,
                    "regenerations": 0,
                    "rewritten": False,
                }
            )
    result = summarize(rows)
    assert result["decisions"] == [
        "a vs b: a is better",
        "a vs c: a is better",
        "b vs c: no decision",
    ]
    down = {(t["a"], t["b"]): t["better"] for t in result["tests"]["thumbs_down"]}
    assert down[("a", "b")] == "a"  # fewer thumbs down is better
    tests = result["tests"]["thumbs_up"]
    assert [t["p_holm"] for t in tests] == holm([t["p"] for t in tests])


def test_rates_whose_interval_ends_at_them_are_plotted(tmp_path):
    """6 of 6 liked (and 0 of 11): Wilson's bound lands a rounding error inside the
    rate, which the plot must not turn into a negative error bar."""
    from rejoinder.evaluation.ab import write_ab_report
    from rejoinder.evaluation.stats import wilson

    assert wilson(6, 6)[1] < 1.0 and wilson(0, 11)[0] > 0.0  # the rounding in question
    rows = {"sessions": [], "replies": []}
    for arm, n, rating in (("a", 6, "up"), ("b", 11, "down")):
        rows["sessions"].append({"session": arm, "arm": arm, "created": 0, "turns": n,
                                 "replies": n})  # fmt: skip
        rows["replies"] += [{"session": arm, "arm": arm, "seq": i, "rating": rating,
                             "regenerations": 0, "rewritten": False} for i in range(n)]  # fmt: skip
    write_ab_report(summarize(rows), tmp_path / "r")
    assert (tmp_path / "r" / "rates.png").stat().st_size > 0
    # the judging report's win-rate panel too: 6 wins of 6
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rejoinder.evaluation.human_report import win_rate_panel

    low, high = wilson(6, 6)
    fig, ax = plt.subplots()
    win_rate_panel(ax, "relevance", [{"first": "a", "second": "b", "win_rate": 1.0, "low": low,
                              "high": high}])  # fmt: skip
    plt.close(fig)


def test_z_test_edges():
    assert z_test(0, 0, 3, 5) == (None, 1.0)
    assert z_test(5, 5, 5, 5) == (None, 1.0)
    z, p = z_test(60, 100, 40, 100)
    assert z == pytest.approx(2.8284, abs=1e-4) and p == pytest.approx(0.00468, abs=1e-5)


def test_a_bad_since_is_refused(tmp_path, capsys):
    from rejoinder.cli import main

    db = f"sqlite:///{tmp_path / 's.db'}"
    assert (
        main(["ab", "report", "--db", db, "--since", "last week", "--out", str(tmp_path / "r")])
        == 2
    )
    assert "--since 'last week': write an ISO date" in capsys.readouterr().err


@pytest.mark.skipif(
    not __import__("glob").glob("/usr/lib/postgresql/*/bin/initdb"), reason="no PostgreSQL"
)
def test_the_report_on_postgres(postgres_url):  # noqa: F811
    from rejoinder.stores.arms import ab_rows
    from rejoinder.stores.sessions import SessionStore

    store = SessionStore(postgres_url)
    fill(store)
    check(summarize(ab_rows(store)))
    store.close()
