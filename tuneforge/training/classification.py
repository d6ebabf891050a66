"""The `classification` kind: transformers' sequence classification, built from a
ClassificationMethod spec.

Plain steps over the library: number the classes, load the encoder with a new head (and LoRA
adapters when asked), tokenize, train with transformers' `Trainer` (class weights, early
stopping), measure on the validation split, save a plain safetensors classification model with
its label maps and its evaluation.

| layout                       | head              | loss                 | prediction         |
|------------------------------|-------------------|----------------------|--------------------|
| `classification`             | a logit per class | cross-entropy        | the highest class  |
| `multi_label_classification` | a logit per class | binary cross-entropy | every class >= 0.5 |

The metrics are those of `classification_metrics`; the first of them the job names
(`metric_for_best_model`, F1 macro by default) is its primary metric.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.datasets.classification import MULTI_LABEL, row_labels
from tuneforge.training.base import RunContext, TrainResult
from tuneforge.training.batching import GROUP_BY_LENGTH, LengthGrouping
from tuneforge.training.checkpoints import AtomicCheckpoints
from tuneforge.training.classification_metrics import (
    class_report,
    majority_predictions,
    metric_values,
    predicted,
)
from tuneforge.training.devices import amp_flags, cuda_capability
from tuneforge.training.hyperparameters import ClassificationHyperparameters
from tuneforge.training.spec import ClassificationMethod, ClassificationMethodParams, LoraSettings
from tuneforge.training.unpadding import skip_padding

if TYPE_CHECKING:
    from tuneforge.training.callbacks import Reporter

# Saved beside the model: the validation metrics, the baseline, the per-class report.
EVALUATION_FILE = "evaluation.json"
BASELINE = "majority_class"


def class_names(rows: list[dict[str, Any]]) -> list[str]:
    """The classes of the training rows, sorted: class id i is the i-th name."""
    return sorted({name for row in rows for name in row_labels(row)})


def targets(rows: list[dict[str, Any]], labels: list[str], multi_label: bool) -> list[Any]:
    """Class ids (single-label) or 0/1 vectors over `labels` (multi-label) of canonical rows."""
    index = {name: i for i, name in enumerate(labels)}
    if not multi_label:
        return [index[row["label"]] for row in rows]
    vectors = []
    for row in rows:
        vector = [0.0] * len(labels)
        for name in row["labels"]:
            vector[index[name]] = 1.0
        vectors.append(vector)
    return vectors


def load_tokenizer(location: str, max_seq_length: int) -> Any:
    """The model's tokenizer, truncating at `max_seq_length` (or the model's own limit)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False)
    tokenizer.model_max_length = min(max_seq_length, tokenizer.model_max_length)
    return tokenizer


def load_classifier(location: str, labels: list[str], multi_label: bool) -> Any:
    """The encoder at `location` with a classification head for `labels` (newly initialised,
    unless the model already has one of that size): safetensors only, no remote code."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        location,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        problem_type=(
            "multi_label_classification" if multi_label else "single_label_classification"
        ),
        # A classifier of other classes can be tuned on new ones: its head starts afresh.
        ignore_mismatched_sizes=True,
        use_safetensors=True,
        trust_remote_code=False,
    )


def add_lora(model: Any, lora: LoraSettings) -> Any:
    """LoRA adapters on the encoder's linear layers (all, or those named); peft trains the
    classification head in full."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
    )
    return get_peft_model(model, config)


def to_dataset(tokenizer: Any, rows: list[dict[str, Any]], row_targets: list[Any]) -> Any:
    from datasets import Dataset

    encoded = tokenizer([row["text"] for row in rows], truncation=True)
    return Dataset.from_dict({**encoded, "labels": row_targets})


def balanced_weights(row_targets: list[Any], n_classes: int, multi_label: bool) -> list[float]:
    """Single-label: n_rows / (n_classes * class count), scikit-learn's "balanced" weights.
    Multi-label: a class's negatives over its positives, the weight of its positive examples."""
    import numpy as np

    if multi_label:
        positives = np.asarray(row_targets).sum(axis=0)
        return [float((len(row_targets) - p) / p) for p in positives]
    counts = np.bincount(np.asarray(row_targets), minlength=n_classes)
    return [float(len(row_targets) / (n_classes * c)) for c in counts]


def weighted_loss(weights: list[float], multi_label: bool) -> Any:
    """A Trainer `compute_loss_func`: the batch's mean loss with class weights."""
    import torch
    import torch.nn.functional as F

    weight = torch.tensor(weights)

    def loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        logits = outputs["logits"]
        w = weight.to(logits.device, logits.dtype)
        if multi_label:
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), pos_weight=w)
        return F.cross_entropy(logits, labels, weight=w)

    return loss


