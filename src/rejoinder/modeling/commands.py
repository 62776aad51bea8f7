"""The checkpoint verbs: `rejoinder init`, `import-dialogpt`, `import-dialogrpt`, `encode`
(the ids a format makes) and `rank` (a ranker's scores)."""

from __future__ import annotations

import argparse
import json

from rejoinder.arguments import format_args, format_settings, out_args, read_corpus, tokenizer_args


def cmd_init(args) -> int:
    """Creates a randomly initialised checkpoint (GPT-2, Llama, Qwen2, Mistral, GPT-NeoX)."""
    from rejoinder.modeling import init_checkpoint

    out = init_checkpoint(
        args.out,
        size=args.size,
        tokenizer=args.tokenizer,
        format=args.format,
        corpus=read_corpus(args.corpus),
        seed=args.seed,
        format_settings=format_settings(args),
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
    tokenizer_args(p)
    format_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    out_args(p)


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
    out_args(p)


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

        tok = build_tokenizer(args.tokenizer, read_corpus(args.corpus))
        fmt = get_format(args.format, tok, **format_settings(args))
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
    tokenizer_args(p)
    format_args(p)
    p.add_argument("--max-tokens", type=int, help="token budget; the oldest turns go first")
    p.add_argument(
        "--loss-on",
        choices=["responses", "last", "all"],
        help="print a training example with labels instead of the reply prompt",
    )
    p.add_argument("--tokens", action="store_true", help="also print each token's text")


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
    out_args(p)
