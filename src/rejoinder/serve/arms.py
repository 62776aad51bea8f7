"""A/B arms: several models served side by side to live users, and which one answers whom.

`rejoinder serve --arm NAME=DIR[,reverse=DIR,preset=P,ranker=DIR]` (repeatable) loads
each arm's model with its own scheduler (a `Server` each, sharing the settings and the
session store). A new session is given an arm at random, weighted by `--split`, and
keeps it (`stores.arms`); a stateless chat completion is given one by a hash of its
`user` field, so one user meets one arm, else at random. The arm is never shown to a
client; `rejoinder ab report` compares arms by what users said of their replies.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any

from rejoinder.errors import ApiError, RejoinderError
from rejoinder.judging.create import model_spec

ARM_KEYS = ("reverse", "preset", "ranker")
CONTROL = "control"
"""The arm name of the positional model DIR when --arm is given too."""


@dataclass(frozen=True)
class ArmSpec:
    """One --arm: its name, model directory, and optional reverse model, preset, ranker."""

    name: str
    dir: str
    reverse: str | None = None
    preset: str | None = None
    ranker: str | None = None

    @classmethod
    def parse(cls, text: str) -> ArmSpec:
        name, spec = model_spec("--arm", text, ARM_KEYS)
        return cls(name, spec["dir"], *(spec.get(k) or None for k in ARM_KEYS))


def parse_arms(texts: list[str], control: ArmSpec | None = None) -> list[ArmSpec]:
    """The --arm specs (and the positional model's, `control`, first), checked: two arms
    with one name, or an unknown preset, are refused naming the arm."""
    from rejoinder.generation.config import PRESETS

    specs = ([control] if control else []) + [ArmSpec.parse(t) for t in texts]
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            also = " (the positional DIR's arm)" if control and spec.name == CONTROL else ""
            raise RejoinderError(f"--arm {spec.name}: two arms have this name{also}; rename one")
        seen.add(spec.name)
        if spec.preset and spec.preset not in PRESETS:
            raise RejoinderError(
                f"--arm {spec.name}: preset={spec.preset} is not one of {', '.join(PRESETS)}"
            )
    return specs


def parse_split(text: str | None, names: list[str]) -> dict[str, float]:
    """--split NAME=PERCENT,... as each arm's share of new sessions (default: equal).

    Percentages sum to 100; an arm left out gets no new sessions (its sessions go on).

    >>> parse_split("a=80,b=20", ["a", "b"])
    {'a': 0.8, 'b': 0.2}
    """
    if not text:
        return {name: 1 / len(names) for name in names}
    shares = dict.fromkeys(names, 0.0)
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        try:
            percent = float(value) if sep else math.nan
        except ValueError:
            percent = math.nan
        if not math.isfinite(percent) or percent < 0:
            raise RejoinderError(f"--split {part!r}: write NAME=PERCENT, e.g. {names[0]}=50")
        if name not in shares:
            raise RejoinderError(
                f"--split {name}: no such arm; the arms are {', '.join(names)} (--arm NAME=DIR)"
            )
        shares[name] = percent / 100
    total = sum(shares.values()) * 100
    if abs(total - 100) > 1e-6:
        raise RejoinderError(f"--split {text}: the percentages sum to {total:g}, not 100")
    return shares


def pick(shares: dict[str, float], point: float) -> str:
    """The arm whose stretch of [0, 1) holds `point`, stretches laid out in order."""
    upto = 0.0
    for name, share in shares.items():
        upto += share
        if point < upto:
            return name
    return next(n for n, s in reversed(shares.items()) if s > 0)


def user_point(user: str) -> float:
    """A user id as a point of [0, 1), the same in every process (unlike `hash`)."""
    digest = hashlib.sha256(user.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def load_arms(model_dir, reverse, settings, backend, compute_type, rankers, safety):
    """The model `rejoinder serve` serves (no --arm), or {arm: model} in the arms' order,
    each loaded with the safety settings; a RejoinderError naming the arm that fails."""
    from rejoinder.generation import ConversationModel

    def load(where, reverse, rankers):
        return ConversationModel.from_pretrained(
            where,
            reverse=reverse,
            backend=backend,
            compute_type=compute_type,
            rankers=rankers or None,
            safety=safety,
        )

    if not settings.arms:
        if settings.split:
            raise RejoinderError("--split shares new sessions between arms: give --arm NAME=DIR")
        if not model_dir:
            raise RejoinderError("give a model DIR to serve, or A/B arms: --arm NAME=DIR")
        return load(model_dir, reverse, rankers)
    if not model_dir and (reverse or rankers):
        raise RejoinderError(
            "--reverse and --ranker go with the positional DIR; an arm takes its own: "
            "--arm NAME=DIR,reverse=DIR,ranker=DIR"
        )
    specs = parse_arms(settings.arms, ArmSpec(CONTROL, model_dir, reverse) if model_dir else None)
    parse_split(settings.split, [spec.name for spec in specs])  # before the slow part
    models = {}
    for spec in specs:
        ranked = rankers if spec.name == CONTROL and model_dir else {"ranker": spec.ranker}
        try:
            models[spec.name] = load(spec.dir, spec.reverse, {k: v for k, v in ranked.items() if v})
        except Exception as e:  # a missing or broken directory, a ranker that is not one
            raise RejoinderError(f"--arm {spec.name}: cannot load {spec.dir}: {e}") from None
    return models


class Arms:
    """The servers of a server's models, one per arm, and which answers whom.

    With one model and no --arm (`ab` False) nothing is drawn or stored: every request
    goes to it, as before arms existed.
    """

    def __init__(self, servers: dict[str, Any], store, split: str | None = None, ab: bool = True):
        self.servers, self.store, self.ab = servers, store, ab
        self.shares = parse_split(split, list(servers))
        self.requests = dict.fromkeys(servers, 0)
        self.sessions = dict.fromkeys(servers, 0)
        self.rng = random.Random()

    @property
    def first(self):
        return next(iter(self.servers.values()))

    def draw(self) -> str | None:
        """A new session's arm (None without arms)."""
        if not self.ab:
            return None
        arm = pick(self.shares, self.rng.random())
        self.sessions[arm] += 1
        return arm

    def server(self, arm: str | None):
        return self.first if arm is None else self.servers[arm]

    def for_user(self, user: str | None):
        """The server answering a chat completion: by the `user` field's hash, else drawn."""
        if not self.ab:
            arm = next(iter(self.servers))
        else:
            arm = pick(self.shares, user_point(user) if user else self.rng.random())
        self.requests[arm] += 1
        return self.servers[arm]

    async def for_session(self, sid: str):
        """The server of the session's arm; a session without one (made before arms) is
        given one now. 404: no such session; 410: its arm is no longer served."""
        from starlette.concurrency import run_in_threadpool

        if not self.ab:
            arm = next(iter(self.servers))
        else:
            arm = await run_in_threadpool(self.store.arms.of, sid)
            if arm is None:
                arm = await run_in_threadpool(self.store.arms.keep, sid, self.draw())
            if arm is None:
                raise ApiError(404, f"no session {sid!r}")
            if arm not in self.servers:
                raise ApiError(
                    410,
                    f"session {sid!r} began with a model this server no longer serves; "
                    "start a new session",
                )
        self.requests[arm] += 1
        return self.servers[arm]

    def facts(self) -> dict[str, Any]:
        """What /health says of the arms (operators only): each arm's scheduler, queue,
        sessions given out and requests answered by this process."""
        if not self.ab:
            return {}
        return {
            "arms": {
                name: {
                    "share": round(self.shares[name], 6),
                    "sessions": self.sessions[name],
                    "requests": self.requests[name],
                    "waiting": s.batcher.waiting,
                    "scheduler": s.batcher.scheduler,
                    "reverse": s.model.reverse is not None,
                }
                for name, s in self.servers.items()
            }
        }
