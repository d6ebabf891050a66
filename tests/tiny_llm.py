"""Tiny causal language models for the tests, built on the spot: nothing is downloaded.

A byte-level BPE tokenizer is trained on a few hundred sentences, and a Qwen2- or
Llama-architecture model of two layers is initialised from a config and saved with it as
safetensors. `tiny-qwen2` has ChatML as its chat template (markers are special tokens, the
end-of-turn token is its eos); `tiny-llama` has no chat template, so tuneforge's ChatML
fallback renders its conversations. `install_in_hf_cache` lays one into the offline Hugging
Face cache that the tests use, so the product finds it by its Hub id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

QWEN = "tuneforge-test/tiny-qwen2"
LLAMA = "tuneforge-test/tiny-llama"
REVISION = "0000000000000000000000000000000000000002"

CHATML = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)

# What the tokenizer learns its merges from: the kind of text the tests train on.
CORPUS = [
    "Write a short post about our new product.",
    "Schreibe einen kurzen Beitrag über unser neues Produkt.",
    "Which hashtags fit a post about machine learning?",
    "Welche Hashtags passen zu einem Beitrag über maschinelles Lernen?",
    "You are a helpful assistant for social media marketing.",
    "Du bist ein hilfreicher Assistent für Social-Media-Marketing.",
    '{"post": "Our new product is here.", "hashtags": ["#launch", "#product"]}',
    '{"sentiment": "positive", "score": 0.9, "language": "en"}',
    '{"frame": "Conflict"} {"frame": "Economic"} {"frame": "Moral Value"}',
    "The quick brown fox jumps over the lazy dog. Der schnelle braune Fuchs springt.",
    "Good morning! Guten Morgen! Thank you. Danke schön. Yes, no, maybe.",
    "0123456789 + - * / = ( ) [ ] { } : ; , . ! ? ' \" # @ & % $",
]


def train_tokenizer(arch: str) -> Any:
    """A byte-level BPE tokenizer (a transformers `PreTrainedTokenizerFast`) of 400 tokens,
    with the special tokens of `arch`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if arch == "qwen2":
        special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    else:
        special = ["<s>", "</s>", "<unk>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS * 4, trainer=trainer)
    if arch == "qwen2":
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=bpe,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            additional_special_tokens=["<|im_start|>"],
        )
        tokenizer.chat_template = CHATML
    else:
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
        )
    return tokenizer


def build_tiny_llm(folder: Path, arch: str = "qwen2", seed: int = 0, **overrides: int) -> Path:
    """Save a tiny randomly initialised causal LM of `arch` (qwen2 or llama) and its
    tokenizer into `folder`; returns `folder`. `overrides` change config sizes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tokenizer = train_tokenizer(arch)
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
        tie_word_embeddings=False,
    )
    sizes.update(overrides)
    torch.manual_seed(seed)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**sizes))
    else:
        model = LlamaForCausalLM(LlamaConfig(**sizes))
    # A freshly initialised output head is nearly flat (logits of about +-0.2); a trained
    # model's is not. A sharper one lets adapters on the layers below it learn in a few steps.
    with torch.no_grad():
        model.lm_head.weight.mul_(10)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def install_in_hf_cache(hf_home: Path, repo_id: str) -> Path:
    """Build the tiny model `repo_id` (QWEN or LLAMA) into the Hugging Face cache under
    `hf_home`, as a download would have left it; returns its snapshot folder."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    if not (snapshot / "config.json").is_file():
        build_tiny_llm(snapshot, "qwen2" if repo_id == QWEN else "llama")
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(REVISION)
    return snapshot


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


@contextmanager
def one_thread_jobs() -> Iterator[None]:
    """Job processes compute on one thread each while this is open (set it before a module's
    server starts: the server passes its environment on)."""
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = threads
