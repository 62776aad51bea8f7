"""Dialogue datasets as batches: examples from a format, bucketed by a token budget.

Every dialogue becomes one or more training examples through the model's conversation
format. A dialogue longer than the token budget is cut into windows of whole turns
that overlap by one turn, so every response is still learnt once, with the turn
before it as context. Batches hold examples of similar length up to a token budget
(padding is rare), are made once per run, and come in a shuffled order per epoch,
which the run's checkpoint records so a resumed run sees the same data in the same
order.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from typing import Any

import lightning as L
import numpy as np
import torch

from rejoinder.data.labels import iter_labels, labels_of
from rejoinder.data.pairs import dataset_kind, iter_pairs, require_kind
from rejoinder.data.records import iter_dialogues
from rejoinder.data.unpaired import iter_unpaired
from rejoinder.dialogue import Dialogue
from rejoinder.errors import RejoinderError
from rejoinder.formats import IGNORE, Format
from rejoinder.padding import pad_batch
from rejoinder.training.examples import (
    Example,
    LabelledExample,
    PairExample,
    collate_labelled,
    collate_pairs,
    examples_of,
    labelled_example,
    pair_example,
)
from rejoinder.training.objectives import OBJECTIVES
from rejoinder.training.unpaired import collate_unpaired, unpaired_examples

log = logging.getLogger(__name__)


def make_batches(
    lengths: np.ndarray, batch_tokens: int, seed: int, pool: int = 2048
) -> list[np.ndarray]:
    """Index batches of similar length whose padded size stays within `batch_tokens`.

    Examples are shuffled, then sorted by length within pools of `pool`, then cut
    greedily: a batch grows while (longest example) x (batch size) fits the budget.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        current: list[int] = []
        longest = 0
        for i in chunk:
            n = int(lengths[i])
            if current and max(longest, n) * (len(current) + 1) > batch_tokens:
                batches.append(np.asarray(current))
                current, longest = [], 0
            current.append(int(i))
            longest = max(longest, n)
        if current:
            batches.append(np.asarray(current))
    return batches


class BatchOrder(torch.utils.data.Sampler):
    """Fixed batches in a new order each epoch; a rank takes every world_size-th batch.

    `skip` batches at the start of the current epoch are left out: a run resumed in
    the middle of an epoch carries on where it stopped.
    """

    def __init__(
        self, batches: list[np.ndarray], seed: int, shuffle: bool, rank: int = 0, world: int = 1
    ):
        self.batches, self.seed, self.shuffle = batches, seed, shuffle
        self.rank, self.world = rank, world
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def _mine(self) -> list[np.ndarray]:
        order = np.arange(len(self.batches))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        usable = len(order) - len(order) % self.world  # every rank the same count
        return [self.batches[i] for i in order[self.rank : usable : self.world]]

    def __iter__(self):
        mine = self._mine()
        skip, self.skip = self.skip, 0
        for batch in mine[skip:]:
            yield batch.tolist()

    def __len__(self) -> int:
        # The whole epoch, even when resuming inside it: Lightning's restored batch
        # count plus what __iter__ still yields add up to this.
        return len(self.batches) // self.world


class HeadRouting:
    """Which LM head learns each example, and the class index of each classifier.

    `specs` are the heads as declared, with each classifier's labels learnt from the
    training data where the declaration gave none.
    """

    def __init__(self, heads: list, examples: list[Example]):
        self.specs = [_with_labels(h, examples) for h in heads]
        self.lm = [h for h in self.specs if h.kind == "lm"]
        self.classify = [h for h in self.specs if h.kind == "classify"]

    def fields(self, e: Example) -> dict[str, int]:
        head = 0
        for i, h in enumerate(self.lm, start=1):
            if e.meta is not None and str(e.meta.get(h.column)) == h.value:
                head = i
                break
        out = {"head_ids": head, "cls_pos": e.response_end}
        for h in self.classify:
            value = (e.response_labels or {}).get(h.column)
            out[f"cls_{h.name}"] = h.labels.index(str(value)) if str(value) in h.labels else IGNORE
        return out


