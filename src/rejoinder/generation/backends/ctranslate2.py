"""The CTranslate2 backend: the same checkpoint, converted once, decoded fast on CPU.

The checkpoint is converted on first use into `DIR/ctranslate2-<compute_type>/` (or a
user cache when DIR is read-only), atomically, and reused after. Generation takes the
same DecodingConfig as the torch backend, for the options CTranslate2 implements.
Nothing here imports torch: a CTranslate2 process never loads it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rejoinder.atomic import atomic_directory
from rejoinder.errors import RejoinderError
from rejoinder.formats import IGNORE, Encoding
from rejoinder.generation.backends import Job
from rejoinder.generation.config import DecodingConfig
from rejoinder.generation.replies import LENGTH, STOP, Finish
from rejoinder.generation.streaming import StopStrings

COMPUTE_TYPES = ("int8", "int8_float32", "float32", "int16", "float16", "bfloat16", "int8_float16")
UNSUPPORTED = ("typical_p", "min_p")


def converted(path: str | Path, compute_type: str, checkpoint=None) -> Path:
    """The CTranslate2 model of checkpoint `path` (converting it the first time).

    An adapter directory is converted from its loaded `checkpoint` (the base with the
    adapter merged in), written to a temporary directory for the converter.
    """
    if compute_type not in COMPUTE_TYPES:
        raise RejoinderError(
            f"compute_type {compute_type!r} is not one of {', '.join(COMPUTE_TYPES)}"
        )
    path = Path(path)
    target = path / f"ctranslate2-{compute_type}"
    if not os.access(path, os.W_OK):
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rejoinder"
        target = cache / f"{path.resolve().as_posix().strip('/').replace('/', '_')}-{compute_type}"
    tokenizer = checkpoint.tokenizer if checkpoint is not None else None
    if (target / "model.bin").is_file():
        fill_special_tokens(target, tokenizer)  # converted by an earlier release, maybe
        return target
    # The converter imports torch and transformers: only when there is something to convert.
    from ctranslate2.converters import TransformersConverter

    class Converter(TransformersConverter):
        def load_model(self, model_class, model_name_or_path, **kwargs):
            model = super().load_model(model_class, model_name_or_path, **kwargs)
            # CTranslate2's GPT-NeoX loader reads transformers 4's names: `rotary_pct`,
            # which transformers 5 keeps in rope_parameters, and `embed_out`, its lm_head.
            rope = getattr(model.config, "rope_parameters", None) or {}
            if not hasattr(model.config, "rotary_pct") and "partial_rotary_factor" in rope:
                model.config.rotary_pct = rope["partial_rotary_factor"]
            if model.config.model_type == "gpt_neox" and not hasattr(model, "embed_out"):
                model.embed_out = model.get_output_embeddings()
            return model

    try:
        with atomic_directory(target) as tmp, tempfile.TemporaryDirectory() as merged:
            source = str(path)
            if checkpoint is not None and (path / "adapter_config.json").is_file():
                checkpoint.model.save_pretrained(merged)
                checkpoint.tokenizer.save_pretrained(merged)
                source = merged
            converter = Converter(source)
            converter.convert(str(tmp), quantization=compute_type, force=True)
            fill_special_tokens(tmp, tokenizer)
    except RejoinderError:
        raise
    except Exception as e:
        raise RejoinderError(
            f"could not convert {path} for CTranslate2 ({type(e).__name__}: {e})"
        ) from None
    return target


def fill_special_tokens(model_dir: Path, tokenizer=None) -> None:
    """Gives every special token of a converted model's config.json a value.

    CTranslate2 refuses to load a config whose bos_token (or unk_token, …) is null,
    which its converter writes for a tokenizer without one (Llama's and GPT-NeoX's
    families, many real tokenizers). Generation here never relies on them (prompts
    are whole token lists, ends are explicit), so a missing one takes the tokenizer's
    end-of-text token, else its padding token.
    """
    import json

    file = model_dir / "config.json"
    config = json.loads(file.read_text(encoding="utf-8"))
    missing = [k for k, v in config.items() if k.endswith("_token") and v is None]
    if not missing:
        return
    candidates = [config.get("eos_token")]
    if tokenizer is not None:
        candidates += [tokenizer.eos_token, tokenizer.pad_token]
    fill = next((t for t in candidates if isinstance(t, str) and t), None)
    if fill is None:
        raise RejoinderError(
            f"the tokenizer of {model_dir.parent} has no {', '.join(missing)} and no "
            "end-of-text or padding token to stand in for it, which CTranslate2 needs; "
            'set one in its tokenizer_config.json (e.g. "eos_token") or use --backend torch'
        )
    config.update({k: fill for k in missing})
    tmp = file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, file)


class Ct2Backend:
    """Generation and scoring through a CTranslate2 Generator."""

    name = "ctranslate2"

    def __init__(
        self,
        path: str | Path,
        tokenizer,
        stop_ids: list[int],
        compute_type: str = "int8",
        checkpoint=None,
        device: str | None = "cpu",
    ):
        try:
            import ctranslate2
        except ImportError:
            raise RejoinderError(
                "the ctranslate2 backend needs CTranslate2: pip install 'rejoinder[ct2]'"
            ) from None

        self.tokenizer, self.stop_ids = tokenizer, list(stop_ids)
        self.dir = converted(path, compute_type, checkpoint)
        # One thread per core: CTranslate2's own default (0) ran slower on small machines.
        threads = int(os.environ.get("REJOINDER_CT2_THREADS", os.cpu_count() or 0))
        # torch's device names ("cuda:1") in CTranslate2's terms; None: a GPU where
        # CTranslate2 sees one, as checkpoints load onto one where torch does.
        if device is None:
            device = "cuda" if ctranslate2.get_cuda_device_count() else "cpu"
        kind, _, index = str(device).partition(":")
        if kind not in ("cpu", "cuda"):
            raise RejoinderError(f"CTranslate2 runs on cpu or cuda[:N], not {device!r}")
        self.device = kind
        self.generator = ctranslate2.Generator(
            str(self.dir),
            device=kind,
            device_index=int(index or 0),
            compute_type=compute_type,
            intra_threads=threads,
        )

    @classmethod
    def for_checkpoint(
        cls, checkpoint, compute_type: str = "int8", device: str | None = None
    ) -> Ct2Backend:
        """The backend of a loaded checkpoint (its directory is converted once), on
        `device` (default: a GPU where CTranslate2 sees one)."""
        fmt = checkpoint.format
        if fmt.encode([]).token_type_ids is not None:
            raise RejoinderError(
                f"the {fmt.name} format uses token types, which CTranslate2's GPT-2 lacks; "
                "use the torch backend for it"
            )
        if not checkpoint.path or not Path(checkpoint.path).is_dir():
            raise RejoinderError("the ctranslate2 backend needs a local checkpoint directory")
        return cls(
            checkpoint.path, checkpoint.tokenizer, fmt.stop_ids, compute_type, checkpoint, device
        )

    def _tokens(self, ids) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(list(ids))

    def _options(self, job: Job) -> dict:
        """CTranslate2's options for a job, shared by whole and streamed replies."""
        import ctranslate2

        config: DecodingConfig = job.config
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
            end_token=self._tokens(self.stop_ids),
            repetition_penalty=config.repetition_penalty,
            no_repeat_ngram_size=config.no_repeat_ngram_size,
            sampling_topk=1,
        )
        if job.bad_ids:
            kwargs["suppress_sequences"] = [self._tokens(b) for b in job.bad_ids]
        if config.do_sample:
            kwargs.update(
                sampling_topk=config.top_k or 0,
                sampling_topp=config.top_p or 1.0,
                sampling_temperature=config.temperature,
            )
        return kwargs

    def generate(self, job: Job) -> list[list[list[int]]]:
        config = job.config
        kwargs = self._options(job)
        kwargs.update(
            include_prompt_in_result=False,
            return_end_token=True,  # it was generated: counted in the reply's tokens
            num_hypotheses=config.num_return_sequences,
            length_penalty=config.length_penalty,
            return_scores=False,
            beam_size=1 if config.do_sample else config.num_beams,
        )
        tokens = [self._tokens(p.input_ids) for p in job.prompts]
        # Prompts of one length per call: CTranslate2's GPT-2 gave wrong replies for the
        # shorter prompts of a batch of mixed lengths (seen with 4.8.5).
        out: list = [None] * len(tokens)
        for indices in _by_length(tokens):
            results = self.generator.generate_batch([tokens[i] for i in indices], **kwargs)
            for i, r in zip(indices, results, strict=True):
                out[i] = [self.tokenizer.convert_tokens_to_ids(seq) for seq in r.sequences]
        return out

    def stream(self, job: Job) -> Iterator[tuple[int, int | Finish]]:
        """Token events of every row as they come. The rows decode together in
        `generate_batch`, whose callback hands each row's tokens over from CTranslate2's
        thread (`generate_tokens` streams one prompt: the last row would wait for all
        the others)."""
        import queue
        import threading

        kwargs = self._options(job)
        kwargs.update(include_prompt_in_result=False, beam_size=1)
        check = StopStrings(self.tokenizer, job.stops) if job.stops else None
        tokens = [self._tokens(p.input_ids) for p in job.prompts]
        events: queue.Queue = queue.Queue()
        ended: set[int] = set()
        made = [0] * len(tokens)
        leaving = threading.Event()
        done = object()

        def decode() -> None:
            try:
                for indices in _by_length(tokens):  # one length a call, as in `generate`

                    def callback(step, rows=indices) -> bool:
                        row = rows[step.batch_id]
                        events.put((row, step.token_id, step.is_last))
                        made[row] += 1  # a row at its own limit stops here (True)
                        return leaving.is_set() or row in ended or made[row] >= job.limit(row)

                    self.generator.generate_batch(
                        [tokens[i] for i in indices], callback=callback, **kwargs
                    )
                    for row in indices:
                        events.put((row, None, True))
            except BaseException as e:  # the caller's thread raises it
                events.put(e)
            finally:
                events.put(done)

        threading.Thread(target=decode, name="ct2-stream", daemon=True).start()
        new: dict[int, list[int]] = {i: [] for i in range(len(tokens))}
        try:
            while (event := events.get()) is not done:
                if isinstance(event, BaseException):
                    raise event
                row, token, last = event
                if row in ended:
                    continue
                if token in self.stop_ids:
                    ended.add(row)
                    yield row, Finish(len(new[row]) + 1, STOP)
                    continue
                if token is not None:
                    new[row].append(token)
                    yield row, token
                    if check is not None and check.found([new[row]])[0]:
                        ended.add(row)
                        yield row, Finish(len(new[row]), STOP)
                        continue
                    if not last and len(new[row]) < job.limit(row):
                        continue
                ended.add(row)
                full = len(new[row]) >= job.limit(row)
                yield row, Finish(len(new[row]), LENGTH if full else STOP)
        finally:
            leaving.set()  # a caller that stops early stops CTranslate2's decoding too

    def score(self, encodings: list[Encoding], batch_size: int) -> list[list[float]]:
        sequences = [e.input_ids for e in encodings]
        per_token: list = [None] * len(sequences)
        for indices in _by_length(sequences):
            batch = [self._tokens(sequences[i]) for i in indices]
            for i, r in zip(indices, self.generator.score_batch(batch), strict=True):
                per_token[i] = list(r.log_probs)
        # log_probs[i] is the log-probability of token i + 1 given the ones before it.
        return [
            [float(lps[i - 1]) for i, t in enumerate(e.labels) if t != IGNORE and i > 0]
            for e, lps in zip(encodings, per_token, strict=True)
        ]


def _by_length(items: list) -> list[list[int]]:
    """Indices of `items` grouped by length."""
    groups: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(len(item), []).append(i)
    return list(groups.values())
