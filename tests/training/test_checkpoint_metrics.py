"""A checkpoint's metrics from the trainer's logs, its evaluations and the small-batch
measurement: means over the steps since the previous checkpoint, OpenAI's names."""

from __future__ import annotations

import pytest

from tuneforge.training.checkpoint_metrics import CheckpointMetrics, full_valid_name


def test_training_metrics_are_means_over_the_steps_since_the_last_checkpoint() -> None:
    found = CheckpointMetrics()
    # Logs every 2 steps, and at the checkpoint's step 5 (covering one step).
    found.observe(2, {"loss": 4.0, "mean_token_accuracy": 0.1, "learning_rate": 1e-4})
    found.observe(4, {"loss": 3.0, "mean_token_accuracy": 0.2})
    found.observe(5, {"loss": 1.0, "mean_token_accuracy": 0.5})
    found.observe(5, {"eval_loss": 2.5, "eval_mean_token_accuracy": 0.4, "eval_runtime": 3.0})
    found.measured(5, {"valid_loss": 2.4, "valid_mean_token_accuracy": 0.45})
    found.observe(6, {"loss": 9.0})  # the next window's, logged before the checkpoint lands

    first = found.for_checkpoint(5)
    assert first == {
        "step": 5,
        "train_loss": pytest.approx((4.0 * 2 + 3.0 * 2 + 1.0) / 5),
        "train_mean_token_accuracy": pytest.approx((0.1 * 2 + 0.2 * 2 + 0.5) / 5),
        "valid_loss": 2.4,
        "valid_mean_token_accuracy": 0.45,
        "full_valid_loss": 2.5,
        "full_valid_mean_token_accuracy": 0.4,
    }
    # The next checkpoint: only its own steps, and no evaluation it did not have.
    assert found.for_checkpoint(6) == {"step": 6, "train_loss": 9.0}
    # A checkpoint with no log since the previous one repeats the last logged values.
    assert found.for_checkpoint(7)["train_loss"] == 9.0


def test_a_resumed_run_counts_from_its_checkpoint() -> None:
    found = CheckpointMetrics()
    found.restart(10)
    found.observe(12, {"loss": 2.0})
    assert found.for_checkpoint(12)["train_loss"] == 2.0
    assert not found.evaluated(12)
    found.observe(12, {"eval_loss": 1.0})
    assert found.evaluated(12)


def test_dpo_and_classifier_metrics_keep_their_meaning_under_openai_names() -> None:
    assert full_valid_name("eval_rewards/accuracies") == "full_valid_reward_accuracy"
    assert full_valid_name("eval_rewards/margins") == "full_valid_reward_margin"
    assert full_valid_name("eval_logps/chosen") == "full_valid_logps_chosen"
    assert full_valid_name("eval_f1_macro") == "full_valid_f1_macro"
    found = CheckpointMetrics()
    found.observe(3, {"loss": 0.6, "rewards/accuracies": 0.75, "rewards/margins": 0.2})
    found.observe(3, {"eval_loss": 0.5, "eval_rewards/accuracies": 1.0, "epoch": 1.0})
    metrics = found.for_checkpoint(3)
    assert metrics["train_reward_accuracy"] == pytest.approx(0.75)
    assert metrics["train_reward_margin"] == pytest.approx(0.2)
    assert metrics["full_valid_reward_accuracy"] == 1.0 and "full_valid_epoch" not in metrics
