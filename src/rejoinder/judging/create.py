"""`rejoinder judge create`: a run's items, generated once and stored.

Turn mode (DialoGPT's human evaluation): an item is a context from a dataset split and
one reply from each of two systems. Conversation mode (ACUTE-Eval): an item is two
whole conversations, one per system, made by self-chat from the same opening of the
split (or taken from a session database), with the speaker to judge named; one
question per run.

Pairs of systems go round-robin over the items, so each pair is judged as often as the
others (within one). Each system's replies are generated in batches, once; `--human`
adds the dataset's own reply (turn mode) or its own conversation (conversation mode)
as a system. Onboarding items have a known answer: the real reply against the reply of
another context, or the real conversation against one whose judged speaker says lines
from other conversations.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rejoinder.db import DEFAULT_DB
from rejoinder.errors import RejoinderError
from rejoinder.options import option
from rejoinder.progress import Progress
from rejoinder.stores.judgments import JudgeStore
from rejoinder.stores.runs import Item, RunConfig

TURN_QUESTIONS = {
    "relevance": "Which response is more relevant and appropriate to the conversation so far?",
    "informativeness": "Which response is more informative: has more content, says more?",
    "humanlike": "Which response do you think is more likely to have been written by a human?",
}
"""DialoGPT's three criteria (Zhang et al., 2020, section 5.4)."""

CONVERSATION_QUESTIONS = {
    "engaging": "Who would you prefer to talk to for a long conversation?",
    "human": "Which speaker sounds more human?",
    "interesting": "If you had to say one of these speakers is interesting and one is boring, "
    "who would you say is more interesting?",
    "knowledgeable": "If you had to say that one speaker is more knowledgeable and one is "
    "more ignorant, who is more knowledgeable?",
}
"""ACUTE-Eval's questions (Li et al., 2019), by short name."""

HUMAN = "human"
SPEAKERS = ("Speaker 1", "Speaker 2")


@dataclass
class CreateOptions:
    """What `rejoinder judge create` makes: a run's items and the rules of judging them."""

    name: str = option(hidden=True)
    systems: list[str] = option(default_factory=list, flag="--system", metavar="NAME=SPEC")
    """A system to compare: NAME=DIR[,reverse=DIR][,preset=P][,backend=ctranslate2]
    [,ranker=DIR] (a checkpoint directory and how it decodes), or, in conversation mode,
    NAME=sessions:URL[,arm=ARM] (the conversations of a session database; with arm, only
    the sessions `serve --arm` gave that arm)."""
    data: str | None = option(None, metavar="DIR")
    """The dataset whose contexts (turn mode) or openings (conversation mode) are used."""
    split: str = option("test", choices=("train", "valid", "test"))
    """The dataset split to draw from."""
    items: int = 200
    """How many items to judge."""
    mode: Literal["turn", "conversation"] = "turn"
    """turn: one context, two replies (DialoGPT); conversation: two conversations (ACUTE)."""
    criteria: str = "relevance,informativeness,humanlike"
    """Turn mode: the criteria, comma-separated (any of relevance, informativeness,
    humanlike, or NAME=QUESTION of your own)."""
    question: str = "engaging"
    """Conversation mode: engaging, human, interesting, knowledgeable, or a question of
    your own."""
    human: bool = False
    """Add the dataset's own replies (or conversations) as a system named "human"."""
    judgments_per_item: int = 3
    """Judges per item."""
    quota: int = 50
    """The most items one judge may judge (onboarding not counted)."""
    onboarding: int = 3
    """Known-answer items each judge answers first (0: none)."""
    onboarding_pass: float = 1.0
    """The share of onboarding items a judge must get right to be counted."""
    turns: int = 6
    """Conversation mode, self-chat: the conversation's length, the opening included."""
    context_turns: int = 5
    """Turn mode: the most context turns shown (the latest ones)."""
    max_new_tokens: int = 40
    """The longest generated reply, in tokens."""
    batch_size: int = 16
    """Contexts generated in one batch."""
    seed: int = 0
    """Sampling, item and pairing seed: the same seed, models and data make the same run."""
    db: str = option(DEFAULT_DB, metavar="URL")
    """The database the run is stored in (the one `rejoinder serve --db` uses)."""

    def __post_init__(self):
        if not self.name:
            raise RejoinderError("--name: a run needs a name")
        for flag, value, low in (
            ("--items", self.items, 1),
            ("--judgments-per-item", self.judgments_per_item, 1),
            ("--quota", self.quota, 1),
            ("--onboarding", self.onboarding, 0),
            ("--turns", self.turns, 2),
            ("--context-turns", self.context_turns, 1),
            ("--max-new-tokens", self.max_new_tokens, 1),
            ("--batch-size", self.batch_size, 1),
        ):
            if value < low:
                raise RejoinderError(f"{flag} must be at least {low}, got {value}")
        if not 0 <= self.onboarding_pass <= 1:
            raise RejoinderError("--onboarding-pass is a share: between 0 and 1")

    def questions(self) -> dict[str, str]:
        if self.mode == "conversation":
            known = CONVERSATION_QUESTIONS.get(self.question)
            return {self.question: known} if known else {"custom": self.question}
        out = {}
        for part in filter(None, (p.strip() for p in self.criteria.split(","))):
            name, sep, question = part.partition("=")
            if not sep and name not in TURN_QUESTIONS:
                raise RejoinderError(
                    f"--criteria {name}: known criteria are {', '.join(TURN_QUESTIONS)}; "
                    "a criterion of your own is NAME=QUESTION"
                )
            out[name.strip()] = question.strip() if sep else TURN_QUESTIONS[name]
        if not out:
            raise RejoinderError("--criteria: name at least one criterion")
        return out


