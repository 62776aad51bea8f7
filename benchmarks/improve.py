"""The improvement loop, round by round: serve -> simulated users -> `improve` -> serve
the candidate -> ... (issue 27; the CI-sized version is tests/serve/test_loop.py).

    python benchmarks/improve.py [--rounds 3] [--sessions 100] [--steps 60] [--lr 1e-3]

A tiny dialogpt model learns to answer six prompts with "I am fine, thanks" three times
in four and "Great, I am fine" once (tests/serve/test_loop.make_base). Simulated users
(two prompts a session, seeded replies) like a reply holding "great" and dislike any
other. Each round serves the current model through the real HTTP API, records the
users' ratings in that round's SQLite database, runs `rejoinder improve` (KTO, LoRA) on
it, and serves the candidate next round. Prints the like rate of each round's model.

Known limit (measured): KTO on this data is sensitive to the learning rate (the feedback
is ~1 liked to 8 disliked, which `improve` rebalances with KTO's desirable weight; above
~1e-3 the model can collapse into repeated tokens).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    from rejoinder.arguments import quiet_libraries
    from rejoinder.training.fit import quiet_lightning

    quiet_libraries()  # the table is what matters: no loading bars between rounds
    quiet_lightning()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()

    from tests.serve.test_loop import chat, make_base, serve

    from rejoinder.generation import ConversationModel
    from rejoinder.improve import ImproveOptions, improve

    root = Path(tempfile.mkdtemp(prefix="improve-bench-"))
    model = make_base(root / "base")
    rows = []
    for n in range(args.rounds):
        start = time.monotonic()
        db = f"sqlite:///{root / f'round{n}.db'}"
        running = serve(ConversationModel.from_pretrained(model), db)
        rated = chat(running.url, sessions=args.sessions, seed=n + 1)
        running.stop()
        rate = sum(liked for _, liked in rated) / len(rated)
        out = root / f"improve{n}"
        improve(ImproveOptions(db=db, model=str(model), out=str(out), steps=args.steps,
                               lr=args.lr, batch_tokens=1024, items=4,
                               judgments_per_item=1, seed=n))  # fmt: skip
        rows.append((n, str(model), len(rated), rate, time.monotonic() - start))
        model = out / "candidate"
    print("\n| round | model | rated replies | like rate | seconds |")
    print("|---|---|---|---|---|")
    for n, m, k, rate, secs in rows:
        print(f"| {n} | {Path(m).name} | {k} | {rate:.1%} | {secs:.0f} |")


if __name__ == "__main__":
    main()
