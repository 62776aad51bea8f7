"""The `rejoinder data` verbs: build, show, synth-reddit."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rejoinder.errors import RejoinderError

SOURCE_KINDS = ("reddit", "dailydialog", "chitchat", "jsonl", "qa", "chatterbot")
NEEDS_PATH = ("dailydialog", "jsonl", "qa")


def parse_sources(tokens: list[str], args) -> list:
    """`reddit dailydialog DIR chitchat` -> Sources; --comments etc. attach to theirs."""
    from rejoinder.data.pipeline import Source

    sources: list[Source] = []
    i = 0
    while i < len(tokens):
        kind = tokens[i]
        if kind not in SOURCE_KINDS:
            raise RejoinderError(
                f"unknown source {kind!r}; sources are {', '.join(SOURCE_KINDS)} "
                "(paths follow dailydialog, jsonl and qa)"
            )
        i += 1
        if kind in NEEDS_PATH:
            if i >= len(tokens) or tokens[i] in SOURCE_KINDS:
                raise RejoinderError(f"source {kind} needs a path: {kind} PATH")
            sources.append(Source(kind, {"path": tokens[i]}))
            i += 1
        elif kind == "reddit":
            if not args.comments:
                raise RejoinderError("source reddit needs --comments RC_FILE (repeatable)")
            sources.append(
                Source(kind, {"comments": args.comments, "submissions": args.submissions or []})
            )
        elif kind == "chatterbot":
            if not args.language:
                raise RejoinderError("source chatterbot needs --language NAME (e.g. chinese)")
            sources.append(Source(kind, {"language": args.language}))
        else:
            sources.append(Source(kind, {}))
    if not sources:
        raise RejoinderError(f"name at least one source: {', '.join(SOURCE_KINDS)}")
    return sources


def cmd_build(args) -> int:
    """Builds a dialogue dataset from corpora: DIR/{train,valid,test}/*.parquet + manifest.json."""
    from rejoinder.data.pipeline import BuildConfig, build
    from rejoinder.data.reddit import RedditOptions

    filter_options = {
        "targets": args.targets,
        "repetition_run": args.repetition_run,
        "top_words": args.top_words,
        "max_words": args.max_words,
        "offensive_words": args.offensive_words,
        "subreddit_blocklist": args.subreddit_blocklist,
        "bland_share": args.bland_share,
        "bland_count": args.bland_count,
    }
    config = BuildConfig(
        sources=parse_sources(args.sources, args),
        out=args.out,
        filters=args.filters,
        filter_options={k: v for k, v in filter_options.items() if v is not None},
        reddit=RedditOptions(
            min_depth=args.min_depth,
            max_depth=args.max_depth,
            min_score=args.min_score,
            leaves_only=not args.all_paths,
            max_turn_words=args.max_turn_words,
            title=args.title,
        ),
        valid=args.valid,
        test=args.test,
        explain=args.explain,
        force=args.force,
        engine=args.engine,
        master=args.master,
    )
    manifest = build(config)
    print(summary(manifest, Path(args.out)))
    return 0


def summary(manifest: dict, out: Path) -> str:
    d = manifest["dialogues"]
    lines = [
        f"wrote {d['total']} dialogues to {out} "
        f"(train {d['train']}, valid {d['valid']}, test {d['test']}) in {manifest['seconds']} s"
    ]
    if manifest["dropped"]:
        lines.append("dropped by filter:")
        lines += [f"  {name:<12} {n:>10}" for name, n in manifest["dropped"].items()]
    if manifest["bad_input"]:
        lines.append("skipped input (bad records):")
        lines += [f"  {reason:<40} {n:>10}" for reason, n in manifest["bad_input"].items()]
    return "\n".join(lines)


def cmd_show(args) -> int:
    """Prints a dataset's counts, its filter table and a few dialogues."""
    import pyarrow.parquet as pq

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
    files = sorted((root / args.split).glob("*.parquet"))
    shown = 0
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=max(args.n, 1)):
            for row in batch.to_pylist():
                if shown >= args.n:
                    break
                print(f"\n[{args.split}] {row['id']} ({row['source']})")
                for t in row["turns"]:
                    labels = ", ".join(f"{k}={t[k]}" for k in ("emotion", "act") if t.get(k))
                    who = t["speaker"] or "?"
                    print(f"  {who[:12]:>12}: {t['text']}" + (f"  [{labels}]" if labels else ""))
                shown += 1
            if shown >= args.n:
                break
    return 0


def cmd_synth_reddit(args) -> int:
    """Writes a synthetic Pushshift comment dump with Reddit's shapes, for tests and benchmarks."""
    from rejoinder.data.synth import synth_reddit

    if args.comments < 1:
        raise RejoinderError("--comments must be at least 1")
    info = synth_reddit(args.comments, args.out, submissions_out=args.submissions, seed=args.seed)
    print(f"wrote {args.comments} comments to {args.out}")
    print(json.dumps(info, sort_keys=True))
    return 0


def add_data_verbs(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="data_verb", metavar="DATA_VERB", required=True)

    def verb(name, fn):
        p = verbs.add_parser(name, help=fn.__doc__.splitlines()[0], description=fn.__doc__)
        p.set_defaults(fn=fn)
        return p

    p = verb("build", cmd_build)
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="reddit, dailydialog PATH, chitchat, jsonl PATH, qa PATH, chatterbot",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="dataset directory to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--comments",
        action="extend",
        nargs="+",
        metavar="RC_FILE",
        help="Pushshift comment dump (.zst, .bz2, .xz, .gz or plain); repeatable",
    )
    p.add_argument(
        "--submissions",
        action="extend",
        nargs="+",
        metavar="RS_FILE",
        help="Pushshift submission dump, for --title; repeatable",
    )
    p.add_argument("--language", help="chatterbot corpus language, e.g. chinese")
    p.add_argument(
        "--engine",
        default="local",
        choices=["local", "spark"],
        help="local (embedded, default) or spark",
    )
    p.add_argument("--master", help="Spark master URL (default local[*])")
    g = p.add_argument_group("filters (DialoGPT's; default: all for reddit, none for the others)")
    g.add_argument(
        "--filters",
        metavar="SPEC",
        help="auto, all, none, or names: url,repetition,non_english,brackets,"
        "too_long,offensive,subreddit,bland",
    )
    g.add_argument(
        "--targets",
        choices=["last", "responses"],
        help="turns the target checks look at (default: last)",
    )
    g.add_argument("--repetition-run", type=int, help="a word this many times in a row (3)")
    g.add_argument("--top-words", type=int, help="top English words a target needs one of (50)")
    g.add_argument("--max-words", type=int, help="words in source + target at most (200)")
    g.add_argument("--offensive-words", metavar="FILE", help="blocklist (default better-profanity)")
    g.add_argument("--subreddit-blocklist", metavar="FILE", help="subreddits to leave out")
    g.add_argument("--bland-share", type=float, help="share of frequent trigrams (0.9)")
    g.add_argument("--bland-count", type=int, help="a trigram is frequent above this count (1000)")
    g.add_argument(
        "--explain",
        type=int,
        default=0,
        metavar="N",
        help="keep N dropped dialogues per filter in the manifest",
    )
    r = p.add_argument_group("reddit threads")
    r.add_argument("--min-depth", type=int, default=2, help="turns a dialogue needs (2)")
    r.add_argument("--max-depth", type=int, help="turns a path may have")
    r.add_argument("--min-score", type=int, help="lower-scored comments break the chain")
    r.add_argument("--max-turn-words", type=int, help="longer comments break the chain")
    r.add_argument(
        "--all-paths",
        action="store_true",
        help="a dialogue for the path to every comment, not only to leaves",
    )
    r.add_argument("--title", action="store_true", help="the submission title as first turn")
    s = p.add_argument_group("splits (by thread or dialogue, deterministic)")
    s.add_argument("--valid", type=float, default=0.01, help="validation fraction (0.01)")
    s.add_argument("--test", type=float, default=0.01, help="test fraction (0.01)")

    p = verb("show", cmd_show)
    p.add_argument("dir", metavar="DIR", help="a dataset directory")
    p.add_argument("--split", default="train", choices=["train", "valid", "test"])
    p.add_argument("-n", type=int, default=3, help="dialogues to print (3)")

    p = verb("synth-reddit", cmd_synth_reddit)
    p.add_argument("--comments", type=int, required=True, metavar="N", help="number of comments")
    p.add_argument("--out", required=True, metavar="FILE", help="RC_ dump to write (.zst or plain)")
    p.add_argument("--submissions", metavar="FILE", help="also write the RS_ submissions")
    p.add_argument("--seed", type=int, default=0)
