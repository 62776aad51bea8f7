"""`rejoinder safety DIR`: the safety settings a model directory carries."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from rejoinder.arguments import safety_args, safety_of
from rejoinder.errors import RejoinderError

META_FILE = "rejoinder.json"


def cmd_safety(args) -> int:
    """Sets the safety policy a model directory carries, for every command that replies.

    chat, serve, judging's self-chat and `data negatives` apply it unless told
    otherwise; files are named relative to DIR."""
    from rejoinder.safety import Safety, SafetyConfig

    model = Path(args.model)
    meta_file = model / META_FILE
    if not meta_file.is_file():
        raise RejoinderError(
            f"{model} has no {META_FILE}: give a checkpoint directory made by rejoinder"
        )
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError as e:
        raise RejoinderError(f"{meta_file} is unreadable ({e})") from None
    config = safety_of(args)
    if config.no_safety:
        meta.pop("safety", None)
        said = f"{model} carries no safety settings now"
    else:
        if not config.enabled:
            raise RejoinderError(
                "give the policy: --safety, --safety-words FILE or --safety-classifier DIR "
                "(--no-safety removes the directory's settings)"
            )
        values = config.to_dict()
        Safety(SafetyConfig.from_dict(values, model))  # refuses settings that do not load
        meta["safety"] = values
        said = f"{model} carries the safety policy: {json.dumps(values)}"
    # Written beside and renamed over: a reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=model, prefix=".rejoinder-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, meta_file)
    print(said)
    return 0


def safety_verb_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="DIR", help="the checkpoint directory to carry the settings")
    safety_args(p)
