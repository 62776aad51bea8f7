"""`rejoinder data build`'s command line: made from the registry and the config dataclasses."""

import argparse
import dataclasses

import pytest

from rejoinder.data.build import BuildConfig, Source
from rejoinder.data.commands import SOURCE_OPTIONS, add_data_verbs, build_config, usage
from rejoinder.data.filters import FilterConfig
from rejoinder.data.readers import SOURCES
from rejoinder.data.reddit import RedditOptions
from rejoinder.errors import RejoinderError


@pytest.fixture(scope="module")
def parser():
    p = argparse.ArgumentParser()
    add_data_verbs(p)
    return p


def parse(parser, line: str) -> BuildConfig:
    return build_config(parser.parse_args(["build", *line.split()]))


def test_every_registered_kind_is_a_source_on_the_command_line(parser):
    for kind in SOURCES.values():
        assert set(kind.needs + kind.takes) <= set(SOURCE_OPTIONS)
        tokens = [kind.name, *(["some/path"] if kind.path else [])]
        flags = [f"--{dest} value" for dest in kind.needs]
        (source,) = parse(parser, " ".join([*tokens, *flags, "--out", "o"])).sources
        assert source.kind == kind.name
        assert set(source.args) == {*(["path"] if kind.path else []), *kind.needs, *kind.takes}
        if kind.path or kind.needs:  # without what it needs, the error says what to add
            with pytest.raises(RejoinderError, match=f"source {kind.name} needs"):
                parse(parser, f"{kind.name} --out o")
    assert [k.name for k in SOURCES.values() if k.threads] == ["reddit"]
    assert all(k.read is not None for k in SOURCES.values() if not k.threads)


def test_the_help_lists_every_kind_with_its_description(parser, capsys):
    with pytest.raises(SystemExit):
        parser.parse_args(["build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for kind in SOURCES.values():
        assert usage(kind) in text and " ".join(kind.description.split()) in text


def test_an_unknown_kind_names_the_known_ones(parser):
    with pytest.raises(RejoinderError, match="unknown source 'usenet'; sources are reddit "):
        parse(parser, "usenet --out o")


def test_defaults_are_the_dataclasses_defaults(parser):
    config = parse(parser, "chitchat --out o")
    assert config == BuildConfig(sources=[Source("chitchat", {})], out="o")
    assert config.filter_options == {} and config.reddit == RedditOptions()


def test_yesterdays_command_lines_still_mean_the_same(parser):
    config = parse(
        parser,
        "reddit jsonl chats.jsonl --comments a.zst b.zst --submissions s.zst --out o --force "
        "--filters url,bland --targets responses --repetition-run 4 --top-words 60 "
        "--max-words 100 --offensive-words w.txt --subreddit-blocklist s.txt "
        "--bland-share 0.8 --bland-count 50 --explain 2 --min-depth 3 --max-depth 5 "
        "--min-score 1 --all-paths --max-turn-words 40 --title --valid 0.2 --test 0.1 "
        "--engine spark --master local[2]",
    )
    assert config.sources == [
        Source("reddit", {"comments": ["a.zst", "b.zst"], "submissions": ["s.zst"]}),
        Source("jsonl", {"path": "chats.jsonl"}),
    ]
    assert config.filter_options == {
        "targets": "responses", "repetition_run": 4, "top_words": 60, "max_words": 100,
        "offensive_words": "w.txt", "subreddit_blocklist": "s.txt", "bland_share": 0.8,
        "bland_count": 50,
    }  # fmt: skip
    assert config.reddit == RedditOptions(
        min_depth=3, max_depth=5, min_score=1, leaves_only=False, max_turn_words=40, title=True
    )
    assert (config.filters, config.explain, config.force) == ("url,bland", 2, True)
    assert (config.valid, config.test) == (0.2, 0.1)
    assert (config.engine, config.master) == ("spark", "local[2]")


def test_only_the_filter_parameters_given_are_recorded(parser):
    given = parse(parser, "chitchat --out o --bland-count 1000").filter_options
    assert given == {"bland_count": 1000}  # the default's value, but given: recorded
    names = {f.name for f in dataclasses.fields(FilterConfig)} - {"enabled", "extra"}
    args = parser.parse_args(["build", "chitchat", "--out", "o"])
    assert all(getattr(args, name) is None for name in names)
