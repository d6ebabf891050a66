"""Where the records of a stored data file start, so that a page of its rows is read by seeking.

The index lies beside the file, `files/file-<id>.idx` (written as `file-<id>.idx.tmp`, then
renamed). It holds every `EVERY`-th record's byte offset and line, the number of records, the
CSV header the validation decided on, and the columns with the record each first appears in
(the first MAX_COLUMNS of them). A page starts at the checkpoint before it and reads at most
EVERY - 1 records it does not show, so any page of any file costs about the same.

An upload's validation writes the index as the file streams through it; a file stored before
indexes existed, or whose index no longer matches it (its size differs), gets one on its
first page. Parquet needs none: its row groups are read by their row counts.
"""

from __future__ import annotations

import json
import os
import threading
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.datasets.problems import ProblemLog
from tuneforge.datasets.readers import Record, RecordStream

EVERY = 64
MAX_COLUMNS = 1000
VERSION = 1
INDEX_SUFFIX = ".idx"
TEMP_SUFFIX = ".idx.tmp"
_building = threading.Lock()


def index_path(data_path: Path) -> Path:
    """The index of a stored file: its name plus `.idx`."""
    return data_path.with_name(data_path.name + INDEX_SUFFIX)


class RowIndexBuilder:
    """Learns where each record starts as a `RecordStream` yields it (its `index`)."""

    def __init__(self) -> None:
        self.offsets = array("q")
        self.lines = array("q")
        self.records = 0
        self.header: list[str] | None = None
        self.columns: dict[str, int] = {}

    def add(self, offset: int, line: int, record: Record) -> None:
        if self.records % EVERY == 0:
            self.offsets.append(offset)
            self.lines.append(line)
        if len(self.columns) < MAX_COLUMNS:
            for key in record:
                if key not in self.columns and len(self.columns) < MAX_COLUMNS:
                    self.columns[key] = self.records
        self.records += 1

    def save(self, data_path: Path) -> None:
        """Write the index beside `data_path`, whole or not at all."""
        meta = {
            "version": VERSION,
            "every": EVERY,
            "records": self.records,
            "bytes": data_path.stat().st_size,
            "header": self.header,
            "columns": list(self.columns.items()),
        }
        temp = data_path.with_name(data_path.name + TEMP_SUFFIX)
        try:
            with temp.open("wb") as out:
                np.savez(
                    out,
                    offsets=np.frombuffer(self.offsets, dtype=np.int64),
                    lines=np.frombuffer(self.lines, dtype=np.int64),
                    meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                )
            os.replace(temp, index_path(data_path))
        finally:
            temp.unlink(missing_ok=True)


@dataclass(frozen=True)
class RowIndex:
    """A loaded index (see the module's docstring)."""

    offsets: np.ndarray
    lines: np.ndarray
    records: int
    every: int
    header: list[str] | None
    columns: list[tuple[str, int]]

    def checkpoint(self, record: int) -> tuple[int, int, int]:
        """(record number, byte offset, line) of the checkpoint at or before `record`."""
        at = record // self.every
        return at * self.every, int(self.offsets[at]), int(self.lines[at])

    def columns_before(self, end: int) -> list[str]:
        """The columns of records 0 to `end` - 1, in order of first appearance."""
        return [name for name, first in self.columns if first < end]


def load_index(data_path: Path) -> RowIndex | None:
    """The file's index, or None when there is none or it does not match the file."""
    try:
        with np.load(index_path(data_path)) as saved:
            meta = json.loads(bytes(saved["meta"]))
            if meta.get("version") != VERSION or meta["bytes"] != data_path.stat().st_size:
                return None
            return RowIndex(
                offsets=saved["offsets"],
                lines=saved["lines"],
                records=int(meta["records"]),
                every=int(meta["every"]),
                header=meta["header"],
                columns=[(str(name), int(first)) for name, first in meta["columns"]],
            )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_index(
    data_path: Path,
    fmt: str,
    known_columns: set[str],
    headerless_layouts: dict[int, list[tuple[str, ...]]],
) -> RowIndex:
    """The file's index, built (one pass over the file, reading as a validation does) and
    kept when it has none."""
    index = load_index(data_path)
    if index is not None:
        return index
    with _building:  # two first pages at once build it once
        index = load_index(data_path)
        if index is None:
            builder = RowIndexBuilder()
            stream = RecordStream(
                data_path, fmt, ProblemLog(), known_columns, headerless_layouts, index=builder
            )
            for _ in stream:
                pass
            builder.save(data_path)
            index = load_index(data_path)
    if index is None:  # the file changed while it was read: try on the next page
        raise OSError(f"The index of {data_path.name} does not match the file.")
    return index


def resume_at(index: RowIndex, record: int) -> tuple[int, tuple[int, int, list[str] | None]]:
    """(records to skip, a `RecordStream` resume point) for reading from `record` on."""
    first, offset, line = index.checkpoint(record)
    return record - first, (offset, line, index.header)


def page_records(
    data_path: Path, fmt: str, index: RowIndex, offset: int, limit: int
) -> list[tuple[int, dict[str, Any]]]:
    """Records `offset` to `offset + limit` (fewer at the end) of a JSONL or CSV file."""
    if offset >= index.records:
        return []
    skip, resume = resume_at(index, offset)
    page: list[tuple[int, dict[str, Any]]] = []
    records = iter(RecordStream(data_path, fmt, ProblemLog(), resume=resume))
    try:
        for line, record in records:
            if skip:
                skip -= 1
                continue
            page.append((line, record))
            if len(page) >= limit:
                break
    finally:
        getattr(records, "close", lambda: None)()
    return page
