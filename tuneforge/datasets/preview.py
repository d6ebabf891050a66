"""A page of a stored file's records as they were read, each with its line, for looking at
the data beside its validation report (the dashboard's row preview).

JSONL and CSV pages are read from the file's row index (`datasets.row_index`): a seek and at
most a few dozen records, wherever the page lies. Parquet pages read the row groups that hold
them. No file makes a page raise: what cannot be shown as it is is shown as text.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tuneforge.datasets.embedding import HEADERLESS
from tuneforge.datasets.kinds import first_columns
from tuneforge.datasets.problems import shown
from tuneforge.datasets.row_index import ensure_index, page_records

# Longer cell texts are cut for the preview (the file itself is unchanged).
MAX_CELL_CHARS = 2000
# Deeper values are shown as a short text.
MAX_DEPTH = 20


def preview_rows(
    path: Path, fmt: str, report: dict[str, Any], *, offset: int, limit: int
) -> dict[str, Any]:
    """Records `offset` to `offset + limit` of the file, as its reader sees them: the file's
    own column names (a headerless CSV gets the names its report inferred), each record with
    its line (JSONL, CSV) or row number (Parquet). Lines that could not be read are not
    records; the report names them."""
    if fmt == "parquet":
        columns, total, page = _parquet_page(path, offset, limit)
    else:
        # The header decision was made at upload: repeat it rather than guess again.
        header = set(first_columns(path, fmt)) if report.get("has_header", True) else set()
        index = ensure_index(path, fmt, {c.strip().lower() for c in header}, HEADERLESS)
        page = page_records(path, fmt, index, offset, limit)
        columns, total = index.columns_before(offset + limit), index.records
    return {
        "object": "list",
        "columns": columns,
        "total": total,
        "offset": offset,
        "data": [{"line": line, "values": _cells(record)} for line, record in page],
        "has_more": offset + limit < total,
    }


def _parquet_page(
    path: Path, offset: int, limit: int
) -> tuple[list[str], int, list[tuple[int, dict[str, Any]]]]:
    """(columns, rows, the page) of a Parquet file; rows that do not convert are left out,
    and a file that cannot be read has none (its report says why)."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        columns, total = list(parquet.schema_arrow.names), parquet.metadata.num_rows
    except Exception:  # pyarrow raises several types for corrupt files
        return [], 0, []
    page: list[tuple[int, dict[str, Any]]] = []
    first = 0
    try:
        for group in range(parquet.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            if first + size > offset and first < offset + limit:
                table = parquet.read_row_group(group)
                start = max(offset - first, 0)
                part = table.slice(start, min(offset + limit - first, size) - start)
                for i in range(part.num_rows):
                    try:
                        page.append((first + start + i + 1, part.slice(i, 1).to_pylist()[0]))
                    except Exception:  # text that is not UTF-8: the report names the row
                        continue
            first += size
    except Exception:
        return columns, total, page
    return columns, total, page


def _cells(record: dict[str, Any]) -> dict[str, Any]:
    return {str(key): _value(value, 0) for key, value in record.items()}


def _value(value: Any, depth: int) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    if isinstance(value, str):
        return value[:MAX_CELL_CHARS] + "…" if len(value) > MAX_CELL_CHARS else value
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple | dict) and depth >= MAX_DEPTH:
        return shown(value)
    if isinstance(value, list | tuple):
        return [_value(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {str(key): _value(item, depth + 1) for key, item in value.items()}
    return str(value)  # Parquet's bytes, dates and the like, at any depth
