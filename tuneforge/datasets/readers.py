"""Read a data file record by record, each with its line (JSONL, CSV) or row (Parquet) number.

Reading streams: a `RecordStream` yields `(line, record)` pairs one at a time from the file on
disk and sends what it cannot read to a problem log, so memory grows with the longest line
(CSV: record; Parquet: row group), never with the file. Reading never stops at the first
problem, and no byte string makes it raise: every line that cannot be read becomes a problem
with its line and a stable code.

| code              | the line                                                        |
|-------------------|-----------------------------------------------------------------|
| `not_utf8`        | is not valid UTF-8                                              |
| `utf16_encoding`  | (line 1, the whole file) is UTF-16: it is not read further      |
| `invalid_json`    | is not JSON                                                     |
| `nested_too_deep` | is JSON nested deeper than the parser goes                      |
| `number_too_long` | holds an integer of more than 4,300 digits                      |
| `not_an_object`   | is JSON but not an object                                       |
| `nul_character`   | holds a NUL character (`\\u0000` in JSON, a NUL byte in CSV)    |
| `invalid_unicode` | holds a lone surrogate (`\\ud800` without its pair)             |
| `invalid_csv`     | is not CSV (an unclosed quote, a field over `MAX_CSV_FIELD`)    |
| `wrong_column_count`, `unknown_format` | CSV: see `RecordStream`                    |
| `invalid_parquet` | (Parquet) the file or a row group cannot be read                |
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

from tuneforge.datasets.problems import Problem, ProblemLog

__all__ = [
    "FORMATS",
    "Problem",
    "ProblemLog",
    "RecordStream",
    "detect_format",
    "first_record",
    "hostile_text",
]

FORMATS = ("jsonl", "csv", "parquet")
Record = dict[str, Any]
# A CSV field may be this long (the csv module's default is 128 KiB); longer ones, and an
# unclosed quote swallowing the rest of the file, are `invalid_csv` at that many characters.
MAX_CSV_FIELD = 16 * 1024 * 1024
csv.field_size_limit(MAX_CSV_FIELD)
PARQUET_BATCH = 1024
_BOM = b"\xef\xbb\xbf"
# JSON escapes that decode to a NUL or to a surrogate: only lines holding one are walked.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_SURROGATE = re.compile("[\ud800-\udfff]")


class IndexSink(Protocol):
    """Where a stream reports where each record starts, and the CSV header it decided on
    (see `datasets.row_index`)."""

    header: list[str] | None

    def add(self, offset: int, line: int, record: Record) -> None: ...


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


def utf16_kind(head: bytes) -> str | None:
    """'little-endian' or 'big-endian' when the first bytes of a file look like UTF-16 (a
    byte order mark, or NULs in every other byte of ASCII text), else None."""
    if head.startswith(b"\xff\xfe"):
        return "little-endian"
    if head.startswith(b"\xfe\xff"):
        return "big-endian"
    pairs = len(head) // 2
    if pairs < 2:
        return None
    even, odd = head[0 : 2 * pairs : 2].count(0), head[1 : 2 * pairs : 2].count(0)
    if odd >= 0.3 * pairs and even <= 0.05 * pairs:
        return "little-endian"
    if even >= 0.3 * pairs and odd <= 0.05 * pairs:
        return "big-endian"
    return None


def hostile_text(value: Any) -> tuple[str, str | None] | None:
    """('nul_character' | 'invalid_unicode', top-level key or None) for the first string in
    `value` (keys included) holding a NUL or a lone surrogate; None when there is none.
    Walks without recursion, so any depth the JSON parser took is fine."""
    stack: list[tuple[Any, str | None]] = [(value, None)]
    while stack:
        item, top = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "nul_character", top
            if _SURROGATE.search(item):
                return "invalid_unicode", top
        elif isinstance(item, dict):
            for key, inner in item.items():
                where = top if top is not None else str(key)
                stack.append((key, where))
                stack.append((inner, where))
        elif isinstance(item, list | tuple):
            stack.extend((inner, top) for inner in item)
    return None


_HOSTILE_MESSAGES = {
    "nul_character": "The line holds a NUL character (\\u0000), which no text may hold.",
    "invalid_unicode": "The line holds a lone surrogate (such as \\ud800), which is no character.",
}


def parse_json_line(number: int, text: str, problems: ProblemLog) -> Record | None:
    """The object on a JSONL line, or None (blank line, or a problem logged)."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(Problem("invalid_json", f"Not valid JSON: {exc.msg}.", line=number))
        return None
    except RecursionError:
        problems.append(
            Problem("nested_too_deep", "The JSON is nested too deeply to read.", line=number)
        )
        return None
    except ValueError:  # int() refuses integers of more than 4,300 digits
        problems.append(
            Problem("number_too_long", "A number has more than 4,300 digits.", line=number)
        )
        return None
    if not isinstance(value, dict):
        problems.append(
            Problem(
                "not_an_object",
                f"Expected a JSON object, got {type(value).__name__}.",
                line=number,
            )
        )
        return None
    if _SUSPECT_ESCAPE.search(text):
        found = hostile_text(value)
        if found is not None:
            problems.append(Problem(found[0], _HOSTILE_MESSAGES[found[0]], number, found[1]))
            return None
    return value


