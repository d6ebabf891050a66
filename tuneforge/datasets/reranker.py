"""Reranker (cross-encoder) data: the two layouts, their validation, and their rows.

| layout         | columns                                                    | losses            |
|----------------|------------------------------------------------------------|-------------------|
| `labeled_pair` | `query`, `document`, `label`                               | bce               |
| `ranking`      | `query`, `positive`, `negative` / `negatives` (a list) /   | mnrl, lambda,     |
|                | `negative_1` … `negative_n`                                | listnet, bce      |

`query` may be named `anchor`, `question` or `sentence1`; `document` may be `passage`,
`sentence2` or `text`; `label` may be `score`. Labels lie in the accepted range: [0, 1] for
relevance labels, [0, 5] for the STS Benchmark's scores (told by a score above 1), or the
`score_range` a job declares; training rows are scaled to [0, 1]. Headerless CSV files are read
by their column count: three columns whose last is a number are labeled pairs, three or more
texts are a query, its positive and its negatives.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.datasets.problems import Problem, ProblemLog, shown
from tuneforge.datasets.readers import IndexSink, RecordStream, first_record, negative_cells
from tuneforge.datasets.statistics import DuplicateCounter, LengthColumn

LAYOUTS: dict[str, tuple[str, ...]] = {
    "labeled_pair": ("query", "document", "label"),
    "ranking": ("query", "positive", "negatives"),
}
ALIASES = {
    "anchor": "query",
    "question": "query",
    "sentence1": "query",
    "passage": "document",
    "sentence2": "document",
    "text": "document",
    "score": "label",
}
NEGATIVE_COLUMN = re.compile(r"^negative(_\d+)?$|^negatives$")
# Columns only reranker data has: a file with one of them is uploaded as reranker data.
OWN_COLUMNS = {"document", "passage", "negatives", "negative_1"}
KNOWN_COLUMNS = set(ALIASES) | {"query", "document", "label", "positive", "negative", "negatives"}
MAX_NEGATIVES = 64
HEADERLESS: dict[int, list[tuple[str, ...]]] = {
    3: [("query", "document", "score"), ("query", "positive", "negative")],
    **{
        n: [("query", "positive", *(f"negative_{i}" for i in range(1, n - 1)))]
        for n in range(4, MAX_NEGATIVES + 3)
    },
}
# Scores above 1 with no declared range are taken as the STS Benchmark's 0-5 scale.
STS_RANGE = (0.0, 5.0)


@dataclass
class RerankerData:
    """A read file: its layout, its rows (canonical columns, labels in [0, 1]) and its report."""

    layout: str | None
    rows: list[dict[str, Any]]
    report: dict[str, Any]

    @property
    def valid(self) -> bool:
        return bool(self.report["valid"])


def canonical(name: str) -> str:
    """A column's name as the layouts spell it."""
    name = name.strip().lower()
    return ALIASES.get(name, name)


def is_reranker_data(columns: list[str]) -> bool:
    """Whether these columns name reranker data that no embedding layout reads (a query with
    labeled documents, or with a list of negatives)."""
    names = {c.strip().lower() for c in columns}
    if names & OWN_COLUMNS:
        return bool({canonical(n) for n in names} & {"query"})
    return "query" in names and "label" in names


def read_reranker_file(
    path: Path,
    fmt: str,
    *,
    min_rows: int,
    score_range: tuple[float, float] | None = None,
    tokenizer: Any = None,
    keep_rows: bool = True,
    index: IndexSink | None = None,
) -> RerankerData:
    """Read and check a reranker data file; every problem is reported (line and column),
    none raised. `score_range` is the labels' declared range (default: [0, 1], or [0, 5]
    when a label is above 1)."""
    problems = ProblemLog()
    peek = first_record(RecordStream(path, fmt, ProblemLog(), KNOWN_COLUMNS, HEADERLESS))
    layout = _detect_layout(peek)
    tally = _Tally(tokenizer)
    rows: list[dict[str, Any]] = []
    stream = RecordStream(path, fmt, problems, KNOWN_COLUMNS, HEADERLESS, index=index)
    bounds = score_range or STS_RANGE
    for line, record in stream:
        if layout is None:
            continue
        row = _check_row(line, record, layout, bounds, problems)
        if row is not None:
            tally.add(row)
            if keep_rows:
                rows.append(row)
    if peek is not None and layout is None:
        first_line, first = peek
        problems.append(
            Problem(
                "unknown_format",
                f"Columns {sorted(first)} match no reranker layout; expected query, document "
                "and label (labeled pairs), or query, positive and negative(s).",
                line=first_line,
            )
        )
    if peek is None and not problems:
        problems.append(Problem("empty_file", "The file has no rows."))
    low, high = score_range or ((0.0, 5.0) if tally.max_label > 1.0 else (0.0, 1.0))
    if layout == "labeled_pair":
        for row in rows:
            row["label"] = (row["label"] - low) / (high - low)
    if layout is not None and tally.rows < min_rows and not problems:
        problems.append(
            Problem(
                "too_few_rows",
                f"The file has {tally.rows} valid rows; at least {min_rows} are needed.",
            )
        )
    report = {
        "valid": not problems,
        "format": fmt,
        "layout": layout,
        "columns": list(LAYOUTS.get(layout or "", ())),
        "has_header": stream.has_header,
        **problems.report_fields(),
        "statistics": tally.statistics(),
    }
    if layout == "labeled_pair":
        report["statistics"]["label_range"] = [low, high]
    return RerankerData(layout, rows if not problems else [], report)


