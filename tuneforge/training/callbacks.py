"""The bridge from a transformers/sentence-transformers trainer to whoever follows the job."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from transformers import TrainerCallback

from tuneforge.jobs.status import CHECKPOINTING_STOPS, StopReason
from tuneforge.training.checkpoint_metrics import CheckpointMetrics


class Reporter(Protocol):
    """What a running job reports to, and asks whether to stop."""

    def progress(self, step: int, total_steps: int, epoch: float) -> None: ...
    def metrics(self, step: int, values: dict[str, float]) -> None: ...
    def checkpoint(self, step: int, epoch: float, path: str, metrics: dict[str, float]) -> None: ...
    def stop_reason(self) -> StopReason | None: ...
    def adopt_stop(self, reason: StopReason) -> None: ...
    def ensure_lease(self) -> None: ...
    def note(
        self, message: str, *, level: str = "info", data: dict[str, Any] | None = None
    ) -> None:
        """An event; `data["hyperparameters"]` (values decided at run time, such as an
        automatic learning rate) is also recorded in the job's method, where the job object
        shows it."""


# A test hook, read where a real out-of-memory error surfaces (in the training step): the
# largest micro-batch the device holds. A step with a larger one raises torch's
# OutOfMemoryError as a full device does, so that the job's handling of it runs for real on
# the CPU (tests/jobs/test_oom.py).
OOM_ABOVE_BATCH = "TUNEFORGE_TEST_OOM_ABOVE_BATCH"

# Stop reasons as the number rank 0 broadcasts to the other ranks (0: go on).
STOP_CODES: tuple[StopReason | None, ...] = (None, *StopReason)


class ReportingCallback(TrainerCallback):
    """Forwards progress, logged metrics and checkpoints with their metrics (see
    `checkpoint_metrics`); stops training when told to.

    `measure_valid(model)` gives a checkpoint's `valid_` metrics (a small validation batch).
    With `evaluate_at_checkpoints`, a checkpoint written at a step without a scheduled
    evaluation gets one, so that it carries the `full_valid_` metrics too; a checkpoint
    written because the job stops (pause, timeout, shutdown) does not wait for one."""

    def __init__(
        self,
        reporter: Reporter,
        samples_per_step: int,
        *,
        measure_valid: Callable[[Any], dict[str, float]] | None = None,
        evaluate_at_checkpoints: bool = False,
    ):
        self.reporter = reporter
        self.samples_per_step = samples_per_step
        self.measure_valid = measure_valid
        self.evaluate_at_checkpoints = evaluate_at_checkpoints
        self.checkpoint_metrics = CheckpointMetrics()
        self._last_time = 0.0
        self._last_step = 0
        self._saved_step: int | None = None
        self._random_state: dict[str, Any] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._last_time = time.monotonic()
        self._last_step = state.global_step
        self.checkpoint_metrics.restart(state.global_step)
        self.reporter.progress(state.global_step, state.max_steps, 0.0)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        limit = os.environ.get(OOM_ABOVE_BATCH)
        if limit and args.per_device_train_batch_size > int(limit):
            import torch

            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate a micro-batch of "
                f"{args.per_device_train_batch_size}; the device holds {limit} "
                f"({OOM_ABOVE_BATCH})."
            )

    def _stop_reason(self, args: Any) -> StopReason | None:
        reason = self.reporter.stop_reason()
        if args.world_size > 1:
            # All ranks must stop (and save) at the same step, or the next collective hangs:
            # rank 0 decides, every rank follows.
            import torch
            import torch.distributed as dist

            code = torch.tensor([STOP_CODES.index(reason)], device=args.device)
            dist.broadcast(code, src=0)
            reason = STOP_CODES[int(code.item())]
            if reason is not None:
                self.reporter.adopt_stop(reason)
        return reason

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.reporter.progress(state.global_step, state.max_steps, state.epoch or 0.0)
        reason = self._stop_reason(args)
        if reason is not None:
            # Pause, timeout and shutdown continue later from a checkpoint of this very step.
            control.should_training_stop = True
            control.should_save = reason in CHECKPOINTING_STOPS
            control.should_evaluate = False
        if control.should_save:
            self.reporter.ensure_lease()
            self._prepare_checkpoint(args, state, control, reason, kwargs.get("model"))

        self._keep_random_state(control)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if control.should_evaluate and self.checkpoint_metrics.evaluated(state.global_step):
            # A checkpoint at the epoch's last step had its evaluation: the same weights.
            control.should_evaluate = False
        reason = self._stop_reason(args)
        if reason is not None:
            # Stopped inside the epoch: no end-of-epoch evaluation, and no second checkpoint.
            control.should_training_stop = True
            control.should_evaluate = False
            control.should_save = (
                reason in CHECKPOINTING_STOPS and self._saved_step != state.global_step
            )
        if control.should_save:
            self.reporter.ensure_lease()
            self._prepare_checkpoint(args, state, control, reason, kwargs.get("model"))
        self._keep_random_state(control)

    def _keep_random_state(self, control: Any) -> None:
        """Before an evaluation, remember the random generators' state, for `on_evaluate` to
        put back: iterating the evaluation's data loader draws from torch's generator, so an
        evaluation would otherwise change the dropout and order of the steps after it. With
        it, a run stopped at a step (a pause checkpoints without evaluating) resumes to the
        same weights as a run that went straight through."""
        self._random_state = random_state() if control.should_evaluate else None

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._random_state is not None:
            restore_random_state(self._random_state)
            self._random_state = None

    def _prepare_checkpoint(
        self, args: Any, state: Any, control: Any, reason: StopReason | None, model: Any
    ) -> None:
        """The trainer saves at this step (after its logging and evaluation): have it log
        the training metrics up to here, ask for the evaluation, and measure the small
        validation batch on the weights it saves."""
        control.should_log = True
        evaluates = args.eval_strategy != "no"
        if self.evaluate_at_checkpoints and evaluates and reason is None:
            control.should_evaluate = True
        if self.measure_valid is not None and model is not None and state.is_world_process_zero:
            values = self.measure_valid(model)
            self.checkpoint_metrics.measured(state.global_step, values)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not logs:
            return
        values = {k: float(v) for k, v in logs.items() if isinstance(v, int | float)}
        self.checkpoint_metrics.observe(state.global_step, values)
        if "loss" in values:
            now = time.monotonic()
            steps = state.global_step - self._last_step
            if steps > 0 and now > self._last_time:
                values["steps_per_second"] = steps / (now - self._last_time)
                values["samples_per_second"] = values["steps_per_second"] * self.samples_per_step
            self._last_time, self._last_step = now, state.global_step
        self.reporter.metrics(state.global_step, values)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._saved_step = state.global_step

    def on_checkpoint_complete(self, step: int, epoch: float, path: str) -> None:
        """From `AtomicCheckpoints`' finishing thread, once the checkpoint is in place."""
        self.reporter.checkpoint(step, epoch, path, self.checkpoint_metrics.for_checkpoint(step))


def random_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's (CPU and CUDA) random generators."""
    import random

    import numpy as np
    import torch

    found: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        found["cuda"] = torch.cuda.get_rng_state_all()
    return found


def restore_random_state(found: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(found["python"])
    np.random.set_state(found["numpy"])
    torch.set_rng_state(found["cpu"])
    if "cuda" in found:
        torch.cuda.set_rng_state_all(found["cuda"])
