"""The data of one job: its files checked against its method, concatenated and split."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from tuneforge.config import Settings
from tuneforge.datasets.embedding import read_embedding_file
from tuneforge.datasets.ingest import file_path, require_file
from tuneforge.db.store import Store
from tuneforge.errors import InvalidDatasetError
from tuneforge.training.spec import LOSS_LAYOUTS, JobCreate

VALIDATION_SHARE = 0.1


@dataclass
class JobData:
    layout: str
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    # "file" when a validation file was given, "auto-split" when held out from training data.
    validation_source: str


def check_job_files(store: Store, spec: JobCreate) -> str:
    """Check that every file exists, passed validation and fits the loss; return the layout.

    Raises FileNotFoundInStoreError or InvalidDatasetError naming the offending parameter."""
    loss = spec.method.embedding.loss
    allowed = LOSS_LAYOUTS[loss]
    named = [
        (f"training_files[{i}]" if spec.training_files else "training_file", file_id)
        for i, file_id in enumerate(spec.all_training_files())
    ]
    if spec.validation_file:
        named.append(("validation_file", spec.validation_file))
    layouts = set()
    for param, file_id in named:
        report = require_file(store, file_id, param)["report"]
        if not report["valid"]:
            raise InvalidDatasetError(
                f"File {file_id} has {report['problem_count']} problem(s); see "
                f"GET /v1/datasets/{file_id}.",
                param=param,
                details={
                    "problems": report["problems"][:20],
                    "problems_by_code": report["problems_by_code"],
                },
            )
        if report["layout"] not in allowed:
            raise InvalidDatasetError(
                f"File {file_id} holds {report['layout']} rows; loss {loss!r} trains on "
                f"{' or '.join(allowed)}.",
                param=param,
            )
        layouts.add(report["layout"])
    if len(layouts) > 1:
        raise InvalidDatasetError(
            f"The files mix layouts ({', '.join(sorted(layouts))}); use one layout per job.",
            param="training_files",
        )
    return layouts.pop()


def load_job_data(store: Store, settings: Settings, spec: JobCreate, seed: int) -> JobData:
    """Read the job's files. Without a validation file, hold out 10% of the concatenated
    training rows, chosen by `seed` (the same rows for the same seed, every time)."""
    layout = check_job_files(store, spec)
    train_rows: list[dict[str, Any]] = []
    for file_id in spec.all_training_files():
        train_rows.extend(_read(store, settings, file_id))
    if spec.validation_file:
        return JobData(layout, train_rows, _read(store, settings, spec.validation_file), "file")
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


def _read(store: Store, settings: Settings, file_id: str) -> list[dict[str, Any]]:
    row = require_file(store, file_id)
    data = read_embedding_file(
        file_path(settings, file_id), row["format"], min_rows=settings.min_rows
    )
    if not data.valid:
        raise InvalidDatasetError(f"File {file_id} no longer passes validation.")
    return data.rows
