"""llama.cpp's GGUF file of a checkpoint, laid out as llama.cpp's own converter
(convert_hf_to_gguf.py) lays it out, written with the gguf package: GPT-2, Llama,
Mistral and Qwen2 layouts, GPT-2's byte-level BPE vocabulary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rejoinder.errors import RejoinderError

GGUF_ARCHS = {"gpt2": "GPT2", "llama": "LLAMA", "mistral": "LLAMA", "qwen2": "QWEN2"}
"""rejoinder's families that llama.cpp runs, and the gguf.MODEL_ARCH each is written as
(Mistral is a Llama to llama.cpp's converter too)."""
ROTATE_HALF = ("llama", "mistral")
"""Families whose q and k rows llama.cpp wants in interleaved rotary pairs."""


def check_gguf(ckpt, where: Any = "the checkpoint") -> None:
    """Refuses a model or tokenizer this GGUF writer does not write, naming what it does."""
    import importlib.util

    from rejoinder.modeling.architectures import arch_of

    if importlib.util.find_spec("gguf") is None:
        raise RejoinderError(
            "the llama.cpp export writes GGUF with the gguf package, which is missing: "
            "pip install 'rejoinder[engines]'"
        )
    config = ckpt.model.config
    arch = arch_of(config)
    if arch not in GGUF_ARCHS:
        raise RejoinderError(
            f"{where} is a {arch} model; the llama.cpp export writes "
            f"{', '.join(GGUF_ARCHS)} models. Export it --for vllm, or serve it with "
            "`rejoinder serve`"
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if arch != "gpt2" and (rope.get("rope_type") or rope.get("type") or "default") != "default":
        raise RejoinderError(f"{where} scales its rotary embeddings, which this export cannot")
    if arch == "gpt2" and getattr(config, "scale_attn_by_inverse_layer_idx", False):
        raise RejoinderError(f"{where} scales attention by layer, which llama.cpp's GPT-2 does not")
    window = getattr(config, "sliding_window", None)
    if arch == "mistral" and window and window < ckpt.max_positions:
        raise RejoinderError(
            f"{where} attends within a sliding window of {window} tokens, which llama.cpp's "
            "llama architecture does not; export it --for vllm"
        )
    spec = json.loads(ckpt.tokenizer.backend_tokenizer.to_str())
    pre = spec.get("pre_tokenizer") or {}
    if (
        (spec.get("model") or {}).get("type") != "BPE"
        or pre.get("type") != "ByteLevel"
        or pre.get("add_prefix_space")
        or spec.get("normalizer")
    ):
        raise RejoinderError(
            f"the tokenizer of {where} is not a byte-level BPE like GPT-2's, the only kind "
            "this export writes for llama.cpp (rejoinder's gpt2 and bpe:N tokenizers); "
            "export it --for vllm"
        )


def _file_type(name: str, array, dtype: str):
    """The GGML type of a tensor: llama.cpp's converter keeps norms, biases, 1-D tensors
    and position embeddings in float32, whatever the file's type."""
    import gguf

    if (
        dtype == "float32"
        or array.ndim <= 1
        or not name.endswith(".weight")
        or name.endswith("_norm.weight")
        or name.startswith("position_embd")
    ):
        return gguf.GGMLQuantizationType.F32
    return gguf.GGMLQuantizationType.F16


def rotary_pairs(weight, heads: int):
    """q or k rows from Hugging Face's rotate-half order to llama.cpp's adjacent pairs."""
    per = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, per, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_tensors(model):
    """(llama.cpp's name, float32 array) for each of `model`'s weights, laid out as
    llama.cpp's convert_hf_to_gguf.py lays them out."""
    import gguf

    from rejoinder.modeling.architectures import arch_of

    config = model.config
    arch = arch_of(config)
    layers = config.num_hidden_layers
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, GGUF_ARCHS[arch]), layers)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    tied = getattr(config, "tie_word_embeddings", False)
    for key, tensor in model.state_dict().items():
        if key.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")):
            continue  # buffers, not weights
        if key == "lm_head.weight" and tied and arch != "gpt2":
            continue  # llama.cpp reads the token embeddings when the output is missing
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise RejoinderError(f"cannot name weight {key!r} of this {arch} model for llama.cpp")
        array = tensor.detach().float().cpu()
        if arch == "gpt2" and key.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            array = array.T  # GPT-2's Conv1D keeps (in, out); llama.cpp wants (out, in)
        if arch in ROTATE_HALF and key.endswith(("q_proj.weight", "q_proj.bias")):
            array = rotary_pairs(array, heads)
        if arch in ROTATE_HALF and key.endswith(("k_proj.weight", "k_proj.bias")):
            array = rotary_pairs(array, kv_heads)
        yield name, array.contiguous().numpy()


def _hyperparameters(writer, config, arch: str, positions: int) -> None:
    from rejoinder.modeling.architectures import width

    writer.add_context_length(positions)
    writer.add_embedding_length(width(config))
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    if arch == "gpt2":
        writer.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
        writer.add_layer_norm_eps(config.layer_norm_epsilon)
        return
    head_dim = getattr(config, "head_dim", None) or width(config) // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_vocab_size(config.vocab_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count_kv(
        getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    )
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)


def _vocabulary(writer, fmt, vocab_size: int) -> None:
    """GPT-2's BPE as llama.cpp reads it: tokens, their types, merges, special ids."""
    import gguf

    tok = fmt.tokenizer
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [gguf.TokenType.UNUSED] * vocab_size
    added = tok.added_tokens_decoder
    for token, i in tok.get_vocab().items():
        tokens[i] = token
        if i not in added:
            types[i] = gguf.TokenType.NORMAL
        else:
            types[i] = gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    if tok.bos_token_id is not None:
        writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    if tok.pad_token_id is not None:
        writer.add_pad_token_id(tok.pad_token_id)
    end = getattr(fmt, "end_of_turn", None)
    if end is not None and end != tok.eos_token_id:
        writer.add_eot_token_id(end)  # the chat template's end of a turn (<|im_end|>)
    # rejoinder's formats put no BOS before a conversation, and nor must the engine.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def write_gguf(ckpt, template: str, path: Path, dtype: str, defaults_of) -> None:
    """Writes the GGUF file of a checkpoint: its hyperparameters, vocabulary, chat template,
    sampling defaults (`defaults_of(format)`: the engines' generation defaults) and weights."""
    import gguf

    from rejoinder.modeling.architectures import arch_of

    model, fmt = ckpt.model, ckpt.format
    arch = arch_of(model.config)
    kind = getattr(gguf.MODEL_ARCH, GGUF_ARCHS[arch])
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[kind])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(Path(str(ckpt.path)).name)
    f16 = dtype == "float16"
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _hyperparameters(writer, model.config, arch, ckpt.max_positions)
    _vocabulary(writer, fmt, model.config.vocab_size)
    writer.add_chat_template(template)
    defaults = defaults_of(fmt)
    writer.add_sampling_temp(defaults["temperature"])
    writer.add_sampling_top_p(defaults["top_p"])
    writer.add_sampling_top_k(defaults["top_k"])
    writer.add_sampling_min_p(0.0)  # rejoinder's preset has none; llama.cpp's default is 0.05
    for name, array in gguf_tensors(model):
        kind = _file_type(name, array, dtype)
        data = array.astype("float16" if kind == gguf.GGMLQuantizationType.F16 else "float32")
        writer.add_tensor(name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
