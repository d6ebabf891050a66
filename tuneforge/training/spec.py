"""Job specs: one pydantic model per training kind, shared by REST, the CLI's YAML and the
stored job, so names, defaults, bounds and help text exist once."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Hub ids (`org/name`), cache-style names (`models--org--name`) and our own model ids
# (`ft:...`). Never a file-system path: `..`, leading `/` and backslashes are refused.
MODEL_NAME = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._:\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)?$")

LOSSES = ("mnrl", "cached_mnrl", "triplet", "cosine", "cosent")
# Which data layouts each loss trains on (see tuneforge.datasets.embedding).
LOSS_LAYOUTS: dict[str, tuple[str, ...]] = {
    "mnrl": ("pair", "triplet"),
    "cached_mnrl": ("pair", "triplet"),
    "triplet": ("triplet",),
    "cosine": ("scored_pair",),
    "cosent": ("scored_pair",),
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbeddingHyperparameters(Strict):
    """Hyperparameters of an embedding job. `"auto"` (OpenAI's word) takes the default."""

    n_epochs: int = Field(1, ge=1, le=1000, description="Passes over the training data.")
    batch_size: int = Field(
        32,
        ge=1,
        le=65536,
        description="Examples per step; with mnrl every other example is an in-batch negative.",
    )
    learning_rate: float = Field(5e-5, gt=0, le=1, description="Peak learning rate (AdamW).")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Share of steps to warm up over.")
    warmup_steps: int | None = Field(
        None, ge=0, description="Warm-up steps; overrides warmup_ratio when given."
    )
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warm-up."
    )
    max_seq_length: int | None = Field(
        None, ge=8, le=8192, description="Truncate inputs to this many tokens (model default)."
    )
    mini_batch_size: int = Field(
        32, ge=1, le=65536, description="cached_mnrl only: examples per forward pass."
    )
    triplet_margin: float = Field(5.0, gt=0, description="triplet only: distance margin.")
    eval_steps: int | None = Field(
        None, ge=1, description="Evaluate every this many steps (default: once per epoch)."
    )
    logging_steps: int = Field(
        5, ge=1, description="Report loss and learning rate every this many steps."
    )
    checkpoint_steps: int | None = Field(
        None,
        ge=1,
        description="Write a checkpoint every this many steps (default: at each epoch's end); "
        "a crashed run continues from the newest one.",
    )
    use_amp: bool = Field(False, description="Mixed precision (on CUDA only).")
    save_best_model: bool = Field(
        False, description="Keep the weights of the best evaluation, not the last step's."
    )
    dataloader_num_workers: int = Field(
        0, ge=0, le=64, description="Processes that prepare batches (0: in the job's process)."
    )

    @model_validator(mode="before")
    @classmethod
    def _auto_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != "auto"}
        return data

    @model_validator(mode="after")
    def _best_model_needs_matching_checkpoints(self) -> EmbeddingHyperparameters:
        # Going back to the best evaluation needs a checkpoint at every evaluation.
        if (
            self.save_best_model
            and self.checkpoint_steps is not None
            and (self.eval_steps is None or self.checkpoint_steps % self.eval_steps)
        ):
            raise ValueError(
                "with save_best_model, checkpoint_steps must be a multiple of eval_steps"
            )
        return self


class EmbeddingMethodParams(Strict):
    loss: Literal["mnrl", "cached_mnrl", "triplet", "cosine", "cosent"] = Field(
        "mnrl",
        description="mnrl/cached_mnrl: pairs or triplets; triplet: triplets; "
        "cosine/cosent: scored pairs.",
    )
    hyperparameters: EmbeddingHyperparameters = Field(default_factory=EmbeddingHyperparameters)


class EmbeddingMethod(Strict):
    type: Literal["embedding"] = "embedding"
    embedding: EmbeddingMethodParams = Field(default_factory=EmbeddingMethodParams)


# One kind so far; with more, this becomes a union discriminated by `type`.
Method = EmbeddingMethod


REGISTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,99}$")
ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")


class Promotion(Strict):
    """Move an alias to the new version only if it is better by `min_delta`."""

    alias: str = Field(
        "production", description="Alias to move (e.g. production, staging).", max_length=64
    )
    metric: str | None = Field(
        None,
        max_length=128,
        description="Metric to compare (default: the kind's primary metric).",
    )
    min_delta: float = Field(
        0.0,
        description="How much better the new version must be than the version the alias "
        "points at (or the base model), on this job's validation data.",
    )

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        if not ALIAS_NAME.match(value):
            raise ValueError("letters, digits, '_' and '-', starting with a letter")
        return value


class JobCreate(Strict):
    """`POST /v1/fine_tuning/jobs`: OpenAI's fields plus tuneforge's extensions."""

    model: str = Field(..., min_length=1, max_length=255, description="Base model to tune.")
    training_file: str | None = Field(None, description="Id of the uploaded training file.")
    training_files: list[str] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="tuneforge: several training files, concatenated.",
    )
    validation_file: str | None = Field(
        None, description="Id of a validation file; without one, 10% of the data is held out."
    )
    suffix: str | None = Field(
        None,
        max_length=64,
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="Part of the fine-tuned model's name.",
    )
    seed: int | None = Field(
        None, ge=0, le=2**31 - 1, description="Seed for shuffling, splitting and init."
    )
    metadata: dict[str, str] | None = Field(None, description="Up to 16 key-value pairs.")
    method: Method = Field(default_factory=EmbeddingMethod)
    timeout_seconds: int | None = Field(
        None,
        ge=1,
        le=30 * 24 * 3600,
        description="tuneforge: after this much running time the job checkpoints and fails "
        "with error code `timeout`.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="tuneforge: runs that may crash (killed, out of memory, lost worker) "
        "before the job fails; each retry continues from the last checkpoint.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="tuneforge: where to train; cuda falls back to cpu with a warning."
    )
    registered_model: str | None = Field(
        None,
        max_length=100,
        pattern=REGISTRY_NAME.pattern,
        description="tuneforge: registry name the trained model becomes a new version of "
        "(default: the base model's name, with the suffix).",
    )
    promote: Promotion | None = Field(
        None, description="tuneforge: a promotion gate applied when the job succeeds."
    )

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if not MODEL_NAME.match(value):
            raise ValueError("must be a model id like org/name, models--org--name or ft:...")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value and len(value) > 16:
            raise ValueError("at most 16 keys")
        if value and any(len(k) > 64 or len(v) > 512 for k, v in value.items()):
            raise ValueError("keys at most 64 and values at most 512 characters")
        return value

    @model_validator(mode="after")
    def _one_training_source(self) -> JobCreate:
        if not self.training_file and not self.training_files:
            raise ValueError("training_file or training_files is required")
        return self

    def all_training_files(self) -> list[str]:
        files = list(self.training_files or [])
        if self.training_file and self.training_file not in files:
            files.insert(0, self.training_file)
        return files
