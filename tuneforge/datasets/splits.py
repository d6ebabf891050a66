"""The data of one job: its files read for its kind and settings, concatenated and split."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config import Settings
from tuneforge.datasets.embedding import read_embedding_file
from tuneforge.datasets.ingest import file_path, require_file
from tuneforge.datasets.kinds import FileData
from tuneforge.db.store import Store
from tuneforge.errors import InvalidDatasetError
from tuneforge.training.spec import LOSS_LAYOUTS, JobCreate

VALIDATION_SHARE = 0.1

# How each kind reads a file with the job's own settings: (spec, path, format, settings).
JobReader = Callable[[JobCreate, Path, str, Settings], FileData]


def _read_embedding(spec: JobCreate, path: Path, fmt: str, settings: Settings) -> FileData:
    return read_embedding_file(path, fmt, min_rows=settings.min_rows)


JOB_READERS: dict[str, JobReader] = {
    "embedding": _read_embedding,
}


@dataclass
class JobData:
    layout: str
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    # "file" when a validation file was given, "auto-split" when held out from training data.
    validation_source: str


def named_files(spec: JobCreate) -> list[tuple[str, str]]:
    """(parameter, file id) of every file the job names, training files first."""
    named = [
        (f"training_files[{i}]" if spec.training_files else "training_file", file_id)
        for i, file_id in enumerate(spec.all_training_files())
    ]
    if spec.validation_file:
        named.append(("validation_file", spec.validation_file))
    return named


def read_job_file(
    store: Store, settings: Settings, spec: JobCreate, file_id: str, param: str
) -> FileData:
    """Read one of the job's files for its kind; InvalidDatasetError (naming `param`) with
    the problems when it does not serve the job."""
    kind = spec.method.type
    row = require_file(store, file_id, param)
    uploaded_as = row["report"].get("kind")
    if uploaded_as and uploaded_as != kind:
        raise InvalidDatasetError(
            f"File {file_id} holds {uploaded_as} data (its columns say so); a {kind} job "
            "cannot train on it.",
            param=param,
        )
    data = JOB_READERS[kind](spec, file_path(settings, file_id), row["format"], settings)
    if not data.valid:
        report = data.report
        raise InvalidDatasetError(
            f"File {file_id} has {report['problem_count']} problem(s) for this job; see "
            f"GET /v1/datasets/{file_id}.",
            param=param,
            details={
                "problems": report["problems"][:20],
                "problems_by_code": report["problems_by_code"],
            },
        )
    if kind == "embedding":
        loss = spec.method.embedding.loss
        if data.layout not in LOSS_LAYOUTS[loss]:
            raise InvalidDatasetError(
                f"File {file_id} holds {data.layout} rows; loss {loss!r} trains on "
                f"{' or '.join(LOSS_LAYOUTS[loss])}.",
                param=param,
            )
    return data


def load_job_data(store: Store, settings: Settings, spec: JobCreate, seed: int) -> JobData:
    """Read and check the job's files. Without a validation file, hold out 10% of the
    concatenated training rows, chosen by `seed` (the same rows for the same seed, every
    time). Raises FileNotFoundInStoreError or InvalidDatasetError naming the parameter."""
    layouts: set[str] = set()
    train_rows: list[dict[str, Any]] = []
    eval_rows: list[dict[str, Any]] = []
    for param, file_id in named_files(spec):
        data = read_job_file(store, settings, spec, file_id, param)
        layouts.add(str(data.layout))
        (eval_rows if param == "validation_file" else train_rows).extend(data.rows)
    if len(layouts) > 1:
        raise InvalidDatasetError(
            f"The files mix layouts ({', '.join(sorted(layouts))}); use one layout per job.",
            param="training_files",
        )
    layout = layouts.pop()
    if spec.validation_file:
        return JobData(layout, train_rows, eval_rows, "file")
    train, held_out = split_rows(train_rows, seed)
    return JobData(layout, train, held_out, "auto-split")


def split_rows(rows: list[dict[str, Any]], seed: int) -> tuple[list[Any], list[Any]]:
    """A deterministic 90/10 split; at least one row on each side when there are two."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(max(1, round(len(rows) * VALIDATION_SHARE)), len(rows) - 1) if len(rows) > 1 else 0
    held = set(order[:n_eval])
    return (
        [r for i, r in enumerate(rows) if i not in held],
        [r for i, r in enumerate(rows) if i in held],
    )