class RecordStream:
    """The records of one file, read as they are iterated (a stream may be iterated again:
    each pass reads the file anew). Problems go to `problems`; where each record starts goes
    to `index` when one is given.

    For CSV, the first row is a header when it names a column in `known_columns`; otherwise
    the columns come from `headerless_layouts` by their count (the first layout whose numeric
    columns parse). `has_header` and `header` hold that decision once the first row is read.
    `resume=(offset, line, header)` starts at a record known to begin at that byte offset and
    line (a row index's checkpoint), with the header decided before."""

    def __init__(
        self,
        path: Path,
        fmt: str,
        problems: ProblemLog,
        known_columns: Iterable[str] = (),
        headerless_layouts: dict[int, list[tuple[str, ...]]] | None = None,
        *,
        expected: str = "",
        index: IndexSink | None = None,
        resume: tuple[int, int, list[str] | None] | None = None,
    ):
        self.path = path
        self.fmt = fmt
        self.problems = problems
        self.known = {c.strip().lower() for c in known_columns}
        self.layouts = headerless_layouts or {}
        # What the kind's columns are, for the problem of a header that names none of them.
        self.expected = expected
        self.index = index
        self.resume = resume
        self.has_header = True
        self.header: list[str] | None = resume[2] if resume else None

    def __iter__(self) -> Iterator[tuple[int, Record]]:
        if self.fmt == "parquet":
            return self._parquet()
        if self.fmt == "jsonl":
            return self._jsonl()
        return self._csv()

    def _lines(self, handle: IO[bytes]) -> Iterator[tuple[int, int, str, bool]]:
        """(line number, byte offset, text, decoded cleanly) of each line, from the start or
        from `resume`. A UTF-16 file is one problem and no lines."""
        offset, number = (self.resume[0], self.resume[1] - 1) if self.resume else (0, 0)
        handle.seek(offset)
        if offset == 0:
            head = handle.read(4096)
            handle.seek(0)
            encoding = utf16_kind(head)
            if encoding is not None:
                self.problems.append(
                    Problem(
                        "utf16_encoding",
                        f"The file is UTF-16 ({encoding}); save it as UTF-8 and upload it again.",
                        line=1,
                    )
                )
                return
        for raw in handle:
            number += 1
            start = offset
            offset += len(raw)
            if start == 0 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            try:
                text, clean = raw.decode("utf-8"), True
            except UnicodeDecodeError as exc:
                self.problems.append(
                    Problem(
                        "not_utf8", f"Line is not valid UTF-8 (byte {exc.start + 1}).", line=number
                    )
                )
                text, clean = raw.decode("utf-8", errors="replace"), False
            yield number, start, text.rstrip("\r"), clean

    def _jsonl(self) -> Iterator[tuple[int, Record]]:
        with self.path.open("rb") as handle:
            for number, offset, text, clean in self._lines(handle):
                record = parse_json_line(number, text, self.problems) if clean else None
                if record is not None:
                    if self.index is not None:
                        self.index.add(offset, number, record)
                    yield number, record

    def _csv(self) -> Iterator[tuple[int, Record]]:
        starts: dict[int, int] = {}  # line -> byte offset, of the lines the csv reader took

        def feed(handle: IO[bytes]) -> Iterator[str]:
            for number, offset, text, _ in self._lines(handle):
                starts[number] = offset
                yield text + "\n"

        with self.path.open("rb") as handle:
            reader = csv.reader(feed(handle))
            base = self.resume[1] - 1 if self.resume else 0
            start = base + 1
            header = self.header
            # A headerless first row that reads like column names waits for the second row:
            # unlike it, the row is a header naming no known column (see `_header_like`).
            pending: tuple[int, int, list[str]] | None = None
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    self.problems.append(
                        Problem("invalid_csv", f"Not valid CSV: {exc}.", line=start)
                    )
                    start = base + reader.line_num + 1
                    starts.clear()
                    continue
                line, offset = start, starts.get(start, 0)
                start = base + reader.line_num + 1
                starts.clear()
                if not cells or not any(c.strip() for c in cells):
                    continue
                if any("\x00" in c for c in cells):
                    self.problems.append(
                        Problem(
                            "nul_character", "The line holds a NUL character in a cell.", line=line
                        )
                    )
                    continue
                if header is None:
                    header = self._decide_header(cells, line)
                    if header is None:
                        return
                    self.header = header
                    if self.index is not None:
                        self.index.header = header
                    if self.has_header:
                        continue
                    if self.layouts and _header_like(cells):
                        pending = (line, offset, cells)
                        continue
                if pending is not None:
                    if not _header_like(cells) or _numbers_below(pending[2], cells):
                        self._unknown_header(pending[2], pending[0])
                        return
                    yield from self._record(*pending, header)
                    pending = None
                yield from self._record(line, offset, cells, header)
            if pending is not None and header is not None:
                yield from self._record(*pending, header)

    def _record(
        self, line: int, offset: int, cells: list[str], header: list[str]
    ) -> Iterator[tuple[int, Record]]:
        """The record of one CSV row, or its problem."""
        if len(cells) != len(header):
            self.problems.append(
                Problem(
                    "wrong_column_count",
                    f"Expected {len(header)} columns, found {len(cells)}.",
                    line=line,
                )
            )
            return
        record = dict(zip(header, cells, strict=True))
        if self.index is not None:
            self.index.add(offset, line, record)
        yield line, record

    def _unknown_header(self, cells: list[str], line: int) -> None:
        names = ", ".join(c.strip() for c in cells)
        self.problems.append(
            Problem(
                "unknown_header",
                f"The first line ({names}) is a header that names no column tuneforge "
                f"knows{'; ' + self.expected if self.expected else ''}. Rename the columns "
                "(or leave the header out).",
                line=line,
            )
        )

    def _decide_header(self, first: list[str], line: int) -> list[str] | None:
        if any(cell.strip().lower() in self.known for cell in first):
            return [cell.strip() for cell in first]
        self.has_header = False
        inferred = _headerless_columns(first, self.layouts)
        if inferred is None:
            self.problems.append(
                Problem(
                    "unknown_format",
                    f"The first line has no known column names and {len(first)} columns, "
                    "which match no headerless layout.",
                    line=line,
                )
            )
        return inferred

    def _parquet(self) -> Iterator[tuple[int, Record]]:
        import pyarrow.parquet as pq

        number = 0
        try:
            batches = pq.ParquetFile(self.path).iter_batches(batch_size=PARQUET_BATCH)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            self.problems.append(self._invalid_parquet(exc))
            return
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as exc:
                self.problems.append(self._invalid_parquet(exc, number + 1))
                return
            for record in parquet_records(batch, number + 1, self.problems):
                number += 1
                if record is not None:
                    yield number, record

    def _invalid_parquet(self, exc: Exception, row: int | None = None) -> Problem:
        return Problem(
            "invalid_parquet",
            f"Not a readable Parquet file: {without_path(str(exc), self.path)}.",
            line=row,
        )


