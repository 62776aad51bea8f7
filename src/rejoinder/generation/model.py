"""ConversationModel: a checkpoint that replies to conversations.

>>> bot = ConversationModel.from_pretrained("path/to/checkpoint")   # doctest: +SKIP
>>> bot.generate(["Hi!", "Hello, how are you?", "Great. Any plans tonight?"])  # doctest: +SKIP
'Going to the movies with my sister.'
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rejoinder.dialogue import as_context
from rejoinder.errors import RejoinderError
from rejoinder.formats import Encoding
from rejoinder.generation.config import DecodingConfig, decoding_config
from rejoinder.modeling.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

DEFAULT_MAX_NEW_TOKENS = DecodingConfig.max_new_tokens  # one default, the config's
MMI_ROWS = 128
"""At most this many MMI candidates (contexts times mmi_candidates) share a generate call."""


@dataclass
class Score:
    """The log-probability of a continuation: in all, per token, and the tokens."""

    total: float
    token_logprobs: list[float]
    tokens: list[str]

    @property
    def mean(self) -> float:
        return self.total / max(len(self.token_logprobs), 1)


@dataclass
class Candidate:
    """One MMI candidate with its scores (mean log-likelihoods per token)."""

    text: str
    forward: float
    reverse: float
    score: float


@dataclass
class MMIResult:
    reply: str
    candidates: list[Candidate]


class StopOnStrings:
    """Ends generation of a row once its new text contains a stop string.

    transformers' StopStringCriteria does this too, but spends about 0.3 s per call
    building tables over the whole vocabulary: more than a tiny model's whole reply.
    This one decodes only the last few new tokens of each row, each step.
    """

    def __init__(self, tokenizer, stops: Sequence[str], prompt_len: int):
        self.tokenizer, self.stops, self.prompt_len = tokenizer, list(stops), prompt_len
        # A token holds at least one byte, and a character at most four.
        self.window = 4 * max(len(s) for s in self.stops) + 4

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        tails = input_ids[:, self.prompt_len :][:, -self.window :].tolist()
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        done = [any(s in text for s in self.stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class StopClipper:
    """Cuts a streamed reply at its first stop string.

    Text that could be the start of a stop string is held back until it is known not
    to be one; leading and trailing whitespace is dropped, as in a whole reply.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = list(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text, self.sent, self.stopped = "", 0, False

    def feed(self, piece: str) -> str:
        """Takes the next piece of text; returns what can be shown now."""
        if self.stopped:
            return ""
        self.text += piece
        cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = self.text[:cut], True
            return ""
        safe = len(self.text) - self.hold
        if safe <= self.sent:
            return ""
        chunk = self.text[self.sent : safe]
        if self.sent == 0:
            chunk = chunk.lstrip()
            if not chunk:  # only leading whitespace so far: show nothing yet
                return ""
        self.sent = safe
        return chunk

    def finish(self) -> str:
        """The rest of the reply, once no more text comes."""
        rest = self.text[self.sent :].rstrip()
        if self.sent == 0:
            rest = rest.lstrip()
        self.sent = len(self.text)
        return rest


def _whole_text(tokenizer, ids: list[int], shown: str) -> str | None:
    """The text of `ids` when it adds whole characters to `shown`; else None (wait)."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if text.endswith("\ufffd"):  # part of a character: wait for the rest
        return None
    return text if len(text) > len(shown) and text.startswith(shown) else None


class _RowStreamer:
    """A transformers streamer for a batch: (row, text) events on a queue.

    A row's text is sent once its bytes make whole characters; (row, None) is sent
    when the row produces one of `stop_ids`, and for every row at the end.
    """

    def __init__(self, tokenizer, rows: int, stop_ids: set[int], events):
        self.tokenizer, self.stop_ids, self.events = tokenizer, stop_ids, events
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.shown = [""] * rows
        self.done = [False] * rows
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            if token in self.stop_ids:
                self.done[row] = True
                self.events.put((row, None))
                continue
            self.ids[row].append(token)
            text = _whole_text(self.tokenizer, self.ids[row], self.shown[row])
            if text is not None:
                self.events.put((row, text[len(self.shown[row]) :]))
                self.shown[row] = text

    def end(self) -> None:
        for row, done in enumerate(self.done):
            if not done:
                self.done[row] = True
                self.events.put((row, None))


class ConversationModel:
    """A GPT-2-style model with its tokenizer and conversation format.

    `generate(context, **options)` takes the conversation so far (a list of turns,
    oldest first; [] to start one) and returns the next reply as clean text, stopped
    at the format's end of turn. Options are the fields of `DecodingConfig` (do_sample,
    temperature, top_k, top_p, typical_p, min_p, num_beams, length_penalty,
    repetition_penalty, no_repeat_ngram_size, min/max_new_tokens,
    num_return_sequences, bad_words, stop, seed, and MMI's), or a `preset` name that
    they override.
    """

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self._model = checkpoint.model
        self.config = (
            checkpoint.config if checkpoint.config is not None else checkpoint.model.config
        )
        self.tokenizer = checkpoint.tokenizer
        self.format = checkpoint.format
        self.reverse: ConversationModel | None = None
        self.ct2 = None
        self.heads = []
        lm, cls = {}, {}
        if checkpoint.meta.get("heads"):  # heads.py imports torch: only when there are heads
            from rejoinder.modeling.heads import HeadSpec, load_heads

            self.heads = HeadSpec.parse(checkpoint.meta["heads"])
            if checkpoint.path:
                lm, cls = load_heads(checkpoint.path, self.heads, self.config.n_embd)
        self._lm_heads = {n: m.to(self.device).eval() for n, m in lm.items()}
        self._classifiers = {n: m.to(self.device).eval() for n, m in cls.items()}
        self._head_models: dict[str, Any] = {}

    @property
    def model(self):
        """The torch model (loaded on first use when another backend decodes)."""
        if self._model is None:
            self._model = load_checkpoint(self.checkpoint.path).model
        return self._model

    @property
    def head_names(self) -> list[str]:
        """The LM heads replies can come from: "default" and any extra ones."""
        return ["default", *self._lm_heads]

    def _model_for(self, head: str | None):
        """The model whose output layer is `head`: the trunk is shared, never copied."""
        if head in (None, "default"):
            return self.model
        if head not in self._lm_heads:
            raise RejoinderError(
                f"unknown head {head!r}; this model's LM heads are {', '.join(self.head_names)}"
            )
        if head not in self._head_models:
            import copy

            twin = copy.copy(self.model)
            twin._modules = dict(self.model._modules)  # a new table of the same submodules
            twin._modules["lm_head"] = self._lm_heads[head]
            self._head_models[head] = twin
        return self._head_models[head]

    def classify(self, context: Any, response: str, head: str) -> dict[str, float]:
        """The probability of each label of classification head `head` for `response`.

        The label is read from the hidden state at the end of the response, as it was
        trained: e.g. `bot.classify(["How was the trip?"], "Awful, it rained.", head="emotion")`.
        """
        import torch

        if head not in self._classifiers:
            names = ", ".join(self._classifiers) or "none"
            raise RejoinderError(f"unknown classification head {head!r}; this model has: {names}")
        turns = [*as_context(context), *as_context([response])]
        if len(as_context([response])) != 1:
            raise RejoinderError("the response to classify is empty")
        enc = self.format.training_example(turns, loss_on="last", max_tokens=self.max_positions)
        end = enc.turn_spans[-1][1] - 1
        batch = {"input_ids": torch.tensor([enc.input_ids], device=self.device)}
        if enc.token_type_ids is not None:
            batch["token_type_ids"] = torch.tensor([enc.token_type_ids], device=self.device)
        with torch.inference_mode():
            hidden = self.model.transformer(**batch).last_hidden_state[0, end]
            probs = torch.softmax(self._classifiers[head](hidden).float(), -1).tolist()
        spec = next(h for h in self.heads if h.name == head)
        return dict(sorted(zip(spec.labels, probs, strict=True), key=lambda kv: -kv[1]))

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
    ) -> ConversationModel:
        """Loads a checkpoint directory, or a hub model by name where a hub is reachable.

        `reverse` loads the backward model that MMI reranking scores candidates with
        (it may be another size, as DialoGPT's medium forward + small reverse).
        `backend="ctranslate2"` decodes and scores with CTranslate2 (`compute_type`
        int8 or float32, …), converting the checkpoint once, beside it.
        """
        # With CTranslate2 the torch weights are not loaded unless something needs them
        # (streaming, inspect, extra heads): int8 then takes a fraction of the memory.
        weights = backend != "ctranslate2"
        model = cls(load_checkpoint(path, device=device, dtype=dtype, weights=weights))
        model.use_backend(backend, compute_type)
        if reverse is not None:
            rev = cls(load_checkpoint(reverse, device=device, dtype=dtype, weights=weights))
            rev.use_backend(backend, compute_type)
            model.attach_reverse(rev)
        return model

    def use_backend(self, backend: str, compute_type: str = "int8") -> None:
        """Decodes with "torch" (default) or "ctranslate2"."""
        if backend not in ("torch", "ctranslate2"):
            raise RejoinderError(f"unknown backend {backend!r}; use torch or ctranslate2")
        self.ct2 = None
        if backend == "ctranslate2":
            from rejoinder.generation.ct2 import Ct2Generator

            if self.format.encode([]).token_type_ids is not None:
                raise RejoinderError(
                    f"the {self.format.name} format uses token types, which CTranslate2's GPT-2 "
                    "lacks; use the torch backend for it"
                )
            if not self.checkpoint.path or not Path(self.checkpoint.path).is_dir():
                raise RejoinderError("the ctranslate2 backend needs a local checkpoint directory")
            self.ct2 = Ct2Generator(self.checkpoint.path, compute_type)

    def attach_reverse(self, reverse: ConversationModel) -> None:
        """Uses `reverse` (a model trained on reversed dialogues) for MMI reranking."""
        where = reverse.checkpoint.path
        if not reverse.format.reverse:
            raise RejoinderError(
                f"{where} is not a reverse model: its format does not reverse turns (train one "
                "with --model.reverse true, or import DialoGPT's *_reverse.pkl)"
            )
        if reverse.tokenizer.get_vocab() != self.tokenizer.get_vocab():
            raise RejoinderError(
                f"the reverse model {where} has another tokenizer than the forward model; "
                "MMI needs both to share one vocabulary"
            )
        self.reverse = reverse

    def save_pretrained(self, out: str | os.PathLike, overwrite: bool = False):
        meta = self.checkpoint.meta
        write_extra = None
        if self.heads:
            from rejoinder.modeling.heads import HeadsHolder, save_heads

            holder = HeadsHolder(self._lm_heads, self._classifiers)
            write_extra = lambda tmp: save_heads(holder, tmp)  # noqa: E731
        return save_checkpoint(
            self.model,
            self.tokenizer,
            self.format,
            out,
            made_by=meta.get("made_by"),
            tokenizer_kind=meta.get("tokenizer", {}).get("kind", "gpt2"),
            heads=meta.get("heads"),
            write_extra=write_extra,
            overwrite=overwrite,
        )

    @property
    def device(self):
        import torch

        return self._model.device if self._model is not None else torch.device("cpu")

    @property
    def max_positions(self) -> int:
        return int(getattr(self.config, "n_positions", None) or self.config.max_position_embeddings)

    @property
    def context_budget(self) -> int:
        """The most tokens the model reads at once: its positions, or the format's budget
        (the window it was trained on) when that is smaller."""
        return min(self.max_positions, self.format.max_tokens or self.max_positions)

    def encode(self, context: Any, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> Encoding:
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

    def generate(
        self, context: Any = None, head: str | None = None, preset: str | None = None, **options
    ) -> str | list[str]:
        """The reply to `context`; a list of replies when num_return_sequences > 1.

        `preset` names a DecodingConfig preset (greedy, beam, nucleus, mmi, …) that the
        options override; `head` picks an extra LM head of a multi-head model. With
        mmi_candidates > 0 the reply is reranked by the reverse model (see `rerank`).
        """
        config = decoding_config(preset, **options)
        if config.mmi_candidates:
            return self.rerank(context, config=config, head=head).reply
        return self._generate([context], config, head)[0]

    def generate_batch(
        self, contexts: Sequence[Any], head: str | None = None, preset: str | None = None, **options
    ) -> list[str] | list[list[str]]:
        """Replies to many contexts in one left-padded batch (same greedy replies as one by one)."""
        if isinstance(contexts, str) or not isinstance(contexts, Sequence):
            raise RejoinderError("generate_batch takes a list of contexts (each a list of turns)")
        config = decoding_config(preset, **options)
        if config.mmi_candidates:
            return [r.reply for r in self.rerank_batch(list(contexts), config, head)]
        return self._generate(list(contexts), config, head) if contexts else []

    def _generate(self, contexts: list[Any], config: DecodingConfig, head: str | None) -> list:
        if self.ct2 is not None and head in (None, "default"):
            return self._generate_ct2(contexts, config)
        out, prompt_len, stops = self._torch_generate(contexts, config, head)
        k = config.num_return_sequences
        replies = [self.format.decode_reply(row[prompt_len:].tolist(), stops) for row in out]
        if k == 1:
            return replies
        return [replies[i * k : (i + 1) * k] for i in range(len(contexts))]

    def _stops(self, config: DecodingConfig) -> list[str]:
        stops = [*self.format.stop_strings, *config.stop]
        if not all(isinstance(x, str) and x for x in stops):
            raise RejoinderError(f"stop strings must be non-empty strings, got {config.stop!r}")
        return stops

    def _bad_word_ids(self, config: DecodingConfig) -> list[list[int]]:
        # Each word with and without a leading space: BPE spells the two differently.
        return [ids for w in config.bad_words for ids in self.format.tokenize_turns([w, " " + w])]

    def _torch_generate(self, contexts: list[Any], config: DecodingConfig, head, streamer=None):
        """One left-padded `transformers` generate call: (output ids, prompt length, stops).

        Plain replies and streaming both come through here, with the same options.
        """
        import torch

        model = self._model_for(head)
        kwargs = config.generate_kwargs()
        kwargs.update(eos_token_id=self.format.stop_ids, pad_token_id=self.tokenizer.pad_token_id)
        bad = self._bad_word_ids(config)
        if bad:
            kwargs["bad_words_ids"] = bad
        stops = self._stops(config)
        batch = self._pad_left([self.encode(c, config.max_new_tokens) for c in contexts])
        prompt_len = batch["input_ids"].shape[1]
        if stops:
            kwargs["stopping_criteria"] = [StopOnStrings(self.tokenizer, stops, prompt_len)]
        if streamer is not None:
            kwargs["streamer"] = streamer
        with torch.inference_mode(), self._seeded(config.seed):
            try:
                out = model.generate(**batch, **kwargs)
            except ValueError as e:  # transformers' own check of the options
                raise RejoinderError(f"bad generation options: {e}") from None
        return out, prompt_len, stops

    def _generate_ct2(self, contexts: list[Any], config: DecodingConfig) -> list:
        stops = self._stops(config)
        prompts = [self.encode(c, config.max_new_tokens).input_ids for c in contexts]
        ids = self.ct2.generate(
            prompts, config, self.tokenizer, self.format.stop_ids, self._bad_word_ids(config)
        )
        replies = [[self.format.decode_reply(seq, stops) for seq in per] for per in ids]
        return [r[0] for r in replies] if config.num_return_sequences == 1 else replies

    def _seeded(self, seed: int | None):
        """Seeds this call only: the caller's RNG state (CPU and GPU) comes back after."""
        import contextlib

        import torch

        if seed is None:
            return contextlib.nullcontext()
        gpus = [self.device.index or 0] if self.device.type == "cuda" else []

        @contextlib.contextmanager
        def fork():
            with torch.random.fork_rng(devices=gpus):
                torch.manual_seed(seed)
                yield

        return fork()

    # -- scoring ---------------------------------------------------------------------

    def loglikelihood(self, pairs: Sequence[tuple[Any, str]], batch_size: int = 16) -> list[Score]:
        """log P(response | context) for (context, response) pairs, in padded batches.

        The response is scored as the model would produce it in its format: its tokens
        and the end-of-turn marker after them. For example, with a DialoGPT model,
        `loglikelihood([(["Hi!"], "Hello.")])[0].total` is the sum of the log-probs of
        "Hello", "." and <|endoftext|> after "Hi!<|endoftext|>". Evaluation and MMI
        reranking both use this.
        """
        encodings = []
        for context, response in pairs:
            reply = as_context([response])
            if len(reply) != 1:
                raise RejoinderError(
                    f"a response to score must be one non-empty turn, got {response!r}"
                )
            turns = [*as_context(context), *reply]
            encodings.append(self.format.training_example(turns, "last", self.context_budget))
        return self.score_encodings(encodings, batch_size)

    def score_encodings(self, encodings: list[Encoding], batch_size: int = 16) -> list[Score]:
        """The log-probability of each encoding's labelled tokens (its labels != -100)."""
        if self.ct2 is not None:
            return self._score_ct2(encodings)
        import torch

        out = []
        for start in range(0, len(encodings), batch_size):
            chunk = encodings[start : start + batch_size]
            width = max(len(e) for e in chunk)
            pad = self.tokenizer.pad_token_id
            ids = torch.tensor(
                [e.input_ids + [pad] * (width - len(e)) for e in chunk], device=self.device
            )
            labels = torch.tensor(
                [e.labels + [-100] * (width - len(e)) for e in chunk], device=self.device
            )
            mask = (
                torch.arange(width, device=self.device)[None, :]
                < torch.tensor([len(e) for e in chunk], device=self.device)[:, None]
            ).long()
            batch = {"input_ids": ids, "attention_mask": mask}
            if chunk[0].token_type_ids is not None:
                batch["token_type_ids"] = torch.tensor(
                    [e.token_type_ids + [0] * (width - len(e)) for e in chunk], device=self.device
                )
            with torch.inference_mode():
                logits = self.model(**batch).logits[:, :-1].float()
            target = labels[:, 1:]
            logprobs = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0)[..., None])[
                ..., 0
            ]
            keep = target != -100
            for row in range(len(chunk)):
                lp = logprobs[row][keep[row]].tolist()
                toks = target[row][keep[row]].tolist()
                out.append(Score(sum(lp), lp, [self.tokenizer.decode([t]) for t in toks]))
        return out

    def inspect(
        self, text: str, steps: int = 10, top: int = 5, as_turn: bool = False
    ) -> list[dict]:
        """Greedy decoding of `text`, step by step, with the `top` most likely tokens.

        `text` is continued as plain text (special-token strings in it stay text), or,
        with `as_turn`, taken as a conversation turn whose reply is decoded.
        """
        import torch

        if steps < 1 or top < 1:
            raise RejoinderError("--steps and --top must be at least 1")
        if as_turn:
            ids = self.encode([text], steps).input_ids
        else:
            ids = self.format.tokenize_turns([text])[0] if text else []
            ids = ids or [self.tokenizer.eos_token_id]
        ids = ids[-(self.max_positions - steps) :]
        rows = []
        with torch.inference_mode():
            seq = torch.tensor([ids], device=self.device)
            out = self.model.generate(
                seq,
                attention_mask=torch.ones_like(seq),
                max_new_tokens=steps,
                min_new_tokens=steps,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        for i, logits in enumerate(out.logits):
            probs = torch.softmax(logits[0].float(), -1)
            p, idx = probs.topk(top)
            chosen = int(out.sequences[0, len(ids) + i])
            rows.append(
                {
                    "step": i + 1,
                    "token": self.tokenizer.decode([chosen]),
                    "top": [
                        (self.tokenizer.decode([int(t)]), float(q))
                        for t, q in zip(idx, p, strict=True)
                    ],
                }
            )
        return rows

    def _score_ct2(self, encodings: list[Encoding]) -> list[Score]:
        out = []
        per_token = self.ct2.score([e.input_ids for e in encodings], self.tokenizer)
        for e, lps in zip(encodings, per_token, strict=True):
            # log_probs[i] is the log-probability of token i + 1 given the ones before.
            keep = [(i, t) for i, t in enumerate(e.labels) if t != -100 and i > 0]
            lp = [float(lps[i - 1]) for i, _ in keep]
            out.append(Score(sum(lp), lp, [self.tokenizer.decode([t]) for _, t in keep]))
        return out

    # -- MMI -------------------------------------------------------------------------

    def rerank(
        self,
        context: Any,
        config: DecodingConfig | None = None,
        head: str | None = None,
        preset: str | None = "mmi",
        **options,
    ) -> MMIResult:
        """DialoGPT's MMI: sample candidates, score them with the reverse model, pick.

        A candidate's score is the reverse model's mean log-likelihood of the source
        (the last message, or the whole history with mmi_source="history") given the
        candidate, plus mmi_lambda times the forward model's mean log-likelihood of the
        candidate. mmi_temperature 0 picks the best; T > 0 samples from softmax(score / T).
        The candidates and scores are returned.
        """
        config = config or decoding_config(preset, **options)
        return self.rerank_batch([context], config, head)[0]

    def rerank_batch(
        self, contexts: Sequence[Any], config: DecodingConfig, head: str | None = None
    ) -> list[MMIResult]:
        """`rerank` for many contexts: their candidates come from shared generate calls
        (every row draws its own samples) and are scored in shared padded batches."""
        if self.reverse is None:
            raise RejoinderError(
                "MMI reranking needs a reverse model: ConversationModel.from_pretrained(DIR, "
                "reverse=REVERSE_DIR), or --reverse REVERSE_DIR on the command line"
            )
        n = config.mmi_candidates or 10
        if not config.do_sample and config.num_beams < n:
            raise RejoinderError(
                "MMI candidates are sampled: set do_sample=true (or num_beams >= mmi_candidates)"
            )
        sample = replace(config, num_return_sequences=n, mmi_candidates=0)
        histories = [as_context(c) for c in contexts]
        per_call = max(1, MMI_ROWS // n)
        drawn: list[list[str]] = []
        for start in range(0, len(histories), per_call):
            chunk = histories[start : start + per_call]
            seed = None if config.seed is None else config.seed + start
            drawn += self._generate(chunk, replace(sample, seed=seed), head)
        texts = [list(dict.fromkeys(t for t in ts if t.strip())) for ts in drawn]
        pairs = [(h, t) for h, ts in zip(histories, texts, strict=True) for t in ts]
        forward = iter(self.loglikelihood(pairs) if pairs else [])
        backward = iter(self._source_scores(histories, texts, config.mmi_source))
        rng = random.Random(None if config.seed is None else config.seed + 1)
        results = []
        for ts in texts:
            if not ts:
                results.append(MMIResult("", [Candidate("", 0.0, 0.0, 0.0)]))
                continue
            candidates = []
            for t in ts:
                f, b = next(forward), next(backward)
                candidates.append(Candidate(t, f.mean, b.mean, b.mean + config.mmi_lambda * f.mean))
            scores = [c.score for c in candidates]
            if config.mmi_temperature > 0:  # softmax(score / T), shifted so exp never overflows
                top = max(scores)
                weights = [math.exp((s - top) / config.mmi_temperature) for s in scores]
                pick = rng.choices(range(len(candidates)), weights)[0]
            else:
                pick = max(range(len(scores)), key=scores.__getitem__)
            results.append(MMIResult(candidates[pick].text, candidates))
        return results

    def _source_scores(
        self, histories: list[list[str]], texts: list[list[str]], mmi_source: str
    ) -> list[Score]:
        """The reverse model's log-likelihood of each history's source given each of its
        candidates, in one flat list."""
        rev = self.reverse
        loss_on = "last" if mmi_source == "last" else "responses"
        encodings, where = [], []
        for history, ts in zip(histories, texts, strict=True):
            source = history[-1:] if mmi_source == "last" else history
            for t in ts:
                if source:
                    where.append(len(encodings))
                    encodings.append(
                        rev.format.training_example(
                            [*source, *as_context([t])], loss_on, rev.context_budget
                        )
                    )
                else:  # nothing said yet: nothing for the reverse model to explain
                    where.append(None)
        scores = rev.score_encodings(encodings) if encodings else []
        return [Score(0.0, [0.0], []) if i is None else scores[i] for i in where]

    # -- streaming -------------------------------------------------------------------

    def stream(
        self, context: Any = None, head: str | None = None, preset: str | None = None, **options
    ) -> Iterator[str]:
        """Yields the reply's text as it is generated (one greedy or sampled reply)."""
        for _, piece in self.stream_batch([context], head, preset, **options):
            if piece is not None:
                yield piece

    def stream_batch(
        self,
        contexts: Sequence[Any],
        head: str | None = None,
        preset: str | None = None,
        **options,
    ) -> Iterator[tuple[int, str | None]]:
        """Streams the replies to many contexts, generated as one batch.

        Yields (row, text) as each row's text arrives and (row, None) once that row's
        reply is complete (which may be long before the others'). With CTranslate2 the
        rows are generated one after the other.
        """
        config = decoding_config(preset, **options)
        if config.mmi_candidates or config.num_beams > 1 or config.num_return_sequences > 1:
            raise RejoinderError("stream one reply: MMI, beams and several sequences can't stream")
        stops = self._stops(config)
        if self.ct2 is not None and head in (None, "default"):
            for row, context in enumerate(contexts):
                clip = StopClipper(stops)
                pieces = self._ct2_pieces(context, config)
                try:
                    for piece in pieces:
                        if chunk := clip.feed(piece):
                            yield row, chunk
                        if clip.stopped:
                            break
                finally:
                    pieces.close()
                if rest := clip.finish():
                    yield row, rest
                yield row, None
            return
        yield from self._torch_stream(list(contexts), config, head, stops)

    def _torch_stream(self, contexts: list[Any], config: DecodingConfig, head, stops):
        """(row, text) pieces from one transformers generate call, run on a thread."""
        import queue
        import threading

        events: queue.Queue = queue.Queue()
        streamer = _RowStreamer(self.tokenizer, len(contexts), set(self.format.stop_ids), events)
        errors: list[BaseException] = []

        def run():
            try:
                self._torch_generate(contexts, config, head, streamer)
            except BaseException as e:  # re-raised in the caller's thread
                errors.append(e)
            finally:
                events.put(None)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        clips = [StopClipper(stops) for _ in contexts]
        live = set(range(len(contexts)))
        try:
            while (event := events.get()) is not None:
                row, piece = event
                if row not in live:
                    continue
                if piece is not None and (chunk := clips[row].feed(piece)):
                    yield row, chunk
                if piece is None or clips[row].stopped:
                    live.discard(row)
                    if rest := clips[row].finish():
                        yield row, rest
                    yield row, None
        finally:
            # The caller may stop early; generation then runs to its end unread.
            thread.join()
        if errors:
            raise errors[0]
        for row in sorted(live):  # generation ended without a row's end (it cannot, but)
            if rest := clips[row].finish():
                yield row, rest
            yield row, None

    def _ct2_pieces(self, context: Any, config: DecodingConfig) -> Iterator[str]:
        """Text pieces from CTranslate2, decoded as whole characters arrive."""
        prompt = self.encode(context, config.max_new_tokens).input_ids
        tokens = self.ct2.stream(
            prompt, config, self.tokenizer, self.format.stop_ids, self._bad_word_ids(config)
        )
        ids: list[int] = []
        shown = ""
        try:
            for token in tokens:
                ids.append(token)
                text = _whole_text(self.tokenizer, ids, shown)
                if text is not None:
                    yield text[len(shown) :]
                    shown = text
        finally:
            tokens.close()

    def _pad_left(self, encodings: list[Encoding]) -> dict[str, Any]:
        import torch

        width = max(len(e) for e in encodings)
        pad = self.tokenizer.pad_token_id
        ids = [[pad] * (width - len(e)) + e.input_ids for e in encodings]
        mask = [[0] * (width - len(e)) + e.attention_mask for e in encodings]
        batch = {
            "input_ids": torch.tensor(ids, device=self.device),
            "attention_mask": torch.tensor(mask, device=self.device),
        }
        if encodings[0].token_type_ids is not None:
            types = [[0] * (width - len(e)) + e.token_type_ids for e in encodings]
            batch["token_type_ids"] = torch.tensor(types, device=self.device)
        return batch
