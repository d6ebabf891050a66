"""Writing an imported model's folder: a GGUF file de-quantized into safetensors, or a Hugging
Face folder copied, with the record of where it came from (its provenance).

Both write into a staging folder beside the target and rename it into place only when every
file is written, so a failure (a damaged file, memory, disk) leaves nothing behind. This is the
function the job process runs (tuneforge.imports.run) and the one the tests build SmolLM2's
folder with.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge.errors import InvalidRequestError, ModelExistsError, VerificationError
from tuneforge.export.pretokenizer import KNOWN_SPLITS, SINGLE_DIGIT_GPT2
from tuneforge.export.pretokenizer import PROBE as SPLIT_PROBE
from tuneforge.imports.gguf_header import read_header
from tuneforge.registry.models import PICKLE_SUFFIXES, check_model_files, snapshot_or_self
from tuneforge.serving.loading import model_kind

# A text that meets the tokenizer's byte fallback, digits, whitespace runs and chat markup:
# the written tokenizer must split it exactly as the GGUF's own does.
PROBE = "Hello, world! 1234 ümlaut  spaced\n\tout <|im_start|>user\nWhat is 2+2?<|im_end|>"
# llama.cpp's pre-tokenizers that split GPT-2's way with every digit on its own (transformers'
# GGUF reader writes plain GPT-2 for them), and the ones with a split pattern of their own.
SINGLE_DIGIT_PRE = frozenset(SINGLE_DIGIT_GPT2)
SPLIT_PRE = {name: pattern for pattern, name in KNOWN_SPLITS.items()}
# Files a copied folder never takes: code, pickles, training state, GGUF files beside it.
NOT_COPIED = ("*.py", ".*", "checkpoint-*", "*.gguf", *(f"*{s}" for s in PICKLE_SUFFIXES))

Note = Callable[[str], None]


def _quiet(message: str) -> None:
    """A `note` that keeps the stages to itself."""


def import_model(
    source: Path, target: Path, *, label: str | None = None, note: Note = _quiet
) -> dict[str, Any]:
    """Write the model at `source` (a GGUF file, or a Hugging Face folder) as a model folder at
    `target`, which must not exist; returns its provenance. `label`: the source's name as the
    user knows it (an uploaded file is stored under its id). `note` hears each stage."""
    if target.exists():
        raise ModelExistsError(f"{target.name!r} exists already.", param="name")
    staging = target.parent / f".staging-{target.name}-{uuid.uuid4().hex[:8]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if source.is_dir():
            provenance = _copy_folder(snapshot_or_self(source), staging, label or source.name, note)
        else:
            provenance = _dequantize(source, staging, label or source.name, note)
        try:
            os.rename(staging, target)  # fails where the target appeared meanwhile
        except OSError as exc:
            raise ModelExistsError(f"{target.name!r} exists already.", param="name") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return provenance


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- GGUF --------------------------------------------------------------------------------------


def _dequantize(gguf: Path, staging: Path, label: str, note: Note) -> dict[str, Any]:
    """The GGUF file's weights in its own float type (bf16 if quantized), its tokenizer, chat
    template and generation config, saved as a transformers folder in `staging`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    header = read_header(gguf, label)
    note(
        f"{label}: {header.architecture}, {header.file_type}, {header.parameters:,} values; "
        f"writing {header.dtype} safetensors."
    )
    digest = sha256_of(gguf)
    # transformers finds the file by name in a folder, and wants the name to end in .gguf.
    source_dir = staging.with_name(staging.name + "-source")
    source_dir.mkdir()
    try:
        linked = source_dir / "model.gguf"
        linked.symlink_to(gguf.resolve())
        tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=linked.name)
        model: Any = AutoModelForCausalLM.from_pretrained(
            source_dir, gguf_file=linked.name, dtype=getattr(torch, header.dtype)
        )
    finally:
        shutil.rmtree(source_dir, ignore_errors=True)
    # A model read from GGUF carries its quantization config, and save_pretrained refuses it.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    parameters = model.num_parameters()
    model_type = model.config.model_type
    model.save_pretrained(staging, safe_serialization=True)
    del model
    _match_llama_cpp(tokenizer, gguf, header.pre_tokenizer, label)
    tokenizer.save_pretrained(staging)
    _check_tokenizer(tokenizer, staging)
    note(f"Wrote {_mib(staging):.1f} MiB: {parameters:,} parameters in {header.dtype}.")
    return {
        "format": "gguf",
        "file_name": label,
        "sha256": digest,
        "bytes": gguf.stat().st_size,
        "quantization": header.file_type,
        "pre_tokenizer": header.pre_tokenizer,
        "tensor_types": header.tensor_types,
        "architecture": header.architecture,
        "model_type": model_type,
        "dtype": header.dtype,
        "parameters": parameters,
    }


