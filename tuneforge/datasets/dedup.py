"""Finding duplicates among texts: exact, after normalisation, and near-duplicates (MinHash).

| reason                 | two texts are duplicates when                                    |
|------------------------|------------------------------------------------------------------|
| `exact_duplicate`      | they are equal (after NFC and whitespace clean-up, see `clean`)   |
| `normalised_duplicate` | they are equal once case, punctuation and spacing are ignored     |
| `near_duplicate`       | the Jaccard similarity of their character 5-gram sets is at least |
|                        | the threshold                                                    |

Near-duplicates are found with MinHash signatures and locality-sensitive hashing: texts that
share a band of their signature are candidates, and each candidate pair's exact Jaccard
similarity decides, so the threshold holds exactly and the signature only saves comparisons.
The first occurrence is kept; a later text is a duplicate of the earliest kept one it matches.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import numpy as np

SHINGLE = 5
NUM_PERM = 128
BANDS = 32  # of NUM_PERM // BANDS rows each: pairs with Jaccard >= ~0.42 usually collide
_PRIME = np.uint64((1 << 61) - 1)
_MAX_HASH = np.uint64((1 << 32) - 1)
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_NOT_WORD = re.compile(r"[\W_]+")


def clean(text: str) -> str:
    """Unicode NFC, no zero-width or control characters, line ends as `\\n`, runs of spaces
    and tabs as one space, no spaces at line ends, at most one blank line in a row, no
    leading or trailing whitespace."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", _INVISIBLE.sub("", text))
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def comparison_key(text: str) -> str:
    """What `normalised_duplicate` compares: case-folded words, without punctuation."""
    return " ".join(_NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


def shingles(text: str, size: int = SHINGLE) -> set[str]:
    """The character `size`-grams of `comparison_key(text)` (the whole key when shorter)."""
    key = comparison_key(text)
    if len(key) <= size:
        return {key}
    return {key[i : i + size] for i in range(len(key) - size + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class MinHasher:
    """MinHash signatures of shingle sets, `num_perm` hash functions (a*x + b) mod p drawn
    from `seed`: the same seed gives the same signatures."""

    def __init__(self, num_perm: int = NUM_PERM, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, int(_PRIME), size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, int(_PRIME), size=num_perm, dtype=np.uint64)

    def signature(self, items: set[str]) -> np.ndarray:
        hashes = np.fromiter(
            (
                int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "little")
                for s in items
            ),
            dtype=np.uint64,
            count=len(items),
        )
        # uint64 products wrap around; still a fixed hash family, which is all MinHash needs.
        with np.errstate(over="ignore"):
            permuted = (np.outer(hashes, self.a) + self.b) % _PRIME & _MAX_HASH
        return permuted.min(axis=0)


@dataclass(frozen=True)
class Duplicate:
    """Text `index` repeats the kept text `of` (`similarity` 1.0 unless a near-duplicate)."""

    index: int
    of: int
    reason: str
    similarity: float


def find_duplicates(
    texts: list[str], *, near_threshold: float | None = 0.8, seed: int = 1
) -> list[Duplicate]:
    """The duplicates among `texts` (see the module's table), in order; the texts not named
    are the ones to keep. `near_threshold` None looks for exact and normalised ones only."""
    found: list[Duplicate] = []
    exact: dict[str, int] = {}
    normalised: dict[str, int] = {}
    hasher = MinHasher(seed=seed)
    rows_per_band = NUM_PERM // BANDS
    buckets: dict[tuple[int, bytes], list[int]] = {}
    kept_shingles: dict[int, set[str]] = {}
    for index, text in enumerate(texts):
        if text in exact:
            found.append(Duplicate(index, exact[text], "exact_duplicate", 1.0))
            continue
        key = comparison_key(text)
        if key in normalised:
            found.append(Duplicate(index, normalised[key], "normalised_duplicate", 1.0))
            continue
        bands: list[tuple[int, bytes]] = []
        if near_threshold is not None:
            items = shingles(text)
            signature = hasher.signature(items)
            bands = [
                (band, signature[band * rows_per_band : (band + 1) * rows_per_band].tobytes())
                for band in range(BANDS)
            ]
            candidates = sorted({i for band in bands for i in buckets.get(band, [])})
            best = max(((jaccard(items, kept_shingles[i]), -i) for i in candidates), default=None)
            if best is not None and best[0] >= near_threshold:
                found.append(Duplicate(index, -best[1], "near_duplicate", round(best[0], 4)))
                continue
            kept_shingles[index] = items
        exact[text] = index
        normalised[key] = index
        for band in bands:
            buckets.setdefault(band, []).append(index)
    return found
