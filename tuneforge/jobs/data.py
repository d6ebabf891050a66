"""The data of one job: its files read for its kind and settings, concatenated and split."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from tuneforge.config import Settings
from tuneforge.datasets.chat import read_chat_file, read_preference_file
from tuneforge.datasets.classification import (
    ClassificationData,
    check_validation_labels,
    read_classification_file,
    row_labels,
    stratified_split,
)
from tuneforge.datasets.embedding import read_embedding_file
from tuneforge.datasets.ingest import file_path, require_dataset
from tuneforge.datasets.kinds import FileData
from tuneforge.datasets.reinforcement import read_reinforcement_file
from tuneforge.datasets.reranker import read_reranker_file
from tuneforge.db.store import Store
from tuneforge.errors import (
    FileNotFoundInStoreError,
    InvalidDatasetError,
    InvalidRequestError,
    TuneforgeError,
)
from tuneforge.graders.backends import check_job_grader
from tuneforge.registry.models import ModelSource, resolve_model
from tuneforge.training.base import JobData
from tuneforge.training.llm import cached_chat_tokenizer, method_params
from tuneforge.training.reranker_spec import RERANKER_LOSS_LAYOUTS, RerankerMethod
from tuneforge.training.spec import (
    LOSS_LAYOUTS,
    ClassificationMethod,
    EmbeddingMethod,
    JobCreate,
    ReinforcementMethod,
)

VALIDATION_SHARE = 0.1


@dataclass
class JobInputs:
    """What a job's files are read with: the job's spec, the caller's store and settings, and
    the base model, resolved on first use and only once (the LLM kinds read with its
    tokenizer; the job uses the same resolution)."""

    store: Store
    settings: Settings
    spec: JobCreate

    @cached_property
    def model(self) -> ModelSource:
        """The job's base model; ModelNotFoundError (naming `model`) when there is none."""
        return resolve_model(self.store, self.settings, self.spec.model)

    @property
    def tokenizer(self) -> Any:
        """The base model's chat tokenizer, as the job will read its files with it."""
        return cached_chat_tokenizer(self.model.location)


# How each kind reads a file with the job's own settings: (inputs, path, format).
JobReader = Callable[[JobInputs, Path, str], FileData]


def _read_embedding(inputs: JobInputs, path: Path, fmt: str) -> FileData:
    return read_embedding_file(path, fmt, min_rows=inputs.settings.min_rows)


def _read_reranker(inputs: JobInputs, path: Path, fmt: str) -> FileData:
    """Labeled pairs or ranking rows, labels checked against the job's score_range. With a
    retriever, every row names it (its folder, checked to be an embedding model) and its
    top-k: a model is measured on them as the job measures its models."""
    assert isinstance(inputs.spec.method, RerankerMethod)
    params = inputs.spec.method.reranker
    data = read_reranker_file(
        path, fmt, min_rows=inputs.settings.min_rows, score_range=params.score_range
    )
    if params.retriever:
        from tuneforge.registry.models import local_model
        from tuneforge.serving.loading import require_kind

        param = "method.reranker.retriever"
        try:
            location = local_model(inputs.store, inputs.settings, params.retriever)
        except TuneforgeError as exc:
            raise type(exc)(exc.message, param=param) from None
        try:
            require_kind(params.retriever, location.resolve(), "embedding")
        except InvalidRequestError as exc:
            raise InvalidRequestError(exc.message, param=param) from None
        for row in data.rows:
            row["retriever"] = str(location.resolve())
            row["retriever_top_k"] = params.retriever_top_k
    return data


def _read_classification(inputs: JobInputs, path: Path, fmt: str) -> FileData:
    assert isinstance(inputs.spec.method, ClassificationMethod)
    params = inputs.spec.method.classification
    return read_classification_file(
        path,
        fmt,
        min_rows=inputs.settings.min_rows,
        text_column=params.text_column,
        label_column=params.label_column,
        multi_label=params.multi_label,
    )


