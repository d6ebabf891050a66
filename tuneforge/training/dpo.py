"""The `dpo` kind: direct preference optimisation of a causal LM with trl's DPOTrainer, as
LoRA adapters (on a 4-bit or 8-bit base: QLoRA) or of all weights.

The reference model is the base model: with LoRA the same weights with the adapters switched
off, with full fine-tuning a second, frozen copy. Before and after training the model is
measured without a reference: how often, and by how many nats, it finds the chosen answer
more likely than the rejected one.

| layout              | rows                                                             |
|---------------------|------------------------------------------------------------------|
| `preference`        | `{"prompt": "…", "chosen": "…", "rejected": "…"}`                |
| `openai_preference` | `{"input": {"messages": […]}, "preferred_output": [assistant     |
|                     | message], "non_preferred_output": [assistant message]}`          |

(both read as `{"prompt": [messages], "chosen": [message], "rejected": [message]}`).
"""

from __future__ import annotations

from typing import Any

from tuneforge.training import chat_measures, llm
from tuneforge.training.base import RunContext, TrainResult
from tuneforge.training.checkpoints import AtomicCheckpoints
from tuneforge.training.spec import DPOMethod, DPOMethodParams

PRIMARY_METRIC = "preference_accuracy"


def primary_metric(layout: str) -> str:
    """The metric that ranks preference-tuned models: the share of validation pairs whose
    chosen answer the model finds more likely (higher is better)."""
    return PRIMARY_METRIC


def greater_is_better(metric: str) -> bool:
    """Higher is better for the preference metrics and the generation checks' shares; lower
    for the trainer's (DPO) loss."""
    return metric.removeprefix("eval_") != "loss"


def evaluate_model(
    model_location: str, layout: str, rows: list[dict[str, Any]], device: str
) -> dict[str, float]:
    """Preference accuracy and log-probability margins of a saved model on preference rows."""
    tokenizer = llm.load_chat_tokenizer(model_location)
    model = llm.load_causal_lm(model_location, device=device).to(device)
    return chat_measures.preference_metrics(model, tokenizer, rows)


def run(ctx: RunContext) -> TrainResult:
    """The `dpo` kind, as the job runner calls it."""
    assert isinstance(ctx.spec.method, DPOMethod)
    return train_dpo(ctx, ctx.spec.method.dpo)


def train_dpo(ctx: RunContext, params: DPOMethodParams) -> TrainResult:
    """Build trl's DPOTrainer for the job, then train and save (`llm.train_and_save`)."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    class CheckpointingTrainer(AtomicCheckpoints, DPOTrainer):
        pass

    hp = params.hyperparameters
    set_seed(ctx.seed)
    tokenizer = llm.load_chat_tokenizer(ctx.model_location)
    train_rows = ctx.data.train_rows[: hp.max_samples or None]
    eval_rows = ctx.data.eval_rows
    model, peft_config, quantization = llm.load_for_training(ctx, params, hp)
    hp = llm.with_learning_rate(ctx, params, hp, model)
    # Full fine-tuning compares against a frozen copy of the base (LoRA: adapters off).
    reference = None
    if params.tuning == "full":
        reference = llm.load_causal_lm(ctx.model_location, device=ctx.device)
    args = DPOConfig(
        **llm.training_arguments(
            hp,
            device=ctx.device,
            seed=ctx.seed,
            work_dir=ctx.work_dir,
            has_eval=bool(eval_rows),
            world_size=ctx.world_size,
            tuning=params.tuning,
        ),
        max_length=hp.max_seq_length,
        beta=hp.beta,
        loss_type=[hp.loss_type],
        label_smoothing=hp.label_smoothing,
    )
    trainer = CheckpointingTrainer(
        model=model,
        ref_model=reference,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=llm.trainer_callbacks(ctx, hp),
    )
    examples = [(r["prompt"], r["chosen"][0]["content"]) for r in eval_rows]
    result = llm.train_and_save(
        ctx,
        params,
        trainer,
        tokenizer,
        quantization=quantization,
        metrics_of=chat_measures.preference_metrics,
        examples=examples[: params.generation_checks.samples],
        primary_metric=PRIMARY_METRIC,
    )
    result.details["train_examples"] = len(train_rows)
    return result
