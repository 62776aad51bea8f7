"""`rejoinder <verb>`: a table from each verb to the plain function that does it.

Each verb is a pair at the bottom of this file: the function that runs it, and the one
that declares its arguments. Options that are fields of a config dataclass (decoding,
serving, data filters) are generated from the dataclass (`rejoinder.options`), so
their names, defaults and help are written once. Heavy libraries are imported inside
the functions, so `rejoinder --help` answers at once. Errors a user can fix
(RejoinderError) print one line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from rejoinder.errors import RejoinderError


def _quiet_libraries() -> None:
    """Silences transformers' progress bars and advice: the CLI prints what matters."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _read_corpus(path: str | None) -> list[str] | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise RejoinderError(f"corpus file {path} does not exist")
    lines = [
        line
        for line in p.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    ]
    if not lines:
        raise RejoinderError(f"corpus file {path} has no text")
    return lines


def _format_settings(args) -> dict:
    settings = {}
    for item in getattr(args, "format_option", None) or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise RejoinderError(f"--format-option takes key=value, got {item!r}")
        try:
            settings[key] = json.loads(raw)
        except json.JSONDecodeError:
            settings[key] = raw
    if getattr(args, "reverse", False):
        settings["reverse"] = True
    return settings


def _load(args):
    from rejoinder.generation import ConversationModel

    return ConversationModel.from_pretrained(
        args.model,
        reverse=getattr(args, "reverse", None),
        device=getattr(args, "device", None),
        backend=getattr(args, "backend", "torch"),
        compute_type=getattr(args, "compute_type", "int8"),
        rankers=_rankers(args),
    )


def _rankers(args) -> dict[str, str]:
    """--ranker NAME=DIR (or DIR, named after its folder), repeatable."""
    out = {}
    for item in getattr(args, "ranker", None) or []:
        name, sep, path = item.partition("=")
        name, path = (name, path) if sep else (Path(item).name, item)
        if not name or not path:
            raise RejoinderError(f"--ranker takes NAME=DIR, got {item!r}")
        out[name] = path
    return out


# -- shared groups of arguments --------------------------------------------------------


def _format_args(p: argparse.ArgumentParser) -> None:
    from rejoinder.formats import FORMATS

    p.add_argument(
        "--format",
        default="dialogpt",
        choices=list(FORMATS),
        help="conversation format (default: dialogpt)",
    )
    p.add_argument(
        "--format-option",
        action="append",
        metavar="KEY=VALUE",
        help="a setting of the format, e.g. sep_token=<sep> (repeatable)",
    )
    p.add_argument("--reverse", action="store_true", help="reverse turn order (backward model)")


def _tokenizer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tokenizer",
        default="gpt2",
        metavar="KIND",
        help="gpt2 (GPT-2's BPE, offline), bpe:N (learnt from --corpus) or char",
    )
    p.add_argument(
        "--corpus", metavar="FILE", help="text file, a line per text, for bpe:N and char"
    )


def _out_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def _backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "ctranslate2"],
        help="decode with PyTorch (default) or CTranslate2 (fast on CPU)",
    )
    p.add_argument("--compute-type", default="int8", help="CTranslate2: int8 (default), float32, …")


def _model_args(p: argparse.ArgumentParser, reverse: bool = True) -> None:
    p.add_argument("model", metavar="DIR", help="checkpoint directory (or hub name)")
    if reverse:
        _reranker_args(p)
    _backend_args(p)


def _reranker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reverse", metavar="DIR", help="a reverse model, for MMI reranking")
    p.add_argument(
        "--ranker",
        action="append",
        metavar="NAME=DIR",
        help="a reply ranker for reranking (repeatable), e.g. updown=DIR",
    )


# -- the verbs ---------------------------------------------------------------------------


def cmd_init(args) -> int:
    """Creates a randomly initialised checkpoint (GPT-2, Llama, Qwen2, Mistral, GPT-NeoX)."""
    from rejoinder.modeling import init_checkpoint

    out = init_checkpoint(
        args.out,
        size=args.size,
        tokenizer=args.tokenizer,
        format=args.format,
        corpus=_read_corpus(args.corpus),
        seed=args.seed,
        format_settings=_format_settings(args),
        overwrite=args.force,
        arch=args.arch,
    )
    print(f"wrote {args.size} {args.arch} {args.format} checkpoint to {out}")
    return 0


def init_args(p: argparse.ArgumentParser) -> None:
    from rejoinder.modeling.architectures import ARCHS

    p.add_argument("--arch", default="gpt2", choices=ARCHS, help="model family (default: gpt2)")
    p.add_argument(
        "--size", default="tiny", help="tiny, small, 124M, 345M, 762M or LxD (default: tiny)"
    )
    _tokenizer_args(p)
    _format_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    _out_args(p)


