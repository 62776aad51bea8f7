"""Real chat data in every format: explicit roles decide rendering and labels, the system
prompt and the persona survive truncation, templates that refuse repeated roles."""

import functools
import json
import logging

import pytest

from rejoinder import Dialogue, RejoinderError
from rejoinder.dialogue import Turn
from rejoinder.formats import FORMATS, IGNORE, get_format
from rejoinder.tokenizers import gpt2_tokenizer

# ChatML as Qwen2 and SmolLM write it: <|im_end|> ends every message.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Llama 2's habit: roles must alternate, starting with the user's.
STRICT = (
    "{% for m in messages %}{% if m['role'] != 'system' and (m['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}<|im_start|>{{ m['role'] }}\n"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def user(text):
    return Turn(text, "user")


def bot(text):
    return Turn(text, "assistant")


@functools.cache
def make(name, **settings):
    tok = gpt2_tokenizer()
    if name == "chat-template":
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        settings.setdefault("template", CHATML)
    return get_format(name, tok, **settings)


def learnt(fmt, turns, loss_on="responses"):
    """The labelled text of a training example."""
    ex = fmt.training_example(turns, loss_on=loss_on)
    ids = [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE]
    return fmt.tokenizer.decode(ids)


# Conversations as real logs have them, and the assistant turns each must learn.
MESSY = {
    "two user turns in a row": (
        [user("hi there"), user("how is my dog"), bot("i think my dog is good")],
        ["i think my dog is good"],
    ),
    "an assistant greeting first": (
        [bot("Welcome! How can I help?"), user("book a table"), bot("For how many?")],
        ["Welcome! How can I help?", "For how many?"],
    ),
    "ending on the user": (
        [user("hello"), bot("hi, how are you?"), user("fine"), user("and you?")],
        ["hi, how are you?"],
    ),
    "two assistant turns in a row": (
        [user("tell me a joke"), bot("Why did the chicken"), bot("cross the road?")],
        ["Why did the chicken", "cross the road?"],
    ),
}


@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("case", list(MESSY))
def test_explicit_roles_decide_what_is_learnt(name, case):
    fmt = make(name)
    turns, replies = MESSY[case]
    text = learnt(fmt, turns)
    for turn in turns:
        assert (turn.text in text) == (turn.text in replies), (turn.text, text)
    # "last" learns the latest assistant turn, even when the user spoke after it.
    assert learnt(fmt, turns, "last").strip().startswith(replies[-1])


def test_the_issues_openai_line_learns_the_assistant_alone():
    fmt = make("chat-template")
    turns = [user("hi there"), user("how is my dog"), bot("i think my dog is good")]
    assert learnt(fmt, turns) == "i think my dog is good<|im_end|>"
    prompt = fmt.tokenizer.decode(fmt.encode(turns[:2]).input_ids)
    assert prompt == (
        "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>user\nhow is my dog<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_roles_are_rendered_by_the_formats_that_have_them():
    turns = [bot("Welcome!"), user("hi"), user("anyone?")]
    tok = make("template").tokenizer
    assert tok.decode(make("template").encode(turns).input_ids) == (
        "Agent: Welcome!\nUser: hi\nUser: anyone?\nAgent:"
    )
    speaker = make("speaker")
    ids = speaker.encode(turns).input_ids
    marks = [i for i in ids if i in (speaker.user_id, speaker.bot_id)]
    assert marks == [speaker.bot_id, speaker.user_id, speaker.user_id, speaker.bot_id]
    # Turns without roles alternate back from the reply, as they always have.
    plain = [m for m in speaker.encode(["a", "b", "c"]).input_ids if m >= speaker.user_id]
    assert plain == [speaker.user_id, speaker.bot_id, speaker.user_id, speaker.bot_id]


@pytest.mark.parametrize("name", list(FORMATS))
def test_turns_without_roles_learn_as_before(name):
    fmt = make(name)
    turns = ["Hi!", "Hello.", "How are you?", "Fine."]
    text = learnt(fmt, turns)
    assert "Hi!" not in text and "Fine." in text
    # Every turn after the first, but in a chat template only the assistant's side.
    assert ("How are you?" in text) == (name != "chat-template")


@pytest.mark.parametrize("name", list(FORMATS))
def test_a_reverse_model_reads_positions_not_roles(name):
    forward, backward = make(name), make(name, reverse=True)
    turns = [user("hi"), user("anyone there?"), bot("yes")]
    assert (
        backward.encode(turns).input_ids == forward.encode(["yes", "anyone there?", "hi"]).input_ids
    )


@pytest.mark.parametrize("name", list(FORMATS))
def test_the_persona_and_system_prompt_are_never_cut(name):
    fmt = make(name, persona="I am a pirate who loves his dog.", max_tokens=None)
    system = Turn("Speak like a pirate.", "system")
    long = [system] + [t for i in range(30) for t in (user(f"question {i}?"), bot(f"answer {i}."))]
    full = fmt.encode(long)
    for budget in (len(full) - 1, len(full) // 2, len(fmt.encode([system, *long[-2:]]))):
        enc = fmt.encode(long, max_tokens=budget)
        assert len(enc) <= budget and enc.dropped_turns > 0
        text = fmt.tokenizer.decode(enc.input_ids)
        assert "question 29?" in text and "question 0?" not in text
        assert "I am a pirate who loves his dog." in text
        assert ("Speak like a pirate." in text) == (name == "chat-template")
    # Training windows keep them too.
    ex = fmt.training_example(long, max_tokens=len(full) // 3)
    assert "pirate who loves" in fmt.tokenizer.decode(ex.input_ids)
    with pytest.raises(RejoinderError, match="never cut.*shorten"):
        fmt.encode(long, max_tokens=len(fmt.persona_ids))


def test_a_persona_turn_replaces_the_formats_and_is_saved_with_it():
    fmt = make("dialogpt", persona="I love cats.")
    assert fmt.settings()["persona"] == "I love cats."
    said = fmt.tokenizer.decode(fmt.encode([Turn("I love dogs.", "persona"), "hi"]).input_ids)
    assert said == "I love dogs.<|endoftext|>hi<|endoftext|>"
    chat = make("chat-template", persona="I love cats.", system="Be brief.")
    prompt = chat.tokenizer.decode(chat.encode(["hi"]).input_ids)
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\nI love cats.<|im_end|>")


def test_a_template_that_refuses_repeated_roles_gets_them_joined(caplog):
    fmt = make("chat-template", template=STRICT)
    turns = [user("hi there"), user("how is my dog"), bot("good")]
    with caplog.at_level(logging.WARNING):
        ex = fmt.training_example(turns)
    assert "joins messages of one role" in caplog.text
    text = fmt.tokenizer.decode(ex.input_ids)
    assert text.startswith("<|im_start|>user\nhi there\nhow is my dog<|im_end|>\n")
    assert learnt(fmt, turns) == "good<|im_end|>"
    # What no join can mend is reported, not papered over.
    with pytest.raises(RejoinderError, match="roles must alternate"):
        fmt.encode([bot("Welcome!"), user("hi")])


def test_a_jsonl_build_of_openai_messages_keeps_its_roles(tmp_path):
    from rejoinder.data.build import BuildConfig, Source, build
    from rejoinder.data.records import read_dialogues
    from rejoinder.training.examples import examples_of

    lines = [
        {"messages": [{"role": "system", "content": "Be kind."},
                      {"role": "user", "content": "hi there"},
                      {"role": "user", "content": "how is my dog"},
                      {"role": "assistant", "content": "i think my dog is good"}]},
        {"conversations": [{"from": "gpt", "value": "Welcome!"},
                           {"from": "human", "value": "thanks"},
                           {"from": "gpt", "value": "How can I help?"}]},
        {"persona": "I am a chef.", "turns": [{"text": "what's for dinner?", "speaker": "user"},
                                              {"text": "Pasta.", "speaker": "assistant"}]},
    ]  # fmt: skip
    src = tmp_path / "chats.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    build(BuildConfig(sources=[Source("jsonl", {"path": str(src)})], out=str(tmp_path / "ds"),
                      valid=0, test=0))  # fmt: skip
    dialogues = {d.texts[0]: d for d in read_dialogues(tmp_path / "ds", "train")}
    assert [t.speaker for t in dialogues["hi there"].turns] == ["user", "user", "assistant"]
    assert dialogues["hi there"].meta["system"] == "Be kind."
    assert [t.speaker for t in dialogues["Welcome!"].turns] == ["assistant", "user", "assistant"]
    fmt = make("chat-template")
    [ex] = examples_of(dialogues["hi there"], fmt, "responses", 256)
    text = fmt.tokenizer.decode(ex.input_ids.tolist())
    assert text.startswith("<|im_start|>system\nBe kind.<|im_end|>")
    labels = [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE]
    assert fmt.tokenizer.decode(labels) == "i think my dog is good<|im_end|>"
    [ex] = examples_of(dialogues["Welcome!"], fmt, "responses", 256)
    labels = [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE]
    assert fmt.tokenizer.decode(labels) == "Welcome!<|im_end|>How can I help?<|im_end|>"
    [ex] = examples_of(dialogues["what's for dinner?"], make("dialogpt"), "responses", 256)
    assert make("dialogpt").tokenizer.decode(ex.input_ids.tolist()).startswith("I am a chef.")


def test_bad_chat_lines_are_skipped_and_counted(tmp_path):
    from rejoinder.data.readers.jsonl import read_jsonl
    from rejoinder.data.report import Report

    lines = [
        {"messages": [{"role": "user", "content": "weather?"},
                      {"role": "tool", "content": "{\"sunny\": true}"},
                      {"role": "assistant", "content": "Sunny."}]},
        {"messages": [{"role": "system", "content": "Be kind."}]},
        {"messages": [{"role": "user", "content": "hi"},
                      {"role": "system", "content": "Be brief."},
                      {"role": "assistant", "content": "hello"}]},
        ["first", "", "third"],
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "},
                      {"role": "user", "content": "anyone?"}]},
    ]  # fmt: skip
    src = tmp_path / "bad.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    report = Report()
    kept = list(read_jsonl(src, report=report))
    assert report.bad_input == {
        "unknown role": 1,
        "only system messages": 1,
        "empty turn after a turn without a role": 1,
    }
    moved, explicit = kept
    assert moved.meta["system"] == "Be brief." and moved.texts == ["hi", "hello"]
    assert report.counts["system messages after the first turn moved to the prompt"] == 1
    # An empty message of a named role goes; the roles of the others stay theirs.
    assert [(t.text, t.speaker) for t in explicit.turns] == [("hi", "user"), ("anyone?", "user")]
    assert report.counts["empty turns skipped"] == 2


def test_dialogue_roles_are_only_exact_role_names():
    d = Dialogue.from_turns(
        [{"text": "hi", "speaker": "A"}, {"content": "hello", "role": "assistant"}], id="d"
    )
    fmt = make("template")
    assert fmt.tokenizer.decode(fmt.encode(d).input_ids) == "User: hi\nAgent: hello\nAgent:"
    fmt.encode([Turn("hi", "User")])  # a speaker id, not a role: no error, it alternates
