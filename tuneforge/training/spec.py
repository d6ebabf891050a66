"""Job specs: one pydantic model per training kind, shared by REST, the CLI's YAML and the
stored job, so names, defaults, bounds and help text exist once. Each kind's hyperparameters
are in `tuneforge.training.hyperparameters`."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator, model_validator

from tuneforge.defaults import DEFAULT_METHOD_TYPE, LOSSES  # noqa: F401 (re-exported)
from tuneforge.errors import FieldValueError
from tuneforge.training.hyperparameters import (
    ClassificationHyperparameters,
    DPOHyperparameters,
    EmbeddingHyperparameters,
    ReinforcementHyperparameters,
    Strict,
    SupervisedHyperparameters,
)
from tuneforge.training.reranker_spec import RerankerMethod

# Hub ids (`org/name`), cache-style names (`models--org--name`), our own model ids
# (`ft:...`) and registry references (`name@alias`, `name@v3`). Never a file-system path:
# `..`, leading `/` and backslashes are refused.
MODEL_NAME = re.compile(
    r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._:\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)?(@[A-Za-z0-9_\-]+)?$"
)

# Which data layouts each loss trains on (see tuneforge.datasets.embedding).
LOSS_LAYOUTS: dict[str, tuple[str, ...]] = {
    "mnrl": ("pair", "triplet", "n_tuple"),
    "cached_mnrl": ("pair", "triplet", "n_tuple"),
    "triplet": ("triplet",),
    "cosine": ("scored_pair",),
    "cosent": ("scored_pair",),
}
# The loss a job that names none trains with, by the data's layout ("the loss follows the
# data"): CoSENT for scored pairs, in-batch negatives (MNRL) for pairs, triplets and n-tuples.
DEFAULT_LOSS: dict[str, str] = {
    "scored_pair": "cosent", "pair": "mnrl", "triplet": "mnrl", "n_tuple": "mnrl"
}


def hub_id_of(name: str) -> str:
    """`models--org--name` (the Hub cache's folder name, as seed 000 uses it) -> `org/name`."""
    if name.startswith("models--"):
        parts = name[len("models--") :].split("--", 1)
        return "/".join(parts)
    return name


def cache_folder_of(hub_id: str) -> str:
    """`org/name` -> `models--org--name`, the Hub cache's folder of that model."""
    return "models--" + hub_id.replace("/", "--")


class EmbeddingMethodParams(Strict):
    loss: Literal["mnrl", "cached_mnrl", "triplet", "cosine", "cosent"] | None = Field(
        None,
        description="mnrl/cached_mnrl: pairs or triplets; triplet: triplets; "
        "cosine/cosent: scored pairs. Default: the data's (cosent for scored pairs, mnrl "
        "for pairs and triplets), recorded on the job when it is created.",
    )
    matryoshka_dims: list[Annotated[int, Field(ge=1)]] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="Train the embedding to work truncated to each of these sizes, strictly "
        "decreasing, none above the model's dimension (the loss is wrapped in "
        "MatryoshkaLoss); the evaluation reports the primary metric at each size.",
    )
    hyperparameters: EmbeddingHyperparameters = Field(default_factory=EmbeddingHyperparameters)

    @field_validator("matryoshka_dims")
    @classmethod
    def _decreasing(cls, value: list[int] | None) -> list[int] | None:
        if value and any(b >= a for a, b in zip(value, value[1:], strict=False)):
            raise ValueError(f"must be strictly decreasing (e.g. [384, 256, 128, 64]); got {value}")
        return value

    def loss_for(self, layout: str) -> str:
        """The loss the job trains with on data of `layout`: the one named, else the default."""
        return self.loss or DEFAULT_LOSS[layout]


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


class GenerationChecks(Strict):
    """Answers generated for validation prompts at the end of a job (seed 001's evaluation),
    by the base and the fine-tuned model: the share that is valid JSON, that carries the
    expected keys and that is in the prompt's language, and the answers' lengths."""

    samples: int = Field(
        16, ge=0, le=1000, description="Validation prompts to answer (0: no generation checks)."
    )
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        le=8192,
        description="Longest answer, in tokens (default: 1.5 times the longest reference "
        "answer of the checked prompts, plus 16, at most 1024).",
    )
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


