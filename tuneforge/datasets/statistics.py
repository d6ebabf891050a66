"""Length statistics of text columns, in characters and (where a tokenizer is at hand) tokens.

A validation measures a file as it streams by, so what it holds per row is a few numbers in
compact arrays: `LengthColumn` keeps 4 bytes per text (texts are tokenized in batches, a
sample of them in a long column, and dropped), `DuplicateCounter` 8 bytes per row. Ten
million rows of two columns come to about 250 MB at most, whatever the texts' lengths.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

# Texts tokenized in one call: big enough for the tokenizer's own threads to pay off.
TOKEN_BATCH = 2048
# Texts of a column tokenized for its statistics: all up to twice this, a sample beyond.
TOKEN_SAMPLE = 25_000


def summary(values: Sequence[int] | np.ndarray) -> dict[str, float] | None:
    """min, median, p95 and max of a list of lengths (None for an empty list)."""
    if len(values) == 0:
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


def histogram(values: Sequence[int] | np.ndarray, unit: str) -> dict[str, Any] | None:
    """Counts of `values` in up to HISTOGRAM_BINS equal-width bins of whole numbers:
    `edges` has one more entry than `counts`; bin i holds edges[i] <= v < edges[i+1]."""
    if len(values) == 0:
        return None
    arr = np.asarray(values, dtype=np.int64)
    low, high = int(arr.min()), int(arr.max())
    width = max(1, -(-(high - low + 1) // HISTOGRAM_BINS))
    bins = -(-(high - low + 1) // width)
    counts = np.bincount((arr - low) // width, minlength=bins)
    return {
        "unit": unit,
        "edges": [low + i * width for i in range(bins + 1)],
        "counts": [int(c) for c in counts],
    }


def lengths_array(values: array) -> np.ndarray:
    """A compact `array('l')` of lengths as a numpy array (no copy)."""
    return np.frombuffer(values, dtype=np.dtype(values.typecode)) if values else np.zeros(0)


class LengthColumn:
    """The lengths of one text column's values as they stream by, in characters and, with a
    `tokenizers.Tokenizer`, in tokens (counted TOKEN_BATCH texts at a time).

    Characters are counted for every text. Tokens too, up to 2 * TOKEN_SAMPLE texts; past
    that an evenly spaced sample is tokenized: every `every`-th text, `every` doubling (and
    every other count dropped) whenever the sample reaches 2 * TOKEN_SAMPLE, so between
    TOKEN_SAMPLE and twice that many texts are counted, and tokenizing costs O(TOKEN_SAMPLE
    * log(rows)) instead of O(rows). The token histogram's counts are then scaled by `every`
    (estimates for the whole column) and the statistics say so (`token_sample`)."""

    def __init__(self, tokenizer: Any = None):
        self.tokenizer = tokenizer
        self.chars = array("i")
        self.tokens = array("i")
        self.every = 1
        self._pending: list[str] = []

    def add(self, text: str) -> None:
        self.chars.append(len(text))
        if self.tokenizer is None or (len(self.chars) - 1) % self.every:
            return
        self._pending.append(text)
        if len(self._pending) >= TOKEN_BATCH:
            self._count_tokens()

    def _count_tokens(self) -> None:
        texts, self._pending = self._pending, []
        try:
            encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        except Exception:  # a text the tokenizer refuses (a lone surrogate): count it mended
            mended = [t.encode("utf-8", "replace").decode("utf-8") for t in texts]
            encodings = self.tokenizer.encode_batch(mended, add_special_tokens=True)
        self.tokens.extend(len(e.ids) for e in encodings)
        if len(self.tokens) >= 2 * TOKEN_SAMPLE:
            self.tokens = self.tokens[::2]
            self.every *= 2

    def statistics(self) -> dict[str, Any]:
        """Length summaries, and a histogram of the lengths in tokens (in characters where no
        tokenizer is at hand)."""
        if self._pending:
            self._count_tokens()
        chars = lengths_array(self.chars)
        stats: dict[str, Any] = {"chars": summary(chars)}
        lengths, unit = chars, "chars"
        if self.tokenizer is not None and len(chars):
            lengths, unit = lengths_array(self.tokens), "tokens"
            stats["tokens"] = summary(lengths)
        stats["histogram"] = histogram(lengths, unit)
        if unit == "tokens" and self.every > 1:
            stats["token_sample"] = {"every": self.every, "texts": len(lengths)}
            stats["histogram"]["counts"] = [c * self.every for c in stats["histogram"]["counts"]]
        return stats


def column_statistics(texts: Iterable[str], tokenizer: Any = None) -> dict[str, Any]:
    """`LengthColumn.statistics` of the texts of a column."""
    column = LengthColumn(tokenizer)
    for text in texts:
        column.add(text)
    return column.statistics()


def digest64(key: str) -> int:
    """A 64-bit BLAKE2b digest of a text (surrogates and all)."""
    data = key.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class DuplicateCounter:
    """Counts keys equal to an earlier one, by their 64-bit digests in a compact array (8 bytes
    a key, no Python object per key). Two different keys share a digest with odds of about
    n²/2⁶⁵: one in 370,000 for ten million keys, which would count one duplicate too many."""

    def __init__(self) -> None:
        self.digests = array("Q")

    def add(self, key: str) -> None:
        self.digests.append(digest64(key))

    def count(self) -> int:
        if not self.digests:
            return 0
        digests = np.sort(np.frombuffer(self.digests, dtype=np.uint64))
        return int(np.count_nonzero(digests[1:] == digests[:-1]))


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
