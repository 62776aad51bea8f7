"""The evaluation verbs: `rejoinder eval`, `eval-ranker`, `eval-safety` and `ab`."""

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


def cmd_eval_safety(args) -> int:
    """Precision, recall and false positives of a safety policy's layers on labelled texts.

    The word list alone, the classifier alone and both (the policy) side by side, with
    95% intervals, the classifier's threshold curve, and the texts each gets wrong."""
    from rejoinder.atomic import check_out
    from rejoinder.evaluation.safety_report import (
        best_lines,
        evaluate_safety,
        plural,
        table,
        write_safety_report,
    )

    out = check_out(args.out, args.force)
    if args.examples < 0:
        raise RejoinderError(f"--examples {args.examples}: use 0 or more")
    result = evaluate_safety(
        args.policy,
        args.data,
        args.split,
        args.examples,
        args.device,
        words=args.safety_words,
        default_words=False if not args.safety_default_words else None,
        unsafe_labels=args.safety_unsafe_labels,
        threshold=args.threshold,
    )
    bad = result["data"]["bad_lines"]
    if bad["count"]:
        skipped, first = plural(bad["count"], "bad line"), "; line ".join(bad["lines"])
        print(f"skipped {skipped} of {args.data} (line {first})", file=sys.stderr)
    write_safety_report(result, out, force=args.force)
    print(f"{result['texts']} texts, {result['unsafe']} unsafe; threshold {result['threshold']:g}")
    print(table(result))
    for line in best_lines(result):
        print(line)
    plot = " and threshold.png" if (out / "threshold.png").exists() else ""
    print(f"wrote {out}/report.md, metrics.json{plot}", file=sys.stderr)
    return 0


def eval_safety_args(p: argparse.ArgumentParser) -> None:
    from rejoinder.options import add_options
    from rejoinder.safety import SafetyConfig

    p.add_argument(
        "policy",
        metavar="CLASSIFIER_OR_POLICY",
        help="a classifier directory (with the default word list), a model directory whose "
        'rejoinder.json carries "safety" settings, or a JSON file of safety settings',
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="LABELS",
        help='a JSONL file of {"context": [...], "text", "label"} lines, or a labels dataset '
        "(`data build labels`)",
    )
    p.add_argument("--split", help="the split of a labels dataset to evaluate on (test)")
    p.add_argument(
        "--threshold",
        type=float,
        help="flag texts whose unsafe probability is above this (default: the policy's, 0.5)",
    )
    p.add_argument(
        "--examples", type=int, default=10, help="false positives and misses listed, each (10)"
    )
    p.add_argument("--device", help="the classifier's device (default: cuda where there is one)")
    p.add_argument("--out", required=True, metavar="REPORT", help="report directory to write")
    p.add_argument("--force", action="store_true", help="replace REPORT if it exists")
    keep = {"safety_words", "safety_default_words", "safety_unsafe_labels"}
    skip = {f for f in SafetyConfig.__dataclass_fields__ if f not in keep}
    add_options(p.add_argument_group("word list and labels"), SafetyConfig, skip=skip)


def cmd_ab(args) -> int:
    """A/B arms compared: `ab report` reads what users said of each arm's replies."""
    from datetime import UTC, datetime

    from rejoinder.atomic import check_out
    from rejoinder.evaluation.ab import summarize, write_ab_report
    from rejoinder.stores.arms import ab_rows
    from rejoinder.stores.sessions import SessionStore

    out = check_out(args.out, args.force)
    since = None
    if args.since:
        try:
            when = datetime.fromisoformat(args.since)
        except ValueError:
            raise RejoinderError(
                f"--since {args.since!r}: write an ISO date, e.g. 2026-12-01 or 2026-12-01T09:30"
            ) from None
        since = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    store = SessionStore(args.db)
    try:
        result = summarize(ab_rows(store, since), args.since)
    finally:
        store.close()
    if args.run:
        result["judged"] = _judged_run(args.run, args.run_db or args.db)
    write_ab_report(result, out)
    if not result["arms"]:
        print("no session has an arm (serve with --arm to run an A/B test)", file=sys.stderr)
    for arm, a in result["arms"].items():
        up = a["rates"]["thumbs_up"]
        rate = (
            "–" if up["rate"] is None else f"{up['rate']:.1%} [{up['low']:.1%}, {up['high']:.1%}]"
        )
        print(f"{arm}: {a['sessions']} sessions, {a['replies']} replies, thumbs-up {rate}")
    for decision in result["decisions"]:
        print(decision)
    if args.run:
        for criterion, board in result["judged"]["leaderboard"].items():
            ranks = "; ".join(
                f"{r['rank']}. {r['system']} {r['score']:.0f} [{r['low']:.0f}, {r['high']:.0f}]"
                for b in board["boards"]
                for r in b["systems"]
            )
            print(f"judged, {criterion}: {ranks}")
    print(f"wrote {out}/report.md and metrics.json", file=sys.stderr)
    return 0


def _judged_run(name: str, db: str) -> dict:
    """`ab report --run`: the run's leaderboard, refused unless some system is an arm's
    sessions (a run of anything else belongs to `judge report`)."""
    from rejoinder.evaluation.ab import judged
    from rejoinder.evaluation.human import summarize
    from rejoinder.stores.judgments import JudgeStore
    from rejoinder.stores.runs import JudgeError

    store = JudgeStore(db)
    try:
        run, items, judgments = store.export(name)
    except JudgeError as e:
        raise RejoinderError(f"--run: {e.message} in {db}") from None
    finally:
        store.close()
    part = judged(summarize(run, items, judgments), run)
    if not any(part["arms"].values()):
        raise RejoinderError(
            f"--run {name}: none of its systems is the sessions of an arm; make such a run "
            "with judge create --mode conversation --system A=sessions:URL,arm=A "
            "--system B=sessions:URL,arm=B"
        )
    return part


def ab_args(p: argparse.ArgumentParser) -> None:
    from rejoinder.db import DEFAULT_DB

    p.add_argument("action", choices=["report"], help="report: the arms' figures and tests")
    p.add_argument("--db", default=DEFAULT_DB, metavar="URL", help=f"the sessions ({DEFAULT_DB})")
    p.add_argument(
        "--since", metavar="ISO-DATE", help="only sessions made from then on (UTC unless it says)"
    )
    p.add_argument(
        "--run",
        metavar="NAME",
        help="a judging run of the arms' conversations (judge create --mode conversation "
        "--system A=sessions:URL,arm=A ...): its Bradley–Terry leaderboard joins the report",
    )
    p.add_argument("--run-db", metavar="URL", help="where --run is stored, if not in --db")
    p.add_argument("--out", required=True, metavar="REPORT", help="report directory to write")
    p.add_argument("--force", action="store_true", help="replace REPORT if it exists")
