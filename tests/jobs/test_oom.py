"""Out of memory: recognised in its forms (CUDA, cuBLAS, the CPU), and a run that runs out is
retried with half the micro-batch and twice the gradient accumulation, down to 1, with an
event each time; shown end to end on the CPU with the training loop's OOM hook."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.tiny_llm import build_tiny_llm
from tests.training.conftest import json_chats
from tuneforge.config import Settings
from tuneforge.db.store import Store
from tuneforge.jobs.oom import is_out_of_memory, smaller_settings
from tuneforge.jobs.runner import run_job
from tuneforge.jobs.service import create_job
from tuneforge.training.callbacks import OOM_ABOVE_BATCH
from tuneforge.training.spec import JobCreate


def test_out_of_memory_in_its_forms() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(MemoryError())
    cublas = RuntimeError(
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
    )
    assert is_out_of_memory(cublas)
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                       "memory: you tried to allocate 8589934592 bytes.")  # fmt: skip
    assert is_out_of_memory(cpu)
    try:
        try:
            raise MemoryError
        except MemoryError as inner:
            raise RuntimeError("the trainer's step failed") from inner
    except RuntimeError as chained:
        assert is_out_of_memory(chained)
    assert not is_out_of_memory(ValueError("a bad row"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def spec(method: dict[str, Any]) -> dict[str, Any]:
    return JobCreate.model_validate(
        {"model": "m/m", "training_file": "file-x", "seed": 1, "method": method}
    ).model_dump(mode="json")


def hyperparameters(data: dict[str, Any]) -> dict[str, Any]:
    kind = data["method"]["type"]
    return dict(data["method"][kind]["hyperparameters"])


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        # Supervised and DPO: the same effective batch (batch x accumulation).
        ({"type": "supervised", "supervised": {"hyperparameters": {
            "batch_size": 8, "gradient_accumulation_steps": 2}}},
         {"batch_size": 4, "gradient_accumulation_steps": 4}),
        ({"type": "dpo", "dpo": {"hyperparameters": {
            "batch_size": 6, "gradient_accumulation_steps": 1}}},
         {"batch_size": 3, "gradient_accumulation_steps": 2}),
        # 3 has no half: 1 with three times the accumulation.
        ({"type": "supervised", "supervised": {"hyperparameters": {
            "batch_size": 3, "gradient_accumulation_steps": 2}}},
         {"batch_size": 1, "gradient_accumulation_steps": 6}),
        # Reinforcement: a step's 4 x 4 answers in twice as many passes.
        ({"type": "reinforcement", "reinforcement": {"grader": {
            "type": "string_check", "name": "g", "input": "{{sample.output_text}}",
            "reference": "x", "operation": "eq"},
            "hyperparameters": {"batch_size": 4, "num_generations": 4}}},
         {"batch_size": 4, "gradient_accumulation_steps": 2}),
        # Embedding with mnrl: GradCache's cached_mnrl, the same batch in smaller passes.
        ({"type": "embedding", "embedding": {"loss": "mnrl", "hyperparameters": {
            "batch_size": 32}}}, {"batch_size": 32, "mini_batch_size": 16}),
        # Classification has no accumulation: the batch halves.
        ({"type": "classification", "classification": {"hyperparameters": {
            "batch_size": 16}}}, {"batch_size": 8}),
    ],
)  # fmt: skip
def test_smaller_settings(method: dict[str, Any], expected: dict[str, Any]) -> None:
    found = smaller_settings(spec(method))
    assert found is not None
    data, words = found
    assert hyperparameters(data).items() >= expected.items()
    if method["type"] == "embedding":
        assert data["method"]["embedding"]["loss"] == "cached_mnrl"
    assert words


def test_no_smaller_settings_below_one() -> None:
    one = {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 1}}}
    assert smaller_settings(spec(one)) is None


@pytest.fixture
def tiny_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Store, Settings]]:
    models = tmp_path / "models"
    build_tiny_llm(models / "tiny-llama", "llama")
    # The job process's thread budget: one thread, restored afterwards.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        monkeypatch.setenv(name, "1")
    threads = torch.get_num_threads()
    settings = Settings(home=tmp_path / "home", model_dirs=[models], job_threads=1)
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    yield store, settings
    store.dispose()
    torch.set_num_threads(threads)


def tiny_job(store: Store, settings: Settings, batch_size: int) -> str:
    """A supervised LoRA job of the tiny Llama on 16 short conversations, created."""
    from tuneforge.datasets.ingest import ingest_file

    path = settings.home / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in json_chats() * 2), encoding="utf-8")
    with path.open("rb") as f:
        file_id = ingest_file(store, settings, "chats.jsonl", f)["id"]
    request = JobCreate.model_validate({
        "model": "tiny-llama", "training_file": file_id, "device": "cpu", "seed": 3,
        "method": {"type": "supervised", "supervised": {
            "generation_checks": {"samples": 0},
            "hyperparameters": {"n_epochs": 1, "batch_size": batch_size,
                                "gradient_accumulation_steps": 1, "max_seq_length": 256}}},
    })  # fmt: skip
    return str(create_job(store, settings, request)["id"])


def test_a_run_out_of_memory_is_retried_with_half_the_micro_batch(
    tiny_home: tuple[Store, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, settings = tiny_home
    job_id = tiny_job(store, settings, batch_size=4)
    # The device holds a micro-batch of 1: a step of 4 or 2 raises torch's OutOfMemoryError.
    monkeypatch.setenv(OOM_ABOVE_BATCH, "1")
    for _ in range(3):
        claimed = store.claim_next_job("test-worker", job_id)
        assert claimed is not None
        run_job(store, settings, job_id, claimed["lease"])
    job = store.require_job(job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["failures"] == 0  # adapting is not a failed attempt
    hp = job["spec"]["method"]["supervised"]["hyperparameters"]
    assert (hp["batch_size"], hp["gradient_accumulation_steps"]) == (1, 4)
    events, _ = store.list_events(job_id, limit=100, newest_first=False)
    adapted = [e for e in events if (e["data"] or {}).get("out_of_memory")]
    assert [e["level"] for e in adapted] == ["warn", "warn"]
    assert [
        (e["data"]["hyperparameters"]["batch_size"],
         e["data"]["hyperparameters"]["gradient_accumulation_steps"]) for e in adapted
    ] == [(2, 2), (1, 4)]  # fmt: skip
    assert "micro-batch 4 -> 2" in adapted[0]["message"]
    assert "same effective batch of 4" in adapted[1]["message"]


def test_out_of_memory_on_another_rank_is_out_of_memory(
    tiny_home: tuple[Store, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rank other than 0 that runs out settles the job itself (rank 0 then finds its
    lease gone): out of memory and adapted, not `internal` from the launcher's exit code."""
    store, settings = tiny_home
    job_id = tiny_job(store, settings, batch_size=2)
    monkeypatch.setenv(OOM_ABOVE_BATCH, "1")
    claimed = store.claim_next_job("test-worker", job_id)
    assert claimed is not None
    with pytest.raises(torch.OutOfMemoryError):
        run_job(store, settings, job_id, claimed["lease"], rank=1)
    job = store.require_job(job_id)
    assert job["status"] == "queued"
    assert job["spec"]["method"]["supervised"]["hyperparameters"]["batch_size"] == 1
    events, _ = store.list_events(job_id, limit=100, newest_first=False)
    assert "(on rank 1)" in events[-1]["message"] and events[-1]["data"]["out_of_memory"]
