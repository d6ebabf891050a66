"""The `supervised` kind: supervised fine-tuning of a causal LM on chat data with trl's
SFTTrainer, as LoRA adapters (on a 4-bit or 8-bit base: QLoRA) or of all weights.

Plain steps over the libraries: tokenize the conversations with the model's chat template
(the loss sees the assistant's answers only), load the model, measure the base model, train,
measure again, save (see `tuneforge.training.llm` for the saved folder).

| layout              | rows                                          | trained on           |
|---------------------|-----------------------------------------------|----------------------|
| `chat`              | `{"messages": [system?, user, assistant, …]}` | assistant messages   |
|                     |                                               | with weight 1        |
| `prompt_completion` | read as a user and an assistant message       | the completion       |
"""

from __future__ import annotations

from typing import Any

from tuneforge.datasets.chat_render import uses_tools
from tuneforge.training import chat_measures, llm
from tuneforge.training.base import RunContext, TrainResult
from tuneforge.training.batching import GROUP_BY_LENGTH, LengthGrouping
from tuneforge.training.checkpoints import AtomicCheckpoints
from tuneforge.training.spec import SupervisedMethod, SupervisedMethodParams

PRIMARY_METRIC = "loss"
# The metrics (and the trainer's eval_ ones) where the better model scores lower.
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})


def primary_metric(layout: str) -> str:
    """The metric that ranks supervised models: validation loss on the answers (lower is
    better)."""
    return PRIMARY_METRIC


def greater_is_better(metric: str) -> bool:
    """Lower is better for the loss and the perplexity, higher for token accuracy and the
    generation checks' shares."""
    return metric.removeprefix("eval_") not in LOWER_IS_BETTER


def evaluate_model(
    model_location: str, layout: str, rows: list[dict[str, Any]], device: str
) -> dict[str, float]:
    """Loss, perplexity and token accuracy of a saved model (ours, adapters or full, or a
    base model) on the answers of chat rows."""
    tokenizer = llm.load_chat_tokenizer(model_location)
    model = llm.load_causal_lm(model_location, device=device).to(device)
    return chat_measures.chat_metrics(model, tokenizer, rows)


def prompts_and_answers(rows: list[dict[str, Any]]) -> list[tuple[list[Any], str]]:
    """(the conversation before its last answer, that answer) of chat rows; rows with tools
    are left out (the checks judge a text answer)."""
    pairs = []
    for row in rows:
        messages = row["messages"]
        if uses_tools(messages, row.get("tools")):
            continue
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        pairs.append((messages[:last], messages[last]["content"]))
    return pairs


def run(ctx: RunContext) -> TrainResult:
    """The `supervised` kind, as the job runner calls it."""
    assert isinstance(ctx.spec.method, SupervisedMethod)
    return train_supervised(ctx, ctx.spec.method.supervised)


def train_supervised(ctx: RunContext, params: SupervisedMethodParams) -> TrainResult:
    """Build trl's SFTTrainer for the job, then train and save (`llm.train_and_save`)."""
    trainer, tokenizer, quantization = build_trainer(ctx, params)
    eval_rows = ctx.data.eval_rows
    samples = params.generation_checks.samples
    result = llm.train_and_save(
        ctx,
        params,
        trainer,
        tokenizer,
        quantization=quantization,
        metrics_of=chat_measures.chat_metrics,
        examples=prompts_and_answers(eval_rows[:samples]),
        primary_metric=PRIMARY_METRIC,
    )
    result.details["train_examples"] = len(trainer.train_dataset)
    return result


def build_trainer(ctx: RunContext, params: SupervisedMethodParams) -> tuple[Any, Any, str]:
    """(trl SFTTrainer, tokenizer, quantization used) for the job's data and settings."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    class CheckpointingTrainer(AtomicCheckpoints, LengthGrouping, SFTTrainer):
        pass

    hp = params.hyperparameters
    set_seed(ctx.seed)
    tokenizer = llm.load_chat_tokenizer(ctx.model_location)
    train_rows = ctx.data.train_rows[: hp.max_samples or None]
    eval_rows = ctx.data.eval_rows

    def tokenized(rows: list[dict[str, Any]]) -> Any:
        return Dataset.from_list(
            [llm.tokenize_conversation(tokenizer, r["messages"], r.get("tools")) for r in rows]
        )

    model, peft_config, quantization = llm.load_for_training(ctx, params, hp)
    hp = llm.with_learning_rate(ctx, params, hp, model)
    args = SFTConfig(
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
        packing=hp.packing,
        # Each batch is padded to its longest example: batching similar lengths removes most
        # of that padding. (Padding-free batches would need flash attention to stay exact.)
        train_sampling_strategy=GROUP_BY_LENGTH if hp.group_by_length else "random",
    )
    trainer = CheckpointingTrainer(
        model=model,
        args=args,
        train_dataset=tokenized(train_rows),
        eval_dataset=tokenized(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=llm.trainer_callbacks(
            ctx, hp, measure_valid=chat_measures.valid_batch_measure(tokenizer, eval_rows)
        ),
    )
    return trainer, tokenizer, quantization
