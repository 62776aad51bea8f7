"""`rejoinder export`: a train run's checkpoint as a directory, or a directory for a
serving engine (--for)."""

from __future__ import annotations

import argparse

from rejoinder.arguments import out_args


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
    out_args(p)