SPEC_VALUES = {"reverse": "DIR", "preset": "P", "backend": "B", "ranker": "DIR"}
"""What each key of a model spec takes, as its usage line shows it."""


def model_spec(flag: str, text: str, keys: Sequence[str]) -> tuple[str, dict[str, str]]:
    """NAME=DIR[,key=value...] (a judged system, a served arm) as (NAME, {"dir": DIR, ...}),
    each key one of `keys`; a RejoinderError naming `flag` and the usage otherwise.

    >>> model_spec("--arm", "b=runs/b,preset=greedy", ("reverse", "preset"))
    ('b', {'dir': 'runs/b', 'preset': 'greedy'})
    """
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        usage = "".join(f",{k}={SPEC_VALUES.get(k, 'VALUE')}" for k in keys)
        raise RejoinderError(f"{flag} {text!r}: write NAME=DIR[{usage}]")
    path, *options = rest.split(",")
    spec = {"dir": path}
    for part in options:
        key, sep, value = part.partition("=")
        if not sep or key not in keys:
            raise RejoinderError(
                f"{flag} {name}: {part!r} is not one of {', '.join(k + '=' for k in keys)}"
            )
        spec[key] = value
    return name, spec


@dataclass
class System:
    """One system of a run: a loaded model and its decoding, or stored conversations."""

    name: str
    spec: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> System:
        name, _, rest = text.partition("=")
        if name == HUMAN:
            raise RejoinderError('--system: "human" is the name of --human\'s system')
        if name and rest.startswith("sessions:"):
            # the arm is the last key: a database URL may itself hold commas
            url, sep, arm = rest.removeprefix("sessions:").rpartition(",arm=")
            if sep and not (url and arm):
                raise RejoinderError(f"--system {name}: write NAME=sessions:URL[,arm=ARM]")
            return cls(name, {"sessions": url, "arm": arm} if sep else {"sessions": arm})
        return cls(*model_spec("--system", text, ("reverse", "preset", "backend", "ranker")))

    def load(self):
        from rejoinder.generation import ConversationModel

        if "dir" not in self.spec:
            return None
        ranker = self.spec.get("ranker")
        return ConversationModel.from_pretrained(
            self.spec["dir"],
            reverse=self.spec.get("reverse"),
            backend=self.spec.get("backend", "torch"),
            rankers={"ranker": ranker} if ranker else None,
        )

    def config(self, model, options: CreateOptions):
        from rejoinder.generation.config import decoding_config

        preset = self.spec.get("preset") or ("mmi" if self.spec.get("reverse") else "nucleus")
        config = decoding_config(preset, max_new_tokens=options.max_new_tokens, seed=options.seed)
        model.check(config)
        return config