class ReinforcementMethodParams(LLMMethodParams):
    """Reinforcement fine-tuning (OpenAI's `reinforcement` method) with trl's GRPO: answers
    sampled for each prompt are scored by `grader`, and the model learns towards the better
    ones of each group."""

    grader: dict[str, Any] = Field(
        ...,
        description="The grader object that scores each answer from 0 to 1 (string_check, "
        "text_similarity, score_model, label_model, python, multi, tuneforge_checks; see "
        "tuneforge.graders); checked with the data when the job is created.",
    )
    # The reward is the evaluation here: answers to the validation prompts are graded.
    generation_checks: GenerationChecks = Field(default_factory=lambda: GenerationChecks(samples=0))
    hyperparameters: ReinforcementHyperparameters = Field(
        default_factory=ReinforcementHyperparameters
    )


class ReinforcementMethod(Strict):
    type: Literal["reinforcement"] = "reinforcement"
    reinforcement: ReinforcementMethodParams


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
    | Annotated[DPOMethod, Tag("dpo")]
    | Annotated[ReinforcementMethod, Tag("reinforcement")]
    | Annotated[RerankerMethod, Tag("reranker")],
    Discriminator(method_type),
]


class WandbSettings(Strict):
    """OpenAI's Weights & Biases integration: the run is logged to this project."""

    project: str = Field(..., min_length=1, max_length=128)
    name: str | None = Field(None, max_length=128, description="The run's name (the job id).")
    entity: str | None = Field(None, max_length=128, description="Team or user (the key's).")
    tags: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=50)


class Integration(Strict):
    type: Literal["wandb"] = Field(..., description="wandb: Weights & Biases.")
    wandb: WandbSettings


class OpenAIHyperparameters(Strict):
    """The top-level `hyperparameters` of OpenAI's API (deprecated there; its client still
    sends them): moved into the method's hyperparameters when the job is created."""

    n_epochs: int | Literal["auto"] | None = None
    batch_size: int | Literal["auto"] | None = None
    learning_rate_multiplier: float | Literal["auto"] | None = None
    learning_rate: float | Literal["auto"] | None = Field(
        None, description="tuneforge: the learning rate itself (what the CLI's option sends)."
    )


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
        "points at (or the base model), on this job's validation data. A negative value "
        "is the explicit override that lets a model worse than its base take the alias.",
    )
    grader: dict[str, Any] | None = Field(
        None,
        description="An OpenAI grader to compare chat models by (supervised and "
        "reinforcement jobs): the metric is then reward_mean, the mean reward of each model's "
        "greedy answers to the validation prompts.",
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
    method: Method = Field(
        default_factory=EmbeddingMethod,
        description="How to train. Left out, it follows the training file's data: chat or "
        "prompt/completion -> supervised, preference pairs -> dpo, text and label -> "
        "classification, pairs, triplets or scored pairs -> embedding, a query with "
        "labeled documents or with a list of negatives -> reranker.",
    )
    hyperparameters: OpenAIHyperparameters | None = Field(
        None,
        description="OpenAI's deprecated top-level form of the method's hyperparameters; "
        "moved into them (naming one in both places is an error).",
    )
    integrations: list[Integration] | None = Field(
        None, max_length=8, description="Where else to log the run: wandb (Weights & Biases)."
    )
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
            raise FieldValueError(
                "training_file", "a training file is required: training_file (a file id) or "
                "training_files (a list of them)"
            )
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

    def with_method(self, kind: str | None) -> JobCreate:
        """This request with its method settled: the default method of `kind` (the training
        data's) when the request named none, and the top-level `hyperparameters` moved into
        the method's. ValueError when both places name the same hyperparameter."""
        data = self.model_dump(mode="json", exclude={"hyperparameters"})
        if kind is not None and "method" not in self.model_fields_set:
            data["method"] = {"type": kind}
        top = self.hyperparameters.model_dump(exclude_none=True) if self.hyperparameters else {}
        if top:
            method = data["method"]
            params = method.setdefault(method["type"], {})
            given: dict[str, Any] = {}
            if "method" in self.model_fields_set:
                hp = getattr(self.method, self.method.type).hyperparameters
                given = hp.model_dump(mode="json", exclude_unset=True)
            both = sorted(set(top) & set(given))
            if both:
                raise ValueError(
                    f"hyperparameters.{both[0]} and method.{method['type']}.hyperparameters."
                    f"{both[0]} are both given: name it in one place (the top-level form is "
                    "OpenAI's deprecated one)"
                )
            params["hyperparameters"] = {**given, **top}
        return JobCreate.model_validate(data)

    def world_size(self) -> int:
        """Training processes over all machines."""
        machines = self.distributed.num_machines if self.distributed else 1
        return self.num_processes * machines

    def all_training_files(self) -> list[str]:
        files = list(self.training_files or [])
        if self.training_file and self.training_file not in files:
            files.insert(0, self.training_file)
        return files
