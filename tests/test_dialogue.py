import pytest

from rejoinder import Dialogue, RejoinderError, Turn
from rejoinder.dialogue import as_context


def test_turn_keeps_speaker_and_labels():
    t = Turn("I'm so happy!", speaker="A", labels={"emotion": "happiness", "act": "inform"})
    assert t.labels["emotion"] == "happiness"
    assert Turn.from_dict(t.to_dict()) == t
    assert len({t, Turn.from_dict(t.to_dict())}) == 1  # hashable, equal by value


@pytest.mark.parametrize("text", [None, 3, b"bytes", ["a"]])
def test_turn_text_must_be_a_string(text):
    with pytest.raises(RejoinderError, match="must be a string"):
        Turn(text)


def test_turn_rejects_empty_text_and_bad_labels():
    with pytest.raises(RejoinderError, match="empty"):
        Turn("   ")
    with pytest.raises(RejoinderError, match="label"):
        Turn("hi", labels={"emotion": ["a", "b"]})
    with pytest.raises(RejoinderError, match="speaker"):
        Turn("hi", speaker=7)


def test_openai_style_messages_become_turns():
    t = Turn.from_dict({"role": "user", "content": "Hi"})
    assert (t.text, t.speaker) == ("Hi", "user")


def test_dialogue_round_trip_and_reverse():
    d = Dialogue.from_turns(
        ["a", Turn("b", speaker="x"), {"text": "c", "act": "question"}],
        id="t1",
        source="test",
        style="polite",
    )
    assert d.texts == ["a", "b", "c"]
    assert Dialogue.from_dict(d.to_dict()) == d
    assert d.reversed().texts == ["c", "b", "a"]
    assert d.turns[2].labels == {"act": "question"}


def test_dialogue_validation_names_the_problem():
    with pytest.raises(RejoinderError, match="no turns"):
        Dialogue.from_turns([], id="x")
    with pytest.raises(RejoinderError, match="turn 1 is empty"):
        Dialogue.from_turns(["a", ""], id="x")
    with pytest.raises(RejoinderError, match="turn 1 is a int"):
        Dialogue.from_turns(["a", 5], id="x")
    with pytest.raises(RejoinderError, match="id"):
        Dialogue.from_turns(["a"], id="")
    with pytest.raises(RejoinderError, match="needs the key"):
        Dialogue.from_dict({"turns": ["a"]})


def test_context_normalisation():
    assert as_context(None) == [] and as_context([]) == []
    assert [t.text for t in as_context("Hello")] == ["Hello"]
    assert [t.text for t in as_context(["a", "", "  ", {"content": ""}, "b"])] == ["a", "b"]
    with pytest.raises(RejoinderError, match="turn 1"):
        as_context(["a", 42])
    with pytest.raises(RejoinderError, match="list of turns"):
        as_context(42)
