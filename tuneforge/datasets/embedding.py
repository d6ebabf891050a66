"""Embedding data: the four layouts, their validation, and their rows for training.

| layout       | columns                                  | losses                      |
|--------------|------------------------------------------|-----------------------------|
| `triplet`    | `anchor` (or `question`), `positive`, `negative` | mnrl, cached_mnrl, triplet |
| `pair`       | `anchor` (or `question`), `positive`     | mnrl, cached_mnrl           |
| `scored_pair`| `sentence1`, `sentence2`, `score`        | cosine, cosent              |
| `n_tuple`    | `anchor`, `positive`, `negative_1` … `negative_n` | mnrl, cached_mnrl     |

(`negatives`, a list, may stand for `negative_1` … `negative_n`.)

Every row of an n-tuple file has as many negatives as the first (the trainer's columns are
fixed). Such files are uploaded as reranker data (its `ranking` layout, the same columns),
and embedding jobs read them too.

Scores lie in [0, 1], or in [0, 5] (the STS Benchmark's scale); rows used for training are
scaled to [0, 1].
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
    "triplet": ("anchor", "positive", "negative"),
    "pair": ("anchor", "positive"),
    "scored_pair": ("sentence1", "sentence2", "score"),
}
# n-tuples: their negative columns (`negatives` a list, or `negative_1` … `negative_n`).
N_TUPLE = ("anchor", "positive", "negatives")
NEGATIVE_N = re.compile(r"^negative_(\d+)$")
ALIASES = {"question": "anchor", "query": "anchor"}
KNOWN_COLUMNS = set(ALIASES) | {c for cols in LAYOUTS.values() for c in cols}
# Files without a header line (like the STS Benchmark CSVs): columns by count.
HEADERLESS = {
    2: [LAYOUTS["pair"]],
    3: [LAYOUTS["scored_pair"], LAYOUTS["triplet"]],
}
EXPECTED = (
    "embedding data has the columns "
    + "; or ".join(", ".join(cols) for cols in LAYOUTS.values())
    + " (`question` may stand for `anchor`), and classification data a text column "
    "(text, sentence, …) and a label column (label, category, …)"
)


@dataclass
class EmbeddingData:
    """A read file: its layout, its rows (canonical column names) and its report."""

    layout: str | None
    rows: list[dict[str, Any]]
    report: dict[str, Any]

    @property
    def valid(self) -> bool:
        return bool(self.report["valid"])


def read_embedding_file(
    path: Path,
    fmt: str,
    *,
    min_rows: int,
    tokenizer: Any = None,
    keep_rows: bool = True,
    index: IndexSink | None = None,
) -> EmbeddingData:
    """Read and check an embedding data file; every problem is reported, none raised.

    The file streams through: `keep_rows=False` (an upload's validation) keeps no row, only
    the statistics' few numbers per row; `index` learns where each record starts."""
    problems = ProblemLog()
    peek = first_record(RecordStream(path, fmt, ProblemLog(), KNOWN_COLUMNS, HEADERLESS))
    layout = _detect_layout(peek)
    wanted = N_TUPLE if layout == "n_tuple" else LAYOUTS.get(layout or "", ())
    text_columns = [c for c in wanted if c not in ("score", "negatives")]
    tally = _Tally(text_columns, tokenizer)
    rows: list[dict[str, Any]] = []
    stream = RecordStream(
        path, fmt, problems, KNOWN_COLUMNS, HEADERLESS, expected=EXPECTED, index=index
    )
    for line, record in stream:
        if layout is None:
            continue
        if layout == "n_tuple":
            row = _check_n_tuple(line, record, problems, tally.negatives_per_row)
        else:
            row = _check_row(line, record, layout, problems)
        if row is not None:
            tally.add(row)
            if keep_rows:
                rows.append(row)
    if peek is not None and layout is None:
        first_line, first = peek
        problems.append(
            Problem(
                "unknown_format",
                f"Columns {sorted(first)} match no embedding layout; expected one of "
                + "; ".join(f"{name}: {', '.join(cols)}" for name, cols in LAYOUTS.items())
                + " (`question` may stand for `anchor`).",
                line=first_line,
            )
        )
    if peek is None and not problems:
        problems.append(Problem("empty_file", "The file has no rows."))
    scale = (5.0 if tally.max_score > 1.0 else 1.0) if layout == "scored_pair" else None
    if scale is not None:
        for row in rows:
            row["score"] = row["score"] / scale
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
        "columns": list(wanted),
        "has_header": stream.has_header,
        **problems.report_fields(),
        "statistics": tally.statistics(),
    }
    if scale is not None:
        report["statistics"]["score_scale"] = scale
    return EmbeddingData(layout, rows if not problems else [], report)


def _detect_layout(first: tuple[int, dict[str, Any]] | None) -> str | None:
    """The layout named by the first record's keys."""
    if first is None:
        return None
    names = {ALIASES.get(k.strip().lower(), k.strip().lower()) for k in first[1]}
    if {"anchor", "positive"} <= names and (
        "negatives" in names or any(NEGATIVE_N.match(n) for n in names)
    ):
        return "n_tuple"
    for layout in ("scored_pair", "triplet", "pair"):
        if set(LAYOUTS[layout]) <= names:
            return layout
    return None