def cmd_import_dialogpt(args) -> int:
    """Converts an original DialoGPT pickle (medium_ft.pkl, small_reverse.pkl) into a checkpoint."""
    from rejoinder.modeling.dialogpt import import_dialogpt

    out = import_dialogpt(
        args.pickle, args.out, size=args.size, direction=args.direction, overwrite=args.force
    )
    print(f"wrote {out}")
    return 0


def import_dialogpt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pickle", metavar="FILE.pkl", help="an original DialoGPT pickle")
    p.add_argument("--size", help="small, medium or large; checked against the weights")
    p.add_argument(
        "--direction",
        default="auto",
        choices=["auto", "forward", "reverse"],
        help="reverse for a backward model (auto: from the file name)",
    )
    _out_args(p)


def cmd_encode(args) -> int:
    """Prints, as JSON, the token ids a model sees for some turns."""
    if args.model:
        from rejoinder.modeling import load_checkpoint

        ckpt = load_checkpoint(args.model)
        fmt = ckpt.format
        if args.reverse:
            from rejoinder.formats import format_from_dict

            fmt = format_from_dict({**fmt.to_dict(), "reverse": True}, ckpt.tokenizer)
    else:
        from rejoinder.formats import get_format
        from rejoinder.tokenizers import build_tokenizer

        tok = build_tokenizer(args.tokenizer, _read_corpus(args.corpus))
        fmt = get_format(args.format, tok, **_format_settings(args))
    if args.loss_on:
        enc = fmt.training_example(args.turns, loss_on=args.loss_on, max_tokens=args.max_tokens)
    else:
        enc = fmt.encode(args.turns, max_tokens=args.max_tokens)
    out = enc.to_dict()
    if args.tokens:
        out["tokens"] = [fmt.tokenizer.decode([i]) for i in enc.input_ids]
    print(json.dumps(out, ensure_ascii=False))
    return 0


def encode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("turns", nargs="*", metavar="TURN", help="the conversation, oldest turn first")
    p.add_argument("--model", metavar="DIR", help="use this checkpoint's tokenizer and format")
    _tokenizer_args(p)
    _format_args(p)
    p.add_argument("--max-tokens", type=int, help="token budget; the oldest turns go first")
    p.add_argument(
        "--loss-on",
        choices=["responses", "last", "all"],
        help="print a training example with labels instead of the reply prompt",
    )
    p.add_argument("--tokens", action="store_true", help="also print each token's text")


def cmd_export(args) -> int:
    """Exports a train run's .ckpt file, or (--for) a checkpoint directory for vLLM or llama.cpp."""
    from rejoinder.export.engines import export_for
    from rejoinder.training.export import export

    if args.engine:
        print(f"wrote {export_for(args.engine, args.ckpt, args.out, args.force, args.dtype)}")
    else:
        print(f"wrote {export(args.ckpt, args.out, overwrite=args.force, merge=args.merge)}")
    return 0


def export_args(p: argparse.ArgumentParser) -> None:
    from rejoinder.export.engines import EngineOptions
    from rejoinder.options import add_options

    p.add_argument("ckpt", metavar="CKPT", help="a train run's .ckpt (--for: a checkpoint dir)")
    add_options(p, EngineOptions)
    p.add_argument("--merge", action="store_true", help="LoRA: merge the adapter into its base")
    _out_args(p)


def cmd_score(args) -> int:
    """Prints the log-probability of a response given a context, in all and per token."""
    model = _load(args)
    [score] = model.loglikelihood([(args.context or [], args.response)])
    out = {
        "logprob": round(score.total, 4),
        "mean_logprob": round(score.mean, 4),
        "tokens": [
            [t, round(lp, 4)] for t, lp in zip(score.tokens, score.token_logprobs, strict=True)
        ],
    }
    print(json.dumps(out, ensure_ascii=False))
    return 0


def score_args(p: argparse.ArgumentParser) -> None:
    _model_args(p, reverse=False)
    p.add_argument("--context", nargs="*", metavar="TURN", help="the conversation so far")
    p.add_argument("--response", required=True, help="the reply to score")


def cmd_inspect(args) -> int:
    """Prints, step by step, the most likely next tokens as greedy decoding goes."""
    rows = _load(args).inspect(args.text, steps=args.steps, top=args.top, as_turn=args.turn)
    width = max(12, *(len(repr(r["token"])) for r in rows)) if rows else 12
    print(f"{'step':>4}  {'chosen':<{width}}  top {args.top} (probability)")
    for r in rows:
        alts = "  ".join(f"{t!r} {p:.3f}" for t, p in r["top"])
        print(f"{r['step']:>4}  {r['token']!r:<{width}}  {alts}")
    return 0


def inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="DIR", help="checkpoint directory")
    p.add_argument("text", help="the text to continue")
    p.add_argument("--steps", type=int, default=10, help="tokens to decode (10)")
    p.add_argument("--top", type=int, default=5, help="alternatives to show per step (5)")
    p.add_argument("--turn", action="store_true", help="TEXT is a turn: inspect the reply")


def cmd_quickstart(args) -> int:
    """Builds Chit-Chat, trains forward and reverse models, evaluates, then chats."""
    from rejoinder.quickstart import quickstart

    _quiet_libraries()
    quickstart(args.minutes, args.out, chat=False if args.no_chat else None)
    return 0


def quickstart_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=15.0, help="time budget for everything (15)")
    p.add_argument("--out", default="quickstart", help="where everything goes (./quickstart)")
    p.add_argument("--no-chat", action="store_true", help="exit after the samples")


def cmd_eval(args) -> int:
    """Scores a model on a dataset split, or replies in a file against references."""
    from rejoinder.atomic import check_out
    from rejoinder.evaluation.report import table, write_report
    from rejoinder.evaluation.run import evaluate, score_files

    out = check_out(args.out, args.force)
    if args.hyp:
        if args.model or args.data:
            raise RejoinderError("give either a model DIR with --data, or --hyp with --refs")
        if not args.refs:
            raise RejoinderError("--hyp needs the references: --refs FILE (repeatable)")
        result = score_files(args.hyp, args.refs, args.tokenize)
    else:
        if not args.model or not args.data:
            raise RejoinderError(
                "give a model DIR and --data DATASET (or --hyp FILE --refs FILE to score replies "
                "written by any system)"
            )
        presets = [p.strip() for p in args.presets.split(",") if p.strip()]
        if args.limit is not None and args.limit < 1:
            raise RejoinderError("--limit must be at least 1")
        result = evaluate(
            _load(args), args.data, args.split, presets, args.limit, args.seed, args.tokenize
        )
    write_report(result, out, force=args.force)
    ppl = result.get("perplexity")
    if ppl:
        print(f"perplexity per word {ppl['per_word']:.1f}, per token {ppl['per_token']:.1f}")
    print(table(result))
    print(f"wrote {out}/report.md, metrics.json and plots", file=sys.stderr)
    return 0


def eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="DIR", nargs="?", help="checkpoint directory to evaluate")
    p.add_argument("--data", metavar="DATASET", help="a `rejoinder data build` directory")
    p.add_argument("--split", default="test", help="the split to evaluate on (test)")
    _reranker_args(p)
    p.add_argument(
        "--presets",
        default="nucleus",
        help="decoding presets, comma-separated (nucleus); mmi and dialogrpt rerank with "
        "--reverse and --ranker",
    )
    p.add_argument("--limit", type=int, default=200, help="contexts to generate replies for (200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled replies (0)")
    p.add_argument("--hyp", metavar="FILE", help="replies of any system, one per line")
    p.add_argument(
        "--refs", metavar="FILE", action="append", help="references aligned with --hyp (repeatable)"
    )
    p.add_argument(
        "--tokenize",
        default="default",
        choices=["default", "none", "char"],
        help="metric tokens: default = lowercased words and punctuation marks apart; "
        "none = whitespace only; char = characters (Chinese, Japanese)",
    )
    p.add_argument("--out", required=True, metavar="REPORT", help="report directory to write")
    p.add_argument("--force", action="store_true", help="replace REPORT if it exists")
    _backend_args(p)


def cmd_rank(args) -> int:
    """Prints a reply ranker's score (0-1, higher: preferred) of each response to a context."""
    from rejoinder.modeling.ranker import Ranker

    ranker = Ranker.from_pretrained(args.model, device=args.device)
    scores = ranker.scores(args.context or [], args.response)
    width = max(len(r) for r in args.response)
    for response, score in sorted(zip(args.response, scores, strict=True), key=lambda x: -x[1]):
        print(f"{score:.4f}  {response:<{width}}")
    return 0


def rank_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="DIR", help="a ranker directory (trained or imported)")
    p.add_argument("--context", nargs="*", metavar="TURN", help="the conversation so far")
    p.add_argument(
        "--response", action="append", required=True, help="a reply to score (repeatable)"
    )
    p.add_argument("--device", help="cpu, cuda, … (default: cuda where there is a GPU)")