def _match_llama_cpp(tokenizer: Any, gguf: Path, pre: str | None, label: str) -> None:
    """Make `tokenizer` (transformers' reading of the GGUF) split text as llama.cpp splits it
    under the file's pre-tokenizer, or refuse the file. transformers reads every GPT-2-style
    BPE with GPT-2's split, which loses e.g. SmolLM2's one-digit-at-a-time numbers; the file's
    `tokenizer.ggml.pre` names the split, and llama.cpp itself is the judge."""
    import llama_cpp

    gguf_model = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    try:
        want = list(gguf_model.tokenize(SPLIT_PROBE.encode("utf-8"), add_bos=False))
    finally:
        gguf_model.close()
    if _ids(tokenizer) == want:
        return
    if tokenizer.backend_tokenizer.model.__class__.__name__ == "BPE" and pre is not None:
        _set_split(tokenizer, pre)
        if _ids(tokenizer) == want:
            return
    raise VerificationError(
        f"{label}: transformers reads this file's tokenizer (pre-tokenizer {pre!r}) so that "
        "it splits text differently from llama.cpp; a model trained on that reading would not "
        "match the file, so it is not imported."
    )


def _ids(tokenizer: Any) -> list[int]:
    return list(tokenizer(SPLIT_PROBE, add_special_tokens=False)["input_ids"])


def _set_split(tokenizer: Any, pre: str) -> None:
    """Give the byte-level BPE `tokenizer` the split llama.cpp's pre-tokenizer `pre` makes."""
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pre not in SPLIT_PRE)
    if pre in SINGLE_DIGIT_PRE:
        steps = [pre_tokenizers.Digits(individual_digits=True), byte_level]
    elif pre in SPLIT_PRE:
        split = pre_tokenizers.Split(Regex(SPLIT_PRE[pre]), behavior="isolated", invert=False)
        steps = [split, byte_level]
    else:
        return
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)


def _check_tokenizer(original: Any, folder: Path) -> None:
    """The written tokenizer must split PROBE as the GGUF's tokenizer does."""
    from transformers import AutoTokenizer

    written = AutoTokenizer.from_pretrained(folder)
    want, got = original(PROBE).input_ids, written(PROBE).input_ids
    if want != got:
        raise VerificationError(
            f"The written tokenizer splits a probe text into {len(got)} tokens where the "
            f"GGUF file's splits it into {len(want)}."
        )


# -- Hugging Face folder ---------------------------------------------------------------------


def check_folder(folder: Path, label: str) -> str:
    """The kind of model the Hugging Face folder holds, or an error saying why it cannot be
    imported: code of its own, pickled weights, no safetensors, no kind tuneforge serves."""
    folder = snapshot_or_self(folder)
    if not (folder / "config.json").is_file() and not (folder / "modules.json").is_file():
        raise InvalidRequestError(
            f"{label} is neither a GGUF file nor a Hugging Face model folder (no config.json).",
            param="path",
        )
    check_model_files(folder, label)
    if not any(folder.rglob("*.safetensors")):
        raise InvalidRequestError(
            f"{label} has no safetensors weights (model.safetensors or shards).", param="path"
        )
    kind = model_kind(folder)
    if kind is None:
        raise InvalidRequestError(
            f"{label} holds no model tuneforge can use: config.json names no *ForCausalLM or "
            "*ForSequenceClassification architecture, and it is no sentence-transformers "
            "folder.",
            param="path",
        )
    return kind


def _copy_folder(folder: Path, staging: Path, label: str, note: Note) -> dict[str, Any]:
    """The folder's files as they are (so its dtype is kept), without code or pickles."""
    kind = check_folder(folder, label)
    shutil.copytree(folder, staging, ignore=shutil.ignore_patterns(*NOT_COPIED))
    config = (
        json.loads((staging / "config.json").read_text())
        if (staging / "config.json").is_file()
        else {}
    )
    weights = sorted(staging.rglob("*.safetensors"))
    parameters, dtypes = _safetensors_contents(weights)
    dtype = (
        config.get("dtype")
        or config.get("torch_dtype")
        or (dtypes[0] if len(dtypes) == 1 else None)
    )
    note(f"Copied {label}: {kind}, {parameters:,} parameters ({dtype or 'mixed types'}).")
    return {
        "format": "huggingface",
        "file_name": label,
        "sha256": None,
        "bytes": sum(p.stat().st_size for p in staging.rglob("*") if p.is_file()),
        "quantization": None,
        "tensor_types": None,
        "architecture": (config.get("architectures") or [None])[0],
        "model_type": config.get("model_type"),
        "dtype": dtype,
        "parameters": parameters,
        "files": [
            {
                "name": p.relative_to(staging).as_posix(),
                "bytes": p.stat().st_size,
                "sha256": sha256_of(p),
            }
            for p in weights
        ],
    }


def _safetensors_contents(files: list[Path]) -> tuple[int, list[str]]:
    """Values over all tensors of the files, and their dtypes (torch names), from headers."""
    from safetensors import safe_open

    count, dtypes = 0, set()
    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
    for path in files:
        with safe_open(str(path), framework="numpy") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                piece = f.get_slice(key)
                size = 1
                for dim in piece.get_shape():
                    size *= dim
                count += size
                dtypes.add(names.get(piece.get_dtype(), piece.get_dtype().lower()))
    return count, sorted(dtypes)


def _mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
