"""The `reinforcement` kind: reinforcement fine-tuning (OpenAI's `reinforcement` method) of a
causal LM with trl's GRPOTrainer, as LoRA adapters (on a 4-bit or 8-bit base: QLoRA) or of
all weights.

Each step takes `batch_size` prompts, samples `num_generations` answers to each, and scores
every answer with the job's grader (`tuneforge.graders`: `{{sample.output_text}}` is the
answer, `{{item.…}}` the prompt's data line). Within a prompt's group the better answers are
made more likely, the worse ones less (GRPO). The trainer logs the reward's mean and spread
at every step (`reward`, `reward_std`: events, and checkpoint metrics, see
`checkpoint_metrics`). Before and after training the model answers the validation prompts
greedily and the answers are graded: the job's evaluation is that mean reward, base against
fine-tuned.

| layout          | rows                                                              |
|-----------------|-------------------------------------------------------------------|
| `reinforcement` | `{"messages": [prompt ending with a user message], "item": {line},` |
|                 | `"grader": {the job's}, "max_completion_length": n}`              |

Graders run in the job's process; judges (score_model, label_model) and the cosine metric's
embedding model are the service's served models, loaded here. A python grader scores a
batch's answers in one sandboxed process.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from tuneforge.datasets.chat_render import chat_text, uses_tools
from tuneforge.errors import InvalidRequestError
from tuneforge.graders.judge import JudgeSampling
from tuneforge.graders.run import Backends, JudgeAnswer, JudgeFailed, run_grader
from tuneforge.graders.sandbox import PythonLimits, run_python
from tuneforge.graders.spec import PythonGrader, parse_grader
from tuneforge.graders.templates import Sample
from tuneforge.training import llm
from tuneforge.training.base import RunContext, TrainResult
from tuneforge.training.checkpoints import AtomicCheckpoints
from tuneforge.training.spec import ReinforcementMethod, ReinforcementMethodParams

PRIMARY_METRIC = "reward_mean"
# Validation prompts answered and graded for the job's evaluation (base and fine-tuned).
MAX_EVAL_PROMPTS = 256
# The reward function's name in trl's logs (`rewards/grader/mean`).
REWARD_NAME = "grader"


def primary_metric(layout: str) -> str:
    """The metric that ranks reinforcement-tuned models: the mean reward of greedy answers to
    the validation prompts (higher is better)."""
    return PRIMARY_METRIC


def greater_is_better(metric: str) -> bool:
    """Higher is better for rewards; lower for the trainer's loss and the share of answers
    the grader could not score."""
    return metric.removeprefix("eval_") not in ("loss", "grader_error_share")


def evaluate_model(
    model_location: str, layout: str, rows: list[dict[str, Any]], device: str
) -> dict[str, float]:
    """Mean reward of a saved model's greedy answers to reinforcement rows, as long and graded
    as for the job the rows were read for (graders that need no served model only)."""
    if not rows:
        return {}
    grader = parse_grader(rows[0]["grader"], "method.reinforcement.grader")
    tokenizer = llm.load_chat_tokenizer(model_location)
    model = llm.load_causal_lm(model_location, device=device).to(device)
    measure = reward_metrics(grader, LocalBackends(), rows[0]["max_completion_length"])
    return measure(model, tokenizer, rows)


def run(ctx: RunContext) -> TrainResult:
    """The `reinforcement` kind, as the job runner calls it."""
    assert isinstance(ctx.spec.method, ReinforcementMethod)
    return train_reinforcement(ctx, ctx.spec.method.reinforcement)


def train_reinforcement(ctx: RunContext, params: ReinforcementMethodParams) -> TrainResult:
    """Build trl's GRPOTrainer for the job, then train and save (`llm.train_and_save`)."""
    from datasets import Dataset
    from transformers import EarlyStoppingCallback, set_seed
    from trl import GRPOConfig, GRPOTrainer

    from tuneforge.training.callbacks import ReportingCallback

    class CheckpointingTrainer(AtomicCheckpoints, GRPOTrainer):
        pass

    hp = params.hyperparameters
    set_seed(ctx.seed)
    if hp.reasoning_effort is not None:
        ctx.reporter.note(
            f"reasoning_effort {hp.reasoning_effort!r} has no effect: the model answers as "
            "its chat template has it.",
            level="warn",
        )
    grader = parse_grader(params.grader, "method.reinforcement.grader")
    backends = job_backends(ctx)
    tokenizer = llm.load_chat_tokenizer(ctx.model_location)
    train_rows = ctx.data.train_rows[: hp.max_samples or None]
    eval_rows = ctx.data.eval_rows
    # One list of items for both datasets: a prompt's `row` is its index here.
    items = [r["item"] for r in train_rows + eval_rows]
    model, peft_config, quantization = llm.load_for_training(ctx, params, hp)
    hp = llm.with_learning_rate(ctx, params, hp, model)
    generations = hp.generations
    has_eval = bool(eval_rows)
    arguments = llm.training_arguments(
        hp, device=ctx.device, seed=ctx.seed, work_dir=ctx.work_dir, has_eval=has_eval
    )
    keep_best = arguments["load_best_model_at_end"]
    eval_steps = hp.eval_interval or hp.eval_steps
    arguments.update(
        # A step's answers: batch_size prompts x generations, in gradient_accumulation_steps
        # forward passes, all sampled in one generation pass.
        per_device_train_batch_size=hp.batch_size * generations // hp.gradient_accumulation_steps,
        per_device_eval_batch_size=hp.eval_samples * min(hp.batch_size, max(len(eval_rows), 1)),
        eval_strategy=("steps" if eval_steps else "epoch") if has_eval else "no",
        eval_steps=eval_steps,
        metric_for_best_model="eval_reward" if keep_best else None,
        greater_is_better=True if keep_best else None,
    )
    args = GRPOConfig(
        **arguments,
        num_generations=generations,
        num_generations_eval=hp.eval_samples,
        max_completion_length=hp.max_completion_length,
        temperature=hp.temperature,
        beta=hp.beta,
    )

    # Prompts with tools are given to trl as text, rendered with their tools (trl renders
    # conversations without them); all prompts alike, as one dataset holds one shape.
    # (trl tokenizes text prompts with the tokenizer's special tokens: a BOS the template wrote
    # is left to it.)
    as_text = any(uses_tools(r["messages"], r.get("tools")) for r in train_rows + eval_rows)
    adds_bos = tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    bos = tokenizer.bos_token if adds_bos else None

    def text(row: dict[str, Any]) -> str:
        rendered = chat_text(tokenizer, row["messages"], row.get("tools"), prompt=True)
        return rendered.removeprefix(bos) if bos else rendered

    def prompts(rows: list[dict[str, Any]], offset: int) -> Any:
        return Dataset.from_list(
            [
                {
                    "prompt": text(r)
                    if as_text
                    else [{"role": m["role"], "content": m["content"]} for m in r["messages"]],
                    "row": offset + i,
                }
                for i, r in enumerate(rows)
            ]
        )

    callbacks: list[Any] = [
        ReportingCallback(ctx.reporter, hp.batch_size, evaluate_at_checkpoints=True)
    ]
    if hp.early_stopping_patience is not None and has_eval:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=hp.early_stopping_patience))
    trainer = CheckpointingTrainer(
        model=model,
        reward_funcs=reward_function(grader, backends, items),
        args=args,
        train_dataset=prompts(train_rows, 0),
        eval_dataset=prompts(eval_rows, len(train_rows)) if has_eval else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    result = llm.train_and_save(
        ctx,
        params,
        trainer,
        tokenizer,
        quantization=quantization,
        metrics_of=reward_metrics(grader, backends, hp.max_completion_length),
        examples=[],
        primary_metric=PRIMARY_METRIC,
    )
    result.details["train_examples"] = len(train_rows)
    result.details["num_generations"] = generations
    return result


# -- rewards -----------------------------------------------------------------------------------


def grade(grader: Any, samples: list[Sample], items: list[Any], backends: Backends) -> list[float]:
    """The grader's reward for each (sample, item); an answer's faults score 0 (see
    `graders.run`). A python grader scores them all in one sandboxed process."""
    if isinstance(grader, PythonGrader) and backends.python_limits is not None:
        outcomes = run_python(
            grader.source,
            [(s.as_dict(), i) for s, i in zip(samples, items, strict=True)],
            backends.python_limits,
        )
        return [o.reward if o.error is None and o.reward is not None else 0.0 for o in outcomes]
    return [run_grader(grader, s, i, backends).reward for s, i in zip(samples, items, strict=True)]


def sample_of(answer: str) -> Sample:
    """The `sample` namespace of an answer: its text, and its tool calls where it makes any
    (`<tool_call>` blocks, or one JSON call, see `datasets.chat_render.parse_tool_calls`)."""
    return Sample.of_answer(answer)


def _answer_text(completion: Any) -> str:
    """An answer as trl gives it: text, or a conversation's assistant message."""
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion)
    return str(completion)


