"""`POST /v1/model_imports`: a base model imported from a GGUF file or a Hugging Face folder,
checked at once and then written by a worker as a job of kind `model_import`.

The source is either a GGUF file uploaded through `/v1/files` with purpose `model` (the CLI
uploads the user's local file, so the server may be remote), or a path on the server that lies
inside one of the operator's import roots (setting `import_roots`, default HOME/imports):
a GGUF file or a model folder. Nothing outside those roots can be named.

Everything that can be checked without converting is checked here, so a bad request gets its
error at once and leaves nothing behind: the name is free, the file is a complete GGUF file of
an architecture transformers reads, the folder holds safetensors and no code of its own.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneforge.config import Settings
from tuneforge.datasets.ingest import MODEL_PURPOSE, file_path, require_file
from tuneforge.db.files import files_of
from tuneforge.db.store import Row, Store, new_id
from tuneforge.errors import (
    InvalidRequestError,
    JobNotFoundError,
    ModelExistsError,
    NotFoundError,
)
from tuneforge.imports.convert import check_folder
from tuneforge.imports.gguf_header import read_header
from tuneforge.jobs.status import TERMINAL, JobStatus

KIND = "model_import"
# Plain names: no `/` (Hub ids), no `:` (ft:… names), so an import never shadows either.
NAME = re.compile(r"^(?!models--)[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ModelImportCreate(BaseModel):
    """What to import, and the name the model gets."""

    model_config = ConfigDict(extra="forbid")
    file: str | None = Field(
        None,
        max_length=64,
        description="A GGUF file uploaded to /v1/files with purpose `model`.",
    )
    path: str | None = Field(
        None,
        max_length=4096,
        description="A GGUF file or Hugging Face model folder on the server, inside one of its "
        "import roots (setting import_roots; default HOME/imports).",
    )
    name: str | None = Field(
        None,
        max_length=100,
        description="The model's name, as jobs, serving and exports will know it (letters, "
        "digits, `.`, `_`, `-`). Default: the file's or folder's name, without `.gguf`.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelImportCreate:
        if (self.file is None) == (self.path is None):
            raise ValueError("give exactly one of `file` (an uploaded GGUF) and `path`")
        if self.name is not None and (not NAME.match(self.name) or ".." in self.name):
            raise ValueError(
                f"name {self.name!r} must start with a letter or digit and hold only letters, "
                "digits, '.', '_' and '-' (at most 100)"
            )
        return self


def imported_folder(settings: Settings, name: str) -> Path:
    """Where the model imported as `name` lives."""
    return settings.models_dir / "imported" / name


def create_import(store: Store, settings: Settings, request: ModelImportCreate) -> Row:
    """Check the source and the name, then queue the import; nothing is written unless every
    check passes."""
    if request.file is not None:
        row = require_file(store, request.file, "file")
        if row["purpose"] != MODEL_PURPOSE:
            raise InvalidRequestError(
                f"File {request.file} was uploaded with purpose {row['purpose']!r}; a model to "
                f"import is uploaded with purpose {MODEL_PURPOSE!r}.",
                param="file",
            )
        source, label = file_path(settings, request.file), row["filename"]
    else:
        assert request.path is not None
        source = import_path(settings, request.path)
        label = source.name
    if source.is_dir():
        check_folder(source, label)
        kind = "folder"
    else:
        read_header(source, label)
        kind = "gguf"
    name = request.name or default_name(label)
    check_name_free(store, settings, name)
    job_id = new_id("modelimport")
    spec = {"file": request.file, "path": str(source), "label": label, "name": name, "source": kind}
    store.insert_job(
        {
            "id": job_id,
            "kind": KIND,
            "model": name,
            "status": JobStatus.VALIDATING_FILES.value,
            "spec": spec,
            "created_at": time.time(),
            "device": "cpu",
            "max_attempts": 2,
        },
        "Import accepted.",
        files=files_of(spec),
    )
    return store.transition(job_id, JobStatus.QUEUED, f"Import of {label} as {name} queued.")


def import_path(settings: Settings, requested: str) -> Path:
    """The existing file or folder `requested` names, links followed, if it lies inside one of
    the import roots; InvalidRequestError otherwise (the path is not echoed back resolved, so
    the answer tells nothing about the server's files outside the roots)."""
    if "\0" in requested:
        raise InvalidRequestError("path holds a NUL byte.", param="path")
    roots = [root.resolve() for root in settings.import_dirs]
    candidate = Path(requested).expanduser()
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    resolved = candidate.resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise InvalidRequestError(
            f"path {requested!r} lies outside the import roots ({', '.join(map(str, roots))}); "
            "put the model there, or upload a GGUF file (purpose model) and import it by file.",
            param="path",
        )
    if not resolved.exists():
        raise NotFoundError(f"Nothing at {requested!r} in the import roots.", param="path")
    return resolved


def default_name(label: str) -> str:
    """A model name from a file or folder name: `SmolLM2-135M-Instruct.Q4_1.gguf` ->
    `SmolLM2-135M-Instruct.Q4_1`."""
    stem = label[: -len(".gguf")] if label.lower().endswith(".gguf") else label
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:100].removeprefix("models--")
    return re.sub(r"\.{2,}", ".", name) or "model"


def check_name_free(store: Store, settings: Settings, name: str) -> None:
    """ModelExistsError where `name` is a model already, a folder in `model_dirs` that it
    would shadow, or the name of an import under way."""
    if not NAME.match(name):
        raise InvalidRequestError(f"{name!r} is not a valid model name.", param="name")
    if store.get_model(name) is not None or imported_folder(settings, name).exists():
        raise ModelExistsError(
            f"A model named {name!r} exists already; choose another name (--name).", param="name"
        )
    for folder in settings.model_dirs:
        if (folder / name).exists():
            raise ModelExistsError(
                f"{name!r} names the model folder {folder / name} (model_dirs); choose another "
                "name.",
                param="name",
            )
    jobs, _ = store.list_jobs(kind=KIND, limit=1000)
    for job in jobs:
        if job["model"] == name and job["status"] not in TERMINAL:
            raise ModelExistsError(
                f"Import {job['id']} is importing a model named {name!r} already.", param="name"
            )


def require_import(store: Store, import_id: str) -> Row:
    job = store.get_job(import_id)
    if job is None or job["kind"] != KIND:
        raise JobNotFoundError(f"No model import with id {import_id!r}.", param="id")
    return job
