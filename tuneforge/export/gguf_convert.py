"""Hugging Face causal LMs to GGUF, in f32, f16 or bf16: our own conversion, written with the
`gguf` package's writer and tensor-name maps, for Llama, Mistral, Qwen2, Qwen3, Gemma 2,
Gemma 3 (text) and Phi-3.

What llama.cpp expects and the Hub layout does not give directly:
- Llama and Mistral (GGUF architecture `llama`) rotate query/key pairs that are adjacent,
  Hugging Face rotates the two halves of each head: the rows of `q_proj` and `k_proj` are
  reordered per head. The other architectures rotate halves in llama.cpp too.
- Gemma's RMS norms multiply by (1 + weight); llama.cpp multiplies by the weight, so every
  Gemma norm is written with 1 added. Gemma scales the embeddings by sqrt(hidden size), which
  llama.cpp does itself, and scales queries by `query_pre_attn_scalar`, which llama.cpp
  derives from the head size: a model whose scalar differs is refused.
- Gemma 2 caps attention and output logits (`attn_logit_softcapping`,
  `final_logit_softcapping`); Gemma 2 and 3 alternate sliding-window and full attention
  layers, written as `sliding_window` and a per-layer pattern; Gemma 3's sliding layers have
  a rope base of their own (`rope.freq_base_swa`).
- Qwen3 and Gemma 3 normalise queries and keys per head (`attn_q_norm`, `attn_k_norm`).
- Phi-3 keeps its fused `qkv_proj` and `gate_up_proj` (llama.cpp splits them the same way);
  Phi-3's long-context rope (`longrope`) is refused.
- Llama 3.1-style rope scaling becomes a `rope_freqs` tensor of per-frequency divisors.
- One-dimensional tensors (norms, biases) stay float32 whatever the file type.

Tensors are read one at a time (from the safetensors files, lazily, or from a model already in
memory) and written to the file as they come: conversion holds one tensor at a time, never
the whole model. The tokenizer keys come from `gguf_vocab.py`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tuneforge.errors import UnsupportedModelError
from tuneforge.export.gguf_vocab import (
    Vocabulary,
    add_vocabulary,
    load_fast_tokenizer,
    vocabulary_of,
)
from tuneforge.export.pretokenizer import identify_pre_tokenizer

# Hugging Face architecture -> GGUF architecture name.
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
    "Phi3ForCausalLM": "phi3",
}
GEMMA = ("gemma2", "gemma3")
# File types written directly; every other quantization starts from one of these.
DIRECT_TYPES = ("f32", "f16", "bf16")


def gguf_architecture(model_dir: Path) -> str:
    """The GGUF architecture of the causal LM in `model_dir`, or UnsupportedModelError."""
    config = _config(model_dir)
    names = config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise UnsupportedModelError(
        f"GGUF export supports {', '.join(sorted(ARCHITECTURES))}; this model is "
        f"{', '.join(names) or 'of an unknown architecture'}.",
        param="model",
    )


def _config(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "config.json").read_text())


def convert(
    model_dir: Path,
    out_path: Path,
    file_type: str,
    *,
    name: str,
    chat_template: str | None,
    stops: list[str] | None = None,
    tensors: Mapping[str, Any] | None = None,
) -> Vocabulary:
    """Write the Hugging Face model in `model_dir` as a GGUF file of `file_type` (f32, f16 or
    bf16) at `out_path`; returns the vocabulary written. The weights come from `tensors`
    (Hugging Face names to torch tensors, e.g. a loaded model's state dict) or else from the
    folder's safetensors; `stops` are the texts of the tokens that end an assistant turn."""
    import gguf

    if file_type not in DIRECT_TYPES:
        raise ValueError(f"convert writes {DIRECT_TYPES}, not {file_type}")
    arch = gguf_architecture(model_dir)
    config = _config(model_dir)
    check_supported(arch, config)
    vocab = read_vocabulary(model_dir, config, chat_template, stops)
    writer = gguf.GGUFWriter(str(out_path), arch)
    writer.add_name(name)
    _add_hyperparameters(writer, arch, config, file_type)
    add_vocabulary(writer, vocab)
    names = gguf.get_tensor_name_map(
        gguf.MODEL_ARCH[arch.upper()], int(config["num_hidden_layers"])
    )
    with _tensor_source(model_dir, tensors) as source:
        plan = list(_plan(arch, config, names, source))
        for entry in plan:
            writer.add_tensor_info(entry.name, *_stored_as(entry.shape, file_type, gguf))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for entry in plan:
            writer.write_tensor_data(_encode(entry.load(), file_type))
    writer.close()
    return vocab


def read_vocabulary(
    model_dir: Path,
    config: dict[str, Any],
    chat_template: str | None,
    stops: list[str] | None = None,
) -> Vocabulary:
    """The tokenizer of `model_dir` as GGUF keys, its pre-tokenizer named by how llama.cpp
    tokenizes under each name."""
    tokenizer = load_fast_tokenizer(model_dir)
    vocab = vocabulary_of(tokenizer, config, chat_template, stops)
    vocab.pre = identify_pre_tokenizer(vocab, tokenizer)
    return vocab


def check_supported(arch: str, config: dict[str, Any]) -> None:
    """Refuse configurations llama.cpp would compute differently from transformers."""
    problems = []
    head_dim = _head_dim(config)
    if arch in GEMMA:
        scalar = float(config.get("query_pre_attn_scalar") or head_dim)
        # llama.cpp scales queries by 1/sqrt(head size), by 1/sqrt(hidden / heads) for the
        # 27B models (46 and 62 layers); transformers by 1/sqrt(query_pre_attn_scalar).
        big = int(config["num_hidden_layers"]) in (46, 62)
        expected = config["hidden_size"] / config["num_attention_heads"] if big else head_dim
        if scalar != expected:
            problems.append(
                f"query_pre_attn_scalar {scalar:g} (llama.cpp scales queries by "
                f"1/sqrt({expected:g}))"
            )
    if arch == "gemma3" and config.get("attn_logit_softcapping"):
        problems.append("attention logit soft-capping in a Gemma 3 model")
    if arch == "qwen3" and config.get("use_sliding_window"):
        problems.append("sliding-window attention in a Qwen3 model")
    if arch in GEMMA and _untied_head(config):
        problems.append("an output head that is not the embedding")
    if problems:
        raise UnsupportedModelError(
            f"GGUF export cannot write this {arch} model exactly: {'; '.join(problems)}.",
            param="model",
        )


def _untied_head(config: dict[str, Any]) -> bool:
    return config.get("tie_word_embeddings") is False


# -- hyperparameters ---------------------------------------------------------------------------


def _head_dim(config: dict[str, Any]) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def _add_hyperparameters(writer: Any, arch: str, config: dict[str, Any], file_type: str) -> None:
    import gguf

    head_dim = _head_dim(config)
    heads = int(config["num_attention_heads"])
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    rotary = float(config.get("partial_rotary_factor") or 1.0)
    writer.add_rope_dimension_count(int(head_dim * rotary))
    writer.add_vocab_size(int(config["vocab_size"]))
    if arch == "gemma3":
        parameters = config.get("rope_parameters") or {}
        full = parameters.get("full_attention") or {}
        local = parameters.get("sliding_attention") or {}
        writer.add_rope_freq_base(
            float(full.get("rope_theta") or config.get("rope_theta") or 1_000_000.0)
        )
        writer.add_rope_freq_base_swa(
            float(local.get("rope_theta") or config.get("rope_local_base_freq") or 10000.0)
        )
        scaling = full if full.get("rope_type", "default") != "default" else None
        scaling = scaling or config.get("rope_scaling")
    else:
        writer.add_rope_freq_base(_rope_theta(config))
        scaling = _rope_scaling(config)
    if scaling is not None:
        _add_rope_scaling(writer, scaling, gguf)
    if arch in GEMMA:
        if config.get("attn_logit_softcapping"):
            writer.add_attn_logit_softcapping(float(config["attn_logit_softcapping"]))
        if config.get("final_logit_softcapping"):
            writer.add_final_logit_softcapping(float(config["final_logit_softcapping"]))
        layer_types = config.get("layer_types") or []
        if config.get("sliding_window") and "sliding_attention" in layer_types:
            writer.add_sliding_window(int(config["sliding_window"]))
            writer.add_sliding_window_pattern([t == "sliding_attention" for t in layer_types])
    writer.add_file_type(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        }[file_type]
    )


