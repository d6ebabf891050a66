"""Checkpoints are finished (flushed, marked, renamed, rotated) off the training loop: a
checkpoint is reported only once it is in place, and a failure there stops training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from tuneforge.training import checkpoints
from tuneforge.training.checkpoints import MARKER, AtomicCheckpoints, complete_checkpoints


class Regression(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)}


class Listener(TrainerCallback):
    """What a reporter sees: each checkpoint's step and whether it was in place then."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, bool]] = []

    def on_checkpoint_complete(self, step: int, epoch: float, path: str) -> None:
        folder = Path(path)
        in_place = (folder / MARKER).is_file() and (folder / "trainer_state.json").is_file()
        self.seen.append((step, in_place))


class CheckpointingTrainer(AtomicCheckpoints, Trainer):
    pass


def train(folder: Path, listener: Listener, max_steps: int = 6) -> Any:
    torch.manual_seed(0)
    rows = [{"x": torch.randn(4), "labels": torch.randn(())} for _ in range(16)]
    args = TrainingArguments(
        output_dir=str(folder),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        save_strategy="steps",
        save_steps=2,
        save_total_limit=2,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
    )
    trainer = CheckpointingTrainer(
        model=Regression(), args=args, train_dataset=rows, callbacks=[listener]
    )
    return trainer.train()


def test_checkpoints_are_reported_once_in_place_and_rotated(tmp_path: Path) -> None:
    listener = Listener()
    train(tmp_path, listener)
    assert listener.seen == [(2, True), (4, True), (6, True)]
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-6"]
    assert not list(tmp_path.glob(".staging*"))


def test_a_failure_while_finishing_a_checkpoint_stops_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = checkpoints._fsync_dir

    def failing_on_the_second_checkpoint(folder: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # staged tree, then run dir: the second checkpoint's staged tree
            raise OSError(28, "No space left on device")
        real(folder)

    monkeypatch.setattr(checkpoints, "_fsync_dir", failing_on_the_second_checkpoint)
    listener = Listener()
    with pytest.raises(OSError, match="No space left"):
        train(tmp_path, listener)
    # Only the first checkpoint counts; the half-finished one is never reported.
    assert listener.seen == [(2, True)]
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-2"]
