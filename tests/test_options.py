"""Command-line options made from config dataclasses (rejoinder.options)."""

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest

from rejoinder.options import add_options, field_docs, from_args, given, option


@dataclass
class Demo:
    steps: int = 3
    """How many steps
    to take."""
    rate: float | None = None
    """A rate; 100% of it."""
    mode: Literal["fast", "slow"] = "fast"
    """How to go."""
    quiet: bool = False
    """Say less."""
    whole: bool = option(True, flag="--in-parts")
    """Go in one piece."""
    tags: list[str] = option(default_factory=list, flag="--tag", metavar="TAG")
    """A tag."""
    secret: str = option("x", hidden=True)
    plain: list[int] = field(default_factory=list)


def parser(**kw):
    p = argparse.ArgumentParser()
    add_options(p, Demo, **kw)
    return p


def test_defaults_come_from_the_dataclass():
    assert from_args(Demo, parser().parse_args([])) == Demo()


def test_each_field_is_a_typed_option():
    args = parser().parse_args(
        ["--steps", "5", "--rate", "0.5", "--mode", "slow", "--quiet", "--in-parts",
         "--tag", "a", "--tag", "b", "--plain", "1", "--plain", "2"]
    )  # fmt: skip
    assert from_args(Demo, args) == Demo(5, 0.5, "slow", True, False, ["a", "b"], "x", [1, 2])


def test_literal_choices_and_types_are_enforced():
    with pytest.raises(SystemExit):
        parser().parse_args(["--mode", "medium"])
    with pytest.raises(SystemExit):
        parser().parse_args(["--steps", "many"])


def test_hidden_fields_stay_off_the_command_line():
    with pytest.raises(SystemExit):
        parser().parse_args(["--secret", "y"])


def test_help_is_the_field_docstring_with_the_default():
    text = parser().format_help()
    assert "How many steps to take. (default: 3)" in " ".join(text.split())
    assert "100% of it" in text  # a per cent sign is no format directive
    assert field_docs(Demo)["whole"] == "Go in one piece."


def test_override_mode_leaves_what_was_not_given_as_none():
    p = parser(override=True)
    args = p.parse_args(["--no-quiet", "--steps", "7"])
    assert given(Demo, args) == {"steps": 7, "quiet": False}
    assert given(Demo, p.parse_args([])) == {}


def test_skip_leaves_fields_out():
    with pytest.raises(SystemExit):
        parser(skip={"steps"}).parse_args(["--steps", "1"])


def test_a_true_default_needs_the_flag_that_turns_it_off():
    @dataclass
    class Bad:
        on: bool = True

    with pytest.raises(TypeError, match="needs a flag"):
        add_options(argparse.ArgumentParser(), Bad)
