"""The evaluation verbs: `rejoinder eval` and `eval-ranker`."""

from __future__ import annotations

import argparse
import sys

from rejoinder.arguments import backend_args, load_model, rankers_of, reranker_args
from rejoinder.errors import RejoinderError


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
            load_model(args), args.data, args.split, presets, args.limit, args.seed, args.tokenize
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
    reranker_args(p)
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
    backend_args(p)


def cmd_eval_ranker(args) -> int:
    """Pairwise accuracy of rankers on a pairs dataset, beside likelihood baselines."""
    from rejoinder.atomic import check_out
    from rejoinder.evaluation.rankers import evaluate_rankers, table, write_ranker_report

    out = check_out(args.out, args.force)
    rankers = rankers_of(argparse.Namespace(ranker=args.model))
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
