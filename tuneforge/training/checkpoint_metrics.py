"""The metrics a checkpoint carries, named as in OpenAI's `fine_tuning.job.checkpoint` object.

| metric                              | what                                                    |
|-------------------------------------|---------------------------------------------------------|
| `step`                              | the checkpoint's step                                   |
| `train_loss`,                       | the mean over the steps since the previous checkpoint   |
| `train_mean_token_accuracy`         | (the trainer logs at every checkpoint's step)           |
| `valid_loss`,                       | on a fixed small batch of validation rows, measured as  |
| `valid_mean_token_accuracy`         | the checkpoint is written (kinds that give a measure)   |
| `full_valid_loss`,                  | the trainer's evaluation of the whole validation split  |
| `full_valid_mean_token_accuracy`    | at the checkpoint's step                                |

DPO checkpoints add `train_reward_accuracy` and `train_reward_margin` (trl's
`rewards/accuracies` and `rewards/margins`) and their `full_valid_` counterparts;
reinforcement checkpoints add `train_reward_mean` and `train_reward_std` (the grader's reward
over the step's answers, trl's `reward` and `reward_std`) and `full_valid_reward_mean`,
`full_valid_reward_std` (answers sampled for the validation prompts); every other
metric of the trainer's evaluation at that step becomes `full_valid_<name>` (a classifier's
`full_valid_f1_macro`). Metrics a kind does not have are left out: a job without validation
rows has no `valid_` ones.

Nothing here costs a pass over the data of its own: the training metrics are the trainer's
logs, the full validation metrics its evaluation (see `ReportingCallback`, which asks for one
at a checkpoint that has none), and the small batch is a few forward passes, no generation.
"""

from __future__ import annotations

import threading

# Logged training metric -> the checkpoint's name for it (the mean over the window).
TRAIN_NAMES = {
    "loss": "train_loss",
    "mean_token_accuracy": "train_mean_token_accuracy",
    "rewards/accuracies": "train_reward_accuracy",
    "rewards/margins": "train_reward_margin",
    "reward": "train_reward_mean",
    "reward_std": "train_reward_std",
}
# Evaluation metrics that are about the run, not the model.
NOT_METRICS = ("runtime", "per_second", "epoch", "num_tokens")
RENAMED = {
    "rewards/accuracies": "reward_accuracy",
    "rewards/margins": "reward_margin",
    "reward": "reward_mean",
}
# Validation rows of the small batch (the first ones: the same rows at every checkpoint).
VALID_BATCH_ROWS = 8


def full_valid_name(key: str) -> str:
    """The checkpoint's name for an evaluation metric: `eval_loss` -> `full_valid_loss`,
    `eval_rewards/accuracies` -> `full_valid_reward_accuracy`."""
    name = key.removeprefix("eval_")
    return "full_valid_" + RENAMED.get(name, name).replace("/", "_")


class CheckpointMetrics:
    """Collects a run's logs and small-batch measurements by step, and gives each checkpoint
    its metrics. Logs arrive on the training thread, checkpoints complete on another one."""

    def __init__(self, start_step: int = 0) -> None:
        self._lock = threading.Lock()
        # (step, steps the log covers, its values)
        self._train: list[tuple[int, int, dict[str, float]]] = []
        self._evals: dict[int, dict[str, float]] = {}
        self._valid: dict[int, dict[str, float]] = {}
        self._last_checkpoint = start_step
        self._last_log = start_step

    def restart(self, step: int) -> None:
        """Training (re)starts at `step`: the first checkpoint's window begins there."""
        with self._lock:
            self._last_checkpoint = self._last_log = step

    def observe(self, step: int, logs: dict[str, float]) -> None:
        """A log of the trainer at `step`: training metrics or an evaluation's."""
        with self._lock:
            if any(k.startswith("eval_") for k in logs):
                self._evals[step] = {
                    k: v
                    for k, v in logs.items()
                    if k.startswith("eval_") and not any(s in k for s in NOT_METRICS)
                }
            elif any(k in TRAIN_NAMES for k in logs):
                # A log gives the means over the steps since the one before it.
                self._train.append((step, max(step - self._last_log, 1), logs))
                self._last_log = step

    def evaluated(self, step: int) -> bool:
        """Whether the trainer has evaluated the model at `step` already."""
        with self._lock:
            return step in self._evals

    def measured(self, step: int, values: dict[str, float]) -> None:
        """The small-batch measurement of the model as saved at `step` (`valid_` names)."""
        with self._lock:
            self._valid[step] = values

    def for_checkpoint(self, step: int) -> dict[str, float]:
        """The metrics of the checkpoint at `step` (see the module); starts the next window."""
        with self._lock:
            window = [(n, v) for s, n, v in self._train if self._last_checkpoint < s <= step]
            if not window:
                window = [(n, v) for s, n, v in self._train if s <= step][-1:]
            self._last_checkpoint = step
            metrics: dict[str, float] = {"step": step}
            for logged, name in TRAIN_NAMES.items():
                covered = [(n, v[logged]) for n, v in window if logged in v]
                if covered:
                    metrics[name] = sum(n * x for n, x in covered) / sum(n for n, _ in covered)
            metrics |= self._valid.pop(step, {})
            metrics |= {full_valid_name(k): v for k, v in self._evals.get(step, {}).items()}
            # Older logs are done with (but the last, for a checkpoint with none since).
            older = [entry for entry in self._train if entry[0] <= step][-1:]
            self._train = older + [entry for entry in self._train if entry[0] > step]
            self._evals = {s: v for s, v in self._evals.items() if s > step}
            return metrics