def run(ctx: RunContext) -> TrainResult:
    """The `classification` kind, as the job runner calls it."""
    assert isinstance(ctx.spec.method, ClassificationMethod)
    return train_classification(
        model_location=ctx.model_location,
        params=ctx.spec.method.classification,
        train_rows=ctx.data.train_rows,
        eval_rows=ctx.data.eval_rows,
        seed=ctx.seed,
        device=ctx.device,
        work_dir=ctx.work_dir,
        output_dir=ctx.output_dir,
        reporter=ctx.reporter,
        resume_from=ctx.resume_from,
    )


# BERT's usual 5e-5 was tuned on models of about 110M parameters; encoders a few times smaller
# (MiniLM, the BERT miniatures) learn best with larger steps. On BANKING77 (bench/README),
# all-MiniLM-L6-v2 at batch 16 for 3 epochs reached 0.743 mean accuracy over four seeds with
# 5e-5 and 0.805 with 1e-4.
SMALL_MODEL_PARAMETERS = 60_000_000
SMALL_MODEL_LEARNING_RATE = 1e-4
LEARNING_RATE = 5e-5


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def learning_rate(hp: ClassificationHyperparameters, parameters: int) -> float:
    """The job's learning rate, or the default for a model of `parameters` (before
    adapters), times learning_rate_multiplier when given."""
    if hp.learning_rate is not None:
        return hp.learning_rate
    rate = SMALL_MODEL_LEARNING_RATE if parameters < SMALL_MODEL_PARAMETERS else LEARNING_RATE
    return min(rate * (hp.learning_rate_multiplier or 1.0), 1.0)


