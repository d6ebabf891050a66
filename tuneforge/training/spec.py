"""Job specs: one pydantic model per training kind, shared by REST, the CLI's YAML and the
stored job, so names, defaults, bounds and help text exist once."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

# Hub ids (`org/name`), cache-style names (`models--org--name`), our own model ids
# (`ft:...`) and registry references (`name@alias`, `name@v3`). Never a file-system path:
# `..`, leading `/` and backslashes are refused.
MODEL_NAME = re.compile(
    r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._:\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)?(@[A-Za-z0-9_\-]+)?$"
)

LOSSES = ("mnrl", "cached_mnrl", "triplet", "cosine", "cosent")
# Which data layouts each loss trains on (see tuneforge.datasets.embedding).
LOSS_LAYOUTS: dict[str, tuple[str, ...]] = {
    "mnrl": ("pair", "triplet"),
    "cached_mnrl": ("pair", "triplet"),
    "triplet": ("triplet",),
    "cosine": ("scored_pair",),
    "cosent": ("scored_pair",),
}
# The kind of a method that names no `type` (see method_type).
DEFAULT_METHOD_TYPE = "embedding"


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
    skip_padding: bool = Field(
        True,
        description="Linear layers compute the real tokens only, not the batch's padding: the "
        "same result, less work. Applies to BERT-family encoders (BERT, RoBERTa, XLM-R, "
        "DistilBERT, MPNet, ELECTRA, ALBERT); other models compute as before.",
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


class LoraSettings(Strict):
    """The low-rank adapters trained instead of the model's weights (peft's LoraConfig)."""

    r: int = Field(16, ge=1, le=1024, description="Rank of the adapters; higher = more capacity.")
    alpha: int = Field(
        16, ge=1, le=4096, description="Scaling factor: the update is scaled by alpha / r."
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapters' input.")
    target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear",
        description="Modules to adapt by name (e.g. [q_proj, v_proj]), or all-linear: every "
        "linear layer but the output head.",
    )

    @field_validator("target_modules")
    @classmethod
    def _some_modules(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and (not value or not all(m.strip() for m in value)):
            raise ValueError("name at least one module, or use all-linear")
        return value


class LLMHyperparameters(Strict):
    """Hyperparameters of supervised and DPO jobs (defaults: QLoRA as seed 001 runs it).
    `"auto"` (OpenAI's word) takes the default."""

    n_epochs: int = Field(3, ge=1, le=1000, description="Passes over the training data.")
    batch_size: int = Field(2, ge=1, le=4096, description="Examples per forward pass.")
    gradient_accumulation_steps: int = Field(
        4,
        ge=1,
        le=1024,
        description="Forward passes per optimizer step: the effective batch is "
        "batch_size x gradient_accumulation_steps.",
    )
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate (AdamW).")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warm-up."
    )
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps to warm up over.")
    warmup_steps: int | None = Field(
        None, ge=0, description="Warm-up steps; overrides warmup_ratio when given."
    )
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    max_seq_length: int = Field(
        4096,
        ge=16,
        le=131072,
        description="Longest example in tokens (chat template included); longer examples are "
        "reported when the job is created, never cut.",
    )
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in the backward pass: less memory, ~20% slower."
    )
    max_samples: int = Field(
        0, ge=0, description="Train on at most this many training examples (0: all)."
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Stop after this many evaluations in a row without a lower validation "
        "loss (default: never); the best evaluation's weights are kept.",
    )
    eval_steps: int | None = Field(
        None, ge=1, description="Evaluate every this many steps (default: once per epoch)."
    )
    logging_steps: int = Field(
        1, ge=1, description="Report loss and learning rate every this many steps."
    )
    checkpoint_steps: int | None = Field(
        None,
        ge=1,
        description="Write a checkpoint every this many steps (default: at each epoch's end, "
        "or at each evaluation with early stopping); a crashed run continues from the newest.",
    )

    @model_validator(mode="before")
    @classmethod
    def _auto_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != "auto"}
        return data

    @model_validator(mode="after")
    def _best_model_needs_matching_checkpoints(self) -> LLMHyperparameters:
        # Going back to the best evaluation needs a checkpoint at every evaluation.
        if (
            self.early_stopping_patience is not None
            and self.checkpoint_steps is not None
            and (self.eval_steps is None or self.checkpoint_steps % self.eval_steps)
        ):
            raise ValueError(
                "with early_stopping_patience, checkpoint_steps must be a multiple of eval_steps"
            )
        return self


class SupervisedHyperparameters(LLMHyperparameters):
    packing: bool = Field(
        False,
        description="Pack several examples into each sequence of max_seq_length tokens: "
        "fewer padding tokens, faster epochs.",
    )
    group_by_length: bool = Field(
        True,
        description="Batch examples of similar length together (groups in random order): "
        "far less padding on data of varied lengths, the same examples each epoch.",
    )


class DPOHyperparameters(LLMHyperparameters):
    n_epochs: int = Field(1, ge=1, le=1000, description="Passes over the training data.")
    learning_rate: float = Field(
        5e-6, gt=0, le=1, description="Peak learning rate (AdamW); DPO wants a small one."
    )
    beta: float = Field(
        0.1,
        gt=0,
        le=100,
        description="How far the model may move from the base model: higher beta keeps it "
        "closer (for ipo: the regularisation strength).",
    )
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = Field(
        "sigmoid",
        description="sigmoid: the DPO paper's loss; ipo: IPO; hinge: SLiC; robust: "
        "robust DPO for noisy preferences (with label_smoothing).",
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="robust: the assumed share of preference pairs whose labels are flipped.",
    )


class GenerationChecks(Strict):
    """Answers generated for validation prompts at the end of a job (seed 001's evaluation),
    by the base and the fine-tuned model: the share that is valid JSON, that carries the
    expected keys and that is in the prompt's language, and the answers' lengths."""

    samples: int = Field(
        16, ge=0, le=1000, description="Validation prompts to answer (0: no generation checks)."
    )
    max_new_tokens: int = Field(256, ge=1, le=8192, description="Longest answer, in tokens.")
    expected_keys: list[str] | None = Field(
        None,
        max_length=100,
        description="Keys every answer's JSON object must have (default: the keys of the "
        "validation example's own answer, where that is a JSON object).",
    )


class LLMMethodParams(Strict):
    """What supervised and DPO jobs share: how the model is tuned, and its checks."""

    tuning: Literal["lora", "full"] = Field(
        "lora", description="lora: train adapters, the base stays frozen; full: all weights."
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    quantization: Literal["auto", "4bit", "8bit", "none"] = Field(
        "auto",
        description="Load the frozen base model quantized (bitsandbytes, CUDA only): 4bit is "
        "QLoRA (NF4), 8bit LLM.int8. auto: 4bit on a CUDA GPU with bitsandbytes, else none.",
    )
    merge: bool = Field(
        False,
        description="lora: also save the base model with the adapters merged in, under "
        "merged/ in the model's folder (safetensors).",
    )
    generation_checks: GenerationChecks = Field(default_factory=GenerationChecks)

    @model_validator(mode="after")
    def _quantization_needs_lora(self) -> LLMMethodParams:
        if self.tuning == "full" and self.quantization in ("4bit", "8bit"):
            raise ValueError(
                "quantization trains adapters on a frozen, quantized base (QLoRA); full "
                "fine-tuning needs quantization none"
            )
        return self


class SupervisedMethodParams(LLMMethodParams):
    hyperparameters: SupervisedHyperparameters = Field(default_factory=SupervisedHyperparameters)


class SupervisedMethod(Strict):
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedMethodParams = Field(default_factory=SupervisedMethodParams)


class DPOMethodParams(LLMMethodParams):
    hyperparameters: DPOHyperparameters = Field(default_factory=DPOHyperparameters)


class DPOMethod(Strict):
    type: Literal["dpo"] = "dpo"
    dpo: DPOMethodParams = Field(default_factory=DPOMethodParams)


# The metrics of a classification job's validation split (see tuneforge.training.classification).
CLASSIFICATION_METRICS = (
    "accuracy",
    "f1_macro",
    "f1_micro",
    "f1_weighted",
    "precision_macro",
    "precision_micro",
    "precision_weighted",
    "recall_macro",
    "recall_micro",
    "recall_weighted",
)


class ClassificationHyperparameters(Strict):
    """Hyperparameters of a classification job. `"auto"` (OpenAI's word) takes the default."""

    n_epochs: int = Field(3, ge=1, le=1000, description="Passes over the training data.")
    batch_size: int = Field(16, ge=1, le=65536, description="Examples per step.")
    learning_rate: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Peak learning rate (AdamW). Default (auto): 1e-4 for a model of fewer "
        "than 60M parameters (MiniLM-size), 5e-5 for larger ones; with lora tuning, about "
        "2e-4 is usual.",
    )
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps to warm up over.")
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warm-up."
    )
    max_seq_length: int = Field(
        256,
        ge=8,
        le=8192,
        description="Truncate texts to this many tokens (at most the model's own limit); "
        "predictions truncate the same way.",
    )
    eval_steps: int | None = Field(
        None, ge=1, description="Evaluate every this many steps (default: once per epoch)."
    )
    logging_steps: int = Field(
        5, ge=1, description="Report loss and learning rate every this many steps."
    )
    checkpoint_steps: int | None = Field(
        None,
        ge=1,
        description="Write a checkpoint every this many steps (default: at each epoch's end, "
        "or at each evaluation when the best model is kept); a crashed run continues from the "
        "newest one.",
    )
    metric_for_best_model: Literal[CLASSIFICATION_METRICS] = Field(  # type: ignore[valid-type]
        "f1_macro",
        description="The job's primary metric: it picks the best evaluation for early "
        "stopping and save_best_model.",
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Stop after this many evaluations in a row without a better "
        "metric_for_best_model (default: never); the best evaluation's weights are kept.",
    )
    save_best_model: bool = Field(
        False,
        description="Keep the weights of the best evaluation by metric_for_best_model, not "
        "the last step's (always so with early_stopping_patience).",
    )
    class_weights: Literal["none", "balanced"] = Field(
        "none",
        description="balanced: weigh each class's loss by the inverse of its frequency in the "
        "training data (multi-label: positives by negatives/positives), for imbalanced classes.",
    )
    group_by_length: bool = Field(
        True,
        description="Batch examples of similar length together (groups in random order): "
        "far less padding on data of varied lengths, the same examples each epoch.",
    )
    skip_padding: bool = Field(
        True,
        description="Linear layers compute the real tokens only, not the batch's padding: the "
        "same result, less work. Applies to BERT-family encoders (BERT, RoBERTa, XLM-R, "
        "DistilBERT, MPNet, ELECTRA, ALBERT); other models compute as before.",
    )
    use_amp: bool = Field(False, description="Mixed precision (on CUDA only).")
    dataloader_num_workers: int = Field(
        0, ge=0, le=64, description="Processes that prepare batches (0: in the job's process)."
    )

    @model_validator(mode="before")
    @classmethod
    def _auto_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != "auto"}
        return data

    @property
    def keeps_best_model(self) -> bool:
        return self.save_best_model or self.early_stopping_patience is not None

    @model_validator(mode="after")
    def _best_model_needs_matching_checkpoints(self) -> ClassificationHyperparameters:
        # Going back to the best evaluation needs a checkpoint at every evaluation.
        if (
            self.keeps_best_model
            and self.checkpoint_steps is not None
            and (self.eval_steps is None or self.checkpoint_steps % self.eval_steps)
        ):
            raise ValueError(
                "with save_best_model or early_stopping_patience, checkpoint_steps must be a "
                "multiple of eval_steps"
            )
        return self


