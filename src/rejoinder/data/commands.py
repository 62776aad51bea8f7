"""The `rejoinder data` verbs: build, negatives and show.

`data build`'s options are made from the dataclasses they fill (`BuildConfig`,
`FilterConfig`, `RedditOptions`), and its sources from the registry of source kinds.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import textwrap
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from rejoinder.data.build import BuildConfig, Source, build, summary
from rejoinder.data.feedback import PairOptions
from rejoinder.data.filters import FILTERS, FilterConfig, Scorer
from rejoinder.data.pairs import iter_pairs
from rejoinder.data.readers import SOURCES, SourceKind
from rejoinder.data.readers.feedback import FEEDBACK_KINDS
from rejoinder.data.records import SPLITS, iter_dialogues
from rejoinder.data.reddit import RedditOptions
from rejoinder.errors import RejoinderError
from rejoinder.options import add_options, field_docs, from_args, given
from rejoinder.safety import Safety, SafetyConfig, SafetyError
from rejoinder.training.negatives import NegativesConfig, add_negatives

SOURCE_OPTIONS: dict[str, dict[str, Any]] = {
    "comments": {
        "action": "extend",
        "nargs": "+",
        "metavar": "RC_FILE",
        "help": "Pushshift comment dump (.zst, .bz2, .xz, .gz or plain); repeatable",
    },
    "submissions": {
        "action": "extend",
        "nargs": "+",
        "default": [],
        "metavar": "RS_FILE",
        "help": "Pushshift submission dump, for --title; repeatable",
    },
    "language": {"metavar": "NAME", "help": "chatterbot corpus language, e.g. chinese"},
    "db": {"metavar": "URL", "help": "a session database: sqlite:///FILE or postgresql://…"},
    "makes": {
        "flag": "--kind",
        "choices": list(FEEDBACK_KINDS),
        "default": "pairs",
        "metavar": "KIND",
        "help": "what feedback makes: pairs (a liked reply against a disliked or regenerated "
        "one, for DPO and rankers; the default) or unpaired (every rated, regenerated, "
        "rewritten or flagged reply alone, desirable or not, for KTO)",
    },
}
"""The options that sources take (`SourceKind.needs` and `.takes` name them by dest; the
flag is --DEST unless "flag" says otherwise)."""


def _flag(dest: str) -> str:
    option = SOURCE_OPTIONS[dest]
    return f"{option.get('flag') or '--' + dest.replace('_', '-')} {option['metavar']}"


def usage(kind: SourceKind) -> str:
    """How the command line names a source: `jsonl PATH`, `reddit --comments RC_FILE`."""
    return " ".join([kind.name, *(["PATH"] if kind.path else []), *map(_flag, kind.needs)])


def parse_sources(tokens: list[str], args: argparse.Namespace) -> list[Source]:
    """`reddit dailydialog DIR chitchat` -> Sources; --comments etc. attach to theirs."""
    sources: list[Source] = []
    i = 0
    while i < len(tokens):
        kind = SOURCES.get(tokens[i])
        if kind is None:
            known = ", ".join(usage(k) for k in SOURCES.values())
            raise RejoinderError(f"unknown source {tokens[i]!r}; sources are {known}")
        i += 1
        values: dict[str, Any] = {}
        if kind.path:
            if i >= len(tokens) or tokens[i] in SOURCES:
                raise RejoinderError(f"source {kind.name} needs a path: {kind.name} PATH")
            values["path"] = tokens[i]
            i += 1
        for dest in kind.needs:
            if not getattr(args, dest, None):
                help_text = SOURCE_OPTIONS[dest]["help"]
                raise RejoinderError(f"source {kind.name} needs {_flag(dest)} ({help_text})")
            values[dest] = getattr(args, dest)
        for dest in kind.takes:
            values[dest] = getattr(args, dest)
        sources.append(Source(kind.name, values))
    if not sources:
        raise RejoinderError(f"name at least one source: {', '.join(SOURCES)}")
    return sources


def build_config(args: argparse.Namespace) -> BuildConfig:
    """The BuildConfig that `data build`'s parsed arguments ask for."""
    return from_args(
        BuildConfig,
        args,
        sources=parse_sources(args.sources, args),
        filter_options=given(FilterConfig, args),
        reddit=from_args(RedditOptions, args),
        pair_options=from_args(PairOptions, args),
    )


