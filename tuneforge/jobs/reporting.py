"""`JobReporter`: how a job's process tells the database what it is doing, and learns when
to stop.

Every write carries the job's lease: once another worker has taken the job over, the next
write raises LeaseLostError and the process ends without touching the job again.

In a distributed job every rank has a reporter, but only rank 0 writes and reads the
database; the others learn a stop from rank 0 (see `callbacks.ReportingCallback`).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from tuneforge.config import Settings
from tuneforge.db.store import Store, new_id
from tuneforge.errors import LeaseLostError
from tuneforge.jobs.status import StopReason
from tuneforge.monitoring.resources import ResourceMonitor
from tuneforge.training.integrations import WandbRun, job_runs

log = logging.getLogger(__name__)

# Progress rows and cancel checks at most this often: a database round trip per step would
# cost more than a small model's step.
MIN_INTERVAL = 1.0


class JobReporter:
    """Writes progress, metric events and checkpoints of one job; answers `stop_reason`."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        job_id: str,
        lease: int,
        *,
        deadline: float | None = None,
        rank: int = 0,
        worker_pid: int | None = None,
    ):
        self.store = store
        self.settings = settings
        self.job_id = job_id
        self.lease = lease
        self.deadline = deadline
        self.latest: dict[str, float] = {}
        self._reason: StopReason | None = None
        self._parent = os.getppid()
        # Under a launcher our parent is the launcher; the worker is watched by its pid.
        self._worker_pid = worker_pid
        self.rank = rank
        self.is_main = rank == 0
        self._started = time.monotonic()
        self._first_step: int | None = None
        self._last_write = 0.0
        self._last_check = 0.0
        self._integrations: list[WandbRun] | None = None
        self.step = 0
        self._resources: ResourceMonitor | None = None

    def start_resources(self) -> None:
        """Sample the process's CPU, memory and GPU memory as metrics events until
        `stop_resources` (rank 0; see tuneforge.monitoring.resources)."""
        if not self.is_main or self._resources is not None:
            return
        try:
            self._resources = ResourceMonitor(
                self.store,
                self.job_id,
                self.lease,
                self.settings.resource_sample_seconds,
                lambda: self.step,
            )
        except Exception:  # psutil cannot read this process: the job runs without samples
            log.exception("cannot sample the resources of job %s", self.job_id)
            return
        self._resources.start()

    def stop_resources(self) -> None:
        """Stop sampling, with a last sample (the peaks) while the job still runs."""
        if self._resources is not None:
            self._resources.stop()

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        if not self.is_main:
            return
        self.step = step
        now = time.monotonic()
        if self._first_step is None:
            self._first_step, self._started = step, now
        if now - self._last_write < MIN_INTERVAL and step not in (0, total_steps):
            return
        self._last_write = now
        done = step - self._first_step
        remaining = max(total_steps - step, 0)
        eta = (now - self._started) / done * remaining if done > 0 else None
        self.store.update_job_fields(
            self.job_id,
            lease=self.lease,
            progress={
                "step": step,
                "total_steps": total_steps,
                "epoch": round(epoch, 4),
                "percent": round(100.0 * step / total_steps, 2) if total_steps else 0.0,
                "eta_seconds": round(eta, 1) if eta is not None else None,
                "elapsed_seconds": round(now - self._started, 1),
            },
        )

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.latest.update(values)
        if not self.is_main:
            return
        if self._integrations is None:  # started on the first metrics: a job without any
            spec = self.store.require_job(self.job_id)["spec"]  # reads its spec once
            self._integrations = job_runs(self.job_id, spec) if spec.get("integrations") else []
        for run in self._integrations:
            run.log(step, values)
        shown = ", ".join(
            f"{k}={v:.4g}"
            for k, v in values.items()
            if k in ("loss", "learning_rate", "train_loss", "reward")
            or k.startswith("eval_")
            and "runtime" not in k
            and "per_second" not in k
        )
        self.store.add_metrics(
            self.job_id,
            f"Step {step}: {shown}" if shown else f"Step {step}",
            {"step": step, **values},
            dict(self.latest, step=step),
            self.lease,
        )

    def checkpoint(self, step: int, epoch: float, path: str, metrics: dict[str, float]) -> None:
        """Record a checkpoint in place with its metrics (see `training.checkpoint_metrics`)."""
        if not self.is_main:
            return
        relative = _relative_to(path, self.settings)
        self.store.add_checkpoint(
            {
                "id": new_id("ftckpt"),
                "job_id": self.job_id,
                "step": step,
                "epoch": epoch,
                "created_at": time.time(),
                "path": relative,
                "metrics": metrics,
            },
            f"Checkpoint saved at step {step}.",
            lease=self.lease,
        )

    def request_shutdown(self) -> None:
        """The worker is stopping (SIGTERM): checkpoint at the next step and requeue."""
        self._reason = self._reason or StopReason.SHUTDOWN

    def adopt_stop(self, reason: StopReason) -> None:
        """Take rank 0's stop decision (on the other ranks of a distributed job)."""
        self._reason = self._reason or reason

    def ensure_lease(self) -> None:
        """Raise LeaseLostError unless this process still holds the job (before writing a
        checkpoint, so that a superseded process leaves the job's files alone)."""
        self._check_orphaned()
        if not self.is_main:
            return
        controls = self.store.job_controls(self.job_id)
        if controls["lease"] != self.lease or controls["status"] != "running":
            raise LeaseLostError(f"Job {self.job_id} was taken over; this process stops.")

    def _check_orphaned(self) -> None:
        # The worker that started us is gone (killed): its lease will run out and another
        # worker will resume the job. Stop now, writing nothing.
        if os.getppid() != self._parent or (
            self._worker_pid is not None and not _alive(self._worker_pid)
        ):
            raise LeaseLostError(f"The worker of job {self.job_id} is gone; this process stops.")

    def stop_reason(self) -> StopReason | None:
        """Why the job should stop now (cancelled, paused, timeout, shutdown), or None while
        it may go on. Raises LeaseLostError once the job is no longer this process's."""
        self._check_orphaned()
        if self._reason is not None or not self.is_main:
            return self._reason
        if self.deadline is not None and time.time() >= self.deadline:
            self._reason = StopReason.TIMEOUT
            return self._reason
        now = time.monotonic()
        if now - self._last_check >= MIN_INTERVAL:
            self._last_check = now
            controls = self.store.job_controls(self.job_id)
            if controls["lease"] != self.lease or controls["status"] != "running":
                raise LeaseLostError(f"Job {self.job_id} was taken over; this process stops.")
            if controls["cancel_requested"]:
                self._reason = StopReason.CANCELLED
            elif controls["pause_requested"]:
                self._reason = StopReason.PAUSED
        return self._reason

    def note(
        self, message: str, *, level: str = "info", data: dict[str, Any] | None = None
    ) -> None:
        if not self.is_main:
            return
        if data and data.get("hyperparameters"):
            self._settle(data["hyperparameters"])
        self.store.add_event(self.job_id, message, level=level, data=data, lease=self.lease)

    def warn(self, code: str, message: str, **data: Any) -> None:
        """A warning kept on the job (shown at its top) and logged as a warning event."""
        if self.is_main:
            warning = {"code": code, "message": message, "data": data}
            self.store.add_warning(self.job_id, warning, lease=self.lease)

    def _settle(self, values: dict[str, Any]) -> None:
        # The stored method then holds the rate in use: the job object shows it, and a
        # resumed run trains with it without deciding again.
        spec = dict(self.store.require_job(self.job_id)["spec"])
        method = spec["method"]
        params = method[method["type"]]
        params["hyperparameters"] = {
            **params.get("hyperparameters", {}),
            **values,
            "learning_rate_multiplier": None,
        }
        self.store.update_job_fields(self.job_id, lease=self.lease, spec=spec)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _relative_to(path: str, settings: Settings) -> str:
    from pathlib import Path

    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(settings.home.resolve()))
    except ValueError:
        return str(resolved)
