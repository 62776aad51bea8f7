"""Judging runs in the database: onboarding, quotas, refusals, and judges at once."""

from __future__ import annotations

import concurrent.futures
from collections import Counter

import pytest

pytest.importorskip("sqlalchemy", reason="the serve extra is not installed")

from rejoinder.stores.judgments import JudgeStore  # noqa: E402
from rejoinder.stores.runs import Item, JudgeError, RunConfig  # noqa: E402


def make_run(store, name="run", items=6, onboarding=2, per_item=2, quota=4, mode="turn"):
    criteria = ["relevance", "humanlike"] if mode == "turn" else ["engaging"]
    config = RunConfig(
        name=name, mode=mode, systems=["x", "y"], criteria=criteria,
        questions={c: f"{c}?" for c in criteria}, judgments_per_item=per_item, quota=quota,
        check_criterion=criteria[0],
    )  # fmt: skip

    def content(a, b):
        if mode == "turn":
            return {"context": ["hi"], "replies": {"x": a, "y": b}}
        return {"conversations": {"x": talk(a), "y": talk(b)},
                "speaker": {"x": "Speaker 2", "y": "Speaker 2"}}  # fmt: skip

    real = [Item(f"i{k}", ("x", "y"), content(f"x says {k}", f"y says {k}")) for k in range(items)]
    known = [
        Item(f"o{k}", ("real", "other"), {**content("", ""), **_known(mode, k)}, True, "real")
        for k in range(onboarding)
    ]
    store.create_run(config, known + real)
    return config


def _known(mode, k):
    if mode == "turn":
        return {"replies": {"real": f"the real reply {k}", "other": f"another {k}"}}
    return {"conversations": {"real": talk(f"real {k}"), "other": talk(f"other {k}")},
            "speaker": {"real": "Speaker 2", "other": "Speaker 2"}}  # fmt: skip


def talk(text):
    return [{"speaker": "Speaker 1", "text": "hi"}, {"speaker": "Speaker 2", "text": text}]


def real_side(shown) -> str:
    """The position of the real reply or conversation in an onboarding item."""
    a = shown["replies"]["A"] if "replies" in shown else shown["conversations"]["A"][1]["text"]
    return "A" if "real" in a else "B"


def answer_all(store, run, judge, choose, reason=None) -> int:
    """Judges until nothing is left; choose(shown) -> the choices; returns items judged."""
    done = 0
    while (shown := store.next_item(run, judge)) is not None:
        store.judge(run, judge, shown["item"], choose(shown), shown["left"], reason)
        done += 1
    return done


def careful(shown):
    side = real_side(shown) if "real" in str(shown) else "A"
    return {c["name"]: side for c in shown["criteria"]}


@pytest.fixture
def store(tmp_path):
    s = JudgeStore(f"sqlite:///{tmp_path / 'judging.db'}")
    yield s
    s.close()


def test_onboarding_comes_first_and_a_careless_judge_is_kept_out(store):
    make_run(store)
    seen = []
    first = store.next_item("run", "careful")
    assert first["item"] == store.next_item("run", "careful")["item"]  # a reload resumes it
    while (shown := store.next_item("run", "careful")) is not None:
        seen.append(shown["item"])
        store.judge("run", "careful", shown["item"], careful(shown), shown["left"])
    assert seen[:2] == ["o0", "o1"] and len(seen) == 2 + 4  # onboarding, then the quota
    shown = store.next_item("run", "careless")
    wrong = "B" if real_side(shown) == "A" else "A"
    store.judge(
        "run", "careless", shown["item"], {"relevance": wrong, "humanlike": "A"}, shown["left"]
    )
    shown = store.next_item("run", "careless")  # one right answer is not enough: 1.0 needed
    done = store.judge("run", "careless", shown["item"], careful(shown), shown["left"])
    assert done["excluded"] and store.next_item("run", "careless") is None
    run, items, judgments = store.export("run")
    assert run["judges"]["kept"] == 1 and run["judges"]["excluded_ids"] == ["careless"]
    assert {j["judge"] for j in judgments} == {"careful"} and len(judgments) == 4
    assert [i["id"] for i in items] == [f"i{k}" for k in range(6)]  # onboarding items left out


def test_choices_are_stored_as_systems_whatever_side_they_were_on(store):
    make_run(store, onboarding=0, quota=6, per_item=1)
    answer_all(store, "run", "j", lambda s: {"relevance": "A", "humanlike": "tie"})
    _, _, judgments = store.export("run")
    assert len(judgments) == 6
    for j in judgments:
        assert j["choices"] == {"relevance": j["left"], "humanlike": "tie"}


