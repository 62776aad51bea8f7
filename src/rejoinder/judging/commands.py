"""The `rejoinder judge` verbs: create, serve, report and list."""

from __future__ import annotations

import argparse
import json

from rejoinder.db import DEFAULT_DB
from rejoinder.errors import RejoinderError
from rejoinder.judging.create import CreateOptions
from rejoinder.options import add_options, from_args


def cmd_create(args) -> int:
    """Makes a judging run: items (contexts or conversations) and every system's replies."""
    from rejoinder.judging.create import create_run

    options = from_args(CreateOptions, args, name=args.name)
    made = create_run(options)
    pairs = ", ".join(" vs ".join(p) for p in made["pairs"])
    print(
        f"run {made['name']}: {made['items']} items ({pairs}) and {made['onboarding']} "
        f"onboarding items in {args.db}\n"
        f"judges open /judge/{made['name']} on `rejoinder serve --db {args.db}` or "
        f"`rejoinder judge serve {made['name']} --db {args.db}`"
    )
    print("\n".join(power_lines(made, options)))
    return 0


def power_lines(made: dict, options: CreateOptions) -> list[str]:
    """What a run as created can detect: the judgments a 55%, 60% and 65% win rate need."""
    from rejoinder.evaluation.human import power_plan

    plan = power_plan(made["items"], len(made["pairs"]), options.judgments_per_item, options.mode)
    each = "each pair gets at least" if len(made["pairs"]) > 1 else "the pair gets"
    ties = (
        f"ties ({plan['ties']:.0%} planned for in turn mode) are dropped by the report's test"
        if plan["ties"]
        else "conversation mode has no ties"
    )
    lines = [
        f"power ({plan['power']:.0%}, two-sided alpha {plan['alpha']}, normal approximation "
        f"to the binomial test against 50%): {each} {plan['items']} items x "
        f"{plan['judgments_per_item']} judgments = {plan['per_pair']} judgments; {ties}, "
        f"leaving about {plan['decisive']:.0f} decisive votes"
    ]
    for r in plan["rates"]:
        verdict = "enough" if r["enough"] else "too few"
        lines.append(
            f"  a {r['rate']:.0%} win rate needs {r['decisive']} decisive votes "
            f"({r['judgments']} judgments) per pair: {verdict} (power {r['power']:.0%})"
        )
    # a judge sees an item once and judges at most --quota items
    total = made["items"] * options.judgments_per_item
    judges = max(options.judgments_per_item, -(-total // options.quota))
    lines.append(
        f"the run's {total} judgments need at least {judges} judges "
        f"(--quota {options.quota} items each, one judgment per item per judge)"
    )
    return lines


def cmd_serve(args) -> int:
    """Serves the judging page and its API (no model needed): /judge/RUN."""
    from rejoinder.serve.server import Settings

    try:
        from rejoinder.serve.judging import serve_judging
    except ImportError as e:
        raise RejoinderError(
            f"serving needs the serve extra ({e.name} is missing): pip install 'rejoinder[serve]'"
        ) from None
    settings = from_args(Settings, args)
    serve_judging(args.run, settings)
    return 0


def cmd_report(args) -> int:
    """Writes a run's results: report.md, results.json, a win-rate plot, an ACUTE export."""
    from rejoinder.evaluation.human import summarize
    from rejoinder.evaluation.human_report import write_human_report
    from rejoinder.stores.judgments import JudgeStore
    from rejoinder.stores.runs import JudgeError

    store = JudgeStore(args.db)
    try:
        run, items, judgments = store.export(args.run)
    except JudgeError as e:
        raise RejoinderError(f"{e.message} in {args.db}") from None
    finally:
        store.close()
    results = summarize(run, items, judgments)
    out = write_human_report(results, items, judgments, args.out, force=args.force)
    print((out / "report.md").read_text(encoding="utf-8"))
    print(f"wrote {out}")
    return 0


def cmd_list(args) -> int:
    """Lists the judging runs of a database, with their judgments so far."""
    from rejoinder.stores.judgments import JudgeStore

    store = JudgeStore(args.db)
    try:
        for name in store.run_names():
            run, items, judgments = store.export(name)
            print(
                json.dumps(
                    {
                        "run": name,
                        "mode": run["mode"],
                        "systems": run["systems"],
                        "items": len(items),
                        "judgments": len(judgments),
                        "judges": run["judges"]["kept"],
                        "excluded": run["judges"]["excluded"],
                    }  # fmt: skip
                )
            )
    finally:
        store.close()
    return 0


def add_judge_verbs(parser: argparse.ArgumentParser) -> None:
    """Adds create, serve, report and list under `parser` (the `judge` verb's)."""
    from rejoinder.serve.server import Settings

    verbs = parser.add_subparsers(dest="judge_verb", metavar="JUDGE_VERB", required=True)

    def verb(name, fn):
        p = verbs.add_parser(name, help=fn.__doc__.splitlines()[0], description=fn.__doc__)
        p.set_defaults(fn=fn)
        return p

    p = verb("create", cmd_create)
    p.add_argument("--name", required=True, metavar="RUN", help="the run's name (its URL)")
    add_options(p, CreateOptions)

    p = verb("serve", cmd_serve)
    p.add_argument("run", metavar="RUN", help="the run to judge (others are served too)")
    add_options(
        p,
        Settings,
        skip={
            "model_name",
            "preset",
            "max_tokens",
            "default_max_tokens",
            "request_seconds",
            "max_batch",
            "batch_wait_ms",
            "max_message_chars",
        },  # fmt: skip
    )

    p = verb("report", cmd_report)
    p.add_argument("run", metavar="RUN", help="the run to report on")
    p.add_argument("--db", default=DEFAULT_DB, metavar="URL", help="the run's database")
    p.add_argument("--out", required=True, metavar="DIR", help="the report directory to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")

    p = verb("list", cmd_list)
    p.add_argument("--db", default=DEFAULT_DB, metavar="URL", help="the database")
