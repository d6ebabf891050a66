"""A page of a stored file's records as they were read, each with its line, for looking at
the data beside its validation report (the dashboard's row preview)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tuneforge.datasets.embedding import HEADERLESS
from tuneforge.datasets.kinds import first_columns
from tuneforge.datasets.readers import read_records

# Longer cell texts are cut for the preview (the file itself is unchanged).
MAX_CELL_CHARS = 2000


def preview_rows(
    path: Path, fmt: str, report: dict[str, Any], *, offset: int, limit: int
) -> dict[str, Any]:
    """Records `offset` to `offset + limit` of the file, as its reader sees them: the file's
    own column names (a headerless CSV gets the names its report inferred), each record with
    its line (JSONL, CSV) or row number (Parquet). Lines that could not be read are not
    records; the report names them."""
    # The header decision was made at upload: repeat it rather than guess again.
    header = set(first_columns(path, fmt)) if report.get("has_header", True) else set()
    raw = read_records(path, fmt, {c.strip().lower() for c in header}, HEADERLESS)
    page = raw.records[offset : offset + limit]
    columns: list[str] = []
    for _, record in raw.records[: offset + limit]:
        columns += [c for c in record if c not in columns]
    return {
        "object": "list",
        "columns": columns,
        "total": len(raw.records),
        "offset": offset,
        "data": [{"line": line, "values": _cells(record)} for line, record in page],
        "has_more": offset + limit < len(raw.records),
    }


def _cells(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)  # JSON has no NaN or infinity
        elif isinstance(value, str) and len(value) > MAX_CELL_CHARS:
            value = value[:MAX_CELL_CHARS] + "…"
        elif not isinstance(value, str | int | float | bool | list | dict | None):
            value = str(value)  # Parquet's bytes, dates and the like
        out[key] = value
    return out
