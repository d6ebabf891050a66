"""The answers of `/v1/models`: OpenAI's model object, with what tuneforge knows beside it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public
from tuneforge.db.store import Row
from tuneforge.training.spec import hub_id_of


class ModelProvenance(Public):
    """Where an imported base model came from (tuneforge.imports.convert)."""

    format: Literal["gguf", "huggingface"] = Field(..., description="What was imported.")
    file_name: str = Field(..., description="The GGUF file's or the folder's name.")
    sha256: str | None = Field(..., description="SHA-256 of the GGUF file.")
    bytes: int = Field(..., description="Size of the GGUF file, or of the copied folder.")
    quantization: str | None = Field(
        ..., description="The GGUF file's type (general.file_type), e.g. Q4_1, Q4_K_M, F16."
    )
    tensor_types: dict[str, int] | None = Field(
        ..., description="GGUF tensor types and how many tensors have each."
    )
    architecture: str | None = Field(
        ..., description="GGUF general.architecture, or the folder's config architecture."
    )
    model_type: str | None = Field(..., description="transformers' model_type.")
    dtype: str | None = Field(..., description="The dtype of the written safetensors.")
    parameters: int = Field(..., description="Parameters of the written model.")
    files: list[dict[str, str | int]] | None = Field(
        None, description="A folder's weight files (name, bytes, sha256)."
    )


class ModelPublic(Public):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    kind: str = Field(..., description="`base`, or the kind of a fine-tuned model.")
    base_model: str | None
    job_id: str | None = Field(..., description="The job that made (or imported) it.")
    provenance: ModelProvenance | None = Field(
        ..., description="An imported model's source: file, SHA-256, quantization, dtype."
    )


class ModelDeleted(Public):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True


class ModelsPublic(Public):
    object: Literal["list"] = "list"
    data: list[ModelPublic]


def public_model(row: Row) -> ModelPublic:
    return ModelPublic(
        id=row["id"],
        created=int(row["created_at"]),
        owned_by=row["owned_by"],
        kind=row["kind"],
        base_model=row.get("base_model"),
        job_id=row.get("job_id"),
        provenance=row.get("provenance"),
    )


def listed_models(rows: Sequence[Row]) -> list[ModelPublic]:
    """Each model once: a base model named by its Hugging Face cache folder
    (`models--org--name`, as seed 000 names it) is the Hub id `org/name`, and is listed
    once under that id however many names it was used by (and so is a fine-tuned model's
    `base_model`)."""
    shown: dict[str, ModelPublic] = {}
    for row in rows:
        model = public_model(row)
        if model.base_model:
            model.base_model = hub_id_of(model.base_model)
        if model.kind == "base":
            model.id = hub_id_of(model.id)
            earlier = shown.get(model.id)
            if earlier is not None and earlier.kind == "base":
                if model.provenance and not earlier.provenance:
                    shown[model.id] = model
                continue
        shown.setdefault(model.id, model)
    return list(shown.values())