def create_run(options: CreateOptions) -> dict[str, Any]:
    """Makes a run's items (generating every system's replies) and stores them; returns
    a summary (items, pairs, onboarding items)."""
    systems = [System.parse(s) for s in options.systems]
    names = [s.name for s in systems] + ([HUMAN] if options.human else [])
    if len(set(names)) != len(names):
        raise RejoinderError(f"--system: two systems have one name ({', '.join(names)})")
    if len(names) < 2:
        raise RejoinderError(
            "a run compares at least two systems: give --system twice, or add --human"
        )
    questions = options.questions()
    store = JudgeStore(options.db)
    try:
        if options.name in store.run_names():
            raise RejoinderError(
                f"there is already a run named {options.name!r} in {options.db}; "
                "choose another --name"
            )
        rng = random.Random(options.seed)
        if options.mode == "turn":
            items, onboarding = _turn_items(options, systems, names, rng)
        else:
            items, onboarding = _conversation_items(options, systems, names, rng)
        config = RunConfig(
            name=options.name,
            mode=options.mode,
            systems=names,
            criteria=list(questions),
            questions=questions,
            judgments_per_item=options.judgments_per_item,
            quota=options.quota,
            onboarding_pass=options.onboarding_pass,
            check_criterion=next(iter(questions)),
            source={
                "data": options.data,
                "split": options.split,
                "systems": {s.name: s.spec for s in systems},
                "human": options.human,
                "seed": options.seed,
            },
        )
        store.create_run(config, onboarding + items)
    finally:
        store.close()
    pairs = sorted({tuple(i.pair) for i in items})
    return {"name": options.name, "items": len(items), "onboarding": len(onboarding),
            "pairs": [list(p) for p in pairs], "systems": names}  # fmt: skip


def _pairs(names: Sequence[str], count: int, rng: random.Random) -> list[tuple[str, str]]:
    """`count` pairs of systems, every pair as often as the others (within one)."""
    every = list(itertools.combinations(names, 2))
    out: list[tuple[str, str]] = []
    while len(out) < count:
        rng.shuffle(every)
        out += every
    return out[:count]


def _item_id(*parts: Any) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


def _dialogues(options: CreateOptions, at_least: int) -> list:
    from rejoinder.data.records import read_dialogues

    if not options.data:
        raise RejoinderError("--data: name the dataset whose contexts are judged")
    usable = [d for d in read_dialogues(options.data, options.split) if len(d.turns) >= at_least]
    if not usable:
        raise RejoinderError(
            f"{options.data} has no {options.split} dialogue of {at_least} turns or more; "
            "choose another --split or dataset"
        )
    return usable


def _turn_items(options, systems, names, rng) -> tuple[list[Item], list[Item]]:
    dialogues = _dialogues(options, 2)
    rng.shuffle(dialogues)
    wanted = options.items + options.onboarding
    if len(dialogues) < wanted + (1 if options.onboarding else 0):
        raise RejoinderError(
            f"{options.data} {options.split} has {len(dialogues)} dialogues of two turns or more; "
            f"{wanted} are needed (--items plus --onboarding)"
        )
    contexts = [[t.text for t in d.turns[:-1]][-options.context_turns :] for d in dialogues]
    references = [d.turns[-1].text for d in dialogues]
    pairs = _pairs(names, options.items, rng)
    replies: dict[str, dict[int, str]] = {HUMAN: dict(enumerate(references))}
    for system in systems:
        rows = [i for i, pair in enumerate(pairs) if system.name in pair]
        replies[system.name] = dict(
            zip(rows, _generate(system, options, [contexts[i] for i in rows]), strict=True)
        )
    items = [
        Item(
            id=_item_id(options.name, i, pair),
            pair=pair,
            content={"context": contexts[i], "replies": {s: replies[s][i] for s in pair}},
        )
        for i, pair in enumerate(pairs)
    ]
    onboarding = []
    for k in range(options.onboarding):
        i = options.items + k
        other = references[(i + 1) % len(references)]
        onboarding.append(
            Item(
                id=_item_id(options.name, "onboarding", k),
                pair=("real", "other"),
                content={
                    "context": contexts[i],
                    "replies": {"real": references[i], "other": other},
                },
                onboarding=True,
                answer="real",
            )
        )
    return items, onboarding


def _generate(system: System, options: CreateOptions, contexts: list[list[str]]) -> list[str]:
    model = system.load()
    if model is None:
        raise RejoinderError(
            f"--system {system.name}: sessions give conversations, not replies (turn mode)"
        )
    config = system.config(model, options)
    out: list[str] = []
    with Progress(f"replies of {system.name}", total=len(contexts), unit="contexts") as progress:
        for start in range(0, len(contexts), options.batch_size):
            batch = contexts[start : start + options.batch_size]
            out += [r.strip() for r in model.generate_batch(batch, config)]
            progress.update(len(batch))
    return out


