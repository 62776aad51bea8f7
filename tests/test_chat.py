import io
import subprocess
import sys

import pytest

from rejoinder import ConversationModel, RejoinderError
from rejoinder.chat import ChatSession, repl


@pytest.fixture(scope="module")
def parrot(parrot_dir):
    return ConversationModel.from_pretrained(parrot_dir)


def run(session, text, interactive=False):
    """Runs the REPL on `text`; returns the exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = repl(session, stdin=io.StringIO(text), stdout=out, stderr=err, interactive=interactive)
    return code, out.getvalue(), err.getvalue()


def test_piped_chat_prints_one_reply_a_line(parrot):
    code, out, err = run(ChatSession(parrot), "Hello\n\n/unknown\nHow are you?\nquit\nHello\n")
    assert code == 0
    assert out.splitlines() == ["Hi there, friend", "", "", "Fine, thanks"]
    assert "unknown command '/unknown'" in err


def test_history_reset_and_set(parrot):
    session = ChatSession(parrot)
    script = "Hello\n/history\n/set max_new_tokens=3 do_sample=false\n/reset\n/history\n/quit\n"
    code, out, err = run(session, script)
    assert out.splitlines() == ["Hi there, friend"]  # stdout: the replies alone
    notes = err.splitlines()
    assert notes[:2] == ["user >> Hello", "bot >> Hi there, friend"]
    assert '"max_new_tokens": 3' in notes[2]
    assert notes[3:] == ["(conversation reset)", "(no history)"]
    assert session.options == {"max_new_tokens": 3, "do_sample": False}


def test_set_refuses_unknown_options_and_keeps_the_old_ones(parrot):
    session = ChatSession(parrot, top_k=5)
    with pytest.raises(RejoinderError, match="unknown decoding option 'topk'"):
        session.set_options("topk=5")
    with pytest.raises(RejoinderError, match="key=value"):
        session.set_options("top_k")
    assert session.options == {"top_k": 5}
    session.set_options("top_k=none")
    assert session.options == {}


def test_history_is_kept_whole_and_a_failed_reply_leaves_it_alone(parrot):
    session = ChatSession(parrot)
    for _ in range(30):
        session.send("How are you? " * 20)
    assert len(session.history) == 60
    session.options = {"max_new_tokens": 0}
    with pytest.raises(RejoinderError):
        session.send("Hello")
    assert len(session.history) == 60


def test_interactive_chat_uses_prompts_and_leaves_on_ctrl_d(parrot, monkeypatch):
    lines = iter(["Hello", "/nonsense"])

    def fake_input(prompt):
        assert prompt == "usr >> "
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    code, out, _ = run(ChatSession(parrot), "", interactive=True)
    assert code == 0
    assert "bot >> Hi there, friend" in out
    assert "error: unknown command '/nonsense'" in out


def test_ctrl_c_leaves_cleanly(parrot, monkeypatch):
    def interrupt(prompt):
        raise KeyboardInterrupt

    monkeypatch.setattr("builtins.input", interrupt)
    assert run(ChatSession(parrot), "", interactive=True)[0] == 0


def test_the_real_command_in_a_pipe(parrot_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "rejoinder", "chat", str(parrot_dir)],
        input="Hello\nquit\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Hi there, friend\n"
    assert "Traceback" not in proc.stderr


def test_a_persona_and_system_prompt_come_first_and_stay(parrot, parrot_dir, monkeypatch, capsys):
    from rejoinder.cli import main
    from rejoinder.dialogue import Turn

    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\n/history\nquit\n"))
    assert (
        main(["chat", str(parrot_dir), "--persona", "I am a parrot.", "--system", "Be brief."]) == 0
    )
    out, err = capsys.readouterr()
    persona = [
        Turn("Be brief.", "system"),
        Turn("I am a parrot.", "persona"),
        Turn("Hello", "user"),
    ]
    assert out.splitlines() == [" ".join(parrot.generate(persona).split())]
    assert err.splitlines()[:3] == [
        "system >> Be brief.",
        "persona >> I am a parrot.",
        "user >> Hello",
    ]
    # /reset forgets the conversation, not who the bot is.
    session = ChatSession(parrot, persona="I am a parrot.", max_new_tokens=3)
    session.send("Hello")
    session.command("/reset")
    assert [t.text for t in session.context] == ["I am a parrot."]
