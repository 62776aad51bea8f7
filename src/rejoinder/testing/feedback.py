"""Feedback that depends on what a synthetic comment says, so that a ranker has something
to learn (`testing.reddit` applies it to ordinary English bodies only):

- **updown**: `P_INFORMATIVE` of bodies end with an informative clause from
  `INFORMATIVE`; their positive scores are multiplied by `SCORE_BOOST`. Replies that
  give a reason or a source collect more upvotes.
- **width**: a body that received a direct reply ends with a question from
  `QUESTIONS` with probability `P_QUESTION_REPLIED`, other bodies with
  `P_QUESTION_ALONE`. Replies that ask get answered.
- **depth**: a body with a thread at least `DEEP` replies deep below it opens with a
  challenge from `CHALLENGES` with probability `P_CHALLENGE_DEEP`, other bodies with
  `P_CHALLENGE_SHALLOW`. Replies that contradict start long arguments.

The tree is drawn first and the words follow it, so threads keep their shapes; the
draws come from an rng of their own, so every other byte of a dump is what it was.
"""

from __future__ import annotations

import numpy as np

INFORMATIVE = (
    "according to the official documentation",
    "because the numbers from last year show it",
    "there is a good study on exactly this",
    "the manual explains it in chapter two",
    "I checked the original report to be sure",
)
QUESTIONS = (
    "What do you all think?",
    "Has anyone else tried this?",
    "Can someone explain why?",
    "Would you do the same?",
    "Am I missing something here?",
)
CHALLENGES = (
    "I strongly disagree.",
    "That is simply wrong.",
    "Hard disagree on this one.",
    "No, that is not true at all.",
    "Sorry, but you are mistaken.",
)
P_INFORMATIVE = 0.15
SCORE_BOOST = 5
P_QUESTION_REPLIED = 0.5
P_QUESTION_ALONE = 0.05
DEEP = 3
P_CHALLENGE_DEEP = 0.5
P_CHALLENGE_SHALLOW = 0.03


def widths_and_heights(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Direct replies and height of the thread below each comment, from the parent index
    of each (-1 at the top; parents come before their replies)."""
    n = len(parent)
    width = np.bincount(parent[parent >= 0], minlength=n) if n else np.zeros(0, np.int64)
    height = [0] * n
    for g, p in zip(range(n - 1, -1, -1), parent[::-1].tolist(), strict=True):
        if p >= 0 and height[g] + 1 > height[p]:
            height[p] = height[g] + 1
    return width, np.array(height, dtype=np.int64)


def with_feedback(
    rng: np.random.Generator,
    bodies: list[str],
    ordinary: np.ndarray,
    scores: np.ndarray,
    width: np.ndarray,
    height: np.ndarray,
) -> tuple[list[str], np.ndarray]:
    """The bodies with their clauses, and the scores they earn (see the module docstring).

    The same number of draws is made for every chunk, whatever the bodies, so the
    draws stay aligned with the comments.
    """
    m = len(bodies)
    u_info, u_question, u_challenge = rng.random((3, m))
    pick = rng.integers(0, 5, (3, m)).tolist()
    informative = ordinary & (u_info < P_INFORMATIVE)
    asks = ordinary & (u_question < np.where(width > 0, P_QUESTION_REPLIED, P_QUESTION_ALONE))
    deep = height >= DEEP
    challenges = ordinary & (u_challenge < np.where(deep, P_CHALLENGE_DEEP, P_CHALLENGE_SHALLOW))
    out = []
    for i, body in enumerate(bodies):
        if challenges[i]:
            body = f"{CHALLENGES[pick[0][i]]} {body}"
        if informative[i]:
            body = f"{body.rstrip('.')}, {INFORMATIVE[pick[1][i]]}."
        if asks[i]:
            body = f"{body} {QUESTIONS[pick[2][i]]}"
        out.append(body)
    boosted = np.where(informative & (scores > 0), scores * SCORE_BOOST, scores)
    return out, boosted
