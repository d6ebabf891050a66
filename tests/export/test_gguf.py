"""GGUF conversion and its checks, without the server: tiny Qwen2 and Llama models written by
our converter, loaded by the real llama.cpp (llama-cpp-python), compared with transformers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.tiny_llm import CHATML, build_tiny_llm, train_tokenizer
from tuneforge.errors import TemplateError, UnsupportedModelError, VerificationError
from tuneforge.export import gguf_convert, llama, modelfile
from tuneforge.export.verify import (
    MIN_AGREEMENT,
    Reference,
    min_agreement,
    repetition_loop,
    verify_gguf,
)

PROMPT = [{"role": "user", "content": "Write a short post about our new product."}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_llm(root / arch, arch) for arch in ("qwen2", "llama")}


def _tokenizer(folder: Path):
    from tuneforge.training.llm import load_chat_tokenizer

    return load_chat_tokenizer(str(folder))


def _convert(folder: Path, out: Path, file_type: str) -> Path:
    gguf_convert.convert(
        folder, out, file_type, name=folder.name, chat_template=_tokenizer(folder).chat_template
    )
    return out


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("file_type", ["f32", "f16", "bf16"])
def test_llama_cpp_generates_what_transformers_generates(
    tiny: dict[str, Path], tmp_path: Path, arch: str, file_type: str
) -> None:
    folder = tiny[arch]
    path = _convert(folder, tmp_path / f"{arch}.gguf", file_type)
    tokenizer = _tokenizer(folder)
    shape = modelfile.chat_shape(tokenizer)
    reference = Reference.load(folder, tokenizer, file_type, shape.stops)
    report = verify_gguf(
        path,
        reference,
        [PROMPT, [{"role": "user", "content": "Guten Morgen! Danke schön."}]],
        modelfile.go_template(shape),
        file_type=file_type,
        max_tokens=24,
    )
    assert report["identical"] and report["token_agreement"] == 1.0
    # The generations are real continuations, not empty ones.
    assert all(s["reference_tokens"] >= 5 for s in report["samples"])


def test_the_file_holds_the_tokenizer_and_hyperparameters(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    import gguf

    folder = tiny["qwen2"]
    reader = gguf.GGUFReader(str(_convert(folder, tmp_path / "q.gguf", "f16")))

    def value(key: str):
        field = reader.fields[key]
        return field.contents()

    config = json.loads((folder / "config.json").read_text())
    tokenizer = _tokenizer(folder)
    assert value("general.architecture") == "qwen2"
    assert value("qwen2.block_count") == config["num_hidden_layers"]
    assert value("qwen2.embedding_length") == config["hidden_size"]
    assert value("tokenizer.ggml.model") == "gpt2"
    # transformers runs this tokenizer with Qwen2's split (digits one by one), whatever
    # tokenizer.json says: the name comes from how it tokenizes.
    assert value("tokenizer.ggml.pre") == "qwen2"
    assert value("tokenizer.ggml.tokens")[: len(tokenizer)] == [
        tokenizer.convert_ids_to_tokens(i) for i in range(len(tokenizer))
    ]
    assert value("tokenizer.ggml.eos_token_id") == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert value("tokenizer.chat_template") == CHATML
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.attn_q.weight"] == "F16"


def _quantized(folder: Path, tmp_path: Path, quantization: str) -> Path:
    source = _convert(folder, tmp_path / "f16.gguf", "f16")
    target = tmp_path / f"{quantization}.gguf"
    llama.quantize(source, target, quantization)
    assert target.stat().st_size < source.stat().st_size
    types = llama.tensor_types(target)
    assert set(types) - {"f32", "f16"}, types  # the weights really are quantized
    return target


def _verify_quantized(folder: Path, path: Path, quantization: str) -> dict:
    tokenizer = _tokenizer(folder)
    shape = modelfile.chat_shape(tokenizer)
    return verify_gguf(
        path,
        Reference.load(folder, tokenizer, "f16", shape.stops),
        [PROMPT, [{"role": "user", "content": "Guten Morgen! Danke schön."}]],
        modelfile.go_template(shape),
        file_type=quantization,
        max_tokens=16,
    )


def test_a_q8_0_file_passes_with_its_agreement_measured(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    folder = tiny["llama"]
    report = _verify_quantized(folder, _quantized(folder, tmp_path, "q8_0"), "q8_0")
    assert report["min_agreement"] == MIN_AGREEMENT["q8_0"]
    assert MIN_AGREEMENT["q8_0"] <= report["token_agreement"] <= 1.0
    assert all(s["gguf"] for s in report["samples"])  # it generates


def test_a_broken_quantized_file_fails_the_export(tiny: dict[str, Path], tmp_path: Path) -> None:
    """4-bit weights of a 64-wide random model: what llama.cpp generates loops or drifts
    away at once, and the check says so instead of reporting a number."""
    folder = tiny["llama"]
    path = _quantized(folder, tmp_path, "q4_k_m")
    with pytest.raises(VerificationError, match="repetition loop|below the"):
        _verify_quantized(folder, path, "q4_k_m")


def test_repetition_loops_are_recognised() -> None:
    edition = [11, 12]  # "limited edition"
    assert repetition_loop([5, 6, 7] + edition * 7)
    assert repetition_loop([1] * 12)
    assert repetition_loop([9, 8] + [1, 2, 3, 4, 5] * 3)
    assert not repetition_loop([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
    assert not repetition_loop([5, 6, 7] + edition * 2)  # twice is not a loop
    assert not repetition_loop([1] * 8)  # too short to tell


def test_thresholds_are_exact_for_16_bit_files_and_fall_with_the_bits() -> None:
    assert min_agreement("f16") == min_agreement("bf16") == min_agreement("f32") == 1.0
    order = ["q8_0", "q6_k", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k"]
    bounds = [min_agreement(q) for q in order]
    assert bounds == sorted(bounds, reverse=True) and bounds[-1] > 0
    assert set(MIN_AGREEMENT) == set(llama.QUANTIZED)


def test_k_quants_apply_where_rows_are_multiples_of_256(tmp_path: Path) -> None:
    """The tiny models' 64-wide rows take llama.cpp's fallback types; 256-wide rows take the
    k-quants themselves (q4_k_m: q4_K, with q6_K for some tensors)."""
    folder = build_tiny_llm(tmp_path / "wide", "llama", hidden_size=256, intermediate_size=512)
    source = _convert(folder, tmp_path / "wide-f16.gguf", "f16")
    target = tmp_path / "wide-q4_k_m.gguf"
    llama.quantize(source, target, "q4_k_m")
    types = llama.tensor_types(target)
    assert types.get("q4_k", 0) > 0 and types.get("q6_k", 0) > 0, types
    with llama.loaded(target) as model:
        assert model.greedy(model.tokenize("Guten Morgen!"), 8)


def test_a_file_of_other_weights_fails_the_check(tiny: dict[str, Path], tmp_path: Path) -> None:
    other = build_tiny_llm(tmp_path / "other", "qwen2", seed=1)
    path = _convert(other, tmp_path / "other.gguf", "f16")
    folder = tiny["qwen2"]
    tokenizer = _tokenizer(folder)
    shape = modelfile.chat_shape(tokenizer)
    with pytest.raises(VerificationError, match="greedy output differs"):
        verify_gguf(
            path,
            Reference.load(folder, tokenizer, "f16", shape.stops),
            [PROMPT],
            modelfile.go_template(shape),
            file_type="f16",
            max_tokens=24,
        )


def test_a_template_that_renders_differently_fails_the_check(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    folder = tiny["qwen2"]
    path = _convert(folder, tmp_path / "q.gguf", "f16")
    tokenizer = _tokenizer(folder)
    shape = modelfile.chat_shape(tokenizer)
    broken = modelfile.go_template(shape).replace("<|im_start|>assistant\n", "<|im_start|>bot\n")
    with pytest.raises(VerificationError, match="TEMPLATE renders"):
        verify_gguf(
            path,
            Reference.load(folder, tokenizer, "f16", shape.stops),
            [PROMPT],
            broken,
            file_type="f16",
            max_tokens=8,
        )


def test_unsupported_models_are_refused_with_the_reason(
    tiny: dict[str, Path], tmp_path: Path, offline_hub: Path
) -> None:
    bert = next(
        (offline_hub / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2").glob(
            "snapshots/*"
        )
    )
    with pytest.raises(UnsupportedModelError, match="BertModel"):
        gguf_convert.gguf_architecture(bert)
    # A tokenizer that splits text in a way llama.cpp has no name for (a Llama-family one:
    # transformers runs it with the pre-tokenizer of its tokenizer.json).
    folder = tmp_path / "odd"
    build_tiny_llm(folder, "llama")
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(UnsupportedModelError, match="no name for") as error:
        gguf_convert.convert(folder, tmp_path / "odd.gguf", "f16", name="odd", chat_template=None)
    assert "no llama.cpp pre-tokenizer tokenizes a probe text" in str(error.value)
    assert "closest" in str(error.value)


def test_llama3_rope_scaling_becomes_rope_frequency_divisors() -> None:
    config = {"hidden_size": 128, "num_attention_heads": 2, "rope_theta": 500000.0}
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    factors = gguf_convert._llama3_rope_factors(config, scaling)
    assert factors.shape == (32,)
    assert factors[0] == 1.0  # the fastest rotation is kept
    assert factors[-1] == 8.0  # the slowest is stretched by the full factor
    assert all(a <= b for a, b in zip(factors, factors[1:], strict=False))
    assert all(1.0 <= f <= 8.0 and math.isfinite(f) for f in factors)


# -- Modelfile templates -----------------------------------------------------------------------

# Chat formats as the model families write them (Jinja, as in their tokenizer configs).
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
    "'<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
QWEN25 = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + "
    "'<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
    "{{ '[INST] ' + m['content'] + ' [/INST]' }}{% elif m['role'] == 'assistant' %}"
    "{{ m['content'] + eos_token }}{% else %}{{ raise_exception('no system role') }}{% endif %}"
    "{% endfor %}"
)
LLAMA2_SYSTEM_IN_USER = (
    "{% for m in messages %}{% if loop.index0 == 0 and m['role'] == 'system' %}"
    "{% set s = m['content'] %}{% elif m['role'] == 'user' %}"
    "{{ '[INST] ' + (('<<SYS>>' + s + '<</SYS>> ') if s is defined else '') + m['content'] + "
    "' [/INST]' }}{% else %}{{ m['content'] }}{% endif %}{% endfor %}"
)
CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Why?"},
    ],
]


@pytest.mark.parametrize(
    ("template", "arch", "stop"),
    [
        (CHATML, "qwen2", "<|im_end|>"),
        (LLAMA3, "llama", "</s>"),
        (QWEN25, "qwen2", "<|im_end|>"),
        (MISTRAL, "llama", "</s>"),
    ],
    ids=["chatml", "llama3", "qwen2.5-default-system", "mistral-no-system"],
)
def test_the_modelfile_template_renders_what_the_chat_template_renders(
    template: str, arch: str, stop: str
) -> None:
    tokenizer = train_tokenizer(arch)
    tokenizer.chat_template = template
    shape = modelfile.chat_shape(tokenizer)
    go = modelfile.go_template(shape)
    checked = 0
    for conversation in CONVERSATIONS:
        if template is MISTRAL and conversation[0]["role"] == "system":
            continue
        want = tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )
        assert modelfile.render_template(go, conversation) == want
        checked += 1
    assert checked >= 2
    assert stop in shape.stops
    text = modelfile.modelfile("m.gguf", go, shape.stops, "Be nice.")
    assert text.startswith('FROM ./m.gguf\nTEMPLATE """')
    assert 'SYSTEM """Be nice."""' in text and f'PARAMETER stop "{stop}"' in text


def test_a_template_ollama_cannot_express_is_refused() -> None:
    tokenizer = train_tokenizer("llama")
    tokenizer.chat_template = LLAMA2_SYSTEM_IN_USER
    with pytest.raises(TemplateError, match="folds the system prompt"):
        modelfile.chat_shape(tokenizer)


def test_bos_left_to_llama_cpp_is_dropped_from_the_template() -> None:
    tokenizer = train_tokenizer("llama")
    tokenizer.chat_template = LLAMA3
    shape = modelfile.chat_shape(tokenizer)
    go = modelfile.go_template(shape, drop_bos="<s>")
    assert not go.startswith("<s>")
    want = tokenizer.apply_chat_template(
        CONVERSATIONS[0], tokenize=False, add_generation_prompt=True
    )
    assert "<s>" + modelfile.render_template(go, CONVERSATIONS[0]) == want
