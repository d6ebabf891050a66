"""The hyperparameters of each training kind: one base with what every kind shares (its
fields and their checks), and per kind a class that adds its own fields and re-declares a
shared one only to change its default or its help, as trl's configs do."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


# Unknown fields are refused: a misspelt setting is an error, never silently ignored.
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Bounds and help text of the hyperparameters that several kinds have; each kind's class
# picks the default (`n_epochs: Epochs = 1`).
Epochs = Annotated[int, Field(ge=1, le=1000, description="Passes over the training data.")]
LearningRate = Annotated[float, Field(gt=0, le=1, description="Peak learning rate (AdamW).")]
WarmupRatio = Annotated[float, Field(ge=0, lt=1, description="Share of steps to warm up over.")]
WarmupSteps = Annotated[
    int | None, Field(ge=0, description="Warm-up steps; overrides warmup_ratio when given.")
]
WeightDecay = Annotated[float, Field(ge=0, le=1, description="AdamW weight decay.")]
Scheduler = Annotated[
    Literal["linear", "cosine", "constant", "constant_with_warmup"],
    Field(description="Learning-rate schedule after warm-up."),
]
LoggingSteps = Annotated[
    int, Field(ge=1, description="Report loss and learning rate every this many steps.")
]
CheckpointSteps = Annotated[int | None, Field(ge=1)]
Patience = Annotated[int | None, Field(ge=1, le=1000)]
GroupByLength = Annotated[
    bool,
    Field(
        description="Batch examples of similar length together (groups in random order): "
        "far less padding on data of varied lengths, the same examples each epoch."
    ),
]
SkipPadding = Annotated[
    bool,
    Field(
        description="Linear layers compute the real tokens only, not the batch's padding: the "
        "same result, less work. Applies to BERT-family encoders (BERT, RoBERTa, XLM-R, "
        "DistilBERT, MPNet, ELECTRA, ALBERT); other models compute as before."
    ),
]
UseAmp = Annotated[
    bool | None,
    Field(
        description="Mixed precision, on CUDA only (the weights stay float32). Default "
        "(auto): bf16 autocast on GPUs with native bf16 (Ampere and newer), float32 on older "
        "ones; true: fp16 there too; false: float32 everywhere."
    ),
]
LoaderWorkers = Annotated[
    int,
    Field(ge=0, le=64, description="Processes that prepare batches (0: in the job's process)."),
]


class Hyperparameters(Strict):
    """What the hyperparameters of every kind share. A kind's class re-declares a field to
    change its default or its help, as trl's configs do. `"auto"` (OpenAI's word) takes the
    default."""

    n_epochs: Epochs = 3
    batch_size: int = Field(16, ge=1, le=65536, description="Examples per step.")
    learning_rate: LearningRate = 5e-5
    warmup_ratio: WarmupRatio = 0.1
    weight_decay: WeightDecay = 0.01
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    lr_scheduler: Scheduler = "linear"
    max_seq_length: int | None = Field(
        None, ge=8, le=8192, description="Truncate inputs to this many tokens (model default)."
    )
    eval_steps: int | None = Field(
        None, ge=1, description="Evaluate every this many steps (default: once per epoch)."
    )
    logging_steps: LoggingSteps = 5
    checkpoint_steps: CheckpointSteps = Field(
        None,
        description="Write a checkpoint every this many steps (default: at each epoch's end); "
        "a crashed run continues from the newest one.",
    )
    learning_rate_multiplier: float | None = Field(
        None,
        gt=0,
        le=100,
        description="OpenAI's: the kind's default learning rate times this (instead of "
        "learning_rate). Once the rate is known it is shown as learning_rate.",
    )
    deterministic: bool = Field(
        False,
        description="Deterministic kernels only (torch.use_deterministic_algorithms, and "
        "attention on its math kernel): on a GPU a resumed run then repeats the uninterrupted "
        "one exactly, at some cost in speed. Off, a GPU's attention backward pass varies in "
        "its last bits from run to run.",
    )

    # The fields that make a run end on its best evaluation's weights (see keeps_best_model).
    keep_best_fields: ClassVar[tuple[str, ...]] = ()

    @property
    def keeps_best_model(self) -> bool:
        """The run ends on the weights of its best evaluation, not on the last step's."""
        return any(getattr(self, name) not in (None, False) for name in self.keep_best_fields)

    @model_validator(mode="before")
    @classmethod
    def _auto_means_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if v != "auto"}
        multiplier = data.get("learning_rate_multiplier")
        if multiplier is None:
            return data
        if data.get("learning_rate") is not None:
            raise ValueError("give learning_rate or learning_rate_multiplier, not both")
        default = cls.model_fields["learning_rate"].default
        # A fixed default is scaled now; one that depends on the model's size is scaled when
        # the job knows its model (see learning_rate), and then recorded as learning_rate.
        if default is not None and isinstance(multiplier, int | float):
            data["learning_rate"] = min(default * multiplier, 1.0)
            data.pop("learning_rate_multiplier")
        return data

    @model_validator(mode="after")
    def _best_model_needs_matching_checkpoints(self) -> Hyperparameters:
        # Going back to the best evaluation needs a checkpoint at every evaluation.
        if (
            self.keeps_best_model
            and self.checkpoint_steps is not None
            and (self.eval_steps is None or self.checkpoint_steps % self.eval_steps)
        ):
            raise ValueError(
                f"with {' or '.join(self.keep_best_fields)}, checkpoint_steps must be a "
                "multiple of eval_steps"
            )
        return self


