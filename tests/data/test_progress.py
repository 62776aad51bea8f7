"""Progress lines: drawn on a terminal, never in a pipe."""

import io

import pytest

from rejoinder.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def _drawn(monkeypatch):
    monkeypatch.delenv("REJOINDER_PROGRESS", raising=False)
    monkeypatch.setattr(Progress, "INTERVAL", 0.0)  # every update draws


def test_a_terminal_gets_the_phase_counts_rate_and_a_final_newline():
    stream = Terminal()
    with Progress("reading dumps", total=2_000_000, unit="B", stream=stream) as p:
        p.update(500_000, extra="12k lines/s")
        p.update(1_000_000)
    text = stream.getvalue()
    assert text.startswith("\rreading dumps  500.0 kB/2.0 MB  25%") and text.endswith("\n")
    assert "12k lines/s" in text and "ETA " in text and "/s" in text
    assert text.count("\n") == 1 and text.count("\r") == 3  # two updates and the last draw


def test_redraws_are_throttled(monkeypatch):
    monkeypatch.setattr(Progress, "INTERVAL", 60.0)
    stream = Terminal()
    with Progress("pairing", total=1000, stream=stream) as p:
        for i in range(1000):
            p.update(i)
    assert stream.getvalue().count("\r") == 2  # the first update and the last draw


def test_a_pipe_or_the_environment_keeps_it_quiet(monkeypatch):
    pipe = io.StringIO()
    with Progress("reading dumps", total=10, stream=pipe) as p:
        p.update(5)
    assert pipe.getvalue() == ""
    monkeypatch.setenv("REJOINDER_PROGRESS", "0")
    stream = Terminal()
    with Progress("reading dumps", total=10, stream=stream) as p:
        p.update(5)
    assert stream.getvalue() == ""