class _Tally:
    """What the report says of the valid rows, kept as they stream by: their count, exact
    duplicates (by digest), the text columns' lengths and the highest score."""

    def __init__(self, text_columns: list[str], tokenizer: Any):
        self.rows = 0
        self.max_score = -math.inf
        self.duplicates = DuplicateCounter()
        self.columns = {c: LengthColumn(tokenizer) for c in text_columns}
        self.negatives_per_row: int | None = None  # n-tuples: the first row's count

    def add(self, row: dict[str, Any]) -> None:
        self.rows += 1
        if "negatives" in row and self.negatives_per_row is None:
            self.negatives_per_row = len(row["negatives"])
        self.duplicates.add(repr(tuple(row.values())))
        for name, column in self.columns.items():
            column.add(row[name])
        if "score" in row:
            self.max_score = max(self.max_score, row["score"])

    def statistics(self) -> dict[str, Any]:
        found = {
            "rows": self.rows,
            "exact_duplicates": self.duplicates.count(),
            "columns": {name: column.statistics() for name, column in self.columns.items()},
        }
        if self.negatives_per_row is not None:
            found["negatives_per_row"] = self.negatives_per_row
        return found


def _check_n_tuple(
    line: int, record: dict[str, Any], problems: ProblemLog, first_count: int | None
) -> dict[str, Any] | None:
    """The canonical n-tuple row (anchor, positive, negatives) of a record, or None after its
    problems are logged; its negatives must be as many as the first valid row's."""
    found: dict[str, Any] = {}
    # Negatives by their column's place: the `negatives` list first, then negative_1 … n.
    numbered: list[tuple[int, list[tuple[str, Any]]]] = []
    for key, value in record.items():
        name = ALIASES.get(key.strip().lower(), key.strip().lower())
        if name in ("anchor", "positive"):
            found[name] = value
        elif name == "negatives":
            numbered.append((0, negative_cells(key, name, value)))
        elif match := NEGATIVE_N.match(name):
            numbered.append((int(match.group(1)), negative_cells(key, name, value)))
        else:
            problems.append(Problem(
                "unknown_column",
                f"Column {key!r} is not part of the n_tuple layout (anchor, positive, "
                "negative_1 … negative_n or negatives).",
                line=line, column=key,
            ))
            return None
    texts = [cell for _, cells in sorted(numbered, key=lambda n: n[0]) for cell in cells]
    checked = {"anchor": found.get("anchor"), "positive": found.get("positive"), **dict(texts)}
    ok = True
    for name, value in checked.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            problems.append(Problem("missing_column" if value is None else "empty_value",
                                    f"{name!r} is {'missing' if value is None else 'empty'}.",
                                    line=line, column=name))
            ok = False
        elif not isinstance(value, str):
            problems.append(Problem("wrong_type",
                                    f"{name!r} must be a string, got {type(value).__name__}.",
                                    line=line, column=name))
            ok = False
    if not ok:
        return None
    negatives = [str(v) for _, v in texts]
    if not negatives:
        problems.append(Problem("no_negative", "The row has no negative.", line=line,
                                column="negative_1"))
        return None
    if first_count is not None and len(negatives) != first_count:
        problems.append(Problem(
            "negative_count",
            f"The row has {len(negatives)} negatives and the first row {first_count}: "
            "every row of an n-tuple file needs as many.",
            line=line, column="negatives",
        ))
        return None
    return {"anchor": checked["anchor"], "positive": checked["positive"], "negatives": negatives}


def _check_row(
    line: int, record: dict[str, Any], layout: str, problems: ProblemLog
) -> dict[str, Any] | None:
    """The canonical row of a record, or None after its problems are logged."""
    wanted = LAYOUTS[layout]
    found = {}
    ok = True
    for key, value in record.items():
        name = ALIASES.get(key.strip().lower(), key.strip().lower())
        if name not in wanted:
            problems.append(
                Problem(
                    "unknown_column",
                    f"Column {key!r} is not part of the {layout} layout ({', '.join(wanted)}).",
                    line=line,
                    column=key,
                )
            )
            ok = False
            continue
        found[name] = value
    for name in wanted:
        if name not in found:
            problems.append(
                Problem("missing_column", f"Column {name!r} is missing.", line=line, column=name)
            )
            ok = False
            continue
        value = found[name]
        if name == "score":
            score = _check_score(value, line, problems)
            ok = ok and score is not None
            found[name] = score
        elif value is None:
            problems.append(Problem("null_value", f"{name!r} is null.", line=line, column=name))
            ok = False
        elif not isinstance(value, str):
            problems.append(
                Problem(
                    "wrong_type",
                    f"{name!r} must be a string, got {type(value).__name__}.",
                    line=line,
                    column=name,
                )
            )
            ok = False
        elif not value.strip():
            problems.append(Problem("empty_value", f"{name!r} is empty.", line=line, column=name))
            ok = False
    return {name: found[name] for name in wanted} if ok else None


def _check_score(value: Any, line: int, problems: ProblemLog) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.append(Problem("null_value", "'score' is empty.", line=line, column="score"))
        return None
    if isinstance(value, bool):
        value = None
    try:
        score = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score):
        problems.append(
            Problem(
                "invalid_score",
                f"'score' must be a number, got {shown(value)}.",
                line=line,
                column="score",
            )
        )
        return None
    if not 0.0 <= score <= 5.0:
        problems.append(
            Problem(
                "score_out_of_range",
                f"'score' {score:g} is outside [0, 1] (or [0, 5]).",
                line=line,
                column="score",
            )
        )
        return None
    return score