class EmbeddingHyperparameters(Hyperparameters):
    """Hyperparameters of an embedding job. `"auto"` (OpenAI's word) takes the default."""

    n_epochs: Epochs = 1
    batch_size: int = Field(
        32,
        ge=1,
        le=65536,
        description="Examples per step; with mnrl every other example is an in-batch negative.",
    )
    # Up to 1 here (warm up over the whole run); the other kinds stop below 1.
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Share of steps to warm up over.")
    warmup_steps: WarmupSteps = None
    mini_batch_size: int = Field(
        32, ge=1, le=65536, description="cached_mnrl only: examples per forward pass."
    )
    triplet_margin: float = Field(5.0, gt=0, description="triplet only: distance margin.")
    skip_padding: SkipPadding = True
    use_amp: UseAmp = None
    save_best_model: bool = Field(
        False, description="Keep the weights of the best evaluation, not the last step's."
    )
    dataloader_num_workers: LoaderWorkers = 0

    keep_best_fields = ("save_best_model",)


class LLMHyperparameters(Hyperparameters):
    """Hyperparameters of supervised and DPO jobs (defaults: QLoRA as seed 001 runs it).
    `"auto"` (OpenAI's word) takes the default."""

    batch_size: int = Field(2, ge=1, le=4096, description="Examples per forward pass.")
    # None: the default for the model's size and the tuning (see tuneforge.training.llm).
    learning_rate: float | None = Field(  # type: ignore[assignment]
        None,
        gt=0,
        le=1,
        description="Peak learning rate (AdamW). Default (auto): with lora tuning 1e-3 for a "
        "model of fewer than 1B parameters, 2e-4 for larger ones; 2e-4 with full tuning.",
    )
    warmup_ratio: WarmupRatio = 0.03
    weight_decay: WeightDecay = 0.0
    lr_scheduler: Scheduler = "cosine"
    max_seq_length: int = Field(
        4096,
        ge=16,
        le=131072,
        description="Longest example in tokens (chat template included); longer examples are "
        "reported when the job is created, never cut.",
    )
    logging_steps: LoggingSteps = 1
    checkpoint_steps: CheckpointSteps = Field(
        None,
        description="Write a checkpoint every this many steps (default: at each epoch's end, "
        "or at each evaluation with early stopping); a crashed run continues from the newest.",
    )
    gradient_accumulation_steps: int = Field(
        4,
        ge=1,
        le=1024,
        description="Forward passes per optimizer step: the effective batch is "
        "batch_size x gradient_accumulation_steps.",
    )
    warmup_steps: WarmupSteps = None
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in the backward pass: less memory, ~20% slower."
    )
    qlora_upcast: bool = Field(
        False,
        description="4bit/8bit only: keep the embedding, head and norms in float32 (peft's "
        "prepare_model_for_kbit_training), as QLoRA recipes before trl 1.16 did. Off: they stay "
        "in the compute dtype (about 2.2 GB less for a 7B model).",
    )
    max_samples: int = Field(
        0, ge=0, description="Train on at most this many training examples (0: all)."
    )
    early_stopping_patience: Patience = Field(
        None,
        description="Stop after this many evaluations in a row without a lower validation "
        "loss (default: never); the best evaluation's weights are kept.",
    )

    keep_best_fields = ("early_stopping_patience",)


class SupervisedHyperparameters(LLMHyperparameters):
    packing: bool = Field(
        False,
        description="Pack several examples into each sequence of max_seq_length tokens: "
        "fewer padding tokens, faster epochs.",
    )
    group_by_length: GroupByLength = True


