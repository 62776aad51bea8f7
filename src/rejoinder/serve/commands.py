"""`rejoinder serve`: the HTTP API, sessions and the chat page."""

from __future__ import annotations

import argparse

from rejoinder.arguments import (
    backend_args,
    rankers_of,
    reranker_args,
    safety_args,
    safety_of,
)
from rejoinder.errors import RejoinderError


def cmd_serve(args) -> int:
    """Serves a checkpoint over HTTP: OpenAI's chat completions, sessions and a chat page.

    With --arm, several models are served side by side as A/B arms (`rejoinder ab
    report` compares them)."""
    from rejoinder.options import from_args
    from rejoinder.serve.server import Settings

    try:
        from rejoinder.serve.app import serve
    except ImportError as e:
        raise RejoinderError(
            f"serving needs the serve extra ({e.name} is missing): pip install 'rejoinder[serve]'"
        ) from None
    settings = from_args(Settings, args)
    serve(
        args.model,
        args.reverse,
        settings,
        args.backend,
        args.compute_type,
        rankers_of(args),
        safety_of(args),
    )
    return 0


def serve_args(p: argparse.ArgumentParser) -> None:
    from rejoinder.options import add_options
    from rejoinder.serve.server import Settings  # plain Python: no serving library needed

    p.add_argument(
        "model",
        metavar="DIR",
        nargs="?",
        help="checkpoint directory (or hub name); optional with --arm, where it is the arm "
        '"control"',
    )
    reranker_args(p)
    backend_args(p)
    add_options(p, Settings)
    safety_args(p)
