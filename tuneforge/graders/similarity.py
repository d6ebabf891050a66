"""The metrics of text_similarity graders, each a score from 0 to 1 of an answer against a
reference, written here in plain python (cosine needs an embedding model: see `run`).

| metric            | what it computes                                                    |
|-------------------|---------------------------------------------------------------------|
| `fuzzy_match`     | characters: 2 * LCS / (len(a) + len(b)), the normalised Indel        |
|                   | similarity (rapidfuzz's `fuzz.ratio` / 100); case-sensitive         |
| `bleu`            | sentence BLEU-4 (sacrebleu's sentence_bleu conventions: brevity     |
|                   | penalty, orders the answer is long enough for, `exp` smoothing of   |
|                   | orders without matches); case-sensitive words and punctuation       |
| `gleu`            | Google-BLEU: min(precision, recall) of all 1- to 4-grams together   |
|                   | (nltk's sentence_gleu)                                              |
| `meteor`          | METEOR with exact word matches (alpha 0.9, beta 3, gamma 0.5, as    |
|                   | nltk), no stemming or synonyms; lowercased words                    |
| `rouge_1`…`rouge_5` | F1 of shared n-grams of lowercased words (punctuation dropped)    |
| `rouge_l`         | F1 of the longest common subsequence of those words                 |

`fuzzy_match` and `rouge_l` take time in proportion to the product of the two lengths: each
text may have MAX_QUADRATIC_LENGTH characters at most (`TextTooLong` beyond).

Words: `bleu` and `gleu` split text into words and punctuation marks (`it's` -> `it ' s`);
`meteor` and `rouge_*` take lowercased runs of letters and digits, in any script.
"""

from __future__ import annotations

import math
import re
from collections import Counter, deque
from collections.abc import Sequence

WORDS_AND_PUNCTUATION = re.compile(r"\w+|[^\w\s]")
WORDS = re.compile(r"[^\W_]+")
METRICS = (
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
)
BLEU_ORDER = 4
MAX_QUADRATIC_LENGTH = 20_000
METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA = 0.9, 3.0, 0.5


class TextTooLong(ValueError):
    """A text too long for a metric whose time grows with the product of the lengths."""


def similarity(metric: str, answer: str, reference: str) -> float:
    """`metric` (any of METRICS; cosine is not here) of `answer` against `reference`."""
    if metric in ("fuzzy_match", "rouge_l"):
        longest = max(len(answer), len(reference))
        if longest > MAX_QUADRATIC_LENGTH:
            raise TextTooLong(
                f"{metric} compares texts of {MAX_QUADRATIC_LENGTH} characters at most; "
                f"one has {longest}."
            )
    if metric == "fuzzy_match":
        return fuzzy_match(answer, reference)
    if metric == "bleu":
        return bleu(answer, reference)
    if metric == "gleu":
        return gleu(answer, reference)
    if metric == "meteor":
        return meteor(answer, reference)
    if metric == "rouge_l":
        return rouge_l(answer, reference)
    if metric.startswith("rouge_"):
        return rouge_n(answer, reference, int(metric.removeprefix("rouge_")))
    raise ValueError(f"unknown metric {metric!r}")


def lcs_length(a: Sequence[object], b: Sequence[object]) -> int:
    """The length of the longest common subsequence of `a` and `b`, by Hyyrö's bit-vector
    algorithm: one pass over `a` with `b`'s positions as the bits of python integers."""
    if not a or not b:
        return 0
    positions: dict[object, int] = {}
    for i, symbol in enumerate(b):
        positions[symbol] = positions.get(symbol, 0) | (1 << i)
    ones = (1 << len(b)) - 1
    row = ones
    for symbol in a:
        matches = row & positions.get(symbol, 0)
        row = ((row + matches) | (row - matches)) & ones
    return len(b) - bin(row).count("1")