def _add_rope_scaling(writer: Any, scaling: dict[str, Any], gguf: Any) -> None:
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
    elif kind == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))


def _rope_theta(config: dict[str, Any]) -> float:
    parameters = config.get("rope_parameters") or {}
    return float(config.get("rope_theta") or parameters.get("rope_theta") or 10000.0)


def _rope_scaling(config: dict[str, Any]) -> dict[str, Any] | None:
    """The rope scaling of the config (None for plain rope); unknown kinds are refused."""
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or None
    if not scaling:
        return None
    kind = scaling.get("rope_type") or scaling.get("type") or "default"
    if kind == "default":
        return None
    if kind not in ("linear", "yarn", "llama3"):
        raise UnsupportedModelError(
            f"GGUF export does not support rope scaling of type {kind!r}.", param="model"
        )
    return dict(scaling)


def _llama3_rope_factors(config: dict[str, Any], scaling: dict[str, Any]) -> Any:
    """Llama 3.1's per-frequency divisors: long wavelengths are divided by `factor`, short
    ones kept, the ones between interpolated smoothly."""
    import torch

    head_dim = _head_dim(config)
    base = _rope_theta(config)
    factor = float(scaling["factor"])
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    original = float(scaling["original_max_position_embeddings"])
    low_wavelen, high_wavelen = original / low, original / high
    divisors = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi / (1.0 / base ** (i / head_dim))
        if wavelen < high_wavelen:
            divisors.append(1.0)
        elif wavelen > low_wavelen:
            divisors.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            divisors.append(1.0 / ((1 - smooth) / factor + smooth))
    return torch.tensor(divisors, dtype=torch.float32)