def _with_labels(head, examples: list[Example]):
    """A classification head with its label set (learnt from the examples when not given)."""
    if head.kind != "classify" or head.labels:
        return head
    found = {
        str(e.response_labels.get(head.column))
        for e in examples
        if e.response_labels and e.response_labels.get(head.column) is not None
    }
    if not found:
        raise RejoinderError(
            f"classification head {head.name}: no response in the training data has a "
            f"{head.column!r} label"
        )
    return replace(head, labels=sorted(found))


def collate(examples: list[Example], pad_id: int, routing: HeadRouting | None = None) -> dict:
    """Right-pads a batch; padding has label IGNORE and attention 0."""
    batch = pad_batch(examples, pad_id, labels=True)
    if routing is not None:
        rows = [routing.fields(e) for e in examples]
        for key in rows[0]:
            batch[key] = torch.tensor([r[key] for r in rows], dtype=torch.long)
    return batch


class DialogueData(L.LightningDataModule):
    """A `rejoinder data build` directory, batched for training."""

    def __init__(
        self,
        path: str,
        batch_tokens: int = 8192,
        max_dialogues: int | None = None,
        val_split: str = "valid",
        seed: int = 0,
        num_workers: int = 0,
        kinds: list[str] | None = None,
    ):
        """
        Args:
            path: a dataset directory made by `rejoinder data build` (dialogues; pairs
                for rank and dpo; unpaired or pairs for kto; labels for classify).
            batch_tokens: tokens per batch, padding included (the budget of a batch).
            max_dialogues: use at most this many dialogues (pairs, texts) of each split
                (for quick runs).
            val_split: the split validation uses ("valid"; "none" for no validation).
            seed: seeds the batch order (the data order of a run).
            num_workers: DataLoader worker processes.
            kinds: a pairs dataset: learn from these kinds of pairs only (e.g. [updown],
                as DialogRPT trains one ranker per kind); default: every kind.
        """
        super().__init__()
        if batch_tokens < 16:
            raise RejoinderError(f"batch_tokens must be at least 16, got {batch_tokens}")
        self.path, self.batch_tokens, self.max_dialogues = path, batch_tokens, max_dialogues
        self.val_split, self.seed, self.num_workers = val_split, seed, num_workers
        self.kinds = list(kinds) if kinds else None
        self.format: Format | None = None
        self.train: list[Example] = []
        self.valid: list[Example] = []
        self._resume_skip = 0
        self._resume_epoch: int | None = None
        self._train_order: BatchOrder | None = None
        self.routing: HeadRouting | None = None
        self._max_tokens = 0
        self.pairs = False
        """Whether the examples are PairExamples (objectives rank and dpo)."""
        self.labelled = False
        """Whether the examples are LabelledExamples (objective classify)."""
        self.unpaired = False
        """Whether the examples are UnpairedExamples (objective kto)."""
        self.skipped: dict[str, int] = {}
        """Dialogues the format could not lay out, by reason."""

    def texts(self) -> list[str]:
        """The training split's turns (or pairs' or labelled texts), for learning a
        tokenizer."""
        kind = dataset_kind(self.path)
        if kind == "pairs":
            pairs = iter_pairs(self.path, "train", self.max_dialogues)
            return [t for p in pairs for t in (*p.context, p.chosen, p.rejected)]
        if kind == "unpaired":
            rows = iter_unpaired(self.path, "train", self.max_dialogues)
            return [t for x in rows for t in (*x.context, x.reply)]
        if kind == "labels":
            items = self._labelled("train")
            return [t for x in items for t in (*(c.text for c in x.context), x.text)]
        dialogues = iter_dialogues(self.path, "train", self.max_dialogues)
        return [t.text for d in dialogues for t in d.turns]

    def attach(
        self,
        fmt: Format,
        loss_on: str,
        max_tokens: int,
        heads: list | None = None,
        objective: str = "lm",
    ) -> None:
        """Turns the dialogues into examples with the model's format (and routes heads);
        for the objectives that learn from pairs (rank, dpo), the pairs into PairExamples."""
        self.format, self._max_tokens = fmt, max_tokens
        kind = OBJECTIVES[objective].data
        if self.kinds and kind != "pairs":
            raise RejoinderError(
                "--data.kinds picks kinds of pairs, for the objectives rank and dpo"
            )
        if objective != "lm":
            if kind != "unpaired" or dataset_kind(self.path) != "pairs":  # KTO reads pairs too
                require_kind(self.path, kind, f"--model.objective {objective}")
            if heads:
                raise RejoinderError("extra heads train with --model.objective lm only")
            if kind == "unpaired":
                return self._attach_unpaired(fmt, max_tokens)
            if kind == "labels":
                return self._attach_labels(fmt, max_tokens)
            return self._attach_pairs(fmt, max_tokens)
        require_kind(self.path, "dialogues", "--model.objective lm (a generator)")
        self.pairs = self.unpaired = False
        self.train, read = [], 0
        for d in iter_dialogues(self.path, "train", self.max_dialogues):
            read += 1
            self.train += self._examples(d, fmt, loss_on, max_tokens)
        if not read:
            raise RejoinderError(f"the dataset {self.path} has no training dialogues")
        if self.skipped:
            log.warning("%d dialogues left out, by reason: %s", sum(self.skipped.values()),
                        self.skipped)  # fmt: skip
        learnt = [e for e in self.train if (e.labels != IGNORE).any()]
        if len(learnt) < len(self.train):
            log.warning(
                "%d training examples have nothing to learn with loss_on=%s (e.g. only the "
                "user's turns) and were left out",
                len(self.train) - len(learnt),
                loss_on,
            )
        self.train = learnt
        if not self.train:
            raise RejoinderError(
                f"no response tokens are left to learn in {self.path} with loss_on={loss_on!r} "
                f"and max_tokens={max_tokens}: dialogues need at least two turns (or use "
                "--model.loss_on all), or raise the budget"
            )
        if self.val_split != "none":
            val = iter_dialogues(self.path, self.val_split, self.max_dialogues)
            self.valid = [e for d in val for e in self._examples(d, fmt, loss_on, max_tokens)]
            self.valid = [e for e in self.valid if (e.labels != IGNORE).any()]
        self.routing = HeadRouting(heads, self.train) if heads else None
        self._check_budget(max(len(e) for e in self.train), "example")

    def _examples(self, d: Dialogue, fmt: Format, loss_on: str, max_tokens: int) -> list:
        """`examples_of`, or none for a dialogue the format cannot lay out (a chat template
        that refuses an assistant's first turn, say), counted and logged."""
        try:
            return examples_of(d, fmt, loss_on, max_tokens)
        except RejoinderError as e:
            self.skipped[str(e)] = self.skipped.get(str(e), 0) + 1
            if self.skipped[str(e)] == 1:
                log.warning("dialogue %s left out: %s", d.id, e)
            return []

    def _attach_pairs(self, fmt: Format, max_tokens: int) -> None:
        self.pairs, self.routing, skipped = True, None, 0

        def examples(split: str) -> list[PairExample]:
            nonlocal skipped
            out = []
            for p in iter_pairs(self.path, split, self.max_dialogues):
                if self.kinds is not None and p.kind not in self.kinds:
                    continue
                e = pair_example(p, fmt, max_tokens)
                if e is None:
                    skipped += 1
                else:
                    out.append(e)
            return out

        self.train = examples("train")
        if not self.train:
            which = f" of the kinds {', '.join(self.kinds)}" if self.kinds else ""
            raise RejoinderError(f"the pairs dataset {self.path} has no training pairs{which}")
        self.valid = examples(self.val_split) if self.val_split != "none" else []
        if skipped:
            log.warning("%d pairs with an empty reply were skipped", skipped)
        self._check_budget(2 * max(len(e) for e in self.train), "pair (its two rows)")

    def _attach_unpaired(self, fmt: Format, max_tokens: int) -> None:
        self.pairs, self.unpaired, self.routing = False, True, None
        self.train, skipped = unpaired_examples(self.path, "train", fmt, max_tokens,
                                                self.max_dialogues)  # fmt: skip
        if not self.train:
            raise RejoinderError(f"the dataset {self.path} has no training replies for KTO")
        if self.val_split != "none":
            self.valid = unpaired_examples(self.path, self.val_split, fmt, max_tokens,
                                           self.max_dialogues)[0]  # fmt: skip
        if skipped:
            log.warning("%d rows with an empty reply were skipped", skipped)
        self._check_budget(2 * max(len(e) for e in self.train), "row and its mismatched row")

    def _check_budget(self, longest: int, what: str) -> None:
        if longest > self.batch_tokens:
            raise RejoinderError(
                f"batch_tokens={self.batch_tokens} is below the longest {what} ({longest} "
                "tokens); raise --data.batch_tokens or lower --model.max_tokens"
            )

    def classes(self) -> list[str]:
        """A labels dataset's classes, sorted: a classifier's outputs, in order."""
        require_kind(self.path, "labels", "--model.objective classify")
        found = labels_of(self.path)
        if len(found) < 2:
            raise RejoinderError(
                f"the labels dataset {self.path} has {len(found)} label"
                f"{'' if len(found) == 1 else 's'} ({', '.join(found) or 'none'}); a "
                "classifier learns to tell at least two apart"
            )
        return found

    def _labelled(self, split: str) -> list:
        return list(itertools.islice(iter_labels(self.path, split), self.max_dialogues))

    def _attach_labels(self, fmt: Format, max_tokens: int) -> None:
        self.pairs, self.labelled, self.routing = False, True, None
        classes = self.classes()

        def examples(split: str) -> list[LabelledExample]:
            return [labelled_example(x, fmt, max_tokens, classes) for x in self._labelled(split)]

        self.train = examples("train")
        if not self.train:
            raise RejoinderError(f"the labels dataset {self.path} has no training texts")
        missing = set(range(len(classes))) - {e.label for e in self.train}
        if missing:
            log.warning("no training text is labelled %s: the classifier cannot learn it",
                        ", ".join(classes[i] for i in sorted(missing)))  # fmt: skip
        self.valid = examples(self.val_split) if self.val_split != "none" else []
        self._check_budget(max(len(e) for e in self.train), "example")

    @property
    def head_specs(self) -> list:
        """The model's extra heads, their label sets filled in from the training data."""
        return self.routing.specs if self.routing is not None else []

    def loader(
        self, examples: list[Example], shuffle: bool, seed: int
    ) -> torch.utils.data.DataLoader:
        """Batches of `examples` within the token budget, in the run's order for `seed`."""
        assert self.format is not None, "attach() a format first"
        # A pair is two rows of its longer reply's length; a rated reply for KTO is two
        # rows too (its own, and its context with another reply: about as long).
        lengths = np.asarray([len(e) for e in examples]) * (2 if self.pairs or self.unpaired else 1)
        batches = make_batches(lengths, self.batch_tokens, seed)
        trainer = getattr(self, "trainer", None)
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        order = BatchOrder(batches, seed, shuffle, rank, world)
        pad, routing = self.format.tokenizer.pad_token_id, self.routing
        if self.pairs:
            rows = lambda b: collate_pairs(b, pad)  # noqa: E731
        elif self.unpaired:
            fmt, most = self.format, self._max_tokens
            rows = lambda b: collate_unpaired(b, pad, fmt, most)  # noqa: E731
        elif self.labelled:
            rows = lambda b: collate_labelled(b, pad)  # noqa: E731
        else:
            rows = lambda b: collate(b, pad, routing)  # noqa: E731
        return torch.utils.data.DataLoader(
            examples, batch_sampler=order, collate_fn=rows, num_workers=self.num_workers
        )

    def train_dataloader(self):
        loader = self.loader(self.train, True, self.seed)
        self._train_order = loader.batch_sampler
        if self._resume_epoch is not None:
            self._train_order.epoch = self._resume_epoch
            self._train_order.skip = self._resume_skip
            self._resume_epoch = None
        return loader

    def val_dataloader(self):
        if not self.valid:
            return []
        return self.loader(self.valid, False, self.seed)

    def state_dict(self) -> dict[str, Any]:
        # Where in the data order the run is: saved with every checkpoint.
        loop = self.trainer.fit_loop
        return {
            "epoch": loop.epoch_progress.current.processed,
            "batches_done": loop.epoch_loop.batch_progress.current.processed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_epoch = state.get("epoch")
        self._resume_skip = state.get("batches_done", 0)
