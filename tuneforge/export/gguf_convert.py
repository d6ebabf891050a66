"""Hugging Face causal LMs of the Llama family (Llama, Mistral, Qwen2) to GGUF, in f32, f16 or
bf16: our own conversion, written with the `gguf` package's writer and tensor-name maps.

What llama.cpp expects and the Hub layout does not give directly:
- Llama and Mistral (GGUF architecture `llama`) rotate query/key pairs that are adjacent,
  Hugging Face rotates the two halves of each head: the rows of `q_proj` and `k_proj` are
  reordered per head. Qwen2 rotates halves in llama.cpp too and is written as it is.
- Llama 3.1-style rope scaling becomes a `rope_freqs` tensor of per-frequency divisors.
- One-dimensional tensors (norms, biases) stay float32 whatever the file type.
- The tokenizer goes in with the weights: the token list padded to the embedding's rows, token
  types, merges, special-token ids, whether a BOS is added, the pre-tokenizer by name, and the
  chat template. Tokenizers whose pre-tokenizer llama.cpp has no name for are refused rather
  than written to tokenize differently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import UnsupportedModelError

# Hugging Face architecture -> GGUF architecture name.
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
}
# File types written directly; every other quantization starts from one of these.
DIRECT_TYPES = ("f32", "f16", "bf16")

# The regular expressions that byte-level BPE tokenizers split text with before merging, by the
# name llama.cpp knows them under (`tokenizer.ggml.pre`).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPLIT_PATTERNS = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}


@dataclass
class Vocabulary:
    """What the GGUF tokenizer keys hold."""

    model: str  # tokenizer.ggml.model
    pre: str  # tokenizer.ggml.pre
    tokens: list[str]
    types: list[int]
    merges: list[str]
    special_ids: dict[str, int]  # bos, eos, pad, unk -> id
    add_bos: bool
    chat_template: str | None


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
    model_dir: Path, out_path: Path, file_type: str, *, name: str, chat_template: str | None
) -> None:
    """Write the merged Hugging Face model in `model_dir` (safetensors) as a GGUF file of
    `file_type` (f32, f16 or bf16) at `out_path`."""
    import gguf

    if file_type not in DIRECT_TYPES:
        raise ValueError(f"convert writes {DIRECT_TYPES}, not {file_type}")
    arch = gguf_architecture(model_dir)
    config = _config(model_dir)
    vocab = read_vocabulary(model_dir, config, chat_template)
    writer = gguf.GGUFWriter(str(out_path), arch)
    writer.add_name(name)
    _add_hyperparameters(writer, arch, config, file_type)
    _add_vocabulary(writer, vocab)
    n_layers = int(config["num_hidden_layers"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_layers)
    for tensor_name, array, raw_type in _tensors(model_dir, arch, config, names, file_type):
        writer.add_tensor(tensor_name, array, raw_dtype=raw_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# -- hyperparameters ---------------------------------------------------------------------------


def _head_dim(config: dict[str, Any]) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def _add_hyperparameters(writer: Any, arch: str, config: dict[str, Any], file_type: str) -> None:
    import gguf

    head_dim = _head_dim(config)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    heads = int(config["num_attention_heads"])
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_freq_base(float(_rope_theta(config)))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config["hidden_size"] // config["num_attention_heads"]:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(int(config["vocab_size"]))
    scaling = _rope_scaling(config)
    if scaling is not None:
        kind = scaling.get("rope_type") or scaling.get("type")
        if kind == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(scaling["factor"]))
        elif kind == "yarn":
            writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            writer.add_rope_scaling_factor(float(scaling["factor"]))
            writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))
    writer.add_file_type(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        }[file_type]
    )


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
    import numpy as np

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
    return np.asarray(divisors, dtype=np.float32)


# -- tensors -----------------------------------------------------------------------------------


def _weight_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UnsupportedModelError(
            f"No safetensors weights in {model_dir.name}; GGUF export reads safetensors only.",
            param="model",
        )
    return files


def _tensors(
    model_dir: Path, arch: str, config: dict[str, Any], names: Any, file_type: str
) -> Iterator[tuple[str, Any, Any]]:
    """(GGUF name, array, raw GGML type or None) of every tensor, in file order."""
    import gguf
    import torch
    from safetensors import safe_open

    scaling = _rope_scaling(config)
    if scaling is not None and (scaling.get("rope_type") or scaling.get("type")) == "llama3":
        yield "rope_freqs.weight", _llama3_rope_factors(config, scaling), None
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    for path in _weight_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            for hf_name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if hf_name.endswith("rotary_emb.inv_freq"):
                    continue
                name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise UnsupportedModelError(
                        f"Tensor {hf_name!r} has no GGUF counterpart for {arch}.", param="model"
                    )
                tensor = f.get_tensor(hf_name).to(torch.float32)
                if arch == "llama" and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
                    n = heads if "q_proj" in hf_name else kv_heads
                    tensor = _interleave_rope_rows(tensor, n)
                yield (name, *_encode(tensor, file_type, gguf))


def _interleave_rope_rows(weight: Any, n_heads: int) -> Any:
    """Reorder each head's rows from (first half, second half) to pairs (0, d/2), (1, d/2+1),
    …: the rotation llama.cpp's `llama` architecture applies."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _encode(tensor: Any, file_type: str, gguf: Any) -> tuple[Any, Any]:
    """The tensor as the file stores it: 1-D tensors float32, the rest in `file_type`."""
    import torch

    if tensor.ndim <= 1 or file_type == "f32":
        return tensor.numpy(), None
    if file_type == "f16":
        return tensor.to(torch.float16).numpy(), None
    # bfloat16: numpy has no such type; the raw 16-bit patterns go in with their GGML type.
    bits = tensor.to(torch.bfloat16).view(torch.int16).numpy().view("uint8")
    return bits, gguf.GGMLQuantizationType.BF16