def parquet_records(batch: Any, first_row: int, problems: ProblemLog) -> list[Record | None]:
    """The records of an Arrow record batch; None (and a problem) for a row that does not
    convert (text that is not UTF-8) or holds a NUL or a lone surrogate."""
    try:
        records: list[Record | None] = batch.to_pylist()
    except Exception:
        records = []
        for i in range(batch.num_rows):
            try:
                records.append(batch.slice(i, 1).to_pylist()[0])
            except Exception:
                problems.append(
                    Problem("not_utf8", "The row holds text that is not UTF-8.", first_row + i)
                )
                records.append(None)
    for i, record in enumerate(records):
        found = hostile_text(record) if record is not None else None
        if found is not None:
            problems.append(Problem(found[0], _HOSTILE_MESSAGES[found[0]], first_row + i, found[1]))
            records[i] = None
    return records


def without_path(message: str, path: Path) -> str:
    """`message` with the data folder's path taken out (it is the server's business)."""
    for shown_as, name in ((str(path.resolve()), path.name), (str(path), path.name)):
        message = message.replace(shown_as, name)
    for folder in (str(path.resolve().parent), str(path.parent)):
        message = message.replace(folder + "/", "").replace(folder, "")
    return message


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


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")


def _header_like(cells: list[str]) -> bool:
    """Whether a CSV row reads like column names: every cell one word, no number."""
    return all(_NAME.fullmatch(c.strip()) for c in cells)


def _numbers_below(first: list[str], second: list[str]) -> bool:
    """Whether a column holds a word in the first row and a number in the second (a score
    column under its name)."""
    return any(
        not _is_number(a) and _is_number(b) for a, b in zip(first, second, strict=False)
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def first_record(
    stream: RecordStream, where: Callable[[Record], bool] | None = None
) -> tuple[int, Record] | None:
    """The first record of `stream` (for which `where` holds), reading only as far as it."""
    records = iter(stream)
    try:
        for line, record in records:
            if where is None or where(record):
                return line, record
        return None
    finally:
        getattr(records, "close", lambda: None)()


def negative_cells(key: str, name: str, value: Any) -> list[tuple[str, Any]]:
    """The negatives one column of a record holds, each with the name its problems give it:
    a `negatives` list one per item (`negatives[0]` …), an empty cell none (an n-tuple row
    may leave its trailing negatives empty), any other cell its value. `name` is the
    column's canonical name."""
    if name == "negatives" and isinstance(value, list):
        return [(f"{key}[{i}]", v) for i, v in enumerate(value)]
    return [] if value is None or value == "" else [(key, value)]