def _llm_reader(read: Callable[..., FileData]) -> JobReader:
    """A chat kind's reader (`read`: chat or preference rows), with the base model's
    tokenizer and max_seq_length: too long examples are found here."""

    def reader(inputs: JobInputs, path: Path, fmt: str) -> FileData:
        params = method_params(inputs.spec)
        assert params is not None
        return read(
            path,
            fmt,
            min_rows=inputs.settings.min_rows,
            tokenizer=inputs.tokenizer,
            max_seq_length=params.hyperparameters.max_seq_length,
        )

    return reader


def _read_reinforcement(inputs: JobInputs, path: Path, fmt: str) -> FileData:
    """Prompts and their items, each line checked against the job's grader (which is
    checked first: its fields, python graders while they are off, its judges)."""
    assert isinstance(inputs.spec.method, ReinforcementMethod)
    params = inputs.spec.method.reinforcement
    param = "method.reinforcement.grader"
    data = read_reinforcement_file(
        path,
        fmt,
        min_rows=inputs.settings.min_rows,
        grader=check_job_grader(inputs.store, inputs.settings, params.grader, param),
        grader_param=param,
        tokenizer=inputs.tokenizer,
        max_seq_length=params.hyperparameters.max_seq_length,
    )
    # The rows say how they are answered and graded: a model is measured on them as the job
    # measures its models (see `training.reinforcement.evaluate_model`).
    for row in data.rows:
        row["grader"] = params.grader
        row["max_completion_length"] = params.hyperparameters.max_completion_length
    return data


def _read_classification_validation(inputs: JobInputs, path: Path, fmt: str) -> FileData:
    assert isinstance(inputs.spec.method, ClassificationMethod)
    params = inputs.spec.method.classification
    return read_classification_file(
        path,
        fmt,
        min_rows=1,
        text_column=params.text_column,
        label_column=params.label_column,
        multi_label=params.multi_label,
        check_classes=False,
    )


# How a kind reads files it is measured on (a validation file, an evaluation's file), where
# that differs from the files it trains on.
VALIDATION_READERS: dict[str, JobReader] = {
    "classification": _read_classification_validation,
}

