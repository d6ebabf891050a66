"""Preparing datasets: clean, de-duplicate, filter, merge and split into new datasets.

`POST /v1/datasets/{id}/prepare` reads one or more valid datasets of one kind, and writes a
training dataset (and a validation dataset, unless `validation_share` is 0); the sources stay
as they are. In order:

1. every text is cleaned (`dedup.clean`: Unicode NFC, whitespace); rows left with an empty
   text are removed (`empty`);
2. rows outside the length bounds are removed (`too_short`, `too_long`: characters of all of
   the row's texts together);
3. rows in a language not asked for are removed (`language`, see `languages`);
4. duplicates are removed (`exact_duplicate`, `normalised_duplicate`, `near_duplicate`, see
   `dedup`), the first occurrence kept, across all sources;
5. the rest is split deterministically by `seed`: classification data stratified by label,
   so both sides keep the class shares.

The report counts the removed rows by reason, with examples, and gives statistics by language
and by task type (classification: the label; supervised data: the row's `task_type` field, else
its system prompt, where rows have one). Both new datasets carry it under `preparation`.
"""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneforge.config import Settings
from tuneforge.datasets.chat_render import message_text
from tuneforge.datasets.classification import row_labels, stratified_split
from tuneforge.datasets.dedup import clean, find_duplicates
from tuneforge.datasets.ingest import (
    check_file,
    file_path,
    ingest_file,
    require_dataset,
    require_file,
)
from tuneforge.datasets.languages import detect_language
from tuneforge.db.store import Row, Store
from tuneforge.errors import InvalidDatasetError, InvalidRequestError

EXAMPLES_PER_REASON = 5
SNIPPET_CHARS = 200
TASK_TYPE_CHARS = 80


