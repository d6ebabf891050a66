"""Length statistics of text columns, in characters and (where a tokenizer is at hand) tokens."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np


def summary(values: list[int]) -> dict[str, float] | None:
    """min, median, p95 and max of a list of lengths (None for an empty list)."""
    if not values:
        return None
    arr = np.asarray(values)
    return {
        "min": int(arr.min()),
        "median": float(np.median(arr)),
        "p95": float(np.percentile(arr, 95)),
        "max": int(arr.max()),
    }


def column_statistics(texts: list[str], tokenizer: Any = None) -> dict[str, Any]:
    stats: dict[str, Any] = {"chars": summary([len(t) for t in texts])}
    if tokenizer is not None and texts:
        encodings = tokenizer.encode_batch(texts, add_special_tokens=True)
        stats["tokens"] = summary([len(e.ids) for e in encodings])
    return stats


@lru_cache(maxsize=4)
def load_tokenizer(model: str) -> Any:
    """The fast tokenizer of a Hub model from the local cache, or None when it is not cached.

    Uses the `tokenizers` package alone: counting tokens needs no torch or transformers.
    """
    from huggingface_hub import try_to_load_from_cache
    from tokenizers import Tokenizer

    path = try_to_load_from_cache(model, "tokenizer.json")
    if not isinstance(path, str):
        return None
    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer
