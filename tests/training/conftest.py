"""Tiny causal LMs and a way to run the LLM kinds in this process, without a server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.tiny_llm import build_tiny_llm
from tuneforge.jobs.status import StopReason
from tuneforge.training.base import JobData, RunContext
from tuneforge.training.spec import JobCreate

TOPICS = ["launch", "coffee", "football", "music", "travel", "sale", "hiring", "summer"]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models train several times faster on one thread than on two that share their
    cores with other processes (the LLM tests ask for it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 model whose tokenizer has ChatML as its chat template."""
    return build_tiny_llm(tmp_path_factory.mktemp("models") / "tiny-qwen2", "qwen2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama model whose tokenizer has no chat template (tuneforge falls back to ChatML)."""
    return build_tiny_llm(tmp_path_factory.mktemp("models") / "tiny-llama", "llama")


def json_chats() -> list[dict[str, Any]]:
    """Conversations whose answer is one JSON object with the keys topic and hashtags."""
    return [
        {
            "messages": [
                {"role": "user", "content": f"Hashtags for {topic}"},
                {
                    "role": "assistant",
                    "content": json.dumps({"topic": topic, "hashtags": [f"#{topic}", "#news"]}),
                },
            ]
        }
        for topic in TOPICS
    ]


def preference_pairs() -> list[dict[str, Any]]:
    """The JSON answer is chosen over a sentence in prose."""
    return [
        {
            "prompt": [{"role": "user", "content": f"Hashtags for {topic}"}],
            "chosen": [{"role": "assistant", "content": json.dumps({"hashtags": [f"#{topic}"]})}],
            "rejected": [{"role": "assistant", "content": f"I like {topic}."}],
        }
        for topic in TOPICS
    ]


class RecordingReporter:
    """What a job's reporter is told, kept in lists; asks to stop (e.g. pause) at a step."""

    def __init__(self, stop_at_step: int | None = None, reason: StopReason = StopReason.PAUSED):
        self.stop_at_step = stop_at_step
        self.reason = reason
        self.step = 0
        self.metrics_seen: list[tuple[int, dict[str, float]]] = []
        self.checkpoints: list[int] = []
        self.checkpoint_metrics: dict[int, dict[str, float]] = {}
        self.notes: list[tuple[str, dict[str, Any] | None]] = []

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        self.step = step

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.metrics_seen.append((step, values))

    def checkpoint(self, step: int, epoch: float, path: str, metrics: dict[str, float]) -> None:
        self.checkpoints.append(step)
        self.checkpoint_metrics[step] = metrics

    def stop_reason(self) -> StopReason | None:
        if self.stop_at_step is not None and self.step >= self.stop_at_step:
            return self.reason
        return None

    def ensure_lease(self) -> None:
        pass

    def note(
        self, message: str, *, level: str = "info", data: dict[str, Any] | None = None
    ) -> None:
        self.notes.append((message, data))

    def logged(self, key: str) -> list[float]:
        return [values[key] for _, values in self.metrics_seen if key in values]


def run_context(
    tmp_path: Path,
    model: Path,
    method: dict[str, Any],
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    *,
    layout: str = "chat",
    reporter: RecordingReporter | None = None,
    seed: int = 1,
    resume_from: Path | None = None,
    work_dir: Path | None = None,
) -> RunContext:
    """A run of a job with this `method` on these rows, on the CPU, writing under tmp_path."""
    spec = JobCreate.model_validate(
        {
            "model": "tuneforge-test/tiny",
            "training_file": "file-x",
            "seed": seed,
            "method": method,
            "device": "cpu",
        }
    )
    work = work_dir or tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)
    return RunContext(
        spec=spec,
        data=JobData(layout, train_rows, eval_rows, "file"),
        model_location=str(model),
        device="cpu",
        seed=seed,
        work_dir=work,
        output_dir=tmp_path / "model",
        reporter=reporter or RecordingReporter(),
        resume_from=resume_from,
    )
