"""Crash-safe checkpoints for the libraries' trainers.

A checkpoint is written into a staging folder, its files are flushed to disk, a completion
marker is added, and only then is the folder renamed to `checkpoint-STEP`. A crash at any
moment leaves either the whole checkpoint or none: resume takes the newest folder with the
marker and removes anything half-written.

The trainer serialises the checkpoint in the training loop; flushing, marking, renaming and
rotating happen on a background thread while training goes on (waiting for the disk was half
of a checkpoint's time). A checkpoint counts, and is reported to the callbacks' `on_checkpoint
_complete`, only once it is in place; training waits for the previous one before writing the
next, before going back to the best checkpoint, and before `train()` returns.

In a distributed job every rank writes its part (rank 0 the weights, each rank its optimizer
and RNG state) into one staging folder; after a barrier, rank 0 alone completes it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

MARKER = "tuneforge-complete.json"
PREFIX = "checkpoint-"
STAGING = ".staging"


def _step(path: Path) -> int:
    suffix = path.name.removeprefix(PREFIX)
    return int(suffix) if suffix.isdigit() else -1


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest step first."""
    if not checkpoints_dir.is_dir():
        return []
    found = [
        p
        for p in checkpoints_dir.iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and _step(p) >= 0 and (p / MARKER).is_file()
    ]
    return sorted(found, key=_step)


def newest_complete(checkpoints_dir: Path) -> Path | None:
    """The checkpoint a resumed run continues from, or None."""
    found = complete_checkpoints(checkpoints_dir)
    return found[-1] if found else None


def discard_incomplete(checkpoints_dir: Path) -> list[str]:
    """Remove staging folders and checkpoints without a marker (a crash while writing);
    returns their names."""
    if not checkpoints_dir.is_dir():
        return []
    removed = []
    for path in checkpoints_dir.iterdir():
        if path.is_dir() and (path.name.startswith(STAGING) or not (path / MARKER).is_file()):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def staging_name(job: str, step: int) -> str:
    """The folder a checkpoint of `job` at `step` is written into before it is complete: the
    same on every rank and every machine of a run (a process id would differ between
    machines, and another machine's part would land where rank 0 never looks)."""
    return f"{STAGING}-{job}-{step}"


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicCheckpoints:
    """Mix into a `transformers.Trainer` subclass (before it): its checkpoints are staged,
    flushed, marked complete and renamed into place, then rotated (see the module)."""

    _staging_root: Path | None = None
    _finishing: Future[None] | None = None
    _finisher: ThreadPoolExecutor | None = None

    def _get_output_dir(self, trial: Any) -> str:
        # While a checkpoint is being written, the trainer writes into the staging folder.
        if self._staging_root is not None:
            return str(self._staging_root)
        return super()._get_output_dir(trial)  # type: ignore[misc,no-any-return]

    def train(self, *args: Any, **kwargs: Any) -> Any:
        try:
            output = super().train(*args, **kwargs)  # type: ignore[misc]
        except BaseException:
            self.wait_for_checkpoint(raise_errors=False)
            raise
        self.wait_for_checkpoint()
        return output

    def _load_best_model(self) -> None:
        self.wait_for_checkpoint()
        super()._load_best_model()  # type: ignore[misc]

    def wait_for_checkpoint(self, *, raise_errors: bool = True) -> None:
        """Until the checkpoint being finished is in place; raises what went wrong there."""
        finishing, self._finishing = self._finishing, None
        if finishing is None:
            return
        try:
            finishing.result()
        except Exception:
            if raise_errors:
                raise

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        trainer: Any = self
        self.wait_for_checkpoint()
        run_dir = Path(super()._get_output_dir(trial))  # type: ignore[misc]
        step = trainer.state.global_step
        name = f"{PREFIX}{step}"
        distributed = trainer.args.world_size > 1
        main = trainer.is_world_process_zero()
        # Named by what every rank of every machine knows alike: one folder for all.
        staging_root = run_dir / staging_name(run_dir.parent.name, step)
        if main:
            shutil.rmtree(staging_root, ignore_errors=True)
            staging_root.mkdir(parents=True)
        if distributed:
            trainer.accelerator.wait_for_everyone()
        limit = trainer.args.save_total_limit
        trainer.args.save_total_limit = None  # rotation happens below, among complete ones
        self._staging_root = staging_root
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            self._staging_root = None
            trainer.args.save_total_limit = limit
        if distributed:
            trainer.accelerator.wait_for_everyone()  # every rank's part is written
        if not main:
            return
        staged = staging_root / name
        best = trainer.state.best_global_step
        best_dir = run_dir / f"{PREFIX}{best}" if best else None
        if best_dir is not None and (best == step or best_dir.is_dir()):
            trainer.state.best_model_checkpoint = str(best_dir)
            # The state file inside names the staging path; point it at the final one.
            state_file = staged / "trainer_state.json"
            if state_file.is_file():
                state = json.loads(state_file.read_text())
                state["best_model_checkpoint"] = str(best_dir)
                state_file.write_text(json.dumps(state, indent=2, sort_keys=True))
        listeners = [
            c.on_checkpoint_complete
            for c in trainer.callback_handler.callbacks
            if hasattr(c, "on_checkpoint_complete")
        ]
        epoch = trainer.state.epoch or 0.0
        best_name = trainer.state.best_model_checkpoint

        def finish() -> None:
            (staged / MARKER).write_text(json.dumps({"step": step, "written_at": time.time()}))
            _fsync_tree(staged)
            final = run_dir / name
            if final.exists():  # the same step saved twice (a pause right after a save)
                shutil.rmtree(final)
            os.replace(staged, final)
            _fsync_dir(run_dir)
            shutil.rmtree(staging_root, ignore_errors=True)
            self._rotate(run_dir, limit, best_name)
            for listener in listeners:
                listener(step, epoch, str(final))

        if self._finisher is None:
            self._finisher = ThreadPoolExecutor(1, thread_name_prefix="tuneforge-checkpoint")
        self._finishing = self._finisher.submit(finish)

    @staticmethod
    def _rotate(run_dir: Path, limit: int | None, best: str | None) -> None:
        if not limit:
            return
        complete = complete_checkpoints(run_dir)
        keep = {p.name for p in complete[-limit:]}
        if best:
            keep.add(Path(best).name)
        for path in complete:
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