def fuzzy_match(answer: str, reference: str) -> float:
    if not answer and not reference:
        return 1.0
    return 2 * lcs_length(answer, reference) / (len(answer) + len(reference))


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(answer: str, reference: str) -> float:
    """Sentence BLEU-4 (see the module's docstring)."""
    hypothesis = WORDS_AND_PUNCTUATION.findall(answer)
    ref = WORDS_AND_PUNCTUATION.findall(reference)
    if not hypothesis or not ref:
        return 0.0
    log_precisions, smoothing = [], 1.0
    for n in range(1, BLEU_ORDER + 1):
        grams = _ngrams(hypothesis, n)
        total = sum(grams.values())
        if total == 0:  # the answer is shorter than n words: this order does not count
            break
        matches = sum((grams & _ngrams(ref, n)).values())
        if matches == 0:
            smoothing *= 2
            log_precisions.append(math.log(1 / (smoothing * total)))
        else:
            log_precisions.append(math.log(matches / total))
    brevity = 1.0 if len(hypothesis) > len(ref) else math.exp(1 - len(ref) / len(hypothesis))
    return brevity * math.exp(sum(log_precisions) / len(log_precisions))


def gleu(answer: str, reference: str) -> float:
    """Google-BLEU (see the module's docstring)."""
    hypothesis = WORDS_AND_PUNCTUATION.findall(answer)
    ref = WORDS_AND_PUNCTUATION.findall(reference)
    hyp_grams: Counter[tuple[str, ...]] = Counter()
    ref_grams: Counter[tuple[str, ...]] = Counter()
    for n in range(1, BLEU_ORDER + 1):
        hyp_grams.update(_ngrams(hypothesis, n))
        ref_grams.update(_ngrams(ref, n))
    hyp_total, ref_total = sum(hyp_grams.values()), sum(ref_grams.values())
    if hyp_total == 0 or ref_total == 0:
        return 0.0
    matches = sum((hyp_grams & ref_grams).values())
    return min(matches / hyp_total, matches / ref_total)


def rouge_n(answer: str, reference: str, n: int) -> float:
    """ROUGE-n F1 (see the module's docstring)."""
    hyp_grams = _ngrams(WORDS.findall(answer.lower()), n)
    ref_grams = _ngrams(WORDS.findall(reference.lower()), n)
    matches = sum((hyp_grams & ref_grams).values())
    return _f1(matches, sum(hyp_grams.values()), sum(ref_grams.values()))


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F1 (see the module's docstring)."""
    hypothesis = WORDS.findall(answer.lower())
    ref = WORDS.findall(reference.lower())
    return _f1(lcs_length(hypothesis, ref), len(hypothesis), len(ref))


def _f1(matches: int, answer_total: int, reference_total: int) -> float:
    if matches == 0:
        return 0.0
    precision, recall = matches / answer_total, matches / reference_total
    return 2 * precision * recall / (precision + recall)


def meteor(answer: str, reference: str) -> float:
    """METEOR with exact matches (see the module's docstring). Words are aligned one to one,
    each answer word to the first unused equal reference word, as nltk aligns them."""
    hypothesis = WORDS.findall(answer.lower())
    ref = WORDS.findall(reference.lower())
    unused: dict[str, deque[int]] = {}
    for j, word in enumerate(ref):
        unused.setdefault(word, deque()).append(j)
    alignment: list[tuple[int, int]] = []
    for i, word in enumerate(hypothesis):
        if unused.get(word):
            alignment.append((i, unused[word].popleft()))
    matches = len(alignment)
    if matches == 0:
        return 0.0
    precision, recall = matches / len(hypothesis), matches / len(ref)
    fmean = precision * recall / (METEOR_ALPHA * precision + (1 - METEOR_ALPHA) * recall)
    # A chunk: a run of matches adjacent in both texts.
    chunks = 1 + sum(
        1
        for (i, j), (k, m) in zip(alignment, alignment[1:], strict=False)
        if not (k == i + 1 and m == j + 1)
    )
    penalty = METEOR_GAMMA * (chunks / matches) ** METEOR_BETA
    return fmean * (1 - penalty)
