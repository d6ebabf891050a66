"""The `reinforcement` kind on the tiny Qwen2 model, in this process: GRPO trains the adapters
on the grader's rewards and the saved model measures as the job measured it; a python grader
scores a whole batch of answers in one sandboxed process."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.training.conftest import run_context
from tuneforge.graders.sandbox import PythonLimits
from tuneforge.graders.spec import parse_grader
from tuneforge.graders.templates import Sample
from tuneforge.training import reinforcement

LETTER = {
    "type": "string_check",
    "name": "letter",
    "input": "{{sample.output_text}}",
    "reference": "{{item.letter}}",
    "operation": "like",
}


def rows(letters: str) -> list[dict]:
    """Rows as the job's reader gives them: the prompt, the line as the item, the grader."""
    return [
        {
            "messages": [{"role": "user", "content": f"Write a word with the letter {c}."}],
            "item": {"letter": c},
            "grader": LETTER,
            "max_completion_length": 8,
        }
        for c in letters
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_grpo_trains_the_adapters_and_the_saved_model_measures_alike(
    tiny_qwen: Path, tmp_path: Path
) -> None:
    method = {
        "type": "reinforcement",
        "reinforcement": {
            "grader": LETTER,
            "hyperparameters": {
                "n_epochs": 2,
                "batch_size": 4,
                "num_generations": 4,
                "max_completion_length": 8,
                "learning_rate": 1e-2,
                "warmup_ratio": 0,
            },
        },
    }
    held_out = rows("eoae")
    ctx = run_context(
        tmp_path, tiny_qwen, method, rows("eaoeaoea"), held_out, layout="reinforcement"
    )
    result = reinforcement.run(ctx)

    assert result.primary_metric == "reward_mean" and result.steps == 4
    assert result.details["num_generations"] == 4
    # A reward and its spread for each step, over its 16 answers.
    rewards, spreads = ctx.reporter.logged("reward"), ctx.reporter.logged("reward_std")
    assert len(rewards) == len(spreads) == 4
    assert all((r * 16).is_integer() for r in rewards)
    # The trainer's evaluation of the validation prompts at each epoch, and the checkpoints.
    assert len(ctx.reporter.logged("eval_reward")) == 2
    assert ctx.reporter.checkpoints == [2, 4]
    for metrics in ctx.reporter.checkpoint_metrics.values():
        assert {"train_reward_mean", "train_reward_std", "full_valid_reward_mean"} <= set(metrics)

    weights = load_file(ctx.output_dir / "adapter_model.safetensors")
    assert any(w.abs().max() > 0 for name, w in weights.items() if "lora_B" in name)
    again = reinforcement.evaluate_model(str(ctx.output_dir), "reinforcement", held_out, "cpu")
    assert again["reward_mean"] == pytest.approx(result.evaluation["reward_mean"])
    assert again["answer_tokens"] == pytest.approx(result.evaluation["answer_tokens"])


def test_a_python_grader_scores_a_batch_in_one_process() -> None:
    grader = parse_grader(
        {
            "type": "python",
            "name": "length",
            "source": "def grade(sample, item):\n"
            "    return min(1.0, len(sample['output_text']) / item['n'])\n",
        }
    )

    class Sandboxed(reinforcement.LocalBackends):
        python_limits = PythonLimits(seconds=20, cpu_seconds=5, memory_mb=512)

    samples = [Sample("ab"), Sample("abcd"), Sample("abcdefgh")]
    items = [{"n": 4}, {"n": 4}, {"n": 0}]  # the last one divides by zero: reward 0
    assert reinforcement.grade(grader, samples, items, Sandboxed()) == [0.5, 1.0, 0.0]
    # Any other grader scores each answer here.
    run = reinforcement.grade(parse_grader(LETTER), samples, [{"letter": "c"}] * 3, Sandboxed())
    assert run == [0.0, 1.0, 1.0]