def offensive_scorer(fconf: FilterConfig) -> Scorer:
    """The offensive filter's `--offensive-classifier`, as `data build` scores with it.

    The data package stands below the classifier and the safety policy and may not
    import them, so the loader is made here, above both, and handed down to `build`
    (`filters.LoadScorer`). Scores are the policy's (`Safety.scores`, with no word list:
    the filter has its own), so which labels are unsafe and how a target is read in its
    context follow the same rules wherever replies are judged. Loaded once a process:
    the build checks it at its start, and Spark's workers load their own.
    """
    policy = _offensive_policy(fconf.offensive_classifier, tuple(fconf.offensive_unsafe_labels))

    def score(pairs):
        try:
            return [probability for probability, _ in policy.scores(pairs)]
        except SafetyError as e:  # the policy's words are about replies: say the build's
            cause = str(e).removesuffix("; the reply is withheld")
            raise RejoinderError(f"offensive filter: {cause}; the build stops") from None

    return score


@functools.lru_cache(maxsize=4)
def _offensive_policy(classifier: str, unsafe_labels: tuple[str, ...]) -> Safety:
    from transformers.utils import logging

    logging.set_verbosity_error()  # loading notes, noise in a build's output
    logging.disable_progress_bar()
    config = SafetyConfig(
        safety_default_words=False,
        safety_classifier=classifier,
        safety_unsafe_labels=list(unsafe_labels),
    )
    try:
        return Safety(config)
    except RejoinderError as e:
        # The policy names its own flags; the filter's are the same under --offensive-.
        raise RejoinderError(
            "offensive filter: " + str(e).replace("--safety-", "--offensive-")
        ) from None


def cmd_build(args) -> int:
    """Builds a dialogue dataset from corpora: DIR/{train,valid,test}/*.parquet + manifest.json."""
    manifest = build(build_config(args), load_classifier=offensive_scorer)
    print(summary(manifest, Path(args.out)))
    return 0


def cmd_show(args) -> int:
    """Prints a dataset's counts, its filter table and a few dialogues (or pairs)."""
    root = Path(args.dir)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise RejoinderError(f"{root} is not a dataset (no manifest.json); build one first")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise RejoinderError(f"{manifest_path} is not valid JSON ({e})") from None
    print(summary(manifest, root))
    counts = manifest.get("counts") or {}
    if counts:
        print("counts:")
        for k, v in counts.items():
            print(f"  {k:<40} {v:>10}")
    explained = {k: v for k, v in (manifest.get("samples") or {}).items() if v}
    if explained:
        print("samples of what was dropped or skipped:")
        for key, items in explained.items():
            for item in items[:2]:
                shown_item = " | ".join(item["turns"]) if isinstance(item, dict) else item
                print(f"  {key}: {shown_item[:150]}")
    if manifest.get("kind") == "pairs":
        for pair in iter_pairs(root, args.split, limit=max(args.n, 0)):
            print(f"\n[{args.split}] {pair.id} ({pair.kind})")
            for turn in pair.context:
                print(f"  {'context':>12}: {turn}")
            for label, text, value in (
                ("chosen", pair.chosen, pair.chosen_feedback),
                ("rejected", pair.rejected, pair.rejected_feedback),
            ):
                shown = "" if value is None else f"  [{value:g}]"
                print(f"  {label:>12}: {text}{shown}")
        return 0
    if manifest.get("kind") == "unpaired":
        from rejoinder.data.unpaired import iter_unpaired

        for row in iter_unpaired(root, args.split, limit=max(args.n, 0)):
            print(f"\n[{args.split}] {row.id} ({row.kind})")
            for turn in row.context:
                print(f"  {'context':>12}: {turn}")
            print(f"  {'desirable' if row.desirable else 'undesirable':>12}: {row.reply}")
        return 0
    if manifest.get("kind") == "labels":
        from itertools import islice

        from rejoinder.data.labels import iter_labels

        for item in islice(iter_labels(root, args.split), max(args.n, 0)):
            print(f"\n[{args.split}] {item.id} ({item.label})")
            for turn in item.context:
                print(f"  {(turn.speaker or 'context')[:12]:>12}: {turn.text}")
            print(f"  {'text':>12}: {item.text}")
        return 0
    for d in iter_dialogues(root, args.split, limit=max(args.n, 0)):
        print(f"\n[{args.split}] {d.id} ({d.source})")
        for t in d.turns:
            labels = ", ".join(f"{k}={v}" for k, v in t.labels.items() if v)
            who = t.speaker or "?"
            print(f"  {who[:12]:>12}: {t.text}" + (f"  [{labels}]" if labels else ""))
    return 0