def test_refusals_name_what_is_wrong(store):
    make_run(store, onboarding=0)
    shown = store.next_item("run", "j")
    cases = [
        (lambda: store.next_item("nope", "j"), 404, "no judging run"),
        (lambda: store.next_item("run", "bad id!"), 422, "judge must be"),
        (lambda: store.judge("run", "j", "zzz", {}, shown["left"]), 404, "no item"),
        (lambda: store.judge("run", "j", "i5" if shown["item"] != "i5" else "i4", {}, "x"),
         403, "was not given"),
        (lambda: store.judge("run", "j", shown["item"], {"relevance": "A"}, shown["left"]),
         422, "missing humanlike"),
        (lambda: store.judge("run", "j", shown["item"], {"relevance": "A", "humanlike": "A",
         "fun": "A"}, shown["left"]), 422, "unknown fun"),
        (lambda: store.judge("run", "j", shown["item"], {"relevance": "left", "humanlike": "A"},
         shown["left"]), 422, "not one of A, B, tie"),
        (lambda: store.judge("run", "j", shown["item"], {"relevance": "A", "humanlike": "A"},
         "stale"), 409, "fetch the next item"),
    ]  # fmt: skip
    for call, status, words in cases:
        with pytest.raises(JudgeError, match=words) as e:
            call()
        assert e.value.status == status
    store.judge("run", "j", shown["item"], {"relevance": "A", "humanlike": "B"}, shown["left"])
    with pytest.raises(JudgeError, match="already judged") as e:
        store.judge("run", "j", shown["item"], {"relevance": "A", "humanlike": "B"}, shown["left"])
    assert e.value.status == 409
    assert len(store.export("run")[2]) == 1  # refused judgments counted nowhere


def test_conversation_mode_asks_a_forced_choice_and_a_reason(store):
    make_run(store, onboarding=0, mode="conversation")
    shown = store.next_item("run", "j")
    assert shown["choices"] == ["A", "B"] and shown["reason"] == "required"
    assert set(shown["conversations"]) == {"A", "B"} and shown["speaker"]["A"] == "Speaker 2"
    with pytest.raises(JudgeError, match="not one of A, B"):
        store.judge("run", "j", shown["item"], {"engaging": "tie"}, shown["left"], "why")
    with pytest.raises(JudgeError, match="reason"):
        store.judge("run", "j", shown["item"], {"engaging": "A"}, shown["left"], "  ")
    store.judge("run", "j", shown["item"], {"engaging": "A"}, shown["left"], "<b>kind</b>")
    assert store.export("run")[2][0]["reason"] == "<b>kind</b>"  # stored as given, as text


def test_nothing_shown_names_a_system(store):
    make_run(store, onboarding=1)
    shown = store.next_item("run", "j")
    text = repr(shown)
    for name in ("'x'", "'y'", "real'", "other'"):
        assert name not in text


def check_never_over(store, run, per_item):
    _, items, judgments = store.export(run)
    per = Counter(j["item"] for j in judgments)
    assert max(per.values()) <= per_item
    assert len({(j["item"], j["judge"]) for j in judgments}) == len(judgments)
    return per


def judge_concurrently(url: str) -> None:
    """16 judges on two stores (two servers' worth of connections) fill every slot of a
    run once: never more than 3 judgments an item, never one judge twice."""
    stores = [JudgeStore(url), JudgeStore(url)]
    make_run(stores[0], items=10, onboarding=1, per_item=3, quota=10)

    def work(k):
        return answer_all(stores[k % 2], "run", f"judge{k}", careful)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        done = list(pool.map(work, range(16)))
    per = check_never_over(stores[0], "run", 3)
    assert sum(per.values()) == 30  # every slot filled, none twice
    assert sum(done) == 30 + 16  # plus each judge's onboarding item
    for s in stores:
        s.close()


def test_concurrent_judges_never_exceed_the_judgments_per_item(tmp_path):
    judge_concurrently(f"sqlite:///{tmp_path / 'judging.db'}")


def test_judged_pairs_take_the_majority_of_kept_judges(store, tmp_path):
    from rejoinder.data.chat_feedback import judged_pairs
    from rejoinder.data.report import Report

    make_run(store, items=2, onboarding=0, per_item=3, quota=2)
    votes = iter(["A", "A", "tie"] * 10)
    for judge in ("j1", "j2", "j3"):
        while (shown := store.next_item("run", judge)) is not None:
            side = next(votes)
            to_x = {"A": "A" if shown["replies"]["A"].startswith("x") else "B", "tie": "tie"}
            store.judge(
                "run",
                judge,
                shown["item"],
                {"relevance": to_x[side], "humanlike": to_x[side]},
                shown["left"],
            )
    report = Report()
    pairs = list(judged_pairs((store.export(n) for n in store.run_names()), report))
    assert len(pairs) == 2 and all(p.kind == "judged" for p in pairs)
    assert all(p.chosen.startswith("x says") and p.rejected.startswith("y says") for p in pairs)
    assert all(p.chosen_feedback > p.rejected_feedback for p in pairs)
    # ... and `data build feedback` makes them into a pairs dataset.
    import json

    from rejoinder.cli import main

    out = tmp_path / "pairs"
    assert main(["data", "build", "feedback", "--db", store.db.url, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "pairs" and manifest["pairs"]["total"] == 2
