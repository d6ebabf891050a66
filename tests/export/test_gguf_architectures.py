"""The GGUF converter beyond Llama and Qwen2, and pre-tokenizers found by behaviour: tiny
Qwen3, Gemma 2, Gemma 3 and Phi-3 models written by our converter generate in llama.cpp what
they generate in transformers; SmolLM2's real tokenizer gets llama.cpp's name for it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.export.tiny_architectures import ARCHITECTURES, build_tiny_architecture
from tuneforge.errors import UnsupportedModelError, VerificationError
from tuneforge.export import gguf_convert, modelfile
from tuneforge.export.verify import Reference, verify_gguf
from tuneforge.registry.models import cached_snapshot
from tuneforge.serving.generation import cpu_has_bf16
from tuneforge.training.llm import load_chat_tokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "Write a short post about our new product."}],
    [{"role": "user", "content": "Guten Morgen! 12345 Danke schön."}],
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-architectures")
    return {arch: build_tiny_architecture(root / arch, arch) for arch in ARCHITECTURES}


def _export_and_verify(folder: Path, out: Path, file_type: str) -> dict:
    tokenizer = load_chat_tokenizer(str(folder))
    shape = modelfile.chat_shape(tokenizer)
    gguf_convert.convert(
        folder,
        out,
        file_type,
        name="tiny",
        chat_template=tokenizer.chat_template,
        stops=shape.stops,
    )
    return verify_gguf(
        out,
        Reference.load(folder, tokenizer, file_type, shape.stops),
        CONVERSATIONS,
        modelfile.go_template(shape),
        file_type=file_type,
        max_tokens=24,
    )


# Without bf16 instructions (AVX2 only), torch emulates bf16 arithmetic, rounding its
# activations differently from llama.cpp's float32 ones; a random tiny model's near-ties then
# part ways within a few tokens (seen on qwen3), whatever the file holds.
NATIVE_BF16 = pytest.mark.skipif(
    not cpu_has_bf16(), reason="this CPU has no bf16 instructions: torch emulates bf16"
)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("file_type", ["f32", pytest.param("bf16", marks=NATIVE_BF16)])
def test_llama_cpp_generates_what_transformers_generates(
    tiny: dict[str, Path], tmp_path: Path, arch: str, file_type: str
) -> None:
    report = _export_and_verify(tiny[arch], tmp_path / f"{arch}.gguf", file_type)
    assert report["identical"] and report["token_agreement"] == 1.0
    assert all(s["reference_tokens"] >= 5 for s in report["samples"])


def test_gemma_norms_written_without_their_offset_would_fail(
    tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check has teeth: Gemma's norms written as they are stored (without the 1 that
    Gemma adds) generate something else, and the export fails."""
    monkeypatch.setattr(gguf_convert, "_gemma_norm", lambda weight: weight)
    with pytest.raises(VerificationError, match="differs"):
        _export_and_verify(tiny["gemma2"], tmp_path / "gemma2.gguf", "f32")


def test_the_gemma_files_carry_soft_capping_and_sliding_windows(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    import gguf

    out = tmp_path / "g.gguf"
    _export_and_verify(tiny["gemma3"], out, "f32")
    fields = gguf.GGUFReader(str(out)).fields
    assert fields["gemma3.attention.sliding_window"].contents() == 512
    assert fields["gemma3.attention.sliding_window_pattern"].contents() == [True] * 5 + [False]
    assert fields["gemma3.rope.freq_base_swa"].contents() == 10000.0
    assert fields["tokenizer.ggml.eot_token_id"].contents() == 2  # <|im_end|>
    out2 = tmp_path / "g2.gguf"
    _export_and_verify(tiny["gemma2"], out2, "f32")
    fields = gguf.GGUFReader(str(out2)).fields
    assert fields["gemma2.attn_logit_softcapping"].contents() == 50.0
    assert fields["gemma2.final_logit_softcapping"].contents() == 30.0


def test_a_gemma_query_scale_llama_cpp_does_not_use_is_refused(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "gemma2"
    shutil.copytree(tiny["gemma2"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["query_pre_attn_scalar"] = 144
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="query_pre_attn_scalar 144"):
        gguf_convert.convert(folder, tmp_path / "x.gguf", "f32", name="x", chat_template=None)


# -- pre-tokenizers ----------------------------------------------------------------------------


def _smollm2_with_pre_tokenizer(smollm2: str, folder: Path, pre_tokenizer: dict) -> Path:
    source = cached_snapshot(smollm2)
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, folder / name)
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = pre_tokenizer
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    return folder


def _pre(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    return gguf_convert.read_vocabulary(folder, config, None).pre


def test_smollm2s_tokenizer_gets_llama_cpps_smollm_name(smollm2: str, tmp_path: Path) -> None:
    """SmolLM2's tokenizer as published: every digit on its own, then GPT-2's split."""
    folder = _smollm2_with_pre_tokenizer(
        smollm2,
        tmp_path / "smollm2",
        {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {
                    "type": "ByteLevel",
                    "add_prefix_space": False,
                    "trim_offsets": True,
                    "use_regex": True,
                },
            ],
        },
    )
    assert _pre(folder) == "smollm"


def test_smollm2_as_tuneforge_imports_it_keeps_its_digit_split(smollm2: str) -> None:
    """transformers' GGUF reader leaves out SmolLM2's digits step; tuneforge's import puts it
    back (llama.cpp is the judge), so the imported model splits numbers one digit at a time
    and its export is named `smollm` again."""
    from transformers import AutoTokenizer

    folder = cached_snapshot(smollm2)
    tokens = AutoTokenizer.from_pretrained(folder).tokenize("sold 12345")
    assert tokens[-5:] == ["1", "2", "3", "4", "5"]
    assert _pre(folder) == "smollm"


@pytest.mark.slow
def test_smollm2_f16_export_is_token_identical(smollm2: str, tmp_path: Path) -> None:
    """SmolLM2-135M-Instruct for real (30 layers, 49,152 tokens, tied embeddings, ChatML with
    a default system prompt): the f16 file generates what transformers generates, and llama.cpp
    stops at <|im_end|>. About 70 s on 2 busy cores."""
    report = _export_and_verify(cached_snapshot(smollm2), tmp_path / "smollm2.gguf", "f16")
    assert report["identical"], report["samples"]
    assert report["stops_identical"]
