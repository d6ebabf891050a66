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


# Bars of a length histogram: enough to see the shape, few enough to read on a phone.
HISTOGRAM_BINS = 20


def histogram(values: list[int], unit: str) -> dict[str, Any] | None:
    """Counts of `values` in up to HISTOGRAM_BINS equal-width bins of whole numbers:
    `edges` has one more entry than `counts`; bin i holds edges[i] <= v < edges[i+1]."""
    if not values:
        return None
    low, high = min(values), max(values)
    width = max(1, -(-(high - low + 1) // HISTOGRAM_BINS))
    bins = -(-(high - low + 1) // width)
    counts = [0] * bins
    for v in values:
        counts[(v - low) // width] += 1
    return {"unit": unit, "edges": [low + i * width for i in range(bins + 1)], "counts": counts}


def column_statistics(texts: list[str], tokenizer: Any = None) -> dict[str, Any]:
    """Length summaries of a text column, and a histogram of its lengths in tokens (in
    characters where no tokenizer is at hand)."""
    chars = [len(t) for t in texts]
    stats: dict[str, Any] = {"chars": summary(chars)}
    lengths, unit = chars, "chars"
    if tokenizer is not None and texts:
        encodings = tokenizer.encode_batch(texts, add_special_tokens=True)
        lengths, unit = [len(e.ids) for e in encodings], "tokens"
        stats["tokens"] = summary(lengths)
    stats["histogram"] = histogram(lengths, unit)
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
