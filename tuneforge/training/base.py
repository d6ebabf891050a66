"""What every training kind gets and gives: `RunContext` in, `TrainResult` out.

A kind is a module in this package with `run(ctx: RunContext) -> TrainResult` (the `Kind`
protocol); `tuneforge.training.kinds.KINDS` maps `method.type` to it. A kind's trainer uses
`checkpoints.AtomicCheckpoints` and `callbacks.ReportingCallback`, continues from
`ctx.resume_from` when given, and saves the finished model into `ctx.output_dir`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuneforge.config import Settings
    from tuneforge.db.store import Store
    from tuneforge.training.callbacks import Reporter
    from tuneforge.training.spec import JobCreate


@dataclass
class JobData:
    """A job's rows, read for its kind and split (see `tuneforge.jobs.data`)."""

    layout: str
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    # "file" when a validation file was given, "auto-split" when held out from training data.
    validation_source: str


@dataclass
class RunContext:
    """One run of a job: its spec and data, where to train, where to write."""

    spec: JobCreate
    data: JobData
    model_location: str  # a local folder or a Hub id, resolved from spec.model
    device: str  # "cpu" or "cuda"
    seed: int
    work_dir: Path  # the job's folder: checkpoints, the base model's measurement
    output_dir: Path  # where the finished model is saved (moved into place afterwards)
    reporter: Reporter
    resume_from: Path | None = None  # a complete checkpoint to continue from
    rank: int = 0  # this process's rank in a distributed job; only rank 0 saves
    world_size: int = 1  # processes training together (num_processes × machines)
    # The service's store and settings, for kinds that use served models while they train
    # (reinforcement: the grader's judges, its python sandbox's limits).
    store: Store | None = None
    settings: Settings | None = None


@dataclass
class TrainResult:
    """What a run reports: losses, metrics of the base and the trained model, the stop."""

    primary_metric: str | None
    baseline: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, float] = field(default_factory=dict)
    train_loss: float | None = None
    steps: int = 0
    # True when the reporter asked to stop (cancel, pause, timeout, shutdown): nothing saved.
    stopped_early: bool = False
    # Kind-specific results stored with the job (e.g. a confusion matrix).
    details: dict[str, Any] = field(default_factory=dict)

    def train(self, trainer: Any, reporter: Reporter, resume_from: Path | None) -> bool:
        """Run `trainer` (continuing from the checkpoint `resume_from`) and note its loss and
        steps; False, with `stopped_early` set, when the reporter stopped it."""
        resume = str(resume_from) if resume_from else None
        output = trainer.train(resume_from_checkpoint=resume)
        self.train_loss = float(output.training_loss)
        self.steps = trainer.state.global_step
        self.stopped_early = reporter.stop_reason() is not None
        return not self.stopped_early


    def keep(self, trainer: Any, keep_best: bool, *, base_counts: bool) -> bool:
        """Record in `details["kept"]` which weights the run hands on, once it has measured
        the weights it ended with (`evaluation`): with `keep_best`, the best evaluation's
        checkpoint or, when `base_counts` and the base model (step 0) scored higher on the
        primary metric, the base; without, the last step's. True when the base is kept: the
        caller then saves the base's weights, and `evaluation` becomes the base's."""
        key = self.primary_metric
        if (
            keep_best
            and base_counts
            and key in self.baseline
            and key in self.evaluation
            and self.baseline[key] > self.evaluation[key]
        ):
            self.evaluation = dict(self.baseline)
            self.details["kept"] = {"model": "base", "step": 0}
            return True
        if keep_best:
            best = trainer.state.best_model_checkpoint
            step = int(best.rsplit("-", 1)[-1]) if best else self.steps
            self.details["kept"] = {"model": "best_checkpoint", "step": step}
        else:
            self.details["kept"] = {"model": "last_step", "step": self.steps}
        return False


def batch_arguments(batch_size: int, world_size: int) -> dict[str, Any]:
    """Trainer arguments for `batch_size` examples per process and step.

    With several processes, every process draws the same global batches of `batch_size x
    world_size` (same sampler, same seed) and trains on its own slice of each (Accelerate's
    `split_batches`). The run then sees exactly the batches one process with the global batch
    would see. Sharding whole per-process batches instead would not: a batch sampler that
    builds batches by content (no duplicates, length groups) builds other batches for another
    batch size."""
    if world_size == 1:
        return {"per_device_train_batch_size": batch_size, "per_device_eval_batch_size": batch_size}
    return {
        "per_device_train_batch_size": batch_size * world_size,
        "per_device_eval_batch_size": batch_size * world_size,
        "accelerator_config": {"split_batches": True},
    }
