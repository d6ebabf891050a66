"""Class and length statistics of classification rows, kept as the rows stream by.

Per row the tally holds two 64-bit digests (the text's, and the text's with its labels') and
its lengths; per class a count and the line of its first example. Duplicates and conflicts
are found from the digests at the end; the texts of the first few conflicts are read again
from the rows (`again`), so no text is held.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from tuneforge.datasets.statistics import LengthColumn, digest64, lengths_array, summary

MAX_CONFLICT_EXAMPLES = 10


class ClassTally:
    """What the report says of the valid rows: counts per class, the first line of each class,
    exact and conflicting duplicates, the texts' lengths and (multi-label) labels per row."""

    def __init__(self, tokenizer: Any = None):
        self.rows = 0
        self.counts: Counter[str] = Counter()
        self.first_line: dict[str, int] = {}
        self.texts = LengthColumn(tokenizer)
        self.labels_per_row = array("i")
        self._text_digests = array("Q")
        self._row_digests = array("Q")

    def add(self, text: str, labels: list[str], multi_label: bool, line: int | None = None) -> None:
        self.rows += 1
        for name in labels:
            self.counts[name] += 1
            if line is not None:
                self.first_line.setdefault(name, line)
        self.texts.add(text)
        if multi_label:
            self.labels_per_row.append(len(labels))
        self._text_digests.append(digest64(text))
        self._row_digests.append(digest64(repr((text, tuple(sorted(labels))))))

    def _duplicates(self) -> tuple[int, int, set[int]]:
        """(rows repeating an earlier row's text and labels, texts that occur with different
        labels, the digests of the first MAX_CONFLICT_EXAMPLES of those texts)."""
        if not self.rows:
            return 0, 0, set()
        texts = np.frombuffer(self._text_digests, dtype=np.uint64)
        rows = np.frombuffer(self._row_digests, dtype=np.uint64)
        unique_rows, first_of_row = np.unique(rows, return_index=True)
        label_sets_per_text = np.unique(texts[first_of_row], return_counts=True)
        conflicting = label_sets_per_text[0][label_sets_per_text[1] > 1]
        if not len(conflicting):
            return self.rows - len(unique_rows), 0, set()
        unique_texts, first_of_text = np.unique(texts, return_index=True)
        order = np.sort(first_of_text[np.isin(unique_texts, conflicting)])
        shown = {int(d) for d in texts[order[:MAX_CONFLICT_EXAMPLES]]}
        return self.rows - len(unique_rows), len(conflicting), shown

    def statistics(self, again: Callable[[], Iterable[tuple[str, list[str]]]]) -> dict[str, Any]:
        """The statistics; `again` gives the rows' (text, labels) once more, in order, and is
        called only when texts occur with different labels."""
        duplicates, conflicts, shown = self._duplicates()
        examples: dict[str, list[tuple[str, ...]]] = {}
        if shown:
            for text, labels in again():
                if text in examples or digest64(text) in shown:
                    examples.setdefault(text, []).append(tuple(sorted(labels)))
        ranked = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        rows = self.rows
        stats: dict[str, Any] = {
            "rows": rows,
            "num_classes": len(self.counts),
            "class_distribution": [
                {"label": name, "count": count, "share": count / rows} for name, count in ranked
            ],
            "imbalance_ratio": ranked[0][1] / ranked[-1][1] if ranked else None,
            "majority_class": ranked[0][0] if ranked else None,
            "majority_share": ranked[0][1] / rows if ranked else None,
            "exact_duplicates": duplicates,
            "conflicting_duplicates": conflicts,
            "conflicting_examples": [
                {"text": text, "labels": [list(s) for s in dict.fromkeys(sets)]}
                for text, sets in examples.items()
            ],
            "columns": {"text": self.texts.statistics()},
        }
        if self.labels_per_row:
            stats["labels_per_row"] = summary(lengths_array(self.labels_per_row))
        return stats
