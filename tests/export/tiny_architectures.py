"""Tiny causal LMs of the architectures beyond Llama and Qwen2 (Qwen3, Gemma 2, Gemma 3 text,
Phi-3), built from a config with random weights and the tests' byte-level BPE tokenizer, for
checking the GGUF converter against transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.tiny_llm import train_tokenizer

ARCHITECTURES = ("qwen3", "gemma2", "gemma3", "phi3")


def _model(arch: str, sizes: dict[str, Any]) -> Any:
    import transformers as t

    head_dim = 16
    if arch == "qwen3":
        return t.Qwen3ForCausalLM(t.Qwen3Config(**sizes, head_dim=head_dim))
    if arch == "gemma2":
        return t.Gemma2ForCausalLM(
            t.Gemma2Config(
                **sizes,
                head_dim=head_dim,
                query_pre_attn_scalar=head_dim,
                sliding_window=512,
                attn_logit_softcapping=50.0,
                final_logit_softcapping=30.0,
            )
        )
    if arch == "gemma3":
        # Six layers: five sliding-window layers (rope base 10,000) and one global layer
        # (rope base 1,000,000), Gemma 3's pattern.
        return t.Gemma3ForCausalLM(
            t.Gemma3TextConfig(
                **dict(sizes, num_hidden_layers=6),
                head_dim=head_dim,
                query_pre_attn_scalar=head_dim,
                sliding_window=512,
            )
        )
    return t.Phi3ForCausalLM(t.Phi3Config(**sizes))


def build_tiny_architecture(folder: Path, arch: str, seed: int = 0) -> Path:
    """Save a tiny randomly initialised `arch` model with a ChatML tokenizer in `folder`."""
    import torch

    tokenizer = train_tokenizer("qwen2")
    if arch == "phi3":
        # llama.cpp reads a Phi-3 vocabulary only with Phi's chat tokens in it.
        tokenizer.add_special_tokens(
            {"additional_special_tokens": ["<|im_start|>", "<|end|>", "<|user|>", "<|assistant|>"]}
        )
    sizes = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = _model(arch, sizes)
    with torch.no_grad():  # a sharper output head, as in tests/tiny_llm.py
        model.lm_head.weight.mul_(10)
        if arch.startswith("gemma"):
            # Gemma's norms start at 0 (they multiply by 1 + weight): give them a shape, so
            # that a norm written without its +1 shows.
            for name, parameter in model.named_parameters():
                if name.endswith("norm.weight"):
                    parameter.uniform_(-0.5, 0.5)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
