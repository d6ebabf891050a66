"""Which training kind a data file serves, told by its columns.

| kind             | columns                                                      |
|------------------|--------------------------------------------------------------|
| `supervised`     | `messages`, or `prompt` + `completion`                       |
| `dpo`            | `prompt` + `chosen` + `rejected`, or `input` + `preferred_output` |
| `embedding`      | `anchor` + `positive` (+ `negative`); `sentence1` + `sentence2` + `score` |
| `reranker`       | `query` + `document` + `label`; `query` + `positive` + `negatives` (a list) |
| `classification` | a text column (`text`, `chunk_text`, …) + a label column     |
| `reinforcement`  | `messages` ending before the answer (+ the fields a grader reads) |

An upload is checked for the kind its columns name; a job reads its files again with its own
settings (named columns, the model's tokenizer and sequence length), see `jobs.data`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Protocol

from tuneforge.datasets import chat, classification, embedding, reinforcement, reranker
from tuneforge.datasets.problems import ProblemLog
from tuneforge.datasets.readers import IndexSink, RecordStream, first_record


class FileData(Protocol):
    """What every kind's reader gives back."""

    layout: str | None
    rows: list[dict[str, Any]]
    report: dict[str, Any]

    @property
    def valid(self) -> bool: ...


def first_columns(path: Path, fmt: str) -> list[str]:
    """The column names of a file's first record ([] when there is none to read); never
    raises, whatever the file holds."""
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        except Exception:  # pyarrow raises several types for corrupt files
            return []
    try:
        with path.open("rb") as handle:
            head = handle.read(1024 * 1024).decode("utf-8", errors="replace")
        if fmt == "csv":
            return next(csv.reader(io.StringIO(head)), [])
        for line in head.splitlines():
            if line.strip():
                record = json.loads(line)
                return [str(k) for k in record] if isinstance(record, dict) else []
    except (OSError, ValueError, RecursionError, csv.Error):
        pass
    return []


def detect_kind(columns: list[str]) -> str:
    """The training kind whose layouts these columns match; `embedding` when none does (its
    reader also takes headerless CSV files and names every layout in its report)."""
    names = {c.strip().lower() for c in columns}
    if "messages" in names or {"prompt", "completion"} <= names:
        return "supervised"
    if {"chosen", "rejected"} <= names or "preferred_output" in names:
        return "dpo"
    if reranker.is_reranker_data(columns):
        return "reranker"
    canonical = {embedding.ALIASES.get(n, n) for n in names}
    if any(set(cols) <= canonical for cols in embedding.LAYOUTS.values()):
        return "embedding"
    if names & set(classification.TEXT_COLUMNS) and names & set(classification.LABEL_COLUMNS):
        return "classification"
    return "embedding"


def read_upload(
    path: Path,
    fmt: str,
    *,
    min_rows: int,
    tokenizer: Any = None,
    keep_rows: bool = True,
    index: IndexSink | None = None,
) -> FileData:
    """Check an uploaded file for the kind its columns name, with default settings; the
    report says which kind that was. `keep_rows=False` streams the file through and keeps no
    row (an upload's validation: memory grows with the longest line, not the file); `index`
    learns where each record starts (see `datasets.row_index`)."""
    kind = detect_kind(first_columns(path, fmt))
    if kind == "supervised" and _prompts_only(path, fmt):
        kind = "reinforcement"
    options: dict[str, Any] = {
        "min_rows": min_rows,
        "tokenizer": tokenizer,
        "keep_rows": keep_rows,
        "index": index,
    }
    data: FileData
    if kind == "supervised":
        data = chat.read_chat_file(path, fmt, **options)
    elif kind == "reinforcement":
        # No grader yet: the job that names one checks its fields on every line.
        data = reinforcement.read_reinforcement_file(path, fmt, **options)
    elif kind == "dpo":
        data = chat.read_preference_file(path, fmt, **options)
    elif kind == "classification":
        data = classification.read_classification_file(path, fmt, **options)
    elif kind == "reranker":
        data = reranker.read_reranker_file(path, fmt, **options)
    else:
        data = embedding.read_embedding_file(path, fmt, **options)
    data.report["kind"] = kind
    return data


def _prompts_only(path: Path, fmt: str) -> bool:
    """Whether the file's first conversation ends before an answer (OpenAI's reinforcement
    format: the prompt in `messages`, the answer left to the model), rather than with the
    assistant's turn that supervised data trains on."""
    found = first_record(RecordStream(path, fmt, ProblemLog()))
    messages = found[1].get("messages") if found is not None else None
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return False
    return messages[-1].get("role") in ("user", "developer", "system", "tool", "function")
