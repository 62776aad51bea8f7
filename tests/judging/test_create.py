"""`rejoinder judge create`, `report` and `list` from the command line, on tiny models."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from rejoinder.cli import main
from tests.conftest import PARROT, chat_dataset

pytest.importorskip("sqlalchemy", reason="the serve extra is not installed")

LINES = [["Hello", "Hi there, friend"], ["How are you?", "Fine, thanks", "And you?", "Good"]]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return chat_dataset(tmp_path_factory.mktemp("judging"), LINES, count=24)


def create(db, *args) -> int:
    return main(["judge", "create", "--db", db, "--split", "train", *args])


def test_a_turn_run_balances_pairs_and_stores_each_system_reply(
    tmp_path, dataset, parrot_dir, make_checkpoint, capsys
):
    from rejoinder.generation import ConversationModel
    from rejoinder.stores.judgments import JudgeStore

    db = f"sqlite:///{tmp_path / 'j.db'}"
    other = make_checkpoint("dialogpt")
    code = create(
        db, "--name", "t1", "--data", str(dataset), "--items", "6", "--onboarding", "2",
        "--system", f"parrot={parrot_dir},preset=greedy",
        "--system", f"other={other},preset=greedy,backend=ctranslate2",
        "--human", "--max-new-tokens", "12",
    )  # fmt: skip
    assert code == 0
    assert "6 items" in capsys.readouterr().out
    store = JudgeStore(db)
    run, items, _ = store.export("t1")
    assert run["systems"] == ["parrot", "other", "human"]
    assert run["criteria"] == ["relevance", "informativeness", "humanlike"]
    assert Counter(tuple(i["pair"]) for i in items) == {
        ("parrot", "other"): 2, ("parrot", "human"): 2, ("other", "human"): 2,
    }  # fmt: skip
    parrot = ConversationModel.from_pretrained(parrot_dir)
    fast = ConversationModel.from_pretrained(other, backend="ctranslate2")
    for item in items:
        if "other" in item["pair"]:
            expected = fast.generate(item["context"], preset="greedy", max_new_tokens=12, seed=0)
            assert item["replies"]["other"] == expected.strip()
        assert set(item["replies"]) == set(item["pair"])
        if "parrot" in item["pair"]:
            expected = parrot.generate(item["context"], preset="greedy", max_new_tokens=12, seed=0)
            assert item["replies"]["parrot"] == expected.strip()
        if "human" in item["pair"]:
            assert item["replies"]["human"] in {line[-1] for line in LINES} or item["replies"][
                "human"
            ].startswith("number")
    # The onboarding items come first, the real reply against another's.
    shown = store.next_item("t1", "someone")
    assert shown["item"] not in {i["id"] for i in items}
    store.close()


def test_a_conversation_run_self_chats_from_the_same_opening(
    tmp_path, dataset, parrot_dir, make_checkpoint
):
    from rejoinder.stores.judgments import JudgeStore

    db = f"sqlite:///{tmp_path / 'j.db'}"
    code = create(
        db, "--name", "c1", "--data", str(dataset), "--items", "4", "--mode", "conversation",
        "--turns", "4", "--question", "human", "--onboarding", "1", "--max-new-tokens", "12",
        "--system", f"a={parrot_dir},preset=greedy", "--system", f"b={make_checkpoint('dialogpt')}",
    )  # fmt: skip
    assert code == 0
    store = JudgeStore(db)
    run, items, _ = store.export("c1")
    assert run["criteria"] == ["human"] and "more human" in run["questions"]["human"]
    for item in items:
        a, b = (item["conversations"][s] for s in item["pair"])
        assert len(a) == len(b) == 4
        assert a[0] == b[0]  # one opening, from the dataset
        assert [t["speaker"] for t in a] == ["Speaker 1", "Speaker 2"] * 2
        assert item["speaker"] == {"a": "Speaker 2", "b": "Speaker 2"}
    shown = store.next_item("c1", "j")  # an onboarding conversation: no system named
    assert shown["choices"] == ["A", "B"] and shown["reason"] == "required"
    store.close()


def test_conversations_from_a_session_database(tmp_path, dataset, parrot_dir):
    from rejoinder.stores.judgments import JudgeStore
    from rejoinder.stores.sessions import SessionStore

    sessions = f"sqlite:///{tmp_path / 'sessions.db'}"
    s = SessionStore(sessions)
    for k in range(3):
        sid = s.create()
        s.append(sid, ("user", f"Hello {k}"), ("assistant", PARROT["Hello"]))
    s.append(s.create(), ("user", "nobody answered"))  # no reply: not a conversation
    s.close()
    db = f"sqlite:///{tmp_path / 'j.db'}"
    code = create(
        db, "--name", "s1", "--data", str(dataset), "--items", "3", "--mode", "conversation",
        "--onboarding", "0", "--system", f"served=sessions:{sessions}",
        "--system", f"parrot={parrot_dir},preset=greedy", "--turns", "2",
    )  # fmt: skip
    assert code == 0
    _, items, _ = JudgeStore(db).export("s1")
    served = [i["conversations"]["served"] for i in items]
    assert all(
        c[1]["text"] == PARROT["Hello"] and c[0]["text"].startswith("Hello ") for c in served
    )


@pytest.mark.parametrize(
    "args, words",
    [
        (["--system", "a=x"], "at least two systems"),
        (["--system", "a=x", "--system", "a=y"], "two systems have one name"),
        (["--system", "a=x,temperature=1", "--human"], "is not one of reverse="),
        (["--system", "human=x", "--human"], "--human's system"),
        (["--human", "--system", "a=x", "--criteria", "fun"], "a criterion of your own"),
        (["--human", "--system", "a=x", "--items", "0"], "--items must be at least 1"),
    ],
)
def test_bad_runs_are_refused_with_the_fix(tmp_path, dataset, args, words, capsys):
    db = f"sqlite:///{tmp_path / 'j.db'}"
    assert create(db, "--name", "bad", "--data", str(dataset), *args) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_a_name_in_use_is_refused_and_report_writes_the_results(tmp_path, dataset, capsys):
    from rejoinder.stores.judgments import JudgeStore

    db = f"sqlite:///{tmp_path / 'j.db'}"
    args = ["--name", "r", "--data", str(dataset), "--items", "4", "--human", "--onboarding", "0"]
    # Two systems that need no model: stored sessions ("bot") against the dataset's own
    # conversations ("human").
    sessions = f"sqlite:///{tmp_path / 's.db'}"
    from rejoinder.stores.sessions import SessionStore

    s = SessionStore(sessions)
    for k in range(2):
        s.append(s.create(), ("user", f"hi {k}"), ("assistant", f"reply {k}"))
    s.close()
    conversation = [
        "--mode",
        "conversation",
        "--system",
        f"bot=sessions:{sessions}",
        "--turns",
        "2",
    ]
    assert create(db, *args, *conversation) == 0
    out = capsys.readouterr().out
    # 4 items of one pair x 3 judgments, a forced choice: 12 decisive votes
    assert "the pair gets 4 items x 3 judgments = 12 judgments; conversation mode has no " in out
    assert "a 60% win rate needs 194 decisive votes (194 judgments) per pair: too few" in out
    # 12 judgments at the default quota of 50: the 3 judges an item needs are enough
    assert "the run's 12 judgments need at least 3 judges (--quota 50 items each" in out
    assert create(db, *args, *conversation) == 2
    assert "already a run named 'r'" in capsys.readouterr().err
    store = JudgeStore(db)
    for judge in ("j1", "j2", "j3"):
        while (shown := store.next_item("r", judge)) is not None:
            bot_side = "A" if shown["conversations"]["A"][1]["text"].startswith("reply") else "B"
            store.judge("r", judge, shown["item"], {"engaging": bot_side}, shown["left"], "it <b>")
    store.close()
    out = tmp_path / "report"
    assert main(["judge", "report", "r", "--db", db, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Bradley–Terry leaderboard" in printed and "| 1 | bot |" in printed
    assert "no finite maximum-likelihood estimate" in printed  # bot won every vote
    results = json.loads((out / "results.json").read_text())
    assert [r["system"] for r in results["leaderboard"]["engaging"]["boards"][0]["systems"]] == [
        "bot", "human",
    ]  # fmt: skip
    assert (out / "leaderboard.png").stat().st_size > 0
    (row,) = results["comparisons"]["engaging"]
    assert (row["first"], row["second"], row["wins"], row["losses"]) == ("bot", "human", 12, 0)
    assert "it &lt;b&gt;" in (out / "report.md").read_text()
    assert (out / "winrate.png").stat().st_size > 0
    assert len((out / "acute.jsonl").read_text().splitlines()) == 12
    assert main(["judge", "report", "nope", "--db", db, "--out", str(tmp_path / "x")]) == 2
    assert "no judging run 'nope'" in capsys.readouterr().err
    assert main(["judge", "list", "--db", db]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert (listed["run"], listed["items"], listed["judgments"]) == ("r", 4, 12)


def test_the_judges_a_run_needs_follow_its_quota():
    from rejoinder.judging.commands import power_lines
    from rejoinder.judging.create import CreateOptions

    made = {"name": "x", "items": 200, "pairs": [["a", "b"], ["a", "c"], ["b", "c"]]}
    for quota, judges in ((50, 12), (49, 13), (1000, 3)):
        options = CreateOptions(name="x", quota=quota, judgments_per_item=3)
        assert f"600 judgments need at least {judges} judges" in power_lines(made, options)[-1]