# -- tensors -----------------------------------------------------------------------------------


@dataclass
class _Entry:
    """One tensor of the file: its GGUF name, shape, and how to produce it."""

    name: str
    shape: tuple[int, ...]
    load: Callable[[], Any]


# Where the weights come from: Hugging Face name -> (shape, loader).
_Source = dict[str, tuple[tuple[int, ...], Callable[[], Any]]]


def _detached(tensor: Any) -> Any:
    return tensor.detach()


@contextmanager
def _tensor_source(model_dir: Path, tensors: Mapping[str, Any] | None) -> Iterator[_Source]:
    if tensors is not None:
        yield {name: (tuple(t.shape), partial(_detached, t)) for name, t in tensors.items()}
        return
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UnsupportedModelError(
            f"No safetensors weights in {model_dir.name}; GGUF export reads safetensors only.",
            param="model",
        )
    with ExitStack() as stack:
        source: _Source = {}
        for path in files:
            f = stack.enter_context(safe_open(str(path), framework="pt"))
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shape = tuple(f.get_slice(key).get_shape())
                source[key] = (shape, partial(f.get_tensor, key))
        yield source


def _plan(arch: str, config: dict[str, Any], names: Any, source: _Source) -> Iterator[_Entry]:
    """The file's tensors in order, each with the transformation llama.cpp needs."""
    scaling = _rope_scaling(config) if arch != "gemma3" else None
    if scaling is not None and (scaling.get("rope_type") or scaling.get("type")) == "llama3":
        factors = _llama3_rope_factors(config, scaling)
        yield _Entry("rope_freqs.weight", tuple(factors.shape), lambda: factors)
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    tied = config.get("tie_word_embeddings", arch in GEMMA) or arch in GEMMA
    for hf_name, (shape, load) in source.items():
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UnsupportedModelError(
                f"Tensor {hf_name!r} has no GGUF counterpart for {arch}.", param="model"
            )
        transform: Callable[[Any], Any] | None = None
        if arch == "llama" and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            n = heads if "q_proj" in hf_name else kv_heads
            transform = lambda t, n=n: _interleave_rope_rows(t, n)  # noqa: E731
        elif arch in GEMMA and hf_name.endswith("norm.weight"):
            transform = _gemma_norm
        yield _Entry(name, shape, _transformed(load, transform))


def _transformed(load: Callable[[], Any], transform: Callable[[Any], Any] | None) -> Any:
    return load if transform is None else (lambda: transform(load()))


def _gemma_norm(weight: Any) -> Any:
    """Gemma multiplies by (1 + weight); llama.cpp by the weight."""
    import torch

    return weight.to(torch.float32) + 1.0


def _interleave_rope_rows(weight: Any, n_heads: int) -> Any:
    """Reorder each head's rows from (first half, second half) to pairs (0, d/2), (1, d/2+1),
    …: the rotation llama.cpp's `llama` architecture applies."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _stored_as(shape: tuple[int, ...], file_type: str, gguf: Any) -> tuple[Any, ...]:
    """(shape, numpy dtype, bytes, raw GGML type) of a tensor of `shape` in the file."""
    import numpy as np

    n = math.prod(shape)
    if len(shape) <= 1 or file_type == "f32":
        return shape, np.dtype(np.float32), 4 * n, None
    if file_type == "f16":
        return shape, np.dtype(np.float16), 2 * n, None
    # bfloat16: numpy has no such type; the raw 16-bit patterns go in as bytes.
    return (*shape[:-1], 2 * shape[-1]), np.dtype(np.uint8), 2 * n, gguf.GGMLQuantizationType.BF16


def _encode(tensor: Any, file_type: str) -> Any:
    """The tensor as the file stores it: 1-D tensors float32, the rest in `file_type`,
    rounded straight from the tensor's own type (no float32 copy of a 16-bit tensor)."""
    import torch

    if tensor.ndim <= 1 or file_type == "f32":
        return tensor.to(torch.float32).contiguous().numpy()
    if file_type == "f16":
        return tensor.to(torch.float16).contiguous().numpy()
    return tensor.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view("uint8")
