"""`rejoinder export`: a checkpoint directory from a Lightning checkpoint of a run."""

from __future__ import annotations

from pathlib import Path

from rejoinder.errors import RejoinderError


def _heads_writer(model):
    from rejoinder.modeling.heads import save_heads

    if not hasattr(model, "specs"):
        return None, []
    return (lambda tmp: save_heads(model, tmp)), [h.to_dict() for h in model.specs]


def export_module(module, out, extra: dict) -> None:
    """Saves a DialogueLM's model as it is (a run that ended before any checkpoint)."""
    from rejoinder.modeling.checkpoint import save_checkpoint

    write, heads = _heads_writer(module.model)
    lora = {**module.lora.to_dict(), "base": module.base_path} if module.lora else None
    objective = module.hparams.get("objective", "lm")
    save_checkpoint(
        module.base,
        module.fmt.tokenizer,
        module.fmt,
        out,
        lora=lora,
        write_extra=write,
        heads=heads,
        overwrite=True,
        tokenizer_kind=module.tokenizer_kind,
        made_by={
            "command": "train",
            "objective": objective,
            "tokens_seen": module.tokens_seen,
            **extra,
        },  # fmt: skip
        ranks=objective == "rank",
        classifies=objective == "classify",
    )


def export(
    ckpt: str | Path,
    out: str | Path,
    overwrite: bool = False,
    extra: dict | None = None,
    merge: bool = False,
) -> Path:
    """A checkpoint directory from a Lightning checkpoint of `rejoinder train`.

    A LoRA run gives an adapter directory that names its base model, or, with `merge`,
    the base with the adapter merged in, as a plain directory.
    """
    import torch
    from tokenizers import Tokenizer
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        PreTrainedTokenizerFast,
    )

    from rejoinder.formats import format_from_dict
    from rejoinder.modeling.checkpoint import save_checkpoint
    from rejoinder.modeling.heads import HeadSpec, MultiHeadLM

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise RejoinderError(f"Lightning checkpoint {ckpt} does not exist")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as e:
        raise RejoinderError(
            f"{ckpt} is not a readable checkpoint ({type(e).__name__}: {e})"
        ) from None
    info = state.get("rejoinder") if isinstance(state, dict) else None
    if not info:
        raise RejoinderError(
            f"{ckpt} was not written by `rejoinder train` (no 'rejoinder' section)"
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(info["tokenizer_json"]),
        **{k: v for k, v in info["tokenizer_special"].items() if v},
    )
    if info.get("chat_template"):
        tok.chat_template = info["chat_template"]
    fmt = format_from_dict(info["format"], tok)
    settings = dict(info["config"])
    config = AutoConfig.for_model(settings.pop("model_type", "gpt2"), **settings)
    objective = info.get("objective", "lm")
    ranks, classifies = objective == "rank", objective == "classify"
    auto = AutoModelForSequenceClassification if ranks or classifies else AutoModelForCausalLM
    model = auto.from_config(config)
    lora = info.get("lora")
    if lora:
        from rejoinder.modeling.architectures import arch_of
        from rejoinder.modeling.lora import LoraOptions, apply_lora

        options = LoraOptions(**{k: v for k, v in lora.items() if k != "base"})
        model = apply_lora(model, options, arch_of(config))
    specs = HeadSpec.parse(info.get("heads"))
    whole = MultiHeadLM(model, specs) if specs else model
    weights = {
        k.removeprefix("model."): v
        for k, v in state["state_dict"].items()
        if k.startswith("model.")
    }
    try:  # strict: every weight of the model comes from the checkpoint, and nothing else
        whole.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise RejoinderError(
            f"{ckpt} does not hold this model's weights; it is corrupt or of another model "
            f"({str(e).splitlines()[0]})"
        ) from None
    model.tie_weights()
    if lora and merge:  # the adapter merged in: a plain model, and no base to name
        model, lora = model.merge_and_unload(), None
        if specs:
            whole.base = model  # the trained heads stay, on the merged trunk
        else:
            whole = model
    write, heads = _heads_writer(whole)
    made_by = {
        "command": "train",
        "objective": objective,
        "checkpoint": str(ckpt),
        "step": state.get("global_step"),
        "tokens_seen": info.get("tokens_seen"),
        **(extra or {}),
    }
    return save_checkpoint(
        model,
        tok,
        fmt,
        out,
        made_by=made_by,
        tokenizer_kind=info.get("tokenizer_kind", "gpt2"),
        overwrite=overwrite,
        heads=heads,
        write_extra=write,
        lora=lora,
        ranks=ranks,
        classifies=classifies,
    )