def _detect_layout(first: tuple[int, dict[str, Any]] | None) -> str | None:
    if first is None:
        return None
    names = {canonical(k) for k in first[1]}
    if {"document", "label"} <= names:
        return "labeled_pair"
    if "positive" in names:
        return "ranking"
    return None


class _Tally:
    """What the report says of the valid rows: their count, duplicates, lengths, labels."""

    def __init__(self, tokenizer: Any):
        self.rows = 0
        self.negatives = 0
        self.max_label = -math.inf
        self.duplicates = DuplicateCounter()
        self.queries = LengthColumn(tokenizer)
        self.documents = LengthColumn(tokenizer)

    def add(self, row: dict[str, Any]) -> None:
        self.rows += 1
        self.duplicates.add(repr(tuple(map(str, row.values()))))
        self.queries.add(row["query"])
        for text in [row.get("document") or row.get("positive"), *row.get("negatives", [])]:
            self.documents.add(text)
        self.negatives += len(row.get("negatives", []))
        if "label" in row:
            self.max_label = max(self.max_label, row["label"])

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "rows": self.rows,
            "exact_duplicates": self.duplicates.count(),
            "columns": {
                "query": self.queries.statistics(),
                "documents": self.documents.statistics(),
            },
        }
        if self.negatives:
            stats["negatives"] = self.negatives
        return stats


def _check_row(
    line: int,
    record: dict[str, Any],
    layout: str,
    bounds: tuple[float, float],
    problems: ProblemLog,
) -> dict[str, Any] | None:
    """The canonical row of a record, or None after its problems are logged."""
    ok = True
    found: dict[str, Any] = {}
    negatives: list[tuple[str, Any]] = []
    for key, value in record.items():
        name = canonical(key)
        if layout == "ranking" and NEGATIVE_COLUMN.match(name):
            negatives += negative_cells(key, name, value)
            continue
        if name not in LAYOUTS[layout]:
            problems.append(
                Problem(
                    "unknown_column",
                    f"Column {key!r} is not part of the {layout} layout "
                    f"({', '.join(LAYOUTS[layout])}).",
                    line=line,
                    column=key,
                )
            )
            ok = False
            continue
        found[name] = (key, value)
    texts = ("query", "document") if layout == "labeled_pair" else ("query", "positive")
    row: dict[str, Any] = {}
    for name in texts:
        if name not in found:
            what = "reranker data needs a query" if name == "query" else f"{name!r} is missing"
            problems.append(
                Problem(
                    "missing_column", f"Column {name!r} is missing: {what}.", line=line, column=name
                )
            )
            ok = False
            continue
        key, value = found[name]
        text = _check_text(line, key, value, problems)
        ok = ok and text is not None
        row[name] = text
    if layout == "labeled_pair":
        if "label" not in found:
            problems.append(
                Problem("missing_column", "Column 'label' is missing.", line=line, column="label")
            )
            return None
        key, value = found["label"]
        row["label"] = _check_label(line, key, value, bounds, problems)
        ok = ok and row["label"] is not None
    else:
        if not negatives:
            problems.append(
                Problem(
                    "missing_column",
                    "No negative: give `negative`, `negatives` (a list) or `negative_1` … "
                    "(or mine them from pairs).",
                    line=line,
                    column="negative",
                )
            )
            ok = False
        elif len(negatives) > MAX_NEGATIVES:
            problems.append(
                Problem(
                    "too_many_negatives",
                    f"{len(negatives)} negatives; at most {MAX_NEGATIVES} per query.",
                    line=line,
                    column="negatives",
                )
            )
            ok = False
        checked = [_check_text(line, key, value, problems) for key, value in negatives]
        ok = ok and all(t is not None for t in checked)
        row["negatives"] = checked
    return row if ok else None


def _check_text(line: int, key: str, value: Any, problems: ProblemLog) -> str | None:
    if value is None:
        problems.append(Problem("null_value", f"{key!r} is null.", line=line, column=key))
    elif not isinstance(value, str):
        problems.append(
            Problem(
                "wrong_type",
                f"{key!r} must be a string, got {type(value).__name__}.",
                line=line,
                column=key,
            )
        )
    elif not value.strip():
        problems.append(Problem("empty_value", f"{key!r} is empty.", line=line, column=key))
    else:
        return value
    return None


def _check_label(
    line: int, key: str, value: Any, bounds: tuple[float, float], problems: ProblemLog
) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.append(Problem("null_value", f"{key!r} is empty.", line=line, column=key))
        return None
    try:
        label = float(value)
    except (TypeError, ValueError):
        label = math.nan
    if not math.isfinite(label):
        problems.append(
            Problem(
                "invalid_score",
                f"{key!r} must be a number, got {shown(value)}.",
                line=line,
                column=key,
            )
        )
        return None
    low, high = bounds
    if not low <= label <= high:
        accepted = (
            f"[{low:g}, {high:g}]"
            if bounds != STS_RANGE
            else "[0, 1] (or [0, 5], the STS scale; declare another with score_range)"
        )
        problems.append(
            Problem(
                "score_out_of_range",
                f"{key!r} {label:g} is outside the accepted range {accepted}.",
                line=line,
                column=key,
            )
        )
        return None
    return label
