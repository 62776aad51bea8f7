"""The reply verbs: `rejoinder chat`, `score` (a reply's log-probability) and `inspect`
(greedy decoding step by step)."""

from __future__ import annotations

import argparse
import json

from rejoinder.arguments import load_model, model_args, safety_args


def cmd_score(args) -> int:
    """Prints the log-probability of a response given a context, in all and per token."""
    model = load_model(args)
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
    model_args(p, reverse=False)
    p.add_argument("--context", nargs="*", metavar="TURN", help="the conversation so far")
    p.add_argument("--response", required=True, help="the reply to score")


def cmd_inspect(args) -> int:
    """Prints, step by step, the most likely next tokens as greedy decoding goes."""
    rows = load_model(args).inspect(args.text, steps=args.steps, top=args.top, as_turn=args.turn)
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
    session = ChatSession(load_model(args), system=args.system, persona=args.persona, **options)
    session.config()  # refuses options the model cannot decode with, before the first turn
    if args.set:
        session.set_options(" ".join(args.set))
    return repl(session)


def chat_args(p: argparse.ArgumentParser) -> None:
    from rejoinder.generation.config import PRESETS, DecodingConfig
    from rejoinder.options import add_options

    model_args(p)
    p.add_argument("--device", help="cpu, cuda, cuda:1, … (default: cuda where there is a GPU)")
    p.add_argument("--system", metavar="TEXT", help="a system prompt (chat-template models)")
    p.add_argument("--persona", metavar="TEXT", help="about the bot: before the chat, never cut")
    g = p.add_argument_group("decoding (any of them overrides the preset)")
    g.add_argument("--preset", choices=list(PRESETS), help="named settings: " + ", ".join(PRESETS))
    add_options(g, DecodingConfig, override=True)
    safety_args(p)
    p.add_argument(
        "--set",
        nargs="+",
        metavar="KEY=VALUE",
        help="decoding options, as with /set, e.g. --set do_sample=true top_p=0.9",
    )