def reward_function(grader: Any, backends: Backends, items: list[Any]) -> Callable[..., Any]:
    """trl's reward function: the grader's reward for each answer, given the answers and the
    `row` (index into `items`) of each answer's prompt."""

    def grader_reward(completions: list[Any], row: list[int], **_: Any) -> list[float]:
        samples = [sample_of(_answer_text(c)) for c in completions]
        return grade(grader, samples, [items[i] for i in row], backends)

    grader_reward.__name__ = REWARD_NAME
    return grader_reward


def reward_metrics(
    grader: Any, backends: Backends, max_new_tokens: int
) -> Callable[[Any, Any, list[dict[str, Any]]], dict[str, float]]:
    """`metrics_of` for `llm.train_and_save`: greedy answers to (at most MAX_EVAL_PROMPTS)
    validation prompts, graded: `reward_mean`, `reward_std` and `answer_tokens` (mean)."""
    from tuneforge.training.generation_checks import generate_answers

    def measure(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
        rows = rows[:MAX_EVAL_PROMPTS]
        if not rows:
            return {}
        answers, lengths = generate_answers(
            model,
            tokenizer,
            [r["messages"] for r in rows],
            max_new_tokens,
            tools=[r.get("tools") for r in rows],
        )
        samples = [sample_of(a) for a in answers]
        rewards = grade(grader, samples, [r["item"] for r in rows], backends)
        return {
            "reward_mean": statistics.fmean(rewards),
            "reward_std": statistics.pstdev(rewards),
            "answer_tokens": statistics.fmean(lengths),
        }

    return measure


# -- where graders find served models ----------------------------------------------------------


class LocalBackends:
    """Backends without served models or the python sandbox: for graders that need
    neither (string_check, text_similarity but cosine, tuneforge_checks, multi of those)."""

    python_limits: PythonLimits | None = None

    def judge(
        self, model: str, messages: list[dict[str, str]], sampling: JudgeSampling, param: str
    ) -> JudgeAnswer:
        raise JudgeFailed("no served models here: the grader's judge cannot answer")

    def embed(self, texts: list[str]) -> list[list[float]]:
        raise InvalidRequestError(
            "text_similarity with cosine needs the service's embedding model", param="grader"
        )


def job_backends(ctx: RunContext) -> Backends:
    """The service's backends (served judges and embeddings, the python sandbox's limits)
    where the job runs in the service; else `LocalBackends`."""
    if ctx.store is None or ctx.settings is None:
        return LocalBackends()
    from tuneforge.graders.backends import ServedBackends
    from tuneforge.serving.cache import ModelCache

    cache = ModelCache(ctx.settings.serving_memory_mb * 1024 * 1024)
    return ServedBackends(ctx.store, ctx.settings, cache)
