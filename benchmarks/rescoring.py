"""MMI's forward scores from what decoding computed, against scoring the replies whole.

    python benchmarks/rescoring.py [MODEL] [--data PARQUET] [--contexts 16] [--repeats 3]

MODEL (default: the quickstart's `quickstart/forward`, so run `make quickstart` first)
draws 8 candidates for each of --contexts opening lines of a dialogue dataset's test
split (default `quickstart/data/test`) in the continuous decoder, kept for scoring as the
server keeps reranked candidates. Then the forward model's log-likelihood of every
candidate, two ways, side by side (the median of --repeats, interleaved):

- whole: `ConversationModel.score_encodings`, what the gathering batcher and offline
  reranking run: each context and reply through the model;
- kept: `StepDecoder.loglikelihood`, what the continuous batcher runs: the labels the
  reply shares with the tokens drawn from the log-probabilities recorded while drawing,
  the rest over the kept keys and values.

It prints how many candidates re-encode to exactly the tokens drawn (a trained model's
do, mostly; a random model's seldom), the positions each way runs through the model,
the seconds, and the ratio; and the largest difference between the two ways' values.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="quickstart/forward")
    ap.add_argument("--data", default="quickstart/data/test")
    ap.add_argument("--contexts", type=int, default=16)
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32, help="new tokens a candidate (32)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not Path(args.model, "config.json").exists():
        raise SystemExit(f"{args.model}: no model there; run `make quickstart` or name one")
    import pyarrow.dataset as ds

    from rejoinder.generation import ConversationModel, scoring
    from rejoinder.generation.config import decoding_config
    from rejoinder.generation.continuous import StepDecoder
    from rejoinder.generation.continuous.rescoring import KeptPrompt, shared

    model = ConversationModel.from_pretrained(args.model)
    dialogues = ds.dataset(args.data).head(args.contexts).to_pylist()
    contexts = [[d["turns"][0]["text"]] for d in dialogues]
    # The mmi preset's sampling, its candidates drawn as the server draws them: as rows.
    config = replace(decoding_config("mmi", max_new_tokens=args.tokens), mmi_candidates=0)
    decoder = StepDecoder(model, max_rows=len(contexts))
    rows = []
    for context in contexts:
        keep, prompt = KeptPrompt(), model.encode(context, args.tokens)
        for k in range(args.candidates):
            row = decoder.submit(k, prompt, config, share=args.candidates, keep=keep)
            rows.append((context, row))
    while decoder.busy:
        decoder.step()
    drawn = [(c, row, model.reply_of(row.new, config).text) for c, row in rows]
    drawn = [(c, row, text) for c, row, text in drawn if text.strip()]
    pairs = [(c, text) for c, _, text in drawn]
    encodings = scoring.response_encodings(model.format, pairs, model.context_budget)
    kept_rows = [row for _, row, _ in drawn]
    starts = [shared(row, e) for row, e in zip(kept_rows, encodings, strict=True)]
    exact = sum(
        s is not None and s >= len(row.prompt) + len(row.new) - 1
        for row, s in zip(kept_rows, starts, strict=True)
    )
    whole_positions = sum(len(e.input_ids) for e in encodings)
    kept_positions = sum(
        len(e.input_ids) - (s or 0) for e, s in zip(encodings, starts, strict=True)
    )

    times = {"whole": [], "kept": []}
    values = {}
    for _ in range(args.repeats):
        t = time.perf_counter()
        values["whole"] = [s.token_logprobs for s in model.score_encodings(encodings)]
        times["whole"].append(time.perf_counter() - t)
        t = time.perf_counter()
        values["kept"] = decoder.loglikelihood(kept_rows, encodings)
        times["kept"].append(time.perf_counter() - t)
    gap = max(
        abs(a - b)
        for x, y in zip(values["whole"], values["kept"], strict=True)
        for a, b in zip(x, y, strict=True)
    )
    whole = statistics.median(times["whole"])
    print(
        f"{args.model}: {len(encodings)} candidates ({len(contexts)} contexts), "
        f"{exact} re-encode to the tokens drawn"
    )
    print(f"{'way':<6} {'positions':>9} {'seconds':>8} {'x whole':>7}")
    for way, positions in (("whole", whole_positions), ("kept", kept_positions)):
        median = statistics.median(times[way])
        print(f"{way:<6} {positions:>9} {median:>8.3f} {whole / median:>6.2f}x")
    print(f"largest difference between the two ways' log-probabilities: {gap:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
