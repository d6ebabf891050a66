"""Read a data file into records, each with its line (JSONL, CSV) or row (Parquet) number.

Reading never stops at the first problem: undecodable lines and lines that are not JSON
objects come back as problems beside the records, so a report can list them all.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS = ("jsonl", "csv", "parquet")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data file: where, what (a stable code) and why, in words."""

    code: str
    message: str
    line: int | None = None
    column: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "column": self.column,
            "code": self.code,
            "message": self.message,
        }


@dataclass
class RawRecords:
    """What a reader got out of a file: (line, record) pairs and the problems it met."""

    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    has_header: bool = True


def detect_format(filename: str, path: Path) -> str:
    """The file's format from its name, else from its first bytes."""
    name = filename.lower()
    for suffix, fmt in (
        (".jsonl", "jsonl"),
        (".json", "jsonl"),
        (".ndjson", "jsonl"),
        (".csv", "csv"),
        (".parquet", "parquet"),
        (".pq", "parquet"),
    ):
        if name.endswith(suffix):
            return fmt
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.lstrip().startswith(b"{"):
        return "jsonl"
    return "csv"


def read_records(
    path: Path,
    fmt: str,
    known_columns: Iterable[str],
    headerless_layouts: dict[int, list[tuple[str, ...]]],
) -> RawRecords:
    """Read `path` as `fmt`. For CSV, the first row is a header when it names a known column;
    otherwise the columns are taken from `headerless_layouts` by their count (the first
    layout whose numeric columns parse, see `_headerless_columns`)."""
    if fmt == "parquet":
        return _read_parquet(path)
    lines, problems = _decode_lines(path.read_bytes())
    if fmt == "jsonl":
        return _read_jsonl(lines, problems)
    return _read_csv(lines, problems, set(known_columns), headerless_layouts)


def _decode_lines(data: bytes) -> tuple[list[str], list[Problem]]:
    problems: list[Problem] = []
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines: list[str] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            problems.append(
                Problem("not_utf8", f"Line is not valid UTF-8 (byte {exc.start + 1}).", line=number)
            )
            lines.append(raw.decode("utf-8", errors="replace"))
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines], problems


def _read_jsonl(lines: list[str], problems: list[Problem]) -> RawRecords:
    out = RawRecords(problems=problems)
    bad_lines = {p.line for p in problems}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or number in bad_lines:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            out.problems.append(Problem("invalid_json", f"Not valid JSON: {exc.msg}.", line=number))
            continue
        if not isinstance(value, dict):
            out.problems.append(
                Problem(
                    "not_an_object",
                    f"Expected a JSON object, got {type(value).__name__}.",
                    line=number,
                )
            )
            continue
        out.records.append((number, value))
    return out


def _read_csv(
    lines: list[str],
    problems: list[Problem],
    known: set[str],
    layouts: dict[int, list[tuple[str, ...]]],
) -> RawRecords:
    out = RawRecords(problems=problems)
    # csv handles quoted fields spanning lines; track the line each record starts on.
    reader = csv.reader(io.StringIO("\n".join(lines) + "\n"))
    rows: list[tuple[int, list[str]]] = []
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            out.problems.append(Problem("invalid_csv", f"Not valid CSV: {exc}.", line=start))
            start = reader.line_num + 1
            continue
        if cells and any(c.strip() for c in cells):
            rows.append((start, cells))
        start = reader.line_num + 1
    if not rows:
        return out
    first_line, first = rows[0]
    if any(cell.strip().lower() in known for cell in first):
        header = [cell.strip() for cell in first]
        body = rows[1:]
    else:
        out.has_header = False
        inferred = _headerless_columns(first, layouts)
        body = rows
        if inferred is None:
            out.problems.append(
                Problem(
                    "unknown_format",
                    f"The first line has no known column names and {len(first)} columns, "
                    "which match no headerless layout.",
                    line=first_line,
                )
            )
            return out
        header = inferred
    for number, cells in body:
        if len(cells) != len(header):
            out.problems.append(
                Problem(
                    "wrong_column_count",
                    f"Expected {len(header)} columns, found {len(cells)}.",
                    line=number,
                )
            )
            continue
        out.records.append((number, dict(zip(header, cells, strict=True))))
    return out


def _headerless_columns(
    first: list[str], layouts: dict[int, list[tuple[str, ...]]]
) -> list[str] | None:
    for layout in layouts.get(len(first), []):
        numeric_ok = all(
            _is_number(cell) for name, cell in zip(layout, first, strict=True) if name == "score"
        )
        if numeric_ok:
            return list(layout)
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_parquet(path: Path) -> RawRecords:
    import pyarrow.parquet as pq

    out = RawRecords()
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        out.problems.append(Problem("invalid_parquet", f"Not a readable Parquet file: {exc}."))
        return out
    for number, record in enumerate(table.to_pylist(), start=1):
        out.records.append((number, record))
    return out
