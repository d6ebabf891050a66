"""`POST /v1/exports`: a model written in a format other tools load, checked at once and then
made by a worker as a job of kind `export`.

Formats:
- `sentence-transformers`: an embedding model's folder, as `SentenceTransformer(path)` loads it,
  or a reranker's, as `CrossEncoder(path)` loads it.
- `merged`: a causal LM with its LoRA adapters merged into the base, as safetensors with the
  tokenizer and chat template (`AutoModelForCausalLM.from_pretrained(path)`).
- `gguf`: a causal LM of the Llama family as one GGUF file in f32/f16/bf16 or a llama.cpp
  quantization, with an Ollama `Modelfile` beside it; verified in llama.cpp before it succeeds.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneforge.config import Settings
from tuneforge.db.store import Row, Store, new_id
from tuneforge.errors import InvalidRequestError, JobNotFoundError
from tuneforge.export.gguf_convert import DIRECT_TYPES, gguf_architecture
from tuneforge.export.llama import QUANTIZED
from tuneforge.jobs.status import JobStatus
from tuneforge.registry.models import resolve_model
from tuneforge.security.paths import inside
from tuneforge.serving.loading import DESCRIPTIONS, model_kind
from tuneforge.training.spec import MODEL_NAME

KIND = "export"
FORMATS = ("sentence-transformers", "merged", "gguf")
GGUF_TYPES = DIRECT_TYPES + QUANTIZED
# The kinds of model (see tuneforge.serving.loading.model_kind) each format is for.
FORMAT_KINDS = {
    "sentence-transformers": ("embedding", "reranker"),
    "merged": ("causal_lm",),
    "gguf": ("causal_lm",),
}


class ExportCreate(BaseModel):
    """Which model, in which format, with which options."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(..., max_length=255, description="Model id (ft:…, name@alias, a base).")
    format: Literal["sentence-transformers", "merged", "gguf"]
    quantization: str | None = Field(
        None,
        description=f"gguf only: one of {', '.join(GGUF_TYPES)} (default q4_k_m).",
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="merged only: the weights' type (auto: as the base model has them)."
    )
    system: str | None = Field(
        None,
        max_length=20000,
        description="gguf only: the Modelfile's SYSTEM (default: the one system prompt every "
        "training conversation shares, if there is one).",
    )
    # 8 conversations of 48 tokens: what the quantized types' thresholds were measured on.
    verify_prompts: int = Field(
        8, ge=1, le=20, description="gguf only: conversations the file is checked on."
    )
    verify_max_tokens: int = Field(
        48, ge=1, le=512, description="gguf only: tokens generated per check."
    )
    metadata: dict[str, str] | None = None

    @model_validator(mode="after")
    def _options(self) -> ExportCreate:
        if not MODEL_NAME.match(self.model):
            raise ValueError(f"{self.model!r} is not a model id")
        if self.format == "gguf":
            self.quantization = (self.quantization or "q4_k_m").lower()
            if self.quantization not in GGUF_TYPES:
                raise ValueError(
                    f"quantization {self.quantization!r} is not one of {', '.join(GGUF_TYPES)}"
                )
        elif self.quantization is not None:
            raise ValueError("quantization applies to the gguf format only")
        if self.format != "merged" and self.dtype != "auto":
            raise ValueError("dtype applies to the merged format only")
        if self.format != "gguf" and self.system is not None:
            raise ValueError("system applies to the gguf format only")
        return self


def base_config_folder(folder: Path) -> Path | None:
    """The folder whose config.json describes the architecture of the model in `folder`:
    itself, its merged weights, or (for adapters) its base when that is local."""
    from tuneforge.training.llm import MERGED, base_location

    if not (folder / "adapter_config.json").is_file():
        return folder
    if (folder / MERGED / "config.json").is_file():
        return folder / MERGED
    base = Path(base_location(folder))
    if (base / "config.json").is_file():
        return base
    from tuneforge.registry.models import cached_snapshot

    return cached_snapshot(str(base))


def create_export(store: Store, settings: Settings, request: ExportCreate) -> Row:
    """Check that the model exists and fits the format, then queue the export; nothing is
    written unless every check passes."""
    source = resolve_model(store, settings, request.model)
    if not source.is_local:
        raise InvalidRequestError(
            f"Model {request.model!r} is not available locally; download or train it first.",
            param="model",
        )
    folder = Path(source.location)  # checked as it resolved (see check_model_files)
    found = model_kind(folder)
    wanted = FORMAT_KINDS[request.format]
    if found not in wanted:
        what = DESCRIPTIONS.get(found or "", "not a model tuneforge can export")
        raise InvalidRequestError(
            f"{request.model} is {what}; the {request.format} format is for "
            f"{' and '.join(DESCRIPTIONS[k] + 's' for k in wanted)}.",
            param="format",
        )
    if request.format == "gguf":
        config_folder = base_config_folder(folder)
        if config_folder is not None:
            gguf_architecture(config_folder)
    job_id = new_id("export")
    store.insert_job(
        {
            "id": job_id,
            "kind": KIND,
            "model": request.model,
            "status": JobStatus.VALIDATING_FILES.value,
            "spec": request.model_dump(mode="json"),
            "created_at": time.time(),
            "device": "cpu",
            "max_attempts": 2,
        },
        "Export accepted.",
    )
    what = request.format + (f" ({request.quantization})" if request.quantization else "")
    message = f"Export of {request.model} as {what} queued."
    return store.transition(job_id, JobStatus.QUEUED, message)


def require_export(store: Store, export_id: str) -> Row:
    job = store.get_job(export_id)
    if job is None or job["kind"] != KIND:
        raise JobNotFoundError(f"No export with id {export_id!r}.", param="id")
    return job


def export_folder(settings: Settings, export_id: str) -> Path:
    return inside(settings.home / "exports", export_id)


def file_stem(model: str) -> str:
    """A file name for a model id: `ft:tiny-qwen2:sts:abc` -> `tiny-qwen2-sts-abc`."""
    name = model.removeprefix("ft:").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"