# -- tokenizer ---------------------------------------------------------------------------------


def read_vocabulary(
    model_dir: Path, config: dict[str, Any], chat_template: str | None
) -> Vocabulary:
    """The tokenizer of `model_dir` (`tokenizer.json`, a byte-level BPE) as GGUF keys."""
    from transformers import AutoTokenizer

    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise UnsupportedModelError(
            "GGUF export needs the model's tokenizer.json (a fast tokenizer).", param="model"
        )
    spec = json.loads(path.read_text(encoding="utf-8"))
    model = spec["model"]
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise UnsupportedModelError(
            "GGUF export supports byte-level BPE tokenizers (Llama 3, Qwen2 and the like); "
            "this one is a "
            + ("SentencePiece-style BPE" if model.get("byte_fallback") else str(model.get("type")))
            + " tokenizer.",
            param="model",
        )
    pre = _pre_tokenizer_name(spec.get("pre_tokenizer"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    n_rows = int(config["vocab_size"])
    tokens: list[str | None] = [None] * max(n_rows, len(tokenizer))
    types = [gguf_token_type("normal")] * len(tokens)
    for text, index in model["vocab"].items():
        tokens[index] = text
    for added in spec.get("added_tokens", []):
        index = added["id"]
        tokens[index] = added["content"]
        types[index] = gguf_token_type("control" if added.get("special") else "user_defined")
    for index, text in enumerate(tokens):
        if text is None:
            tokens[index] = f"[PAD{index}]"
            types[index] = gguf_token_type("unused")
    if len(tokens) > n_rows:
        raise UnsupportedModelError(
            f"The tokenizer has {len(tokens)} tokens but the model's embedding only "
            f"{n_rows} rows.",
            param="model",
        )
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    special_ids = {
        role: int(getattr(tokenizer, f"{role}_token_id"))
        for role in ("bos", "eos", "pad", "unk")
        if getattr(tokenizer, f"{role}_token_id", None) is not None
    }
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    add_bos = tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]
    return Vocabulary(
        model="gpt2",
        pre=pre,
        tokens=[t for t in tokens if t is not None],
        types=types,
        merges=merges,
        special_ids=special_ids,
        add_bos=add_bos,
        chat_template=chat_template,
    )


def gguf_token_type(kind: str) -> int:
    import gguf

    return int(
        {
            "normal": gguf.TokenType.NORMAL,
            "control": gguf.TokenType.CONTROL,
            "user_defined": gguf.TokenType.USER_DEFINED,
            "unused": gguf.TokenType.UNUSED,
        }[kind]
    )


def _pre_tokenizer_name(pre: dict[str, Any] | None) -> str:
    """llama.cpp's name for how the tokenizer splits text before BPE, or
    UnsupportedModelError."""
    if pre is None:
        raise UnsupportedModelError("The tokenizer has no pre-tokenizer.", param="model")
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    if pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers", [])
        splits = [s for s in steps if s.get("type") == "Split"]
        byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
        if len(splits) == 1 and len(byte_level) == 1 and not byte_level[0].get("use_regex"):
            pattern = splits[0].get("pattern", {}).get("Regex")
            if pattern in SPLIT_PATTERNS:
                return SPLIT_PATTERNS[pattern]
    raise UnsupportedModelError(
        "The tokenizer splits text in a way llama.cpp has no name for; a GGUF file would "
        "tokenize differently from the model, so it is not written.",
        param="model",
    )


def _add_vocabulary(writer: Any, vocab: Vocabulary) -> None:
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    for role, index in vocab.special_ids.items():
        getattr(writer, f"add_{role}_token_id")(index)
    writer.add_add_bos_token(vocab.add_bos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
