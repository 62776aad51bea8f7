"""The CTranslate2 backend: the same checkpoint, converted once, decoded fast on CPU.

The checkpoint is converted on first use into `DIR/ctranslate2-<compute_type>/` (or a
user cache when DIR is read-only), atomically, and reused after. Generation takes the
same DecodingConfig as the torch backend, for the options CTranslate2 implements.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from rejoinder.atomic import atomic_directory
from rejoinder.errors import RejoinderError
from rejoinder.generation.config import DecodingConfig

COMPUTE_TYPES = ("int8", "int8_float32", "float32", "int16", "float16", "bfloat16", "int8_float16")
UNSUPPORTED = ("typical_p", "min_p")


def converted(path: str | Path, compute_type: str) -> Path:
    """The CTranslate2 model of checkpoint `path` (converting it the first time)."""
    if compute_type not in COMPUTE_TYPES:
        raise RejoinderError(
            f"compute_type {compute_type!r} is not one of {', '.join(COMPUTE_TYPES)}"
        )
    path = Path(path)
    target = path / f"ctranslate2-{compute_type}"
    if not os.access(path, os.W_OK):
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rejoinder"
        target = cache / f"{path.resolve().as_posix().strip('/').replace('/', '_')}-{compute_type}"
    if (target / "model.bin").is_file():
        return target
    # The converter imports torch and transformers: only when there is something to convert.
    from ctranslate2.converters import TransformersConverter

    try:
        with atomic_directory(target) as tmp:
            converter = TransformersConverter(str(path))
            converter.convert(str(tmp), quantization=compute_type, force=True)
    except Exception as e:
        raise RejoinderError(
            f"could not convert {path} for CTranslate2 ({type(e).__name__}: {e})"
        ) from None
    return target


class Ct2Generator:
    """Generation and scoring through a CTranslate2 Generator."""

    def __init__(self, path: str | Path, compute_type: str = "int8", device: str = "cpu"):
        try:
            import ctranslate2
        except ImportError:
            raise RejoinderError(
                "the ctranslate2 backend needs CTranslate2: pip install 'rejoinder[ct2]'"
            ) from None

        self.dir = converted(path, compute_type)
        # CTranslate2's own default (0) ran slower here than one thread per core.
        threads = int(os.environ.get("REJOINDER_CT2_THREADS", os.cpu_count() or 0))
        self.generator = ctranslate2.Generator(
            str(self.dir), device=device, compute_type=compute_type, intra_threads=threads
        )

    def _options(self, config: DecodingConfig, tokenizer, stop_ids, bad_ids) -> dict:
        """CTranslate2's options for `config`, shared by whole and streamed replies."""
        import ctranslate2

        for name in UNSUPPORTED:
            if getattr(config, name) is not None:
                raise RejoinderError(
                    f"{name} is not available with the ctranslate2 backend; use torch"
                )
        if config.seed is not None:
            ctranslate2.set_random_seed(config.seed)
        kwargs = dict(
            max_length=config.max_new_tokens,
            min_length=config.min_new_tokens,
            end_token=tokenizer.convert_ids_to_tokens(stop_ids),
            repetition_penalty=config.repetition_penalty,
            no_repeat_ngram_size=config.no_repeat_ngram_size,
            sampling_topk=1,
        )
        if bad_ids:
            kwargs["suppress_sequences"] = [tokenizer.convert_ids_to_tokens(b) for b in bad_ids]
        if config.do_sample:
            kwargs.update(
                sampling_topk=config.top_k or 0,
                sampling_topp=config.top_p or 1.0,
                sampling_temperature=config.temperature,
            )
        return kwargs

    def generate(
        self,
        prompts: list[list[int]],
        config: DecodingConfig,
        tokenizer,
        stop_ids: list[int],
        bad_ids,
    ) -> list[list[list[int]]]:
        """Token ids of the replies: for each prompt, num_return_sequences lists."""
        kwargs = self._options(config, tokenizer, stop_ids, bad_ids)
        kwargs.update(
            include_prompt_in_result=False,
            num_hypotheses=config.num_return_sequences,
            length_penalty=config.length_penalty,
            return_scores=False,
            beam_size=1 if config.do_sample else config.num_beams,
        )
        tokens = [tokenizer.convert_ids_to_tokens(p) for p in prompts]
        # Prompts of one length per call: CTranslate2's GPT-2 gave wrong replies for the
        # shorter prompts of a batch of mixed lengths (seen with 4.8.5).
        out: list = [None] * len(tokens)
        for indices in _by_length(tokens):
            results = self.generator.generate_batch([tokens[i] for i in indices], **kwargs)
            for i, r in zip(indices, results, strict=True):
                out[i] = [tokenizer.convert_tokens_to_ids(seq) for seq in r.sequences]
        return out

    def stream(
        self, prompt: list[int], config: DecodingConfig, tokenizer, stop_ids, bad_ids
    ) -> Iterator[int]:
        """The reply's token ids, one at a time as they are decoded (no end-of-turn id)."""
        kwargs = self._options(config, tokenizer, stop_ids, bad_ids)
        steps = self.generator.generate_tokens(tokenizer.convert_ids_to_tokens(prompt), **kwargs)
        try:
            for step in steps:
                if step.token_id in stop_ids:
                    return
                yield step.token_id
        finally:
            steps.close()  # stops CTranslate2's decoding when the caller stops early

    def score(self, sequences: list[list[int]], tokenizer) -> list[list[float]]:
        """Log-probabilities of each token after the first, for each sequence."""
        out: list = [None] * len(sequences)
        for indices in _by_length(sequences):
            batch = [tokenizer.convert_ids_to_tokens(sequences[i]) for i in indices]
            for i, r in zip(indices, self.generator.score_batch(batch), strict=True):
                out[i] = list(r.log_probs)
        return out


def _by_length(items: list) -> list[list[int]]:
    """Indices of `items` grouped by length."""
    groups: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(len(item), []).append(i)
    return list(groups.values())
