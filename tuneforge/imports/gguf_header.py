"""What a GGUF file says about itself, read from its header without loading a weight.

The checks an import makes before it converts anything: the file starts with GGUF's magic,
its header parses, every tensor's bytes lie inside the file (a download cut short fails here,
not minutes into a conversion), and transformers can read its architecture.

The precision an import writes follows the file: f32, f16 and bf16 files keep theirs; a
quantized file (q4_k_m, q8_0, …) is de-quantized to bf16, which holds every value a 4- to
8-bit block can express.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import UnsupportedArchitectureError, UnsupportedFileError

MAGIC = b"GGUF"
# Float tensor types, by the torch dtype they are kept in.
FLOAT_TYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
# llama.cpp's spelling of an architecture where transformers spells it otherwise.
LLAMA_CPP_NAMES = {
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "minimax-m2": "minimax_m2",
}
# Readable by transformers, but not as a causal LM (encoder-decoder models).
NOT_CAUSAL = frozenset({"t5", "t5encoder", "umt5"})


@dataclass(frozen=True)
class GGUFHeader:
    """The facts an import needs and records from a GGUF file's header."""

    architecture: str  # as the file names it (general.architecture)
    name: str | None  # general.name
    file_type: str  # general.file_type as llama.cpp names it, e.g. Q4_1, F16, Q4_K_M
    tensor_types: dict[str, int]  # tensor type -> how many tensors have it
    parameters: int  # values over all tensors
    pre_tokenizer: str | None = None  # tokenizer.ggml.pre: how llama.cpp splits text

    @property
    def quantized(self) -> bool:
        return any(kind not in FLOAT_TYPES for kind in self.tensor_types)

    @property
    def dtype(self) -> str:
        """The torch dtype the import writes: the file's own float type, bf16 if quantized.
        Norms are F32 in every file, so the widest type present does not decide it: bf16 or
        f16 weights beside f32 norms are a 16-bit file."""
        if self.quantized:
            return "bfloat16"
        for kind in ("BF16", "F16"):
            if kind in self.tensor_types:
                return FLOAT_TYPES[kind]
        return "float32"


def supported_architectures() -> frozenset[str]:
    """The GGUF architectures (transformers' spelling) that this transformers reads as a
    causal LM: its legacy GGUF table and the architectures of its newer GGUF loader."""
    from transformers.integrations.gguf import GGUF_ARCHS
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    known = set(GGUF_SUPPORTED_ARCHITECTURES) | set(GGUF_ARCHS)
    return frozenset(known - {"general", "tokenizer"} - NOT_CAUSAL)


def transformers_architecture(architecture: str, name: str | None) -> str:
    """The architecture as transformers names it (llama.cpp files Mistral models as llama)."""
    if architecture == "llama" and name and "mistral" in name.lower():
        return "mistral"
    return LLAMA_CPP_NAMES.get(architecture, architecture)


def read_header(path: Path, label: str | None = None) -> GGUFHeader:
    """The header of the GGUF file at `path`, or UnsupportedFileError (not GGUF, damaged or
    truncated) / UnsupportedArchitectureError (an architecture transformers cannot read),
    naming the file as `label` (its name by default)."""
    label = label or path.name
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != MAGIC:
        raise UnsupportedFileError(
            f"{label} is not a GGUF file (it does not start with the bytes 'GGUF').",
            param="file",
        )
    from gguf import GGUFReader, LlamaFileType

    try:
        reader = GGUFReader(path)
        architecture = _string(reader, "general.architecture")
        name = _string(reader, "general.name") if "general.name" in reader.fields else None
        tensors = list(reader.tensors)
        end = max((t.data_offset + int(t.n_bytes) for t in tensors), default=0)
        file_type_value = _scalar(reader, "general.file_type")
        pre = (
            _string(reader, "tokenizer.ggml.pre") if "tokenizer.ggml.pre" in reader.fields else None
        )
    except (ValueError, IndexError, KeyError, EOFError, OSError) as exc:
        raise UnsupportedFileError(
            f"{label} is truncated or damaged: its GGUF header does not parse ({exc}).",
            param="file",
        ) from exc
    size = os.path.getsize(path)
    if not tensors or end > size:
        raise UnsupportedFileError(
            f"{label} is truncated: its tensors need {end} bytes and the file has {size}.",
            param="file",
        )
    types = Counter(t.tensor_type.name for t in tensors)
    if file_type_value is None:
        file_type = types.most_common(1)[0][0]
    else:
        try:
            file_type = LlamaFileType(int(file_type_value)).name
        except ValueError:
            file_type = f"type {int(file_type_value)}"
    header = GGUFHeader(
        architecture=architecture,
        name=name,
        file_type=file_type.removeprefix("MOSTLY_").removeprefix("ALL_"),
        tensor_types=dict(sorted(types.items())),
        parameters=sum(int(t.n_elements) for t in tensors),
        pre_tokenizer=pre,
    )
    check_architecture(header, label)
    return header


def check_architecture(header: GGUFHeader, label: str) -> None:
    """UnsupportedArchitectureError unless transformers reads the file's architecture as a
    causal LM."""
    readable = supported_architectures()
    wanted = transformers_architecture(header.architecture, header.name)
    if wanted in readable:
        return
    if header.architecture in NOT_CAUSAL:
        reason = "an encoder-decoder model, not a causal language model"
    else:
        reason = "an architecture the installed transformers cannot read from GGUF"
    raise UnsupportedArchitectureError(
        f"{label} holds a {header.architecture!r} model, {reason}. Importable GGUF "
        f"architectures: {', '.join(sorted(readable))}.",
        param="file",
    )


def _field(reader: Any, key: str) -> Any:
    field = reader.fields[key]
    return field.parts[field.data[0]]


def _string(reader: Any, key: str) -> str:
    return bytes(_field(reader, key)).decode("utf-8")


def _scalar(reader: Any, key: str) -> int | None:
    if key not in reader.fields:
        return None
    return int(_field(reader, key)[0])