def cmd_import_dialogrpt(args) -> int:
    """Converts an original DialogRPT ranker (updown.pth, width.pth, …) into a ranker directory."""
    from rejoinder.modeling.ranker import import_dialogrpt

    print(f"wrote {import_dialogrpt(args.pth, args.out, overwrite=args.force)}")
    return 0


def import_dialogrpt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pth", metavar="FILE.pth", help="an original DialogRPT checkpoint")
    _out_args(p)


def cmd_eval_ranker(args) -> int:
    """Pairwise accuracy of rankers on a pairs dataset, beside likelihood baselines."""
    from rejoinder.atomic import check_out
    from rejoinder.evaluation.rankers import evaluate_rankers, table, write_ranker_report

    out = check_out(args.out, args.force)
    rankers = _rankers(argparse.Namespace(ranker=args.model))
    result = evaluate_rankers(
        args.data, args.split, rankers, args.forward, args.reverse, args.limit
    )
    write_ranker_report(result, out, force=args.force)
    print(table(result))
    print(f"wrote {out}/report.md and metrics.json", file=sys.stderr)
    return 0


def eval_ranker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="[NAME=]DIR", nargs="*", help="ranker directories")
    p.add_argument("--data", required=True, metavar="PAIRS", help="a pairs dataset")
    p.add_argument("--split", default="test", help="the split to evaluate on (test)")
    p.add_argument("--forward", metavar="DIR", help="a generator: its likelihood as a baseline")
    p.add_argument("--reverse", metavar="DIR", help="a reverse model: its likelihood as a baseline")
    p.add_argument("--limit", type=int, help="evaluate on at most this many pairs")
    p.add_argument("--out", required=True, metavar="REPORT", help="report directory to write")
    p.add_argument("--force", action="store_true", help="replace REPORT if it exists")


def cmd_chat(args) -> int:
    """Chats with a checkpoint in the terminal (or one reply a line from a pipe)."""
    from rejoinder.chat import ChatSession, repl
    from rejoinder.generation.config import DecodingConfig
    from rejoinder.options import given

    options = given(DecodingConfig, args)
    if args.preset:
        options["preset"] = args.preset
    elif (args.reverse or args.ranker) and "mmi_candidates" not in options:
        options["preset"] = "mmi"  # a reranker was given to rerank with
    session = ChatSession(_load(args), system=args.system, persona=args.persona, **options)
    session.config()  # refuses options the model cannot decode with, before the first turn
    if args.set:
        session.set_options(" ".join(args.set))
    return repl(session)


def chat_args(p: argparse.ArgumentParser) -> None:
    from rejoinder.generation.config import PRESETS, DecodingConfig
    from rejoinder.options import add_options

    _model_args(p)
    p.add_argument("--device", help="cpu, cuda, cuda:1, … (default: cuda where there is a GPU)")
    p.add_argument("--system", metavar="TEXT", help="a system prompt (chat-template models)")
    p.add_argument("--persona", metavar="TEXT", help="about the bot: before the chat, never cut")
    g = p.add_argument_group("decoding (any of them overrides the preset)")
    g.add_argument("--preset", choices=list(PRESETS), help="named settings: " + ", ".join(PRESETS))
    add_options(g, DecodingConfig, override=True)
    p.add_argument(
        "--set",
        nargs="+",
        metavar="KEY=VALUE",
        help="decoding options, as with /set, e.g. --set do_sample=true top_p=0.9",
    )


def cmd_serve(args) -> int:
    """Serves a checkpoint over HTTP: OpenAI's chat completions, sessions and a chat page."""
    from rejoinder.options import from_args
    from rejoinder.serve.server import Settings

    try:
        from rejoinder.serve.app import serve
    except ImportError as e:
        raise RejoinderError(
            f"serving needs the serve extra ({e.name} is missing): pip install 'rejoinder[serve]'"
        ) from None
    settings = from_args(Settings, args)
    serve(args.model, args.reverse, settings, args.backend, args.compute_type, _rankers(args))
    return 0


def serve_args(p: argparse.ArgumentParser) -> None:
    from rejoinder.options import add_options
    from rejoinder.serve.server import Settings  # plain Python: no serving library needed

    _model_args(p)
    add_options(p, Settings)


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
    "chat": (cmd_chat, chat_args),
    "serve": (cmd_serve, serve_args),
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
            _quiet_libraries()
            return _train(argv[1:])
        args = build_parser().parse_args(argv)
        if args.verb != "data":  # data verbs never load transformers: keep their start quick
            _quiet_libraries()
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