class ClassificationMethodParams(Strict):
    text_column: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="The file's text column (default: the one named text, sentence, "
        "chunk_text, content or input).",
    )
    label_column: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="The file's label column (default: the one named label, labels, category, "
        "class, frame_name or target).",
    )
    multi_label: bool = Field(
        False,
        description="Each row has a list of labels (a JSON list, or names separated by ';'); "
        "the model decides yes or no for every class.",
    )
    tuning: Literal["full", "lora"] = Field(
        "full",
        description="full: train all weights; lora: train adapters (and the whole "
        "classification head), merged into the saved model.",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    hyperparameters: ClassificationHyperparameters = Field(
        default_factory=ClassificationHyperparameters
    )


class ClassificationMethod(Strict):
    type: Literal["classification"] = "classification"
    classification: ClassificationMethodParams = Field(default_factory=ClassificationMethodParams)


def method_type(value: Any) -> str | None:
    """The kind a method names; `type` may be left out and then means embedding, the first
    kind (as it did before there were others)."""
    if isinstance(value, dict):
        return str(value.get("type", DEFAULT_METHOD_TYPE))
    if isinstance(value, BaseModel):
        return str(value.type)  # type: ignore[attr-defined]
    return None


# One spec per kind, told apart by `type` (each tag is the kind's `type`).
Method = Annotated[
    Annotated[EmbeddingMethod, Tag("embedding")]
    | Annotated[ClassificationMethod, Tag("classification")]
    | Annotated[SupervisedMethod, Tag("supervised")]
    | Annotated[DPOMethod, Tag("dpo")],
    Discriminator(method_type),
]


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


# The kinds whose trainers run on several processes (rank 0 measures and saves).
DISTRIBUTED_KINDS = ("embedding", "supervised", "dpo")


class Distributed(Strict):
    """How a job's processes train together (PyTorch distributed, launched by Accelerate).

    `ddp` replicates the model on every process; `fsdp` and `deepspeed` shard it, with
    `config` passed through to Accelerate as its `fsdp_config` / `deepspeed_config`. With
    `num_machines` above 1, the worker that claims the job waits for workers on other
    machines to join it (they share the database and the data folder); each machine runs
    `num_processes` of the job's processes."""

    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp", description="ddp (replicas), fsdp or deepspeed (sharded; CUDA only)."
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Accelerate's fsdp_config or deepspeed_config, passed through as given.",
    )
    num_machines: int = Field(
        1,
        ge=1,
        le=1024,
        description="Machines taking part, each with a tuneforge worker on the same database "
        "and data folder; the worker that claims the job waits for the others to join.",
    )
    main_process_ip: str | None = Field(
        None,
        max_length=255,
        pattern=r"^[A-Za-z0-9.\-:\[\]]+$",
        description="Address the machines meet at (default: the address of the machine whose "
        "worker claims the job, its TUNEFORGE_WORKER_ADDRESS).",
    )
    main_process_port: int | None = Field(
        None,
        ge=1024,
        le=65535,
        description="Rendezvous port on that machine (default: a free one).",
    )
    join_timeout_seconds: int = Field(
        600,
        ge=5,
        le=24 * 3600,
        description="How long the claiming worker waits for the other machines; then the run "
        "fails with `rendezvous_timeout` (and is retried while attempts are left).",
    )

    @model_validator(mode="before")
    @classmethod
    def _assigned_ranks(cls, value: Any) -> Any:
        # Machine ranks are tuneforge's to assign; specs stored before that carry rank 0.
        if isinstance(value, dict) and "machine_rank" in value:
            if value["machine_rank"] != 0:
                raise ValueError(
                    "machine_rank is assigned by tuneforge: each worker that joins the job "
                    "takes the next one"
                )
            value = {k: v for k, v in value.items() if k != "machine_rank"}
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
    num_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="tuneforge: training processes on this machine, one per device (gloo on "
        "CPU); more than 1 launches the job with Accelerate.",
    )
    devices: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="tuneforge: CUDA device indices to train on, one per process.",
    )
    distributed: Distributed | None = Field(
        None, description="tuneforge: strategy and multi-machine rendezvous of a distributed job."
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

    @model_validator(mode="after")
    def _distribution(self) -> JobCreate:
        problems = []
        dist = self.distributed
        if self.devices is not None:
            if len(self.devices) != self.num_processes:
                problems.append(
                    f"devices lists {len(self.devices)} device(s) but num_processes is "
                    f"{self.num_processes}: give one device per process"
                )
            if len(set(self.devices)) != len(self.devices):
                problems.append("devices must not repeat a device")
            if self.device == "cpu":
                problems.append("devices are CUDA device indices; device is cpu")
        if self.world_size() > 1 and self.method.type not in DISTRIBUTED_KINDS:
            problems.append(
                f"{self.method.type} jobs train in one process; distributed training is for "
                f"{', '.join(DISTRIBUTED_KINDS)}"
            )
        if dist is not None:
            if dist.strategy != "ddp" and self.device == "cpu":
                problems.append(f"distributed.strategy {dist.strategy} needs CUDA; device is cpu")
            if dist.strategy == "ddp" and dist.config:
                problems.append("distributed.config is for fsdp or deepspeed, not ddp")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def world_size(self) -> int:
        """Training processes over all machines."""
        machines = self.distributed.num_machines if self.distributed else 1
        return self.num_processes * machines

    def all_training_files(self) -> list[str]:
        files = list(self.training_files or [])
        if self.training_file and self.training_file not in files:
            files.insert(0, self.training_file)
        return files
