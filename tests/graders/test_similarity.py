"""The text_similarity metrics on examples computed by hand (the sums are in the comments)."""

from __future__ import annotations

import math
import random

import pytest

from tuneforge.graders.similarity import (
    MAX_QUADRATIC_LENGTH,
    METRICS,
    TextTooLong,
    lcs_length,
    similarity,
)


def brute_lcs(a: str, b: str) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = (
                table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
            )
    return table[-1][-1]


def test_bit_vector_lcs_agrees_with_the_table() -> None:
    rng = random.Random(3)
    for _ in range(300):
        a = "".join(rng.choice("abcd") for _ in range(rng.randrange(0, 90)))
        b = "".join(rng.choice("abcd") for _ in range(rng.randrange(0, 90)))
        assert lcs_length(a, b) == brute_lcs(a, b)


def test_fuzzy_match() -> None:
    # LCS(kitten, sitting) = "ittn": 2 * 4 / (6 + 7); rapidfuzz's fuzz.ratio gives 61.54.
    assert similarity("fuzzy_match", "kitten", "sitting") == pytest.approx(8 / 13)
    assert similarity("fuzzy_match", "Paris", "Paris") == 1.0
    assert similarity("fuzzy_match", "Paris", "paris") == pytest.approx(0.8)  # case counts
    assert similarity("fuzzy_match", "", "") == 1.0
    assert similarity("fuzzy_match", "abc", "") == 0.0


def test_bleu() -> None:
    # hypothesis: the cat the cat on the mat (7 words); reference: the cat is on the mat (6).
    # 1-grams 5/7 (the 2 of 3, cat 1 of 2, on, mat); 2-grams 3/6 (the cat, on the, the mat);
    # 3-grams 1/5 (on the mat); 4-grams 0/4, smoothed to 1/(2 * 4). No brevity penalty.
    expected = (5 / 7 * 1 / 2 * 1 / 5 * 1 / 8) ** 0.25
    assert similarity("bleu", "the cat the cat on the mat", "the cat is on the mat") == (
        pytest.approx(expected)
    )
    # Two words: only 1- and 2-grams count (both 1/1); brevity penalty exp(1 - 3/2).
    assert similarity("bleu", "the cat", "the cat sat") == pytest.approx(math.exp(-0.5))
    assert similarity("bleu", "the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert similarity("bleu", "", "the cat") == 0.0


def test_gleu() -> None:
    # All 6 n-grams of "the cat sat" (3 + 2 + 1) are in the reference, which has
    # 6 + 5 + 4 + 3 = 18: min(6/6, 6/18).
    assert similarity("gleu", "the cat sat", "the cat sat on the mat") == pytest.approx(1 / 3)
    assert similarity("gleu", "dog", "the cat") == 0.0


def test_rouge() -> None:
    answer, reference = "The cat sat.", "the cat sat on the mat"
    # 3 shared words: precision 3/3, recall 3/6 -> F1 2/3.
    assert similarity("rouge_1", answer, reference) == pytest.approx(2 / 3)
    # 2 shared bigrams of 2 and 5: precision 1, recall 2/5 -> F1 4/7.
    assert similarity("rouge_2", answer, reference) == pytest.approx(4 / 7)
    assert similarity("rouge_3", answer, reference) == pytest.approx(2 * 1 * 0.25 / 1.25)
    assert similarity("rouge_4", answer, reference) == 0.0
    assert similarity("rouge_l", answer, reference) == pytest.approx(2 / 3)
    # The same words in another order: ROUGE-1 is blind to it, ROUGE-L sees LCS 2 of 3.
    assert similarity("rouge_1", "cat the sat", "the cat sat") == 1.0
    assert similarity("rouge_l", "cat the sat", "the cat sat") == pytest.approx(2 / 3)
    assert similarity("rouge_1", "Größe über", "größe ÜBER") == 1.0  # any script


def test_meteor() -> None:
    # 3 matches in one chunk: P 1, R 1/2, Fmean = P R / (0.9 P + 0.1 R) = 0.5 / 0.95,
    # penalty 0.5 (1/3)^3.
    expected = 0.5 / 0.95 * (1 - 0.5 / 27)
    assert similarity("meteor", "the cat sat", "the cat sat on the mat") == pytest.approx(expected)
    # Reversed: 3 chunks of one word, penalty 0.5 (3/3)^3 = 0.5.
    assert similarity("meteor", "sat cat the", "the cat sat") == pytest.approx(0.5)
    assert similarity("meteor", "dog", "cat") == 0.0


@pytest.mark.parametrize("metric", METRICS)
def test_every_metric_is_one_for_the_same_text_and_within_0_and_1(metric: str) -> None:
    text = "Paris is the capital of France, and its largest city."
    assert similarity(metric, text, text) == pytest.approx(1.0, abs=0.02)
    assert 0.0 <= similarity(metric, "Berlin is big.", text) < 1.0


@pytest.mark.parametrize("metric", ["fuzzy_match", "rouge_l"])
def test_quadratic_metrics_refuse_huge_texts(metric: str) -> None:
    long = "a " * (MAX_QUADRATIC_LENGTH // 2 + 1)
    with pytest.raises(TextTooLong, match="one has 20002"):
        similarity(metric, long, "a")