class DPOHyperparameters(LLMHyperparameters):
    n_epochs: Epochs = 1
    learning_rate: LearningRate = Field(
        5e-6, description="Peak learning rate (AdamW); DPO wants a small one."
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


class ClassificationHyperparameters(Hyperparameters):
    """Hyperparameters of a classification job. `"auto"` (OpenAI's word) takes the default."""

    # None: the default for the model's size (see tuneforge.training.classification).
    learning_rate: float | None = Field(  # type: ignore[assignment]
        None,
        gt=0,
        le=1,
        description="Peak learning rate (AdamW). Default (auto): 1e-4 for a model of fewer "
        "than 60M parameters (MiniLM-size), 5e-5 for larger ones; with lora tuning, about "
        "2e-4 is usual.",
    )
    max_seq_length: int = Field(
        256,
        ge=8,
        le=8192,
        description="Truncate texts to this many tokens (at most the model's own limit); "
        "predictions truncate the same way.",
    )
    checkpoint_steps: CheckpointSteps = Field(
        None,
        description="Write a checkpoint every this many steps (default: at each epoch's end, "
        "or at each evaluation when the best model is kept); a crashed run continues from the "
        "newest one.",
    )
    metric_for_best_model: Literal[CLASSIFICATION_METRICS] = Field(  # type: ignore[valid-type]
        "f1_macro",
        description="The job's primary metric: it picks the best evaluation for early "
        "stopping and save_best_model.",
    )
    early_stopping_patience: Patience = Field(
        None,
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
    group_by_length: GroupByLength = True
    skip_padding: SkipPadding = True
    use_amp: UseAmp = None
    dataloader_num_workers: LoaderWorkers = 0

    keep_best_fields = ("save_best_model", "early_stopping_patience")


# LoRA's usual 2e-4 (QLoRA's, seed 001's) was tuned on models of billions of parameters; small
# models learn a task's format far too slowly with it. SmolLM2-135M-Instruct, LoRA r 16 on every
# linear layer, 48 BANKING77-as-JSON rows for 3 epochs (bench/README, "LLM quality"): answers
# to held-out prompts with exactly the task's keys 0.25 with 2e-4, 0.98 with 1e-3.
SMALL_LLM_PARAMETERS = 1_000_000_000
SMALL_LLM_LORA_LEARNING_RATE = 1e-3
LLM_LEARNING_RATE = 2e-4


def learning_rate(hp: LLMHyperparameters, tuning: str, parameters: int) -> float:
    """The job's learning rate, or the default for `tuning` of a model of `parameters` (times
    learning_rate_multiplier when given)."""
    if hp.learning_rate is not None:
        return hp.learning_rate
    small = tuning == "lora" and parameters < SMALL_LLM_PARAMETERS
    rate = SMALL_LLM_LORA_LEARNING_RATE if small else LLM_LEARNING_RATE
    return min(rate * (hp.learning_rate_multiplier or 1.0), 1.0)


class ReinforcementHyperparameters(LLMHyperparameters):
    """Hyperparameters of a reinforcement job: OpenAI's (n_epochs, batch_size,
    learning_rate_multiplier, eval_interval, eval_samples, compute_multiplier,
    reasoning_effort) and trl's GRPO settings. `"auto"` (OpenAI's word) takes the default."""

    n_epochs: Epochs = 1
    batch_size: int = Field(
        4,
        ge=1,
        le=4096,
        description="Prompts per optimizer step; each is answered num_generations times and "
        "its answers are compared with each other (GRPO's group).",
    )
    gradient_accumulation_steps: int = Field(
        1,
        ge=1,
        le=1024,
        description="Forward passes a step's answers are split into (less memory, same step).",
    )
    compute_multiplier: float = Field(
        1.0,
        gt=0,
        le=16,
        description="OpenAI's exploration budget: answers sampled per prompt are "
        "round(4 x compute_multiplier), at least 2 (unless num_generations is given).",
    )
    num_generations: int | None = Field(
        None, ge=2, le=256, description="Answers sampled per prompt (GRPO's group size)."
    )
    eval_interval: int | None = Field(
        None,
        ge=1,
        description="OpenAI's name for eval_steps: evaluate the validation prompts every this "
        "many steps (default: at each epoch's end).",
    )
    eval_samples: int = Field(
        1,
        ge=1,
        le=64,
        description="Answers sampled per validation prompt in the trainer's evaluations.",
    )
    reasoning_effort: Literal["default", "low", "medium", "high"] | None = Field(
        None, description="OpenAI's reasoning effort: accepted, no effect on these models."
    )
    max_completion_length: int = Field(
        256, ge=1, le=32768, description="Longest answer sampled, in tokens."
    )
    max_seq_length: int = Field(
        1024,
        ge=16,
        le=131072,
        description="Longest prompt in tokens (chat template included); longer prompts are "
        "reported when the job is created, never cut.",
    )
    temperature: float = Field(
        1.0, gt=0, le=10, description="Sampling temperature of the training answers."
    )
    beta: float = Field(
        0.0,
        ge=0,
        le=100,
        description="KL penalty towards the base model (0: none, and no reference pass).",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, slower."
    )
    logging_steps: LoggingSteps = 1

    @property
    def generations(self) -> int:
        """Answers sampled per training prompt."""
        return self.num_generations or max(2, round(4 * self.compute_multiplier))

    @model_validator(mode="after")
    def _answers_split_evenly(self) -> ReinforcementHyperparameters:
        answers = self.batch_size * self.generations
        if answers % self.gradient_accumulation_steps:
            raise ValueError(
                f"a step's {answers} answers (batch_size x answers per prompt) must split "
                f"evenly into gradient_accumulation_steps {self.gradient_accumulation_steps}"
            )
        return self