class PrepareRequest(BaseModel):
    """How to prepare a dataset (the one in the path, plus `merge`)."""

    model_config = ConfigDict(extra="forbid")
    merge: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="More datasets of the same kind to merge in, after the first.",
    )
    near_duplicate_threshold: float | None = Field(
        0.8,
        gt=0,
        le=1,
        description="Jaccard similarity of character 5-grams from which two rows are "
        "near-duplicates (MinHash); null: remove exact and case/spacing duplicates only.",
    )
    languages: list[str] | None = Field(
        None,
        min_length=1,
        max_length=50,
        description="Keep only rows in these languages (ISO 639-1 codes, e.g. de, en).",
    )
    min_chars: int = Field(0, ge=0, description="Remove rows with fewer characters of text.")
    max_chars: int | None = Field(
        None, ge=1, description="Remove rows with more characters of text."
    )
    validation_share: float = Field(
        0.1, ge=0, lt=1, description="Share of rows held out for validation (0: no split)."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the split.")

    @model_validator(mode="after")
    def _bounds(self) -> PrepareRequest:
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise ValueError("max_chars must not be below min_chars")
        return self


def row_texts(kind: str, row: Row) -> list[str]:
    """The texts of a canonical row (see `datasets.kinds`), in reading order."""
    if kind == "supervised":
        return [message_text(m) for m in row["messages"]]
    if kind == "dpo":
        messages = [*row["prompt"], *row["chosen"], *row["rejected"]]
        return [str(m["content"]) for m in messages]
    if kind == "classification":
        return [str(row["text"])]
    return [str(v) for k, v in row.items() if k != "score"]


def language_text(kind: str, row: Row) -> str:
    """What the language of a row is told from: what users and the model wrote."""
    if kind == "supervised":
        return "\n".join(message_text(m) for m in row["messages"] if m["role"] != "system")
    if kind == "dpo":
        return "\n".join(str(m["content"]) for m in [*row["prompt"], *row["chosen"]])
    return row_texts(kind, row)[0]


def task_type(kind: str, row: Row) -> str | None:
    """A row's task type: its label (classification), its `task_type` field (supervised data,
    see `datasets.chat`) or else its system prompt (chat data)."""
    if kind == "classification":
        return ";".join(row_labels(row))
    if row.get("task_type"):
        return str(row["task_type"])
    messages = row.get("messages") or row.get("prompt") or []
    for message in messages:
        if message["role"] == "system":
            return str(message["content"])[:TASK_TYPE_CHARS]
    return None


def dedup_text(kind: str, row: Row) -> str:
    """What duplicates are compared on: all of the row's texts (and its label or score)."""
    parts = row_texts(kind, row)
    if kind == "classification":
        parts.append(";".join(row_labels(row)))
    elif "score" in row:
        parts.append(str(row["score"]))
    return "\n".join(parts)


def cleaned(value: Any) -> Any:
    """`value` with `dedup.clean` applied to every string in it."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [cleaned(v) for v in value]
    if isinstance(value, dict):
        return {k: cleaned(v) for k, v in value.items()}
    return value


def file_record(kind: str, row: Row) -> Row:
    """A canonical row as a line of a data file that reads back as the same row."""
    if kind == "dpo":
        return {
            "input": {"messages": row["prompt"]},
            "preferred_output": row["chosen"],
            "non_preferred_output": row["rejected"],
        }
    return dict(row)


def split(kind: str, rows: list[Row], share: float, seed: int) -> tuple[list[Row], list[Row]]:
    """A deterministic split; classification rows stratified by label (see
    `classification.stratified_split`)."""
    if share == 0 or len(rows) < 2:
        return list(rows), []
    if kind == "classification":
        return stratified_split(rows, seed, share)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[: min(max(1, round(len(rows) * share)), len(rows) - 1)])
    return (
        [r for i, r in enumerate(rows) if i not in held],
        [r for i, r in enumerate(rows) if i in held],
    )


def read_dataset(
    store: Store, settings: Settings, dataset_id: str, param: str
) -> tuple[str, Row, list[Row]]:
    """(kind, file row, canonical rows) of a valid dataset; InvalidDatasetError otherwise."""
    row = require_dataset(store, dataset_id, param)
    if not row["report"]["valid"]:
        raise InvalidDatasetError(
            f"Dataset {dataset_id} has {row['report']['problem_count']} problem(s); see "
            f"GET /v1/datasets/{dataset_id}. Only valid datasets can be prepared.",
            param=param,
        )
    data = check_file(settings, file_path(settings, dataset_id), row["format"])
    return str(data.report["kind"]), row, data.rows


def prepare_dataset(
    store: Store, settings: Settings, dataset_id: str, request: PrepareRequest
) -> dict[str, Any]:
    """Prepare `dataset_id` (and `request.merge`) into new datasets; see the module's
    docstring. Returns {kind, train, validation, report} with the new file rows. Nothing is
    written when a source is missing, invalid or of another kind, or when no row is left."""
    sources = [dataset_id, *request.merge]
    if len(set(sources)) != len(sources):
        raise InvalidRequestError("A dataset is named more than once.", param="merge")
    kind: str | None = None
    rows: list[Row] = []
    origin: list[tuple[str, int]] = []  # (dataset, row number) of each row
    for i, source in enumerate(sources):
        param = "id" if i == 0 else f"merge[{i - 1}]"
        source_kind, _, source_rows = read_dataset(store, settings, source, param)
        if kind is not None and source_kind != kind:
            raise InvalidRequestError(
                f"Dataset {source} holds {source_kind} data; {dataset_id} holds {kind} data. "
                "Only datasets of one kind can be merged.",
                param=param,
            )
        kind = source_kind
        rows.extend(source_rows)
        origin.extend((source, n) for n in range(1, len(source_rows) + 1))
    assert kind is not None
    rows_in = len(rows)
    removed: Counter[str] = Counter()
    examples: dict[str, list[dict[str, Any]]] = {}

    def drop(index: int, reason: str, **extra: Any) -> None:
        removed[reason] += 1
        shown = examples.setdefault(reason, [])
        if len(shown) < EXAMPLES_PER_REASON:
            source, number = origin[index]
            text = dedup_text(kind, rows[index])[:SNIPPET_CHARS]
            shown.append({"dataset": source, "row": number, "text": text, **extra})

    normalised_rows = 0
    keep: list[int] = []
    languages: dict[int, str] = {}
    for index, row in enumerate(rows):
        tidy = cleaned(row)
        normalised_rows += tidy != row
        rows[index] = tidy
        texts = row_texts(kind, tidy)
        length = sum(len(t) for t in texts)
        if any(not t for t in texts):
            drop(index, "empty")
        elif length < request.min_chars:
            drop(index, "too_short", chars=length)
        elif request.max_chars is not None and length > request.max_chars:
            drop(index, "too_long", chars=length)
        else:
            languages[index] = detect_language(language_text(kind, tidy))
            if request.languages and languages[index] not in request.languages:
                drop(index, "language", language=languages[index])
            else:
                keep.append(index)
    duplicates = find_duplicates(
        [dedup_text(kind, rows[i]) for i in keep],
        near_threshold=request.near_duplicate_threshold,
        seed=request.seed + 1,
    )
    dropped = set()
    for dup in duplicates:
        index, of = keep[dup.index], keep[dup.of]
        dropped.add(index)
        drop(
            index,
            dup.reason,
            duplicate_of={"dataset": origin[of][0], "row": origin[of][1]},
            similarity=dup.similarity,
        )
    keep = [i for i in keep if i not in dropped]
    if not keep:
        raise InvalidRequestError(
            f"No row is left after preparation (removed: {dict(removed)}).",
            param="id",
            details={"removed": dict(removed), "examples": examples},
        )
    kept_rows = [rows[i] for i in keep]
    train, validation = split(kind, kept_rows, request.validation_share, request.seed)
    report: dict[str, Any] = {
        "sources": sources,
        "kind": kind,
        "settings": request.model_dump(mode="json"),
        "rows_in": rows_in,
        "rows_out": len(kept_rows),
        "normalised_rows": normalised_rows,
        "removed_total": sum(removed.values()),
        "removed": dict(removed),
        "examples": examples,
        "split": {
            "seed": request.seed,
            "validation_share": request.validation_share,
            "stratified": kind == "classification" and bool(validation),
            "train_rows": len(train),
            "validation_rows": len(validation),
        },
        "statistics": statistics(kind, kept_rows, [languages[i] for i in keep]),
    }
    if kind == "classification":
        report["split"]["train_labels"] = label_shares(train)
        report["split"]["validation_labels"] = label_shares(validation)
    stem = Path(require_file(store, dataset_id)["filename"]).stem[:100]
    train_row = write_dataset(
        store, settings, f"{stem}-prepared-train.jsonl", kind, train, {"preparation": report}
    )
    validation_row = None
    if validation:
        validation_row = write_dataset(
            store,
            settings,
            f"{stem}-prepared-validation.jsonl",
            kind,
            validation,
            {"preparation": dict(report, role="validation", train_dataset=train_row["id"])},
        )
    return {"kind": kind, "train": train_row, "validation": validation_row, "report": report}


def statistics(kind: str, rows: list[Row], languages: list[str]) -> dict[str, Any]:
    """Rows by language and by task type (None where the rows have no task type)."""
    types = Counter(t for t in (task_type(kind, r) for r in rows) if t is not None)
    return {
        "rows": len(rows),
        "languages": dict(Counter(languages).most_common()),
        "task_types": dict(types.most_common()) if types else None,
        "task_type_source": task_type_source(kind, rows) if types else None,
    }


def task_type_source(kind: str, rows: list[Row]) -> str:
    """Where the task types come from: `label`, `task_type`, `system_prompt`, or
    `task_type+system_prompt` when some rows name their task and others only have a system
    prompt."""
    if kind == "classification":
        return "label"
    named = sum(bool(r.get("task_type")) for r in rows)
    if named == len(rows):
        return "task_type"
    prompted = any(not r.get("task_type") and task_type(kind, r) is not None for r in rows)
    if named == 0:
        return "system_prompt"
    return "task_type+system_prompt" if prompted else "task_type"


def label_shares(rows: list[Row]) -> dict[str, float]:
    counts = Counter(name for row in rows for name in row_labels(row))
    total = sum(counts.values())
    return {name: round(n / total, 4) for name, n in sorted(counts.items())} if total else {}


def write_dataset(
    store: Store,
    settings: Settings,
    filename: str,
    kind: str,
    rows: list[Row],
    annotations: dict[str, Any],
) -> Row:
    """Store `rows` (canonical, of `kind`) as a new JSONL dataset, validated like an upload,
    its report carrying `annotations`."""
    text = "".join(json.dumps(file_record(kind, r), ensure_ascii=False) + "\n" for r in rows)
    return ingest_file(
        store, settings, filename, io.BytesIO(text.encode("utf-8")), annotations=annotations
    )
