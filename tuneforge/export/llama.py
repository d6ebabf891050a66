"""llama.cpp through llama-cpp-python: quantizing a GGUF file, and loading one to tokenize and
generate greedily, as Ollama and llama.cpp's own tools will."""

from __future__ import annotations

import ctypes
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuneforge.errors import QuantizationError, TuneforgeError

# Quantizations llama.cpp makes from an f16/bf16/f32 file (names as users know them).
QUANTIZED = (
    "q8_0",
    "q6_k",
    "q5_k_m",
    "q5_k_s",
    "q5_0",
    "q5_1",
    "q4_k_m",
    "q4_k_s",
    "q4_0",
    "q4_1",
    "q3_k_l",
    "q3_k_m",
    "q3_k_s",
    "q2_k",
)


def quantize(source: Path, target: Path, quantization: str) -> None:
    """Write `source` (an f16/bf16/f32 GGUF file) quantized as `quantization` to `target`."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quantization.upper()}")
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(target).encode(), ctypes.byref(params)
    )
    if status != 0 or not target.is_file():
        raise QuantizationError(f"llama.cpp could not quantize to {quantization} ({status}).")


def tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of the GGUF file are stored in each type (k-quants fall back to other
    types for tensors whose rows are not a multiple of 256)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return dict(Counter(t.tensor_type.name.lower() for t in reader.tensors))


@contextmanager
def plain_cpu_buffers() -> Iterator[None]:
    """While open, llama.cpp models load without its "extra" CPU buffer types: the AMX kernels
    (Intel Sapphire Rapids and newer) and the repacked layouts. Measured on a Xeon with AMX:
    decoding a q8_0 or q4_k_m file of the tests' tiny models (hidden size 64) crashed the
    process in llama.cpp's AMX matmul; without the extra buffers it runs, here and on CPUs
    without AMX alike. The check compares answers; the plain CPU kernels suffice for it.
    llama-cpp-python's `Llama` offers no option for it: its model parameters are taken from
    `llama_model_default_params`, wrapped here."""
    import llama_cpp.llama_cpp as low

    original = low.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        low.llama_model_default_params = original


class LoadedGGUF:
    """A GGUF file loaded in llama.cpp on the CPU."""

    def __init__(self, path: Path, context: int = 2048):
        from llama_cpp import Llama

        with plain_cpu_buffers():
            self.llm = Llama(
                model_path=str(path),
                n_ctx=context,
                n_threads=os.cpu_count() or 1,
                n_gpu_layers=0,
                verbose=False,
            )

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` as llama.cpp reads a rendered prompt: special tokens parsed, no
        BOS added (the chat template writes its own)."""
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def greedy(self, ids: list[int], max_tokens: int) -> list[int]:
        """Up to `max_tokens` greedily chosen tokens after `ids`, ending at an end-of-generation
        token (which is included)."""
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        out: list[int] = []
        for token in self.llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
            out.append(int(token))
            if llama_cpp.llama_vocab_is_eog(vocab, token) or len(out) >= max_tokens:
                break
        return out

    def is_end_of_generation(self, token: int) -> bool:
        """Whether llama.cpp ends a generation at `token` (eos, end of turn and the like)."""
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        return bool(llama_cpp.llama_vocab_is_eog(vocab, token))

    def close(self) -> None:
        self.llm.close()


@contextmanager
def loaded(path: Path) -> Iterator[LoadedGGUF]:
    model = LoadedGGUF(path)
    try:
        yield model
    finally:
        model.close()


def check_available() -> Any:
    """llama_cpp, or an error saying how to install it."""
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - a dependency of tuneforge
        raise TuneforgeError(
            "GGUF export needs llama-cpp-python: pip install llama-cpp-python."
        ) from exc
    return llama_cpp
