"""`rejoinder <verb>`: a table from each verb to the plain function that does it.

Each verb is a pair in `VERBS`: the function that runs it, and the one that declares its
arguments, both in the `commands` module of the verb's area (modeling, export,
generation, evaluation, serve; data and judging have sub-verbs of their own), with the
argument groups they share in `rejoinder.arguments`. Options that are fields of a
config dataclass (decoding, serving, data filters) are generated from the dataclass
(`rejoinder.options`), so their names, defaults and help are written once. Heavy
libraries are imported inside the functions, so `rejoinder --help` answers at once.
Errors a user can fix (RejoinderError) print one line and exit with status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from rejoinder.arguments import quiet_libraries
from rejoinder.errors import RejoinderError
from rejoinder.evaluation.commands import (
    ab_args,
    cmd_ab,
    cmd_eval,
    cmd_eval_ranker,
    cmd_eval_safety,
    eval_args,
    eval_ranker_args,
    eval_safety_args,
)
from rejoinder.export.commands import cmd_export, export_args
from rejoinder.generation.commands import (
    chat_args,
    cmd_chat,
    cmd_inspect,
    cmd_score,
    inspect_args,
    score_args,
)
from rejoinder.modeling.commands import (
    cmd_encode,
    cmd_import_dialogpt,
    cmd_import_dialogrpt,
    cmd_init,
    cmd_rank,
    encode_args,
    import_dialogpt_args,
    import_dialogrpt_args,
    init_args,
    rank_args,
)
from rejoinder.safety.commands import cmd_safety, safety_verb_args
from rejoinder.serve.commands import cmd_serve, serve_args


def cmd_quickstart(args) -> int:
    """Builds Chit-Chat, trains forward and reverse models, evaluates, then chats."""
    from rejoinder.quickstart import quickstart

    quiet_libraries()
    quickstart(args.minutes, args.out, chat=False if args.no_chat else None)
    return 0


def quickstart_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=15.0, help="time budget for everything (15)")
    p.add_argument("--out", default="quickstart", help="where everything goes (./quickstart)")
    p.add_argument("--no-chat", action="store_true", help="exit after the samples")


def cmd_improve(args) -> int:
    """From a serving database's feedback to a trained, measured candidate and a decision."""
    from rejoinder.improve import ImproveOptions, improve
    from rejoinder.options import from_args

    quiet_libraries()
    options = from_args(ImproveOptions, args)
    improve(options)
    return 0


def improve_args(p: argparse.ArgumentParser) -> None:
    from rejoinder.improve import ImproveOptions
    from rejoinder.options import add_options

    p.add_argument("model", metavar="DIR", help="the serving model (the candidate starts from it)")
    p.add_argument("--db", required=True, metavar="URL", help="the serving database")
    p.add_argument("--out", required=True, metavar="DIR", help="where the stages' outputs go")
    add_options(p, ImproveOptions)


VERBS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable[..., None]] | str] = {
    "init": (cmd_init, init_args),
    "import-dialogpt": (cmd_import_dialogpt, import_dialogpt_args),
    "encode": (cmd_encode, encode_args),
    "data": "Builds and inspects datasets of dialogues or preference pairs from raw corpora.",
    "train": "Trains a forward or reverse dialogue model (LightningCLI: rejoinder train --help).",
    "export": (cmd_export, export_args),
    "score": (cmd_score, score_args),
    "inspect": (cmd_inspect, inspect_args),
    "quickstart": (cmd_quickstart, quickstart_args),
    "eval": (cmd_eval, eval_args),
    "rank": (cmd_rank, rank_args),
    "import-dialogrpt": (cmd_import_dialogrpt, import_dialogrpt_args),
    "eval-ranker": (cmd_eval_ranker, eval_ranker_args),
    "eval-safety": (cmd_eval_safety, eval_safety_args),
    "chat": (cmd_chat, chat_args),
    "safety": (cmd_safety, safety_verb_args),
    "serve": (cmd_serve, serve_args),
    "ab": (cmd_ab, ab_args),
    "improve": (cmd_improve, improve_args),
    "judge": "Human evaluation: pairwise judging runs, the judging page, their report.",
}
"""Each verb: (the function that runs it, the one that declares its arguments); a verb
with a parser of its own (data's sub-verbs, train's LightningCLI) has its help line."""


def build_parser() -> argparse.ArgumentParser:
    from rejoinder.version import __version__

    parser = argparse.ArgumentParser(
        prog="rejoinder",
        description="GPT-2-style multi-turn conversational response generation.",
        epilog="`rejoinder VERB --help` describes a verb.",
    )
    parser.add_argument("--version", action="version", version=f"rejoinder {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name, entry in VERBS.items():
        if isinstance(entry, str):
            p = verbs.add_parser(name, help=entry, description=entry, add_help=name != "train")
            if name == "data":
                from rejoinder.data.commands import add_data_verbs

                add_data_verbs(p)
            elif name == "judge":
                from rejoinder.judging.commands import add_judge_verbs

                add_judge_verbs(p)
            continue
        fn, arguments = entry
        p = verbs.add_parser(name, help=fn.__doc__.splitlines()[0], description=fn.__doc__)
        p.set_defaults(fn=fn)
        arguments(p)
    return parser


def _train(argv: list[str]) -> int:
    """`rejoinder train`: LightningCLI's own parser, --print_config, --config, dotted keys."""
    from rejoinder.training.cli import train

    return train(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["train"]:
            quiet_libraries()
            return _train(argv[1:])
        args = build_parser().parse_args(argv)
        if args.verb != "data":  # data verbs never load transformers: keep their start quick
            quiet_libraries()
        return args.fn(args)
    except RejoinderError as e:
        where = " ".join(filter(None, [argv[0] if argv else "", _data_verb(argv)]))
        print(f"rejoinder {where}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def _data_verb(argv: list[str]) -> str | None:
    """The sub-verb of a verb that has them (`data build`, `judge create`), for errors."""
    return argv[1] if argv[:1] in (["data"], ["judge"]) and len(argv) > 1 else None


if __name__ == "__main__":
    sys.exit(main())