def _conversation_items(options, systems, names, rng) -> tuple[list[Item], list[Item]]:
    needs_openings = any("dir" in s.spec for s in systems) or options.human or options.onboarding
    dialogues = _dialogues(options, 2) if needs_openings else []
    rng.shuffle(dialogues)
    pairs = _pairs(names, options.items, rng)
    conversations: dict[str, dict[int, list[dict[str, str]]]] = {}
    for system in systems:
        rows = [i for i, pair in enumerate(pairs) if system.name in pair]
        if "sessions" in system.spec:
            stored = _session_conversations(system, options.turns, rng)
            conversations[system.name] = {i: stored[k % len(stored)] for k, i in enumerate(rows)}
        else:
            openings = [dialogues[i % len(dialogues)].turns[0].text for i in rows]
            made = _self_chat(system, options, openings)
            conversations[system.name] = dict(zip(rows, made, strict=True))
    if options.human:
        conversations[HUMAN] = {
            i: _labelled([t.text for t in dialogues[i % len(dialogues)].turns[: options.turns]])
            for i in range(len(pairs))
        }
    items = [
        Item(
            id=_item_id(options.name, i, pair),
            pair=pair,
            content={
                "conversations": {s: conversations[s][i] for s in pair},
                "speaker": {s: SPEAKERS[1] for s in pair},
            },
        )
        for i, pair in enumerate(pairs)
    ]
    return items, _conversation_onboarding(options, dialogues)


def _labelled(texts: list[str]) -> list[dict[str, str]]:
    return [{"speaker": SPEAKERS[k % 2], "text": t} for k, t in enumerate(texts)]


def _self_chat(system: System, options: CreateOptions, openings: list[str]) -> list[list[dict]]:
    """The model talks with itself from each opening, all conversations a turn at a time."""
    model = system.load()
    config = system.config(model, options)
    talks = [[o] for o in openings]
    steps = (options.turns - 1) * len(talks)
    with Progress(f"self-chat of {system.name}", total=steps, unit="turns") as progress:
        for _ in range(options.turns - 1):
            for start in range(0, len(talks), options.batch_size):
                batch = talks[start : start + options.batch_size]
                for talk, reply in zip(batch, model.generate_batch(batch, config), strict=True):
                    talk.append(reply.strip() or "...")
                progress.update(len(batch))
    return [_labelled(t) for t in talks]


def _session_conversations(system: System, turns: int, rng: random.Random) -> list[list[dict]]:
    """Stored chat sessions: the user is speaker 1, the bot speaker 2 (the one judged)."""
    from rejoinder.stores.sessions import SessionStore

    url, arm = system.spec["sessions"], system.spec.get("arm")
    store = SessionStore(url)
    try:
        ids = store.ids() if arm is None else store.arms.sessions(arm)
        if arm is not None and not ids:
            there = ", ".join(store.arms.names()) or "none: no server with --arm wrote to it"
            raise RejoinderError(f"--system {system.name}: {url} has no session of arm {arm!r} "
                                 f"(its arms: {there})")  # fmt: skip
        found = []
        for sid in ids:
            said = [m for m in store.get(sid)["messages"] if m["role"] in ("user", "assistant")]
            if len(said) >= 2 and said[0]["role"] == "user":
                found.append(_labelled([m["content"] for m in said[:turns]]))
    finally:
        store.close()
    if not found:
        of = f" of arm {arm!r}" if arm else ""
        raise RejoinderError(f"--system {system.name}: {url} holds no session{of} with a reply")
    rng.shuffle(found)
    return found


def _conversation_onboarding(options: CreateOptions, dialogues: list) -> list[Item]:
    """A real conversation against one whose judged speaker says other conversations' lines."""
    long = [d for d in dialogues if len(d.turns) >= 4]
    if options.onboarding and len(long) < options.onboarding + 1:
        raise RejoinderError(
            f"--onboarding {options.onboarding}: {options.data} {options.split} has too few "
            "dialogues of 4 turns or more to make them"
        )
    items = []
    for k in range(options.onboarding):
        real = [t.text for t in long[k].turns[: options.turns]]
        donor = [t.text for t in long[-1 - k].turns]
        mixed = [text if j % 2 == 0 else donor[(j + 1) % len(donor)] for j, text in enumerate(real)]
        items.append(
            Item(
                id=_item_id(options.name, "onboarding", k),
                pair=("real", "other"),
                content={
                    "conversations": {"real": _labelled(real), "other": _labelled(mixed)},
                    "speaker": {"real": SPEAKERS[1], "other": SPEAKERS[1]},
                },
                onboarding=True,
                answer="real",
            )
        )
    return items