JOB_READERS: dict[str, JobReader] = {
    "embedding": _read_embedding,
    "classification": _read_classification,
    "supervised": _llm_reader(read_chat_file),
    "dpo": _llm_reader(read_preference_file),
    "reinforcement": _read_reinforcement,
    "reranker": _read_reranker,
}
# Kinds that read files uploaded as another kind: reinforcement prompts uploaded before the
# upload's check told them from chat data were recorded as supervised.
# A reranker trains on triplets and scored pairs as embedding jobs do.
# An embedding job trains on n-tuples (query, positive, negatives), uploaded as reranker data.
READS_UPLOADS_OF = {"reinforcement": ("supervised",), "reranker": ("embedding",)}
READS_LAYOUTS_OF = {("embedding", "reranker"): "ranking"}


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
    inputs: JobInputs, file_id: str, param: str, *, for_training: bool = True
) -> FileData:
    """Read one of the job's files for its kind; InvalidDatasetError (naming `param`) with
    the problems when it does not serve the job (`for_training=False`: any layout of the
    kind, as an evaluation measures on it)."""
    spec = inputs.spec
    kind = spec.method.type
    row = require_dataset(inputs.store, file_id, param)
    uploaded_as = row["report"].get("kind")
    # Uploads are checked for the kind their column names suggest; a classification job that
    # names its columns reads any file that has them.
    names_columns = isinstance(spec.method, ClassificationMethod) and bool(
        spec.method.classification.text_column or spec.method.classification.label_column
    )
    readable = (
        uploaded_as == kind
        or uploaded_as in READS_UPLOADS_OF.get(kind, ())
        or row["report"].get("layout") == READS_LAYOUTS_OF.get((kind, uploaded_as))
    )
    if uploaded_as and not readable and not names_columns:
        raise InvalidDatasetError(
            f"File {file_id} holds {uploaded_as} data (its columns say so); a {kind} job "
            "cannot train on it.",
            param=param,
        )
    reader = JOB_READERS[kind]
    if param == "validation_file" or not for_training:
        reader = VALIDATION_READERS.get(kind, reader)
    try:
        data = reader(inputs, file_path(inputs.settings, file_id), row["format"])
    except FileNotFoundError:  # deleted since its row was read
        raise FileNotFoundInStoreError(f"No file with id {file_id!r}.", param=param) from None
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
    if isinstance(spec.method, EmbeddingMethod) and for_training:
        loss = spec.method.embedding.loss_for(str(data.layout))
        if data.layout not in LOSS_LAYOUTS[loss]:
            raise InvalidDatasetError(
                f"File {file_id} holds {data.layout} rows; loss {loss!r} trains on "
                f"{' or '.join(LOSS_LAYOUTS[loss])}.",
                param=param,
            )
    if isinstance(spec.method, RerankerMethod) and for_training:
        reranker = spec.method.reranker
        if reranker.loss and data.layout not in RERANKER_LOSS_LAYOUTS[reranker.loss]:
            raise InvalidDatasetError(
                f"File {file_id} holds {data.layout} rows; reranker loss {reranker.loss!r} "
                f"trains on {' or '.join(RERANKER_LOSS_LAYOUTS[reranker.loss])} rows.",
                param=param,
            )
        if reranker.hyperparameters.both_orders and data.layout != "labeled_pair":
            raise InvalidDatasetError(
                f"File {file_id} holds {data.layout} rows; both_orders swaps the two texts of "
                "labeled_pair rows (query, document, label) only.",
                param="method.reranker.hyperparameters.both_orders",
            )
    return data


def load_job_data(inputs: JobInputs, seed: int) -> JobData:
    """Read and check the job's files. Without a validation file, hold out 10% of the
    concatenated training rows, chosen by `seed` (the same rows for the same seed, every
    time). Raises FileNotFoundInStoreError or InvalidDatasetError naming the parameter."""
    spec = inputs.spec
    layouts: set[str] = set()
    train_rows: list[dict[str, Any]] = []
    eval_rows: list[dict[str, Any]] = []
    eval_lines: list[int] = []
    for param, file_id in named_files(spec):
        data = read_job_file(inputs, file_id, param)
        layouts.add(str(data.layout))
        (eval_rows if param == "validation_file" else train_rows).extend(data.rows)
        if param == "validation_file" and isinstance(data, ClassificationData):
            eval_lines = data.lines
    if len(layouts) > 1:
        raise InvalidDatasetError(
            f"The files mix layouts ({', '.join(sorted(layouts))}); use one layout per job.",
            param="training_files",
        )
    layout = layouts.pop()
    classification = isinstance(spec.method, ClassificationMethod)
    if spec.validation_file:
        if classification:
            _check_validation_classes(spec.validation_file, train_rows, eval_rows, eval_lines)
        return JobData(layout, train_rows, eval_rows, "file")
    # Classes keep their shares on both sides, and every class is trained on.
    split = stratified_split if classification else split_rows
    train, held_out = split(train_rows, seed)
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


def _check_validation_classes(
    file_id: str,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    lines: list[int],
) -> None:
    """A classifier cannot predict a class it never saw: refuse validation rows with one."""
    trained = {name for row in train_rows for name in row_labels(row)}
    problems = check_validation_labels(trained, eval_rows, lines)
    if problems:
        raise InvalidDatasetError(
            f"File {file_id} has {len(problems)} validation row(s) with classes that the "
            "training data does not have.",
            param="validation_file",
            details={
                "problems": [p.to_dict() for p in problems[:20]],
                "problems_by_code": {"unseen_label": len(problems)},
            },
        )