def cmd_negatives(args) -> int:
    """Adds human_vs_machine pairs to a pairs dataset: each human reply against a model's."""
    from transformers.utils import logging

    # The one data verb that loads a model: its loading bars and padding notes are noise.
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    config = from_args(NegativesConfig, args, pairs=args.dir, model=args.model, out=args.out)
    manifest = add_negatives(config)
    made = manifest["kinds"]["human_vs_machine"]
    print(
        f"wrote {manifest['pairs']['total']} pairs to {config.out}, {made['total']} of them "
        f"human_vs_machine (train {made['train']}, valid {made['valid']}, test {made['test']}) "
        f"in {manifest['negatives']['seconds']} s"
    )
    for reason, n in manifest["not_made"].get("human_vs_machine", {}).items():
        print(f"  not made: {reason:<40} {n:>8}")
    return 0


def _only(cls: type, *names: str) -> set[str]:
    """The fields of `cls` to skip so that only `names` become options."""
    return {f.name for f in dataclasses.fields(cls)} - set(names)


def _filters_group(parser: argparse.ArgumentParser):
    """The argument group of the filters, titled with what runs by default on each kind."""
    by_default: dict[str, list[str]] = {}
    for kind in SOURCES.values():
        by_default.setdefault(kind.filters, []).append(kind.name)
    most = max(by_default, key=lambda spec: len(by_default[spec]))
    defaults = [f"{spec} for {', '.join(names)}" for spec, names in by_default.items()]
    defaults[list(by_default).index(most)] = f"{most} for the others"
    parameters = [
        f"--{f.name.replace('_', '-')} {f.default}"
        for f in dataclasses.fields(FilterConfig)
        if not f.metadata.get("cli", {}).get("hidden") and f.default not in (None, MISSING)
    ]
    description = f"filters: {', '.join(FILTERS)}. Parameters not given keep their defaults: "
    return parser.add_argument_group(
        f"filters (DialoGPT's; by default {', '.join(defaults)})",
        textwrap.fill(description + ", ".join(parameters) + ".", 78),
    )


def _sources_epilog() -> str:
    rows = [(usage(kind), kind.description) for kind in SOURCES.values()]
    width = max(len(u) for u, _ in rows)
    return "sources:\n" + "\n".join(f"  {u:<{width}}  {d}" for u, d in rows)


def add_data_verbs(parser: argparse.ArgumentParser) -> None:
    """Adds `build`, `negatives` and `show` under `parser` (the `data` verb's), as
    args.data_verb."""
    verbs = parser.add_subparsers(dest="data_verb", metavar="DATA_VERB", required=True)

    def verb(name, fn, **kw):
        p = verbs.add_parser(name, help=fn.__doc__.splitlines()[0], description=fn.__doc__, **kw)
        p.set_defaults(fn=fn)
        return p

    p = verb(
        "build",
        cmd_build,
        epilog=_sources_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help=", ".join(usage(k) for k in SOURCES.values()),
    )
    p.add_argument("--out", required=True, metavar="DIR", help=field_docs(BuildConfig)["out"])
    add_options(p, BuildConfig, skip=_only(BuildConfig, "force", "engine", "master"))
    for dest, kw in SOURCE_OPTIONS.items():
        users = [k.name for k in SOURCES.values() if dest in k.needs + k.takes]
        kw = {**kw, "help": f"{kw['help']} ({', '.join(users)})"}
        flag = kw.pop("flag", None) or f"--{dest.replace('_', '-')}"
        p.add_argument(flag, dest=dest, **kw)
    g = _filters_group(p)
    add_options(g, BuildConfig, skip=_only(BuildConfig, "filters"))
    # Only the parameters given are recorded (and override FilterConfig's defaults).
    add_options(g, FilterConfig, override=True)
    add_options(g, BuildConfig, skip=_only(BuildConfig, "explain"))
    add_options(p.add_argument_group("reddit threads"), RedditOptions)
    g = p.add_argument_group(
        "preference pairs from reddit (sibling replies compared; DialogRPT's rules)"
    )
    add_options(g, BuildConfig, skip=_only(BuildConfig, "pairs"))
    add_options(g, PairOptions)
    s = p.add_argument_group("splits (by thread or dialogue, deterministic)")
    add_options(s, BuildConfig, skip=_only(BuildConfig, "valid", "test"))

    p = verb("negatives", cmd_negatives)
    p.add_argument("dir", metavar="PAIRS", help="a pairs dataset (`data build … --pairs`)")
    p.add_argument("--model", required=True, metavar="DIR", help="the checkpoint that samples")
    p.add_argument("--out", required=True, metavar="DIR", help="the pairs dataset to write")
    add_options(p, NegativesConfig)

    p = verb("show", cmd_show)
    p.add_argument("dir", metavar="DIR", help="a dataset directory (dialogues, pairs or labels)")
    p.add_argument("--split", default="train", choices=list(SPLITS))
    p.add_argument("-n", type=int, default=3, help="dialogues or pairs to print (3)")
