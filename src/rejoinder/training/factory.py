"""The model a run trains, made in one place: from a size or a checkpoint, for any
objective, with LoRA and DPO's (and KTO's) frozen reference (`build_model`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rejoinder.errors import RejoinderError
from rejoinder.formats import Format, format_from_dict, get_format


@dataclass
class Built:
    """What `build_model` makes."""

    model: Any
    """The model to train (a PEFT model around it with LoRA)."""
    fmt: Format
    tokenizer_kind: str
    """The tokenizer's kind as rejoinder.json records it."""
    base_path: str | None = None
    """The checkpoint LoRA adapts (its adapter names it as its base)."""
    reference: Any = None
    """DPO's frozen reference, when it is a model of its own."""


def build_model(
    h, lora, texts_for_tokenizer=None, run_dir: Path | None = None, classes=None
) -> Built:
    """The model, tokenizer and format of a run's hyperparameters `h` (DialogueLM's) and
    LoRA options. A tokenizer learnt from data is saved in `run_dir`, so a resumed run
    reuses it. `classes()` gives a classifier's labels (the dataset's, sorted)."""
    from rejoinder.modeling.architectures import is_size, positions

    labels = classes() if h.objective == "classify" else None
    if is_size(h.init):
        built = _from_size(h, texts_for_tokenizer, run_dir, labels)
    else:
        built = _from_checkpoint(h, labels)
    fit_vocabulary(built.model, built.fmt)
    most = positions(built.model.config)
    if h.max_tokens > most:
        raise RejoinderError(
            f"--model.max_tokens {h.max_tokens} exceeds the model's {most} positions"
        )
    if lora is not None:
        _with_lora(built, h, lora)
    if h.objective in ("dpo", "kto") and not (lora and h.reference in (None, h.init)):
        from rejoinder.modeling.checkpoint import load_checkpoint

        reference = load_checkpoint(h.reference or h.init, device="cpu").model
        built.reference = reference.requires_grad_(False).eval()
    return built


def _from_size(h, texts_for_tokenizer, run_dir: Path | None, labels=None) -> Built:
    """A random model of a size, with a tokenizer built (or learnt from the data)."""
    from transformers import AutoModelForCausalLM

    from rejoinder.modeling.architectures import model_config
    from rejoinder.modeling.checkpoint import check_token_types
    from rejoinder.modeling.classifier import classifier_model
    from rejoinder.modeling.ranker import ranker_model
    from rejoinder.tokenizers import build_tokenizer

    model_config(h.arch, h.init, 8)  # an unknown architecture fails before any work
    saved = run_dir / "tokenizer" if run_dir else None
    if saved is not None and (saved / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(saved)
    else:
        tok = build_tokenizer(h.tokenizer, texts_for_tokenizer() if h.tokenizer != "gpt2" else None)
        if saved is not None:
            tok.save_pretrained(saved)
    fmt = get_format(h.format or "dialogpt", tok, reverse=h.reverse, max_tokens=h.max_tokens)
    config = model_config(
        h.arch,
        h.init,
        len(tok),
        dropout=h.dropout,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    check_token_types(fmt, config)
    if h.objective in ("dpo", "kto"):
        raise RejoinderError(
            f"{h.objective.upper()} tunes a trained generator: give --model.init a "
            "checkpoint directory"
        )
    torch.manual_seed(0)
    if h.objective == "rank":
        config.pad_token_id = tok.pad_token_id
        return Built(ranker_model(h.init, config), fmt, h.tokenizer)
    if labels is not None:
        model = classifier_model(h.init, labels, config, tok.pad_token_id)
        return Built(model, fmt, h.tokenizer)
    return Built(AutoModelForCausalLM.from_config(config), fmt, h.tokenizer)


def _from_checkpoint(h, labels=None) -> Built:
    """A checkpoint to fine-tune, in its own format (or a chosen one, for a plain
    directory); a ranker or a classifier starts from a generator's trunk (or from a model
    of its own kind)."""
    from rejoinder.modeling.checkpoint import check_token_types, load_checkpoint
    from rejoinder.modeling.classifier import classifier_model
    from rejoinder.modeling.lora import is_adapter
    from rejoinder.modeling.ranker import ranker_model

    ranks = h.objective in ("rank", "classify")  # a score layer on the trunk
    if ranks and is_adapter(Path(h.init)):
        what = "ranker" if labels is None else "classifier"
        raise RejoinderError(
            f"{h.init} is a LoRA adapter; a {what} starts from a whole model: merge "
            "it first with `rejoinder export … --merge`"
        )
    ck = load_checkpoint(h.init, device="cpu", weights=not ranks, ranker=None if ranks else False)
    saved_format = ck.format.to_dict()
    if h.format and h.format != saved_format["name"]:
        if ck.has_meta:
            raise RejoinderError(
                f"--model.format {h.format} differs from the format of {h.init} "
                f"({saved_format['name']}); the model was trained to talk in its own "
                "format. Leave --model.format out, or start from a size"
            )
        saved_format = {"name": h.format}  # a plain directory: any format it can take
    fmt = format_from_dict(
        {**saved_format, "reverse": h.reverse, "max_tokens": h.max_tokens}, ck.tokenizer
    )
    check_token_types(fmt, ck.config)
    if labels is not None:
        model = classifier_model(h.init, labels, pad_token_id=ck.tokenizer.pad_token_id)
    else:
        model = ranker_model(h.init) if ranks else ck.model
    if h.dropout is not None:
        set_dropout(model, h.dropout)
    return Built(model, fmt, ck.meta.get("tokenizer", {}).get("kind", "gpt2"))


def _with_lora(built: Built, h, lora) -> None:
    """Adapters on the checkpoint (QLoRA: on its quantised reload)."""
    from rejoinder.modeling.architectures import arch_of, is_size
    from rejoinder.modeling.lora import apply_lora, check_bits

    if is_size(h.init):
        raise RejoinderError(
            "LoRA adapts a trained model: give --model.init a checkpoint directory "
            "(or leave --model.lora out to train a model from scratch)"
        )
    check_bits(lora)
    built.base_path = str(Path(h.init).resolve()) if Path(h.init).exists() else h.init
    if lora.bits:  # QLoRA: the frozen base quantised, on the GPU
        from rejoinder.modeling.lora import load_quantized

        built.model = load_quantized(h.init, lora.bits)
        fit_vocabulary(built.model, built.fmt)  # the reload lost the added tokens' rows
    built.model = apply_lora(built.model, lora, arch_of(built.model.config))


def fit_vocabulary(model, fmt: Format) -> None:
    """Grows the embeddings for tokens the format added (speaker tokens, …)."""
    if len(fmt.tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(fmt.tokenizer))


def set_dropout(model, p: float) -> None:
    """Sets a loaded model's dropout: modules (GPT-2) and attention probabilities
    (Llama-style families keep it as a number on each attention layer)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
        elif isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = p
