"""ConversationModel: a checkpoint that replies to conversations.

>>> bot = ConversationModel.from_pretrained("path/to/checkpoint")   # doctest: +SKIP
>>> bot.generate(["Hi!", "Hello, how are you?", "Great. Any plans tonight?"])  # doctest: +SKIP
'Going to the movies with my sister.'

Every method that decodes takes its options one way: a `DecodingConfig` (`config`), or
a `preset` name, and keyword options (its fields) that override either. The work is done by a
backend (`backends/`), MMI (`mmi`), scoring (`scoring`), streaming (`streaming`) and
the extra heads (`heads`); this class ties them to one checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from rejoinder.dialogue import as_context
from rejoinder.errors import RejoinderError
from rejoinder.formats import Encoding
from rejoinder.generation import mmi, replies, scoring, screening
from rejoinder.generation.backends import BACKENDS, Job
from rejoinder.generation.config import DecodingConfig, decoding_config
from rejoinder.generation.heads import Heads
from rejoinder.generation.replies import Reply
from rejoinder.generation.streaming import text_stream
from rejoinder.modeling.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from rejoinder.safety import Safety, SafetyConfig

Config = DecodingConfig | None
"""A whole decoding config, or None for a preset and options (see `decoding_config`)."""


class ConversationModel:
    """A causal LM with its tokenizer and conversation format.

    `generate(context, …)` takes the conversation so far (a list of turns, oldest
    first; [] to start one) and returns the next reply as clean text, stopped at the
    format's end of turn.
    """

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self._model = checkpoint.model
        self.config = checkpoint.config if checkpoint.config is not None else self._model.config
        self.tokenizer = checkpoint.tokenizer
        self.format = checkpoint.format
        self.reverse: ConversationModel | None = None
        self.rankers: dict[str, Any] = {}
        """Reply rankers by name (`rejoinder.modeling.ranker.Ranker`), for reranking."""
        self.backend = "torch"
        self._ct2 = None
        self._torch: dict[str, Any] = {}
        self.max_positions = checkpoint.max_positions
        self.heads = Heads(checkpoint, checkpoint.width)
        self.safety: Safety | None = None
        """The safety policy on users' messages and replies (`use_safety`); None: off."""

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        reverse: str | os.PathLike | None = None,
        device: str | None = None,
        dtype=None,
        backend: str = "torch",
        compute_type: str = "int8",
        rankers: dict[str, str | os.PathLike] | None = None,
        safety: SafetyConfig | None = None,
    ) -> ConversationModel:
        """Loads a checkpoint directory, or a hub model by name where a hub is reachable.

        `reverse` loads the backward model that MMI reranking scores candidates with
        (it may be another size, as DialoGPT's medium forward + small reverse).
        `rankers` loads reply rankers by name ({"updown": DIR, …}) that reranking
        combines with it (see `rejoinder.generation.mmi`); they run on torch.
        `backend="ctranslate2"` decodes and scores with CTranslate2 (`compute_type`
        int8 or float32, …), converting the checkpoint once, beside it.
        `safety` sets the safety policy (`rejoinder.safety`); without it (or where it
        leaves the policy off), the settings the directory carries apply.
        """
        # With CTranslate2 the torch weights stay unloaded unless something needs them
        # (an extra head, inspect, classify): int8 then takes a fraction of the memory.
        weights = backend != "ctranslate2"
        model = cls(load_checkpoint(path, device=device, dtype=dtype, weights=weights))
        model.use_backend(backend, compute_type, device)
        if reverse is not None:
            kw = dict(device=device, dtype=dtype, backend=backend, compute_type=compute_type)
            model.attach_reverse(cls.from_pretrained(reverse, **kw))
        if rankers:
            from rejoinder.modeling.ranker import Ranker

            for name, where in rankers.items():
                model.rankers[name] = Ranker.from_pretrained(where, device=device)
        model.use_safety(safety, device)
        return model

    @property
    def carried_safety(self) -> SafetyConfig | None:
        """The safety settings the checkpoint directory carries (`rejoinder safety DIR`)."""
        values = self.checkpoint.meta.get("safety")
        return SafetyConfig.from_dict(values, self.checkpoint.path) if values else None

    def use_safety(self, config: SafetyConfig | None, device: str | None = None) -> None:
        """Checks users' messages and replies with the safety policy: `config` where it
        turns the policy on, else the directory's own settings, unless
        `config.no_safety`. Bad settings fail here, before any reply."""
        carried = self.carried_safety
        self.safety = Safety.of(config.over(carried) if config is not None else carried, device)

    def use_backend(
        self, backend: str, compute_type: str = "int8", device: str | None = None
    ) -> None:
        """Decodes with "torch" (default) or "ctranslate2" (on `device`: by default a GPU
        where CTranslate2 sees one)."""
        if backend not in BACKENDS:
            raise RejoinderError(f"unknown backend {backend!r}; use {' or '.join(BACKENDS)}")
        self._ct2 = None
        if backend == "ctranslate2":
            from rejoinder.generation.backends.ctranslate2 import Ct2Backend

            self._ct2 = Ct2Backend.for_checkpoint(self.checkpoint, compute_type, device)
        self.backend = backend

    def attach_reverse(self, reverse: ConversationModel) -> None:
        """Uses `reverse` (a model trained on reversed dialogues) for MMI reranking."""
        mmi.check_reverse(self, reverse)
        self.reverse = reverse

    def save_pretrained(self, out: str | os.PathLike, overwrite: bool = False):
        meta = self.checkpoint.meta
        return save_checkpoint(
            self.model,
            self.tokenizer,
            self.format,
            out,
            made_by=meta.get("made_by"),
            tokenizer_kind=meta.get("tokenizer", {}).get("kind", "gpt2"),
            heads=meta.get("heads"),
            write_extra=self.heads.writer(),
            overwrite=overwrite,
        )

    # -- what the model is -------------------------------------------------------------

    @property
    def model(self):
        """The torch model (loaded on first use when another backend decodes)."""
        if self._model is None:
            self._model = load_checkpoint(self.checkpoint.path).model
        return self._model

    @property
    def weights_loaded(self) -> bool:
        """Whether the torch weights are in memory (another backend may not need them)."""
        return self._model is not None

    @property
    def head_names(self) -> list[str]:
        """The LM heads replies can come from: "default" and any extra ones."""
        return self.heads.names

    @property
    def device(self):
        import torch

        return self._model.device if self._model is not None else torch.device("cpu")

    @property
    def decoding_device(self) -> str:
        """Where replies are decoded: "cpu" or "cuda" (CTranslate2's device with that
        backend, which can differ from the torch weights')."""
        return self._ct2.device if self._ct2 is not None else self.device.type

    @property
    def context_budget(self) -> int:
        """The most tokens the model reads at once: its positions, or the format's budget
        (the window it was trained on) when that is smaller."""
        return min(self.max_positions, self.format.max_tokens or self.max_positions)

    def encode(self, context: Any, max_new_tokens: int = DecodingConfig.max_new_tokens) -> Encoding:
        """What the model sees for `context`: truncated to leave room for the reply."""
        budget = self.max_positions - max_new_tokens
        if budget < 1:
            raise RejoinderError(
                f"max_new_tokens={max_new_tokens} leaves no room for the context in this "
                f"model's {self.max_positions} positions; ask for fewer new tokens"
            )
        if self.format.max_tokens:
            budget = min(budget, self.format.max_tokens)
        return self.format.encode(as_context(context), max_tokens=budget)

    def check(self, config: DecodingConfig) -> None:
        """Refuses, before any work, a config this model cannot decode with."""
        mmi.check_config(self, config)
        self.heads.check(config.head)

    # -- replies -----------------------------------------------------------------------

    def _backend(self, head: str | None):
        """The backend for replies from `head`: CTranslate2 has only the default head."""
        if self._ct2 is not None and head in (None, "default"):
            return self._ct2
        return self._torch_backend(head or "default")

    def _torch_backend(self, key: str):
        if key not in self._torch:
            from rejoinder.generation.backends.torch import TorchBackend

            model = self.model if key == "default" else self.heads.model_for(self.model, key)
            self._torch[key] = TorchBackend(model, self.tokenizer, self.format.stop_ids)
        return self._torch[key]

    def _job(self, contexts: Sequence[Any], config: DecodingConfig, limits=None) -> Job:
        limits = limits or [config.max_new_tokens] * len(contexts)
        prompts = [self.encode(c, n) for c, n in zip(contexts, limits, strict=True)]
        job = Job.of(self.format, prompts, config)
        if len(set(limits)) > 1:
            job.limits = list(limits)
        return job

    def generate(self, context=None, config: Config = None, *, preset=None, **options):
        """The reply to `context`; a list of replies when num_return_sequences > 1.

        With mmi_candidates > 0 the reply is reranked by the reverse model (see `rerank`).
        """
        return self.generate_batch([context], config, preset=preset, **options)[0]

    def generate_batch(self, contexts, config: Config = None, *, preset=None, **options) -> list:
        """Replies to many contexts in one left-padded batch (same greedy replies as one by one)."""
        config = decoding_config(preset, config, **options)
        texts = [[r.text for r in rs] for rs in self.reply_batch(contexts, config)]
        return [t[0] for t in texts] if config.num_return_sequences == 1 else texts

    def reply_batch(self, contexts, config: Config = None, *, preset=None, **options) -> list:
        """`generate_batch` with each reply's tokens and finish reason: for each context, a
        list of `Reply` (num_return_sequences of them; one when reranking).

        With the safety policy on (`use_safety`), a flagged user message is refused (or
        answered as usual), and flagged replies are drawn again or replaced
        (`generation.screening`); each Reply carries what was flagged on its way."""
        if isinstance(contexts, str) or not isinstance(contexts, Sequence):
            raise RejoinderError("generate_batch takes a list of contexts (each a list of turns)")
        config = decoding_config(preset, config, **options)
        self.check(config)
        if not contexts:
            return []
        if self.safety is not None:
            return screening.screened(self, contexts, config)
        if config.uses_mmi:
            return [[r.best] for r in mmi.rerank_batch(self, contexts, config)]
        return self.unscreened(contexts, config)

    def unscreened(self, contexts: Sequence[Any], config: DecodingConfig) -> list[list[Reply]]:
        """Drawn replies with the repetition guard: refused replies are drawn again (a
        bounded number of times), the least repetitive kept. No reranking, no safety."""
        out = self.draw(contexts, config)
        earlier = [replies.bot_turns(c) if config.max_self_overlap else [] for c in contexts]
        for attempt in range(1, config.self_overlap_retries + 1):
            again = [
                (i, k)
                for i, rs in enumerate(out)
                for k, r in enumerate(rs)
                if earlier[i] and replies.refused(r.text, earlier[i], config)
            ]
            if not again:
                break
            drawn = self.draw(
                [contexts[i] for i, _ in again], replies.retry_config(config, attempt)
            )
            for (i, k), [new] in zip(again, drawn, strict=True):
                if replies.overlap(new.text, earlier[i]) < replies.overlap(
                    out[i][k].text, earlier[i]
                ):
                    out[i][k] = new
        return out

    def draw(self, contexts: Sequence[Any], config: DecodingConfig) -> list[list[Reply]]:
        """One batch of replies from the backend, as Replies: no guard, no reranking."""
        job = self._job(contexts, config)
        return [
            [self.reply_of(ids, config) for ids in per_context]
            for per_context in self._backend(config.head).generate(job)
        ]

    def reply_of(self, ids: Sequence[int], config: DecodingConfig) -> Reply:
        """The Reply of a row's generated ids (exactly those: its end id, no padding),
        decoded with `config`: its text cut at the first stop, its tokens, why it ended."""
        stops, texts = set(self.format.stop_ids), [*self.format.stop_strings, *config.stop]
        end = next((i for i, t in enumerate(ids) if t in stops), len(ids))
        raw = self.tokenizer.decode(list(ids[:end]), skip_special_tokens=True)
        by_text = any(s in raw for s in texts)
        finish = replies.finish_of(ids, stops, by_text, config.max_new_tokens)
        return Reply(self.format.clean_reply(raw, config.stop), finish.tokens, finish.reason)

    def rerank(self, context, config: Config = None, *, preset=None, **options) -> mmi.MMIResult:
        """Reranking for one context (preset "mmi" unless told otherwise; DialoGPT's MMI
        with a reverse model, and/or the rankers): the reply, and every candidate with
        its scores. See `rejoinder.generation.mmi`."""
        return self.rerank_batch([context], config, preset=preset, **options)[0]

    def rerank_batch(self, contexts, config: Config = None, *, preset=None, **options) -> list:
        """`rerank` for many contexts, their candidates drawn and scored in shared batches."""
        preset = preset or (None if config is not None else "mmi")
        return mmi.rerank_batch(
            self, contexts, decoding_config(preset, config, **options).with_mmi(True)
        )

    def stream(self, context=None, config: Config = None, *, preset=None, **options) -> Iterator:
        """Yields the reply's text as it is generated (one greedy or sampled reply)."""
        for _, piece in self.stream_batch([context], config, preset=preset, **options):
            if isinstance(piece, str):
                yield piece

    def stream_batch(
        self, contexts, config: Config = None, *, preset=None, limits=None, **options
    ) -> Iterator:
        """Streams the replies to many contexts, generated as one batch.

        Yields (row, text) as each row's text arrives and (row, Finish) once that row's
        reply is complete (which may be long before the others'): the tokens it
        generated and why it stopped. A reply the repetition guard checks
        (`max_self_overlap`, where the bot spoke before) or the safety policy checks
        comes whole, once checked. `limits`: each context's own max_new_tokens (none
        above the config's), for rows that differ only in it.
        """
        config = decoding_config(preset, config, **options)
        if limits is not None and (
            len(limits) != len(contexts) or not all(0 < n <= config.max_new_tokens for n in limits)
        ):
            raise RejoinderError("limits: one max_new_tokens per context, none above the config's")
        if not config.streamable:
            raise RejoinderError("stream one reply: MMI, beams and several sequences can't stream")
        self.check(config)
        if self.safety is not None or any(replies.guarded(config, c) for c in contexts):
            by_limit: dict[int, list[int]] = {}  # whole replies: a batch per limit
            for row in range(len(contexts)):
                by_limit.setdefault(limits[row] if limits else config.max_new_tokens, []).append(
                    row
                )
            for n, rows in by_limit.items():
                batch = self.reply_batch(
                    [contexts[r] for r in rows], replace(config, max_new_tokens=n)
                )
                for row, [reply] in zip(rows, batch, strict=True):
                    if reply.text:
                        yield row, reply.text
                    yield row, reply.finish
            return
        job = self._job(contexts, config, limits)
        events = self._backend(config.head).stream(job)
        yield from text_stream(events, len(job.prompts), self.tokenizer, job.stops)

    # -- scores and a look inside ------------------------------------------------------

    def loglikelihood(self, pairs: Sequence[tuple[Any, str]], batch_size: int = 16) -> list:
        """log P(response | context) for (context, response) pairs: a `Score` each.

        The response is scored as the model would produce it: its tokens and the
        end-of-turn marker after them. With a DialoGPT model,
        `loglikelihood([(["Hi!"], "Hello.")])[0].total` is the sum of the log-probs of
        "Hello", "." and <|endoftext|> after "Hi!<|endoftext|>".
        """
        encodings = scoring.response_encodings(self.format, pairs, self.context_budget)
        return self.score_encodings(encodings, batch_size)

    def score_encodings(self, encodings: list[Encoding], batch_size: int = 16) -> list:
        """The log-probability of each encoding's labelled tokens (its labels != IGNORE)."""
        return scoring.score_encodings(self._backend(None), self.tokenizer, encodings, batch_size)

    def inspect(self, text: str, steps: int = 10, top: int = 5, as_turn: bool = False) -> list:
        """Greedy decoding of `text`, step by step, with the `top` most likely tokens.

        `text` is continued as plain text (special-token strings in it stay text), or,
        with `as_turn`, taken as a conversation turn whose reply is decoded.
        """
        if steps < 1 or top < 1:
            raise RejoinderError("--steps and --top must be at least 1")
        if as_turn:
            ids = self.encode([text], steps).input_ids
        else:
            ids = self.format.tokenize_turns([text])[0] if text else []
            ids = ids or [self.tokenizer.eos_token_id]
        ids = ids[-(self.max_positions - steps) :]
        return self._torch_backend("default").inspect(ids, steps, top)

    def classify(self, context: Any, response: str, head: str) -> dict[str, float]:
        """The probability of each label of classification head `head` for `response`,
        e.g. `bot.classify(["How was the trip?"], "Awful, it rained.", head="emotion")`."""
        fmt, positions = self.format, self.max_positions
        return self.heads.classify(self.model, fmt, positions, context, response, head)
