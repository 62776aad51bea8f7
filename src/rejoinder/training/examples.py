"""Training examples: a dialogue through the model's format, windowed to a token budget;
a preference pair as two examples that share a context; a labelled text as a classifier
reads it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rejoinder.dialogue import Dialogue
from rejoinder.formats import Format
from rejoinder.padding import pad_batch


@dataclass
class Example:
    input_ids: np.ndarray
    labels: np.ndarray
    token_type_ids: np.ndarray | None
    response_end: int = -1
    """The position of the last token of the response (its end-of-turn marker)."""
    response_labels: dict | None = None
    """The response turn's labels (emotion, act, …), for classification heads."""
    meta: dict | None = None
    """The dialogue's meta, for LM heads that pick dialogues by a column."""

    def __len__(self) -> int:
        return len(self.input_ids)


def example(fmt: Format, turns, loss_on: str, max_tokens: int, meta=None) -> Example:
    enc = fmt.training_example(turns, loss_on=loss_on, max_tokens=max_tokens)
    types = None if enc.token_type_ids is None else np.asarray(enc.token_type_ids, np.int64)
    end = enc.turn_spans[-1][1] - 1 if enc.turn_spans else len(enc.input_ids) - 1
    labels = dict(turns[-1].labels) if hasattr(turns[-1], "labels") else {}
    ids = np.asarray(enc.input_ids, np.int64)
    return Example(
        ids, np.asarray(enc.labels, np.int64), types, min(end, len(ids) - 1), labels, meta
    )


UNTRUNCATED = 1 << 30


@dataclass
class PairExample:
    """A preference pair as two examples that share a context, labelled on the reply."""

    chosen: Example
    rejected: Example

    def __len__(self) -> int:
        return max(len(self.chosen), len(self.rejected))


def pair_example(pair, fmt: Format, max_tokens: int) -> PairExample | None:
    """A `Pair` as examples of the dialogue ending in each reply (None: a reply is empty).

    The score of a ranker is read just before each reply's end-of-turn marker
    (`response_end - 1`); DPO learns from the replies' labels.
    """
    from rejoinder.dialogue import Turn

    if not pair.chosen.strip() or not pair.rejected.strip():
        return None
    context = [Turn(t) for t in pair.context if t and t.strip()]
    chosen = example(fmt, [*context, Turn(pair.chosen)], "last", max_tokens)
    rejected = example(fmt, [*context, Turn(pair.rejected)], "last", max_tokens)
    return PairExample(chosen, rejected)


def collate_pairs(pairs: list[PairExample], pad_id: int) -> dict:
    """Chosen rows first, then the rejected ones in the same order; `score_pos` is where
    a ranker reads each row's score."""
    rows = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    batch = pad_batch(rows, pad_id, labels=True)
    batch["score_pos"] = torch.tensor([e.response_end - 1 for e in rows], dtype=torch.long)
    return batch


@dataclass
class LabelledExample:
    """A labelled text in its context, laid out as a classifier reads it
    (`ranker.ranker_example`): its class is learnt at `position`, the text's last token."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray | None
    position: int
    label: int
    """The class's index in the dataset's sorted classes."""

    def __len__(self) -> int:
        return len(self.input_ids)


def labelled_example(item, fmt: Format, max_tokens: int, classes: list[str]) -> LabelledExample:
    """A `LabelledText` as the classifier's input, its position and its class index."""
    from rejoinder.modeling.ranker import ranker_example

    enc, position = ranker_example(fmt, item.context, item.text, max_tokens)
    types = None if enc.token_type_ids is None else np.asarray(enc.token_type_ids, np.int64)
    ids = np.asarray(enc.input_ids, np.int64)
    return LabelledExample(ids, types, position, classes.index(item.label))


def collate_labelled(rows: list[LabelledExample], pad_id: int) -> dict:
    """Right-padded rows; `cls_pos` is where each row's class is read, `class_ids` its class."""
    batch = pad_batch(rows, pad_id)
    batch["cls_pos"] = torch.tensor([e.position for e in rows], dtype=torch.long)
    batch["class_ids"] = torch.tensor([e.label for e in rows], dtype=torch.long)
    return batch


def examples_of(dialogue: Dialogue, fmt: Format, loss_on: str, max_tokens: int) -> list[Example]:
    """A dialogue as training examples of at most `max_tokens` tokens each.

    One example when it fits (or when only the last turn is learnt: then the oldest
    turns give way); otherwise windows of whole turns overlapping by one turn. The
    dialogue's system prompt and persona (meta "system", "persona") are in every window.
    """
    turns, meta = list(dialogue.turns), {"source": dialogue.source, **dialogue.meta}
    persona = dialogue.meta.get("persona")
    fmt = fmt.with_system(dialogue.meta.get("system")).with_persona(
        persona if isinstance(persona, str) else None
    )
    # Lengths are measured untruncated: the format's own budget would cut them to fit.
    whole = fmt.training_example(turns, loss_on=loss_on, max_tokens=UNTRUNCATED)
    if len(whole) <= max_tokens or loss_on == "last" or len(turns) == 1:
        return [example(fmt, turns, loss_on, max_tokens, meta)]

    def fits(a: int, b: int) -> bool:
        return len(fmt.training_example(turns[a:b], loss_on, UNTRUNCATED)) <= max_tokens

    # A window is first sized from each turn's length alone (exact for formats that
    # just concatenate turns, an overestimate for those with a header), then checked
    # and adjusted by whole encodings: a few per window instead of one per turn.
    alone = [len(fmt.training_example([t], loss_on, UNTRUNCATED)) for t in turns]
    out, start, overlap = [], 0, 1 if loss_on == "responses" else 0
    while start < len(turns):
        end, size = start + 1, alone[start]
        while end < len(turns) and size + alone[end] <= max_tokens:
            size += alone[end]
            end += 1
        while end < len(turns) and fits(start, end + 1):
            end += 1
        while end > start + 1 and not fits(start, end):
            end -= 1
        out.append(example(fmt, turns[start:end], loss_on, max_tokens, meta))
        if end >= len(turns):
            break
        start = max(end - overlap, start + 1)
    return out
