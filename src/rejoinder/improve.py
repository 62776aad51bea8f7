"""`rejoinder improve`: from what users said of a served model to a measured candidate.

Stages, each skipped when a run of the same OUT already finished it (the command
resumes, and is run again once judges have worked):

1. feedback: the serving database's feedback as datasets: unpaired rows (ratings,
   regenerated, rewritten and flagged replies; OUT/unpaired) for KTO, or pairs
   (OUT/pairs) for DPO; a share held out for testing;
2. contexts: the held-out rows' contexts as a dialogue dataset (OUT/contexts), which the
   judging run draws its items from;
3. candidate: the serving model tuned on the training split (OUT/candidate: a LoRA
   adapter by default), by `fit`, as `rejoinder train` does;
4. offline: both models on the held-out rows: the mean log-likelihood per token of the
   replies users liked and of those they did not, and the margin between them
   (OUT/offline.json);
5. judging: a turn-mode judging run of candidate against serving in the same database
   (`rejoinder judge serve` or the server's /judge/RUN page shows it);
6. report: OUT/report.md and decision.json, ending in a stated decision (`decide`):
   promote, keep, or need more judgments, with the figures behind it.

Nothing is promoted: the report says what the figures support, and a person serves the
candidate (as an A/B arm first: `serve --arm`).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rejoinder.errors import RejoinderError
from rejoinder.options import option

PROMOTE, KEEP, MORE = "promote", "keep", "need more judgments"
CANDIDATE, SERVING = "candidate", "serving"


@dataclass
class ImproveOptions:
    """What `rejoinder improve` does; each field is one of its options."""

    db: str = option(hidden=True)
    """The serving database (sqlite:///FILE or postgresql://…): its sessions' feedback."""
    model: str = option(hidden=True)
    """The serving model's directory: the candidate starts from it."""
    out: str = option(hidden=True)
    """Where every stage's output goes (the command resumes from it)."""
    objective: str = "kto"
    """kto (unpaired: every rating counts) or dpo (pairs only)."""
    lora: bool = option(True, flag="--full")
    """Tune LoRA adapters, a few MB (--full: every weight)."""
    steps: int = 200
    """Training steps of the candidate."""
    lr: float = 5e-5
    """The candidate's learning rate."""
    batch_tokens: int = 4096
    """Tokens per training batch."""
    desirable_weight: float | None = None
    """KTO's weight of liked replies (default: set from the training split's counts so
    that liked and disliked weigh alike, as the KTO paper advises; users dislike more
    often than they like)."""
    undesirable_weight: float | None = None
    """KTO's weight of disliked replies (default: as for --desirable-weight)."""
    test: float = 0.2
    """The share of feedback held out for the offline figures and the judging items."""
    items: int = 100
    """Judging items (at most the held-out contexts)."""
    judgments_per_item: int = 3
    """Judges per item."""
    rankers: list[str] = option(default_factory=list, flag="--ranker", metavar="NAME=DIR")
    """A reply ranker whose mean score of each model's replies the offline figures show."""
    seed: int = 0

    def __post_init__(self):
        if self.objective not in ("kto", "dpo"):
            raise RejoinderError(f"--objective {self.objective}: use kto or dpo")
        if not 0 < self.test < 1:
            raise RejoinderError(f"--test {self.test}: a share between 0 and 1")
        if self.steps < 1 or self.items < 1:
            raise RejoinderError("--steps and --items must be at least 1")

    @property
    def run_name(self) -> str:
        return f"improve-{Path(self.out).resolve().name}"


def _say(step: str, text: str) -> None:
    print(f"[{step}] {text}", file=sys.stderr, flush=True)


def build_feedback(o: ImproveOptions, out: Path) -> Path:
    kind = "unpaired" if o.objective == "kto" else "pairs"
    data = out / kind
    if (data / "manifest.json").is_file():
        _say("1/6", f"feedback already built: {data}")
        return data
    from rejoinder.data.build import BuildConfig, Source, build, summary

    _say("1/6", f"the feedback in {o.db} as {kind}")
    options = {"db": o.db, **({"makes": "unpaired"} if kind == "unpaired" else {})}
    config = BuildConfig(
        sources=[Source("feedback", options)], out=str(data), valid=0.0, test=o.test
    )
    manifest = build(config)
    print(summary(manifest, data))
    return data


def held_out(data: Path, objective: str) -> list:
    """The held-out feedback as unpaired rows (pairs read as rows: chosen liked); empty
    replies (a model may end its turn at once) are left out, as training leaves them:
    there is nothing to score."""
    from rejoinder.data.unpaired import read_unpaired

    rows = read_unpaired(data, "test", from_pairs=objective == "dpo")
    return [r for r in rows if r.reply.strip()]


def build_contexts(rows: list, out: Path) -> Path:
    """The held-out contexts as a dialogue dataset (each with the reply users liked, or
    the one given, as the reference), for the judging run's items."""
    contexts = out / "contexts"
    if (contexts / "manifest.json").is_file():
        return contexts
    from rejoinder.data.build import BuildConfig, Source, build

    seen: dict[tuple, str] = {}
    for row in rows:
        if row.context and (row.desirable or row.context not in seen):
            seen[tuple(row.context)] = row.reply
    if not seen:
        raise RejoinderError("no held-out feedback has a context: nothing to judge on")
    lines = out / "contexts.jsonl"
    lines.write_text("".join(json.dumps([*c, r]) + "\n" for c, r in seen.items()))
    build(
        BuildConfig(
            sources=[Source("jsonl", {"path": str(lines)})],
            out=str(contexts), valid=0.0, test=0.0,  # all of it: "train" holds it
        )
    )  # fmt: skip
    return contexts


def train_candidate(o: ImproveOptions, data: Path, out: Path) -> Path:
    candidate = out / CANDIDATE
    if (candidate / "rejoinder.json").is_file():
        _say("3/6", f"candidate already trained: {candidate}")
        return candidate
    from rejoinder.modeling.lora import LoraOptions
    from rejoinder.training.data import DialogueData
    from rejoinder.training.fit import FitOptions, fit
    from rejoinder.training.module import DialogueLM

    _say("3/6", f"training the candidate: {o.objective}, {o.steps} steps from {o.model}")
    weights = {}
    if o.objective == "kto":
        weights = balanced_weights(data, o.desirable_weight, o.undesirable_weight)
        _say("3/6", f"KTO weights: desirable {weights['desirable_weight']:.2f}, "
             f"undesirable {weights['undesirable_weight']:.2f}")  # fmt: skip
    model = DialogueLM(
        init=o.model,
        objective=o.objective,
        **weights,
        lora=LoraOptions() if o.lora else None,
        lr=o.lr,
        warmup_steps=min(20, o.steps // 10),
    )
    batches = DialogueData(str(data), batch_tokens=o.batch_tokens, seed=o.seed, val_split="none")
    trainer = {"max_steps": o.steps, "enable_model_summary": False, "val_check_interval": None}
    options = FitOptions(str(candidate), run=str(out / "candidate.run"), checkpoint_every=100)
    print(fit(model, batches, options, trainer))
    return candidate


def balanced_weights(data: Path, desirable: float | None, undesirable: float | None) -> dict:
    """KTO's weights: those given, else the ones that make the weighted counts of liked
    and disliked training replies equal (the paper's 1:1 to 4:3 range; the larger class
    keeps weight 1)."""
    from rejoinder.data.unpaired import read_unpaired

    rows = [r for r in read_unpaired(data, "train") if r.reply.strip()]
    liked = sum(r.desirable for r in rows)
    disliked = len(rows) - liked
    if not liked or not disliked:
        raise RejoinderError(
            f"the training feedback has {liked} liked and {disliked} disliked replies; KTO "
            "needs both (more ratings, or --objective dpo on pairs)"
        )
    auto_d = max(1.0, disliked / liked)
    auto_u = max(1.0, liked / disliked)
    return {
        "desirable_weight": desirable if desirable is not None else auto_d,
        "undesirable_weight": undesirable if undesirable is not None else auto_u,
    }


def offline(o: ImproveOptions, rows: list, candidate: Path, out: Path) -> dict[str, Any]:
    """Each model on the held-out feedback: the perplexity of the replies users liked
    and of those they did not, and the margin between their mean log-likelihoods per
    token (higher: closer to what users like); the DSTC-7 metrics of its replies (greedy)
    to the held-out contexts against the liked replies; and each --ranker's mean score of
    those replies."""
    path = out / "offline.json"
    if path.is_file():
        return json.loads(path.read_text())
    import math

    from rejoinder.evaluation.metrics import score_replies
    from rejoinder.generation import ConversationModel
    from rejoinder.safety import SafetyConfig

    _say("4/6", f"offline figures on {len(rows)} held-out replies")
    pairs = [(list(r.context), r.reply) for r in rows]
    liked_refs: dict[tuple, list[str]] = {}
    for r in rows:
        if r.desirable:
            liked_refs.setdefault(tuple(r.context), []).append(r.reply)
    contexts = [list(c) for c in liked_refs]
    rankers = {}
    for item in o.rankers:  # NAME=DIR, or DIR named after its folder
        name, sep, where = item.partition("=")
        rankers[name if sep else Path(item).name] = where if sep else item
    figures: dict[str, Any] = {"rows": len(rows), "liked": sum(r.desirable for r in rows)}
    for name, where in ((SERVING, o.model), (CANDIDATE, candidate)):
        bot = ConversationModel.from_pretrained(
            where, rankers=rankers, safety=SafetyConfig(no_safety=True)
        )
        scores = bot.loglikelihood(pairs)
        m: dict[str, Any] = {}
        for side, wanted in (("liked", True), ("disliked", False)):
            mine = [s for s, r in zip(scores, rows, strict=True) if r.desirable == wanted]
            tokens = sum(len(s.token_logprobs) for s in mine)
            m[side] = sum(s.mean for s in mine) / len(mine) if mine else None
            m[f"{side}_perplexity"] = (
                math.exp(-sum(s.total for s in mine) / tokens) if tokens else None
            )
        both = m["liked"] is not None and m["disliked"] is not None
        m["margin"] = m["liked"] - m["disliked"] if both else None
        if contexts:
            replies = bot.generate_batch(contexts, preset="greedy", max_new_tokens=40)
            m["metrics"] = score_replies(replies, list(liked_refs.values()))
            for ranker_name, ranker in bot.rankers.items():
                said = ranker.score_pairs(list(zip(contexts, replies, strict=True)))
                m.setdefault("rankers", {})[ranker_name] = sum(said) / len(said)
        figures[name] = m
    path.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def judging_run(o: ImproveOptions, contexts: Path, candidate: Path) -> str:
    from rejoinder.judging.create import CreateOptions, create_run
    from rejoinder.stores.judgments import JudgeStore

    name = o.run_name
    store = JudgeStore(o.db)
    try:
        if name in store.run_names():
            _say("5/6", f"judging run {name} already made")
            return name
    finally:
        store.close()
    _say("5/6", f"judging run {name}: candidate against serving")
    create_run(
        CreateOptions(
            name=name,
            systems=[f"{CANDIDATE}={candidate}", f"{SERVING}={o.model}"],
            data=str(contexts),
            split="train",
            items=o.items,
            judgments_per_item=o.judgments_per_item,
            onboarding=0,
            seed=o.seed,
            db=o.db,
        )
    )
    return name


def decide(comparisons: dict[str, list[dict]], offline_figures: dict | None = None) -> dict:
    """The decision from a judging run's comparisons of candidate and serving (per
    criterion, as `evaluation.human.summarize` gives them), stated with its reasons:

    - keep: on some criterion the serving model wins significantly (Holm-adjusted p <
      0.05 over the run's tests of that criterion);
    - promote: the candidate wins significantly on at least one criterion and loses
      significantly on none;
    - need more judgments: neither; with how many decisive votes a 60% win rate needs.
    """
    from rejoinder.evaluation.stats import judgments_needed

    better, worse, votes = [], [], []
    for criterion, rows in comparisons.items():
        for row in rows:
            if {row["first"], row["second"]} != {CANDIDATE, SERVING}:
                continue
            rate = row["win_rate"]
            if rate is not None and row["first"] == SERVING:
                rate = 1 - rate
            votes.append(row["decisive"])
            if row.get("significant") and rate is not None:
                (better if rate > 0.5 else worse).append(f"{criterion} ({rate:.0%} for candidate)")
    if worse:
        verdict, why = KEEP, f"serving is judged better on {', '.join(worse)}"
    elif better:
        verdict, why = PROMOTE, f"the candidate is judged better on {', '.join(better)}"
    else:
        have, need = min(votes, default=0), judgments_needed(0.6)
        verdict = MORE
        why = (
            f"no criterion separates them yet: {have} decisive votes, {need} detect a 60% "
            "win rate at 80% power"
        )
    out = {"decision": verdict, "why": why}
    if offline_figures:
        out["offline"] = {k: offline_figures[k] for k in (SERVING, CANDIDATE)}
    return out


def report(o: ImproveOptions, out: Path, name: str, figures: dict) -> dict:
    from rejoinder.evaluation.human import summarize
    from rejoinder.stores.judgments import JudgeStore

    store = JudgeStore(o.db)
    try:
        results = summarize(*store.export(name))
    finally:
        store.close()
    decision = decide(results["comparisons"], figures)
    lines = [f"# rejoinder improve: {o.model} -> {out / CANDIDATE}", ""]
    lines += ["## Offline, on the held-out feedback", ""]
    lines += [
        "| model | liked (log-lik/token) | disliked | margin | liked ppl | BLEU-2 | dist-2 |",
        "|---|---|---|---|---|---|---|",
    ]
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    for model in (SERVING, CANDIDATE):
        m = figures[model]
        metrics = m.get("metrics") or {}
        lines.append(
            f"| {model} | {fmt(m['liked'])} | {fmt(m['disliked'])} | {fmt(m['margin'])} | "
            f"{fmt(m['liked_perplexity'])} | {fmt(metrics.get('bleu2'))} | "
            f"{fmt(metrics.get('dist2'))} |"
        )
        for ranker_name, score in (m.get("rankers") or {}).items():
            lines.append(f"|  {ranker_name} ranker's mean score: {score:.3f} | | | | | | |")
    lines += ["", f"## Judging run `{name}`", ""]
    for criterion, rows in results["comparisons"].items():
        for r in rows:
            lines.append(
                f"- {criterion}: {r['first']} {r['wins']} - {r['ties']} - {r['losses']} "
                f"{r['second']}, Holm-adjusted p {r['p_holm']:.3g}"
            )
    lines += ["", f"## Decision: {decision['decision']}", "", decision["why"] + ".", ""]
    lines.append(
        "Nothing was promoted. To try the candidate on live users: `rejoinder serve "
        f"{o.model} --arm candidate={out / CANDIDATE} --split control=50,candidate=50`."
    )
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "decision.json").write_text(json.dumps(decision, indent=2) + "\n")
    return decision


def improve(o: ImproveOptions) -> dict:
    """Runs every stage (skipping finished ones); returns the decision."""
    start = time.monotonic()
    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    data = build_feedback(o, out)
    rows = held_out(data, o.objective)
    if not rows:
        raise RejoinderError(
            f"no feedback was held out for testing (--test {o.test}); more rated replies, or "
            "a larger --test, are needed"
        )
    _say("2/6", f"{len(rows)} held-out replies, {sum(r.desirable for r in rows)} liked")
    contexts = build_contexts(rows, out)
    candidate = train_candidate(o, data, out)
    figures = offline(o, rows, candidate, out)
    name = judging_run(o, contexts, candidate)
    decision = report(o, out, name, figures)
    _say("6/6", f"{decision['decision']}: {decision['why']} ({out / 'report.md'}, "
         f"{(time.monotonic() - start) / 60:.1f} min)")  # fmt: skip
    return decision
