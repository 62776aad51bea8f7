"""ConversationModel: a checkpoint that replies to conversations.

>>> bot = ConversationModel.from_pretrained("path/to/checkpoint")   # doctest: +SKIP
>>> bot.generate(["Hi!", "Hello, how are you?", "Great. Any plans tonight?"])  # doctest: +SKIP
'Going to the movies with my sister.'
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rejoinder.dialogue import as_context
from rejoinder.errors import RejoinderError
from rejoinder.formats import Encoding
from rejoinder.modeling.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

DEFAULT_MAX_NEW_TOKENS = 64

# Options of our own, translated into `transformers` ones before generate.
_OWN_OPTIONS = {"seed", "bad_words", "stop"}
# GenerationConfig fields that rejoinder sets itself from the checkpoint's format.
_RESERVED = {"eos_token_id", "pad_token_id", "bos_token_id", "return_dict_in_generate"}


def _generation_fields() -> set[str]:
    from transformers import GenerationConfig

    return {k for k in GenerationConfig().to_dict() if not k.startswith("_")}


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


class ConversationModel:
    """A GPT-2-style model with its tokenizer and conversation format.

    `generate(context, **options)` takes the conversation so far (a list of turns,
    oldest first; [] to start one) and returns the next reply as clean text, stopped
    at the format's end of turn. Options are `transformers` generation options
    (do_sample, temperature, top_k, top_p, typical_p, min_p, num_beams,
    length_penalty, repetition_penalty, no_repeat_ngram_size, min_new_tokens,
    max_new_tokens, num_return_sequences, …) plus:

    - `seed`: an integer that makes sampling repeatable (the global RNG is untouched);
    - `bad_words`: words the reply must not contain (strings; `bad_words_ids` also works);
    - `stop`: extra strings that end the reply.
    """

    def __init__(self, checkpoint: Checkpoint):
        from rejoinder.modeling.heads import HeadSpec, load_heads

        self.checkpoint = checkpoint
        self.model = checkpoint.model
        self.tokenizer = checkpoint.tokenizer
        self.format = checkpoint.format
        self._known = _generation_fields() | _OWN_OPTIONS
        self.heads = HeadSpec.parse(checkpoint.meta.get("heads"))
        lm, cls = {}, {}
        if self.heads and checkpoint.path:
            lm, cls = load_heads(checkpoint.path, self.heads, self.model.config.n_embd)
        self._lm_heads = {n: m.to(self.model.device).eval() for n, m in lm.items()}
        self._classifiers = {n: m.to(self.model.device).eval() for n, m in cls.items()}
        self._head_models: dict[str, Any] = {}

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
        cls, path: str | os.PathLike, *, device: str | None = None, dtype=None
    ) -> ConversationModel:
        """Loads a checkpoint directory, or a hub model by name where a hub is reachable."""
        return cls(load_checkpoint(path, device=device, dtype=dtype))

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
        return self.model.device

    @property
    def max_positions(self) -> int:
        return int(
            getattr(self.model.config, "n_positions", None)
            or self.model.config.max_position_embeddings
        )

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

    def generate(self, context: Any = None, head: str | None = None, **options) -> str | list[str]:
        """The reply to `context`; a list of replies when num_return_sequences > 1.

        `head` picks an extra LM head of a multi-head model (default: GPT-2's own).
        """
        return self.generate_batch([context], head=head, **options)[0]

    def generate_batch(
        self, contexts: Sequence[Any], head: str | None = None, **options
    ) -> list[str] | list[list[str]]:
        """Replies to many contexts in one left-padded batch (same greedy replies as one by one)."""
        model = self._model_for(head)
        import torch

        if isinstance(contexts, str) or not isinstance(contexts, Sequence):
            raise RejoinderError("generate_batch takes a list of contexts (each a list of turns)")
        if not contexts:
            return []
        kwargs, seed, extra_stops = self._options(options)
        encodings = [self.encode(c, kwargs["max_new_tokens"]) for c in contexts]
        batch = self._pad_left(encodings)
        prompt_len = batch["input_ids"].shape[1]
        if extra_stops:
            kwargs["stopping_criteria"] = [StopOnStrings(self.tokenizer, extra_stops, prompt_len)]
        # A seed seeds this call only: the caller's RNG state (CPU and GPU) comes back after.
        gpus = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=gpus):
            if seed is not None:
                torch.manual_seed(seed)
            try:
                out = model.generate(**batch, **kwargs)
            except ValueError as e:  # transformers' own check of the options
                raise RejoinderError(f"bad generation options: {e}") from None
        k = kwargs.get("num_return_sequences", 1)
        replies = [self.format.decode_reply(row[prompt_len:].tolist(), extra_stops) for row in out]
        if k == 1:
            return replies
        return [replies[i * k : (i + 1) * k] for i in range(len(contexts))]

    def _options(self, options: dict[str, Any]) -> tuple[dict[str, Any], int | None, list[str]]:
        unknown = sorted(set(options) - self._known)
        if unknown:
            raise RejoinderError(
                f"unknown generation option {', '.join(map(repr, unknown))}; use transformers "
                "GenerationConfig names such as do_sample, top_p, temperature, num_beams, "
                "max_new_tokens, or seed, bad_words, stop"
            )
        reserved = sorted(set(options) & _RESERVED)
        if reserved:
            raise RejoinderError(
                f"option {reserved[0]!r} comes from the checkpoint's format; it cannot be set"
            )
        kwargs = {k: v for k, v in options.items() if k not in _OWN_OPTIONS and v is not None}
        kwargs.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        if not isinstance(kwargs["max_new_tokens"], int) or kwargs["max_new_tokens"] < 1:
            raise RejoinderError(
                f"max_new_tokens must be a positive integer, got {kwargs['max_new_tokens']!r}"
            )
        kwargs["eos_token_id"] = self.format.stop_ids
        kwargs["pad_token_id"] = self.tokenizer.pad_token_id
        bad = [self.format.tokenize_turns([w, " " + w]) for w in options.get("bad_words") or []]
        if bad:
            kwargs["bad_words_ids"] = [
                *(kwargs.get("bad_words_ids") or []),
                *(i for b in bad for i in b),
            ]
        stops = list(options.get("stop") or [])
        if isinstance(options.get("stop"), str):
            stops = [options["stop"]]
        all_stops = [*self.format.stop_strings, *stops, *(kwargs.pop("stop_strings", None) or [])]
        if not all(isinstance(x, str) and x for x in all_stops):
            raise RejoinderError(f"stop strings must be non-empty strings, got {all_stops!r}")
        seed = options.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise RejoinderError(f"seed must be an integer, got {seed!r}")
        return kwargs, seed, all_stops

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
