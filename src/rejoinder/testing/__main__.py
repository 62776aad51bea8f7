"""`python -m rejoinder.testing synth-reddit`: test data from the command line."""

from __future__ import annotations

import argparse
import json
import sys

from rejoinder.errors import RejoinderError


def cmd_synth_reddit(args: argparse.Namespace) -> int:
    """Writes a synthetic Pushshift comment dump with Reddit's shapes, for tests and benchmarks."""
    from rejoinder.testing.reddit import synth_reddit

    if args.comments < 1:
        raise RejoinderError("--comments must be at least 1")
    info = synth_reddit(args.comments, args.out, submissions_out=args.submissions, seed=args.seed)
    print(f"wrote {args.comments} comments to {args.out}")
    print(json.dumps(info, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rejoinder.testing", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    doc = cmd_synth_reddit.__doc__
    p = verbs.add_parser("synth-reddit", help=doc, description=doc)
    p.set_defaults(fn=cmd_synth_reddit)
    p.add_argument("--comments", type=int, required=True, metavar="N", help="number of comments")
    p.add_argument("--out", required=True, metavar="FILE", help="RC_ dump to write (.zst or plain)")
    p.add_argument("--submissions", metavar="FILE", help="also write the RS_ submissions")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same bytes (0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except RejoinderError as e:
        print(f"python -m rejoinder.testing {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
