"""A Hugging Face byte-level BPE tokenizer as GGUF tokenizer keys, and where a turn ends.

What goes into the file: the token list padded to the embedding's rows, token types, merges,
the special-token ids, whether a BOS is added, the pre-tokenizer by llama.cpp's name (found by
behaviour in `pretokenizer.py`), the chat template, and the end-of-turn token (`<|im_end|>`,
`<end_of_turn>`, `<|eot_id|>`, `<|end|>` …) as `tokenizer.ggml.eot_token_id`, so that
llama.cpp and Ollama stop generating where transformers stops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import UnsupportedModelError


@dataclass
class Vocabulary:
    """What the GGUF tokenizer keys hold."""

    model: str  # tokenizer.ggml.model
    pre: str  # tokenizer.ggml.pre
    tokens: list[str]
    types: list[int]
    merges: list[str]
    special_ids: dict[str, int]  # bos, eos, eot, pad, unk -> id
    add_bos: bool
    chat_template: str | None
    # Token ids the model ends a generation with (eos, end of turn): llama.cpp's EOG set.
    stop_ids: list[int] = field(default_factory=list)


def load_fast_tokenizer(model_dir: Path) -> Any:
    """The tokenizer of `model_dir` as transformers runs it, which must be a fast byte-level
    BPE tokenizer; UnsupportedModelError otherwise."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise UnsupportedModelError(
            "GGUF export needs the model's tokenizer as a fast tokenizer (tokenizer.json).",
            param="model",
        )
    model = backend_spec(tokenizer)["model"]
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise UnsupportedModelError(
            "GGUF export supports byte-level BPE tokenizers (Llama 3, Qwen2, SmolLM2 and the "
            "like); this one is a "
            + ("SentencePiece-style BPE" if model.get("byte_fallback") else str(model.get("type")))
            + " tokenizer.",
            param="model",
        )
    return tokenizer


def backend_spec(tokenizer: Any) -> dict[str, Any]:
    """The tokenizer as transformers runs it, in tokenizer.json's form. It need not be
    tokenizer.json as it lies on disk: some tokenizer classes put their family's
    pre-tokenizer in place of the file's."""
    return dict(json.loads(tokenizer.backend_tokenizer.to_str()))


def vocabulary_of(
    tokenizer: Any,
    config: dict[str, Any],
    chat_template: str | None,
    stops: list[str] | None = None,
) -> Vocabulary:
    """`tokenizer` (from `load_fast_tokenizer`) as GGUF keys, all but the pre-tokenizer's
    name (`pretokenizer.py` finds it). `stops`: the texts of the tokens that end an assistant
    turn (the chat template's end-of-turn token first, then the eos)."""
    spec = backend_spec(tokenizer)
    model = spec["model"]
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
            f"The tokenizer has {len(tokens)} tokens but the model's embedding only {n_rows} rows.",
            param="model",
        )
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    special_ids = {
        role: int(getattr(tokenizer, f"{role}_token_id"))
        for role in ("bos", "eos", "pad", "unk")
        if getattr(tokenizer, f"{role}_token_id", None) is not None
    }
    stop_ids = _stop_ids(tokenizer, stops or [])
    if stop_ids:
        # The end of an assistant turn: llama.cpp ends generation at it, as at the eos.
        special_ids["eot"] = stop_ids[0]
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    add_bos = tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]
    return Vocabulary(
        model="gpt2",
        pre="",
        tokens=[t for t in tokens if t is not None],
        types=types,
        merges=merges,
        special_ids=special_ids,
        add_bos=add_bos,
        chat_template=chat_template,
        stop_ids=stop_ids,
    )


def _stop_ids(tokenizer: Any, stops: list[str]) -> list[int]:
    """The ids of the stop texts that are single tokens (end of turn first), then the eos."""
    ids: list[int] = []
    for text in stops:
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1 and encoded[0] not in ids:
            ids.append(int(encoded[0]))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    return ids


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


def add_vocabulary(writer: Any, vocab: Vocabulary) -> None:
    """Write the tokenizer keys of `vocab` with the `gguf` package's writer."""
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


def write_vocabulary_only(vocab: Vocabulary, path: Path, pre: str) -> None:
    """A GGUF file with the tokenizer keys only (pre-tokenizer `pre`), which llama.cpp loads
    with `vocab_only` to tokenize."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    add_vocabulary(writer, Vocabulary(**dict(vars(vocab), pre=pre)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
