"""Embedding data: the three layouts, their validation, and their rows for training.

| layout       | columns                                  | losses                      |
|--------------|------------------------------------------|-----------------------------|
| `triplet`    | `anchor` (or `question`), `positive`, `negative` | mnrl, cached_mnrl, triplet |
| `pair`       | `anchor` (or `question`), `positive`     | mnrl, cached_mnrl           |
| `scored_pair`| `sentence1`, `sentence2`, `score`        | cosine, cosent              |

Scores lie in [0, 1], or in [0, 5] (the STS Benchmark's scale); rows used for training are
scaled to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.datasets.readers import Problem, read_records
from tuneforge.datasets.statistics import column_statistics

LAYOUTS: dict[str, tuple[str, ...]] = {
    "triplet": ("anchor", "positive", "negative"),
    "pair": ("anchor", "positive"),
    "scored_pair": ("sentence1", "sentence2", "score"),
}
ALIASES = {"question": "anchor", "query": "anchor"}
KNOWN_COLUMNS = set(ALIASES) | {c for cols in LAYOUTS.values() for c in cols}
# Files without a header line (like the STS Benchmark CSVs): columns by count.
HEADERLESS = {
    2: [LAYOUTS["pair"]],
    3: [LAYOUTS["scored_pair"], LAYOUTS["triplet"]],
}
MAX_REPORTED_PROBLEMS = 100


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
    path: Path, fmt: str, *, min_rows: int, tokenizer: Any = None
) -> EmbeddingData:
    """Read and check an embedding data file; every problem is reported, none raised."""
    raw = read_records(path, fmt, KNOWN_COLUMNS, HEADERLESS)
    problems = list(raw.problems)
    layout, columns = _detect_layout(raw.records)
    rows: list[dict[str, Any]] = []
    if raw.records and layout is None:
        first_line, first = raw.records[0]
        problems.append(
            Problem(
                "unknown_format",
                f"Columns {sorted(first)} match no embedding layout; expected one of "
                + "; ".join(f"{name}: {', '.join(cols)}" for name, cols in LAYOUTS.items())
                + " (`question` may stand for `anchor`).",
                line=first_line,
            )
        )
    elif layout is not None:
        rows = _check_rows(raw.records, layout, columns, problems)
    if not raw.records and not problems:
        problems.append(Problem("empty_file", "The file has no rows."))
    scale = _score_scale(rows) if layout == "scored_pair" else None
    if scale is not None:
        for row in rows:
            row["score"] = row["score"] / scale
    if layout is not None and len(rows) < min_rows and not problems:
        problems.append(
            Problem(
                "too_few_rows",
                f"The file has {len(rows)} valid rows; at least {min_rows} are needed.",
            )
        )
    report = build_report(
        fmt,
        layout,
        raw.has_header,
        problems,
        rows,
        text_columns=[c for c in LAYOUTS.get(layout or "", ()) if c != "score"],
        tokenizer=tokenizer,
    )
    if scale is not None:
        report["statistics"]["score_scale"] = scale
    return EmbeddingData(layout, rows if not problems else [], report)


def _detect_layout(records: list[tuple[int, dict[str, Any]]]) -> tuple[str | None, dict[str, str]]:
    """The layout named by the first record's keys, and a map from file column to canonical."""
    if not records:
        return None, {}
    keys = {k.strip() for k in records[0][1]}
    canonical = {k: ALIASES.get(k.lower(), k.lower()) for k in keys}
    names = set(canonical.values())
    for layout in ("scored_pair", "triplet", "pair"):
        if set(LAYOUTS[layout]) <= names:
            return layout, canonical
    return None, canonical


def _check_rows(
    records: list[tuple[int, dict[str, Any]]],
    layout: str,
    first_columns: dict[str, str],
    problems: list[Problem],
) -> list[dict[str, Any]]:
    wanted = LAYOUTS[layout]
    rows = []
    for line, record in records:
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
                    Problem(
                        "missing_column", f"Column {name!r} is missing.", line=line, column=name
                    )
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
                problems.append(
                    Problem("empty_value", f"{name!r} is empty.", line=line, column=name)
                )
                ok = False
        if ok:
            rows.append({name: found[name] for name in wanted})
    return rows


def _check_score(value: Any, line: int, problems: list[Problem]) -> float | None:
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
                f"'score' must be a number, got {value!r}.",
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


def _score_scale(rows: list[dict[str, Any]]) -> float:
    return 5.0 if any(row["score"] > 1.0 for row in rows) else 1.0


def build_report(
    fmt: str,
    layout: str | None,
    has_header: bool,
    problems: list[Problem],
    rows: list[dict[str, Any]],
    *,
    text_columns: list[str],
    tokenizer: Any = None,
) -> dict[str, Any]:
    """The validation report shown by `GET /v1/datasets/{id}`."""
    by_code: dict[str, int] = {}
    for problem in problems:
        by_code[problem.code] = by_code.get(problem.code, 0) + 1
    problems_sorted = sorted(problems, key=lambda p: (p.line or 0, p.column or ""))
    seen: set[tuple[Any, ...]] = set()
    duplicates = 0
    for row in rows:
        key = tuple(row.values())
        duplicates += key in seen
        seen.add(key)
    return {
        "valid": not problems,
        "format": fmt,
        "layout": layout,
        "columns": list(LAYOUTS[layout]) if layout else [],
        "has_header": has_header,
        "problem_count": len(problems),
        "problems_by_code": by_code,
        "problems": [p.to_dict() for p in problems_sorted[:MAX_REPORTED_PROBLEMS]],
        "statistics": {
            "rows": len(rows),
            "exact_duplicates": duplicates,
            "columns": {
                c: column_statistics([r[c] for r in rows], tokenizer) for c in text_columns
            },
        },
    }