def train_classification(
    *,
    model_location: str,
    params: ClassificationMethodParams,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    seed: int,
    device: str,
    work_dir: Path,
    output_dir: Path,
    reporter: Reporter,
    resume_from: Path | None = None,
) -> TrainResult:
    """Train and save; continue from the checkpoint `resume_from` when given. Stops early
    (no model saved; a checkpoint unless cancelled) when `reporter.stop_reason()` says so."""
    from transformers import (
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        PrinterCallback,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from tuneforge.training.callbacks import ReportingCallback

    class ClassificationTrainer(AtomicCheckpoints, LengthGrouping, Trainer):
        loss_is_scaled_for_ga = False  # every loss here is its batch's mean

    hp = params.hyperparameters
    multi_label = params.multi_label
    labels = class_names(train_rows)
    train_targets = targets(train_rows, labels, multi_label)
    eval_targets = targets(eval_rows, labels, multi_label)
    # Seeded before the head and the adapters are initialised: a resumed run builds the same
    # model before it loads the checkpoint's weights into it.
    set_seed(seed)
    tokenizer = load_tokenizer(model_location, hp.max_seq_length)
    model = load_classifier(model_location, labels, multi_label)
    parameters = parameter_count(model)
    rate = learning_rate(hp, parameters)
    if hp.learning_rate is None:
        reporter.note(
            f"Learning rate {rate:g} (auto, for a model of {parameters / 1e6:.1f}M parameters).",
            data={"learning_rate": rate, "hyperparameters": {"learning_rate": rate}},
        )
    if params.tuning == "lora":
        model = add_lora(model, params.lora)

    # A new head knows nothing, so the base model's own score would say nothing: the job's
    # baseline is always answering the training data's most frequent class (or label set).
    result = TrainResult(primary_metric=hp.metric_for_best_model)
    if eval_rows:
        guess = majority_predictions(train_targets, len(eval_rows), multi_label)
        result.baseline = metric_values(_as_array(eval_targets), guess)

    def compute_metrics(prediction: Any) -> dict[str, float]:
        y_true = prediction.label_ids.astype(int)
        y_pred = predicted(prediction.predictions, multi_label)
        # The scalars become eval_ metrics events; the per-class report and the confusion
        # matrix of this evaluation go into an event of their own.
        reporter.note(
            "Evaluation: per-class report and confusion matrix.",
            data=class_report(y_true, y_pred, labels),
        )
        return metric_values(y_true, y_pred)

    evaluate_by = ("steps" if hp.eval_steps else "epoch") if eval_rows else "no"
    # The best model can only be kept when every evaluation has a checkpoint to go back to.
    keep_best = hp.keeps_best_model and bool(eval_rows)
    save_steps = hp.checkpoint_steps or (hp.eval_steps if keep_best else None)
    amp = amp_flags(hp.use_amp, cuda_capability() if device == "cuda" else None)
    args = TrainingArguments(
        output_dir=str(work_dir / "checkpoints"),
        num_train_epochs=hp.n_epochs,
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size,
        learning_rate=rate,
        warmup_steps=hp.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        lr_scheduler_type=hp.lr_scheduler,
        seed=seed,
        data_seed=seed,
        logging_steps=hp.logging_steps,
        eval_strategy=evaluate_by,
        eval_steps=hp.eval_steps,
        save_strategy="steps" if save_steps else "epoch",
        save_steps=save_steps or 500,
        load_best_model_at_end=keep_best,
        metric_for_best_model=hp.metric_for_best_model if keep_best else None,
        greater_is_better=True if keep_best else None,
        dataloader_num_workers=hp.dataloader_num_workers,
        # Batches are padded to their longest text: similar lengths together pad far less.
        train_sampling_strategy=GROUP_BY_LENGTH if hp.group_by_length else "random",
        save_total_limit=3,
        bf16=amp["bf16"],
        fp16=amp["fp16"],
        use_cpu=device == "cpu",
        report_to=[],
        disable_tqdm=True,
    )
    callbacks: list[Any] = [ReportingCallback(reporter, hp.batch_size)]
    if hp.early_stopping_patience is not None and eval_rows:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=hp.early_stopping_patience))
    eval_dataset = to_dataset(tokenizer, eval_rows, eval_targets) if eval_rows else None
    trainer = ClassificationTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(tokenizer, train_rows, train_targets),
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics if eval_rows else None,
        compute_loss_func=(
            weighted_loss(balanced_weights(train_targets, len(labels), multi_label), multi_label)
            if hp.class_weights == "balanced"
            else None
        ),
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # logs go to the job's events, not to stdout
    with skip_padding(model, hp.skip_padding):
        if not result.train(trainer, reporter, resume_from):
            return result
        if eval_dataset is not None:
            # The final report is the job's result: not one more report event.
            trainer.compute_metrics = None
            logits = trainer.predict(eval_dataset).predictions
            y_true, y_pred = _as_array(eval_targets), predicted(logits, multi_label)
            result.evaluation = metric_values(y_true, y_pred)
            result.details = {"baseline": BASELINE, **class_report(y_true, y_pred, labels)}
    # The baseline here is a majority-class guess, not a model to keep: only checkpoints count.
    result.keep(trainer, keep_best, base_counts=False)
    trained: Any = trainer.model
    model = trained.merge_and_unload() if params.tuning == "lora" else trained
    model.save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    saved = {
        "primary_metric": result.primary_metric,
        "validation_rows": len(eval_rows),
        "metrics": result.evaluation,
        "baseline": {"kind": BASELINE, "metrics": result.baseline},
        **{k: v for k, v in result.details.items() if k != "baseline"},
    }
    (output_dir / EVALUATION_FILE).write_text(json.dumps(saved, indent=2))
    return result


def primary_metric(layout: str) -> str:
    """The metric that ranks classifiers when no job names one: the spec's default."""
    return str(ClassificationHyperparameters.model_fields["metric_for_best_model"].default)


def greater_is_better(metric: str) -> bool:
    """Higher is better for every metric of a classifier; lower for the trainer's loss."""
    return metric.removeprefix("eval_") != "loss"


def evaluate_model(
    model_location: str, layout: str, rows: list[dict[str, Any]], device: str
) -> dict[str, float]:
    """Metrics of a saved classifier on canonical rows of `layout`. Classes the model does
    not know count as wrong answers."""
    from tuneforge.serving.classifier import Classifier

    classifier = Classifier(Path(model_location), device)
    multi_label = layout == MULTI_LABEL
    known = classifier.labels
    labels = known + sorted({n for row in rows for n in row_labels(row)} - set(known))
    scores = classifier.scores([row["text"] for row in rows])
    if multi_label:
        chosen = (scores >= classifier.threshold).astype(int)
        y_pred = _pad_columns(chosen, len(labels))
    else:
        y_pred = scores.argmax(axis=-1)
    return metric_values(_as_array(targets(rows, labels, multi_label)), y_pred)


def _as_array(row_targets: list[Any]) -> Any:
    import numpy as np

    return np.asarray(row_targets).astype(int)


def _pad_columns(matrix: Any, width: int) -> Any:
    import numpy as np

    return np.pad(matrix, ((0, 0), (0, width - matrix.shape[1])))
