"""Text-classification data: its columns, its validation, its class statistics and its split.

| role  | file column: the one of these names the file has (or name it)          |
|-------|-------------------------------------------------------------------------|
| text  | `text`, `sentence`, `chunk_text`, `content`, `input`                    |
| label | `label`, `labels`, `category`, `class`, `frame_name`, `target`          |

Names match without regard to case; other columns are ignored. A CSV file needs a header line.

| layout                       | canonical row                             |
|------------------------------|-------------------------------------------|
| `classification`             | `{"text": str, "label": str}`             |
| `multi_label_classification` | `{"text": str, "labels": list[str]}`      |

A label is a class name. Strings are kept as written, less surrounding blanks: `"None"` is a
class like any other, only an absent cell or a JSON `null` is a missing label. Integers (and
integral floats, which is what pandas makes of an integer column with gaps) become their decimal
string, so `3` in JSONL and `3` in CSV are the same class.

A multi-label cell is a list (JSONL, Parquet), or a string holding a JSON list (`["A", "B"]`) or
names separated by `;` (`A;B`). Not by `,`: that is CSV's delimiter, and class names may hold it.
Repeated names in one cell count once.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.datasets.classification_statistics import ClassTally
from tuneforge.datasets.problems import Problem, ProblemLog, shown
from tuneforge.datasets.readers import IndexSink, RecordStream, first_record

TEXT_COLUMNS = ("text", "sentence", "chunk_text", "content", "input")
LABEL_COLUMNS = ("label", "labels", "category", "class", "frame_name", "target")
SINGLE_LABEL = "classification"
MULTI_LABEL = "multi_label_classification"
LABEL_SEPARATOR = ";"
# One example to learn from and one to hold out for validation.
MIN_CLASS_EXAMPLES = 2
VALIDATION_SHARE = 0.1
# Distinct keys of a JSONL file looked at for the text and label columns.
MAX_COLUMNS = 10_000


@dataclass
class ClassificationData:
    """A read file: its layout, its rows (canonical shape), the file line of each row, and its
    report. `rows` and `lines` are empty when the file has any problem."""

    layout: str | None
    rows: list[dict[str, Any]]
    lines: list[int]
    report: dict[str, Any]

    @property
    def valid(self) -> bool:
        return bool(self.report["valid"])

    @property
    def classes(self) -> list[str]:
        """The class names of the rows, sorted."""
        return sorted({name for row in self.rows for name in row_labels(row)})


def read_classification_file(
    path: Path,
    fmt: str,
    *,
    min_rows: int,
    text_column: str | None = None,
    label_column: str | None = None,
    multi_label: bool = False,
    tokenizer: Any = None,
    check_classes: bool = True,
    keep_rows: bool = True,
    index: IndexSink | None = None,
) -> ClassificationData:
    """Read and check a classification data file; every problem is reported, none raised.

    Columns not named are found by their common names (see the module's table). Problems name
    the file's column and the line (JSONL, CSV: the line a record starts on; Parquet: the row).
    `check_classes=False` accepts rare classes and a single class: a validation file may hold
    one example of a class, or only one class.

    The file streams through: `keep_rows=False` (an upload's validation) keeps no row, only
    the statistics' few numbers per row; `index` learns where each record starts.
    """
    known = set(TEXT_COLUMNS) | set(LABEL_COLUMNS)
    known |= {name.strip().lower() for name in (text_column, label_column) if name}
    problems = ProblemLog(explain=_explain_reader_problem)
    found = _file_columns(path, fmt, known)
    layout: str | None = None
    source: dict[str, str] = {}
    if found is not None:
        # The header names a CSV file's columns; elsewhere the first record is the best place.
        where = 1 if fmt == "csv" else found[0]
        text = _find_column(found[1], text_column, TEXT_COLUMNS, "text", where, problems)
        label = _find_column(found[1], label_column, LABEL_COLUMNS, "label", where, problems)
        if text is not None and label is not None:
            layout = MULTI_LABEL if multi_label else SINGLE_LABEL
            source = {"text": text, label_key(multi_label): label}
    tally = ClassTally(tokenizer)
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    stream = RecordStream(path, fmt, problems, known, index=index)
    for line, record in stream:
        row = _check_row(record, source, multi_label, line, problems) if source else None
        if row is not None:
            tally.add(row["text"], row_labels(row), multi_label, line)
            if keep_rows:
                rows.append(row)
                lines.append(line)
    if found is None and not problems:
        problems.append(Problem("empty_file", "The file has no rows."))
    if layout is not None and tally.rows < min_rows and not problems:
        problems.append(
            Problem(
                "too_few_rows",
                f"The file has {tally.rows} valid rows; at least {min_rows} are needed.",
            )
        )
    if tally.rows and check_classes:
        problems.extend(_class_problems(tally, source[label_key(multi_label)]))

    def again() -> Iterable[tuple[str, list[str]]]:
        if keep_rows:
            return ((row["text"], row_labels(row)) for row in rows)
        return (
            (row["text"], row_labels(row))
            for line, record in RecordStream(path, fmt, ProblemLog(), known)
            if (row := _check_row(record, source, multi_label, line, ProblemLog()))
        )

    report = build_report(fmt, layout, stream.has_header, problems, source, tally.statistics(again))
    if problems:
        return ClassificationData(layout, [], [], report)
    return ClassificationData(layout, rows, lines, report)


def label_key(multi_label: bool) -> str:
    """The canonical row's label key: `labels` for multi-label rows, else `label`."""
    return "labels" if multi_label else "label"


def row_labels(row: dict[str, Any]) -> list[str]:
    """The class names of a canonical row, single- or multi-label."""
    return list(row["labels"]) if "labels" in row else [row["label"]]


def _explain_reader_problem(problem: Problem) -> Problem:
    if problem.code != "unknown_format":
        return problem
    # The reader met a CSV file whose first line names no column it knows.
    return Problem(
        "unknown_format",
        f"The first line names no text column ({', '.join(TEXT_COLUMNS)}) and no label column "
        f"({', '.join(LABEL_COLUMNS)}); a CSV file needs a header line, and columns with other "
        "names must be named (text_column, label_column).",
        line=problem.line,
    )


def _file_columns(path: Path, fmt: str, known: set[str]) -> tuple[int, list[str]] | None:
    """(line of the first record, the file's columns), None when it has no record. A CSV or
    Parquet file's records all have the first one's columns; JSONL records need not share
    their keys: every key is taken, in order of appearance (up to MAX_COLUMNS of them)."""
    stream = RecordStream(path, fmt, ProblemLog(), known)
    if fmt != "jsonl":
        first = first_record(stream)
        return None if first is None else (first[0], list(first[1]))
    seen: dict[str, None] = {}
    first_line: int | None = None
    for line, record in stream:
        first_line = line if first_line is None else first_line
        if len(seen) < MAX_COLUMNS:
            seen.update(dict.fromkeys(record))
    return None if first_line is None else (first_line, list(seen))


def _find_column(
    columns: list[str],
    named: str | None,
    candidates: tuple[str, ...],
    role: str,
    line: int,
    problems: ProblemLog,
) -> str | None:
    """The file's column holding `role`: the one named, else the one with a common name."""
    if named is not None:
        matches = [c for c in columns if c.strip().lower() == named.strip().lower()]
        if not matches:
            problems.append(
                Problem(
                    "missing_column",
                    f"The {role} column {named!r} is not in the file; its columns are "
                    f"{', '.join(columns)}.",
                    line=line,
                    column=named,
                )
            )
            return None
        return named if named in matches else matches[0]
    matches = [c for c in columns if c.strip().lower() in candidates]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        problems.append(
            Problem(
                f"no_{role}_column",
                f"No {role} column: the file's columns are {', '.join(columns)}; expected one "
                f"of {', '.join(candidates)}, or name it ({role}_column).",
                line=line,
            )
        )
    else:
        problems.append(
            Problem(
                f"ambiguous_{role}_column",
                f"Several columns may hold the {role}: {', '.join(matches)}; name the one to use "
                f"({role}_column).",
                line=line,
            )
        )
    return None


def _check_row(
    record: dict[str, Any],
    source: dict[str, str],
    multi_label: bool,
    line: int,
    problems: ProblemLog,
) -> dict[str, Any] | None:
    """The canonical row of a record (`source`: canonical column -> the file's), or None after
    its problems are logged."""
    text_column, label_column = source["text"], source[label_key(multi_label)]
    text = _check_text(record.get(text_column), line, text_column, problems)
    labels = _check_labels(record.get(label_column), multi_label, line, label_column, problems)
    if text is None or labels is None:
        return None
    return {"text": text, "labels": labels} if multi_label else {"text": text, "label": labels[0]}


def _check_text(value: Any, line: int, column: str, problems: ProblemLog) -> str | None:
    if value is None:
        problems.append(Problem("missing_text", "The text is missing.", line=line, column=column))
    elif not isinstance(value, str):
        problems.append(
            Problem(
                "wrong_type",
                f"The text must be a string, got {type(value).__name__}.",
                line=line,
                column=column,
            )
        )
    elif not value.strip():
        problems.append(Problem("empty_text", "The text is empty.", line=line, column=column))
    else:
        return value
    return None


def _check_labels(
    value: Any, multi_label: bool, line: int, column: str, problems: ProblemLog
) -> list[str] | None:
    """The class names of one label cell (one name unless multi-label), or None after a problem."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        problems.append(Problem("missing_label", "The label is missing.", line=line, column=column))
        return None
    items: list[Any] = [value]
    if multi_label:
        split = _split_labels(value)
        if split is None:
            problems.append(
                Problem(
                    "invalid_label",
                    f"{shown(value)} is not a list of labels: write a JSON list or names separated "
                    f"by {LABEL_SEPARATOR!r}.",
                    line=line,
                    column=column,
                )
            )
            return None
        items = split
    names = [_class_name(item) for item in items]
    if any(name is None for name in names):
        hint = "; a list of labels needs multi-label data" if isinstance(value, list) else ""
        problems.append(
            Problem(
                "wrong_type",
                f"A label must be a string or an integer, got {shown(value)}{hint}.",
                line=line,
                column=column,
            )
        )
        return None
    kept = list(dict.fromkeys(name for name in names if name))
    if not kept:
        problems.append(Problem("empty_label", "The label is empty.", line=line, column=column))
        return None
    return kept


def _split_labels(value: Any) -> list[Any] | None:
    if isinstance(value, list | tuple):
        return list(value)
    if not isinstance(value, str):
        return [value]
    if value.strip().startswith("["):
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):  # not JSON, nested too deep, a huge number
            return None
        return parsed if isinstance(parsed, list) else None
    return value.split(LABEL_SEPARATOR)


def _class_name(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value.strip()
    return None


def _class_problems(tally: ClassTally, column: str) -> list[Problem]:
    problems = [
        Problem(
            "rare_class",
            f"Class {name!r} has {count} example(s); every class needs at least "
            f"{MIN_CLASS_EXAMPLES}, one to train on and one to hold out for validation.",
            line=tally.first_line[name],
            column=column,
        )
        for name, count in sorted(tally.counts.items())
        if count < MIN_CLASS_EXAMPLES
    ]
    if len(tally.counts) == 1:
        only = next(iter(tally.counts))
        problems.append(
            Problem(
                "single_class",
                f"Every row has the class {only!r}; a classifier needs at least two classes.",
            )
        )
    return problems


def check_validation_labels(
    train_labels: Iterable[str],
    validation_rows: Sequence[dict[str, Any]],
    lines: Sequence[int] | None = None,
) -> list[Problem]:
    """One `unseen_label` problem per validation row and class that training never shows.

    `lines` are the rows' file lines (`ClassificationData.lines`); without them a problem has no
    line and its message names the row's position (1-based) instead."""
    known = set(train_labels)
    problems = []
    for index, row in enumerate(validation_rows):
        line = lines[index] if lines is not None else None
        where = "" if line is not None else f" (row {index + 1})"
        for name in row_labels(row):
            if name not in known:
                problems.append(
                    Problem(
                        "unseen_label",
                        f"Class {name!r}{where} does not occur in the training data.",
                        line=line,
                        column=label_key("labels" in row),
                    )
                )
    return problems


def classification_statistics(rows: list[dict[str, Any]], tokenizer: Any = None) -> dict[str, Any]:
    """Class and length statistics of canonical rows.

    `class_distribution` lists every class with its count and share of the rows, largest first.
    `imbalance_ratio` is the largest class's count over the smallest's; `majority_share` is the
    accuracy of always predicting the largest class (multi-label: the share of rows that carry
    it). `exact_duplicates` counts rows repeating an earlier row's text and labels;
    `conflicting_duplicates` counts texts that occur with different labels."""
    tally = ClassTally(tokenizer)
    for row in rows:
        tally.add(row["text"], row_labels(row), "labels" in row)
    return tally.statistics(lambda: ((row["text"], row_labels(row)) for row in rows))


def build_report(
    fmt: str,
    layout: str | None,
    has_header: bool,
    problems: ProblemLog,
    source_columns: dict[str, str],
    statistics: dict[str, Any],
) -> dict[str, Any]:
    """The validation report shown by `GET /v1/datasets/{id}`; statistics cover the valid rows.

    `source_columns` maps the canonical columns to the file's (`{"text": "chunk_text", ...}`)."""
    return {
        "valid": not problems,
        "format": fmt,
        "layout": layout,
        "columns": list(source_columns),
        "source_columns": source_columns,
        "has_header": has_header,
        **problems.report_fields(),
        "statistics": statistics,
    }


def stratified_split(
    rows: list[dict[str, Any]], seed: int, share: float = VALIDATION_SHARE
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Hold out about `share` of the rows (at least one when any can go), class by class.

    The same rows, seed and share give the same split; both sides keep the rows' order. Each
    class holds out its share of rows, rounded so that the total comes to `share` of all rows,
    and always keeps one in training: every class with two or more examples appears in
    training. A class with one example stays wholly in training (it cannot be learnt and
    measured both), so it is absent from validation. Multi-label rows are grouped by their
    rarest class; a class that would then be missing from training gets a row moved back."""
    if len(rows) < 2:
        return list(rows), []
    counts = Counter(name for row in rows for name in row_labels(row))
    strata: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        strata[min(row_labels(row), key=lambda name: (counts[name], name))].append(index)
    room = {key: len(indices) - 1 for key, indices in strata.items()}
    target = min(max(1, round(len(rows) * share)), sum(room.values()))
    ideal = {key: len(indices) * target / len(rows) for key, indices in strata.items()}
    take = {key: min(int(ideal[key]), room[key]) for key in strata}
    # Rounding leaves some rows to place: largest remainders first, then by class name.
    order = sorted(strata, key=lambda key: (take[key] - ideal[key], key))
    left = target - sum(take.values())
    while left > 0:
        for key in order:
            if left > 0 and take[key] < room[key]:
                take[key] += 1
                left -= 1
    rng = random.Random(seed)
    held: set[int] = set()
    for key in sorted(strata):
        indices = list(strata[key])
        rng.shuffle(indices)
        held.update(indices[: take[key]])
    in_training = {name for i, row in enumerate(rows) if i not in held for name in row_labels(row)}
    for name in sorted(counts):
        if counts[name] >= MIN_CLASS_EXAMPLES and name not in in_training:
            back = min(i for i in held if name in row_labels(rows[i]))
            held.discard(back)
            in_training.update(row_labels(rows[back]))
    return (
        [row for i, row in enumerate(rows) if i not in held],
        [row for i, row in enumerate(rows) if i in held],
    )
