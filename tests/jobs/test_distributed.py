"""Distributed jobs: two training processes (gloo, CPU) launched by a real `tuneforge worker`
through Accelerate, against one process with the same global batch."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.jobs.test_recovery import Workers, checkpoint_steps, job_processes, wait_gone
from tests.tiny_llm import QWEN, install_in_hf_cache, write_jsonl
from tests.training.conftest import TOPICS
from tuneforge.datasets.ingest import ingest_file
from tuneforge.jobs.service import create_job
from tuneforge.training.spec import JobCreate

pytestmark = pytest.mark.slow


@pytest.fixture
def workers(tmp_path: Path, offline_hub: Path) -> Iterator[Workers]:
    # One thread per rank: the two ranks share this machine's cores.
    group = Workers(tmp_path / "tuneforge-data", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    group.start("only")
    yield group
    group.stop()


def submit(workers: Workers, data: Path, method: dict[str, Any], validation: Path | None = None,
           **extra: Any) -> str:
    files = {}
    for param, path in (("training_file", data), ("validation_file", validation)):
        if path is not None:
            with path.open("rb") as f:
                files[param] = ingest_file(workers.store, workers.settings, path.name, f)["id"]
    spec = JobCreate.model_validate(
        {"model": extra.pop("model"), "seed": 5, "device": "cpu", "method": method, **files,
         **extra})
    return create_job(workers.store, workers.settings, spec)["id"]


def losses(workers: Workers, job_id: str) -> dict[int, float]:
    events, _ = workers.store.list_events(job_id, limit=10000, newest_first=False)
    return {e["data"]["step"]: e["data"]["loss"] for e in events
            if e["type"] == "metrics" and "loss" in (e["data"] or {})}


def finished(workers: Workers, job_id: str) -> dict:
    return workers.wait(job_id, lambda j: j["status"] == "succeeded", timeout=300)


def embedding(batch_size: int, **hp: Any) -> dict[str, Any]:
    return {"type": "embedding", "embedding": {"loss": "mnrl", "hyperparameters": {
        "batch_size": batch_size, "n_epochs": 1, "logging_steps": 1, "learning_rate": 5e-5,
        **hp}}}


@pytest.fixture(scope="module")
def small_triplets(german_triplets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "triplets-64.jsonl"
    path.write_text("".join(german_triplets.read_text().splitlines(keepends=True)[:72]))
    return path


@pytest.fixture(scope="module")
def triplet_split(german_triplets: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> tuple[Path, Path]:
    """64 training rows (a whole number of global batches of 8) and 8 validation rows. Their
    negatives are other rows' positives: the no-duplicates sampler has to move rows aside."""
    lines = german_triplets.read_text().splitlines(keepends=True)
    folder = tmp_path_factory.mktemp("data")
    (folder / "train-64.jsonl").write_text("".join(lines[:64]))
    (folder / "validation-8.jsonl").write_text("".join(lines[64:72]))
    return folder / "train-64.jsonl", folder / "validation-8.jsonl"


def without_dropout(workers: Workers, snapshot: Path, name: str, keys: tuple[str, ...]) -> str:
    """A copy of a model (files linked) whose config turns dropout off, in a model folder the
    workers search: without dropout's random masks, one process and two see the same
    numbers up to the order of float sums."""
    folder = workers.home.parent / "base-models" / name
    for file in snapshot.rglob("*"):
        if file.is_file() and file.relative_to(snapshot) != Path("config.json"):
            target = folder / file.relative_to(snapshot)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(file.resolve())
    config = json.loads((snapshot / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | dict.fromkeys(keys, 0.0)))
    workers.settings.model_dirs = [folder.parent]
    return name


def dropout_free_minilm(workers: Workers, offline_hub: Path, model_id: str) -> str:
    """all-MiniLM-L6-v2 from the offline Hub cache, without dropout, for `workers`."""
    snapshot = next((offline_hub / "hub" / ("models--" + model_id.replace("/", "--"))
                     / "snapshots").iterdir())
    return without_dropout(workers, snapshot, "minilm-no-dropout",
                           ("hidden_dropout_prob", "attention_probs_dropout_prob"))


@pytest.fixture
def dropout_free_workers(tmp_path: Path, offline_hub: Path) -> Iterator[Workers]:
    group = Workers(tmp_path / "tuneforge-data", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                    TUNEFORGE_MODEL_DIRS=json.dumps([str(tmp_path / "base-models")]))
    group.start("only")
    yield group
    group.stop()


def test_two_processes_with_gathered_negatives_train_like_one_with_their_global_batch(
        dropout_free_workers: Workers, triplet_split: tuple[Path, Path], offline_hub: Path,
        model_id: str) -> None:
    workers = dropout_free_workers
    model = dropout_free_minilm(workers, offline_hub, model_id)
    train, validation = triplet_split
    single = submit(workers, train, embedding(8), validation, model=model)
    double = submit(workers, train, embedding(4), validation, model=model, num_processes=2)
    alone = submit(workers, train, embedding(4), validation, model=model)
    for job_id in (single, double, alone):
        finished(workers, job_id)
    one, two, small = (losses(workers, j) for j in (single, double, alone))
    print(json.dumps({"single-8": one, "2x4": two, "single-4": small}))
    # The same global batches, step by step: each process trains on its half of the batch the
    # single process sees, against the negatives of both halves. Without dropout what is
    # left is the order of float sums (gathered similarities, gradients averaged over two
    # processes): far below these tolerances.
    # (Measured: equal to 1e-6 at every step.) Without gathered negatives, each process's
    # loss would rank 8 candidates instead of 16 and come out lower; with whole batches of 4
    # per process instead of halves of one batch of 8, the no-duplicates sampler would build
    # other batches (and let one process's positive be another's negative).
    assert sorted(two) == sorted(one) == list(range(1, 9))
    assert two[1] == pytest.approx(one[1], rel=1e-5)
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-3), (step, one, two)
    # One process with batch 4 (4 rows, 8 candidates) is a clearly easier task.
    assert statistics.median(small.values()) < 0.5 * statistics.median(one.values())
    job = workers.store.require_job(double)
    assert (workers.home / workers.store.get_model(job["fine_tuned_model"])["path"]
            / "model.safetensors").is_file()
    assert job["progress"]["total_steps"] == 8


def chats() -> list[dict[str, Any]]:
    """32 conversations of varied lengths: length-grouped batches depend on the batch size."""
    rows = []
    for i, topic in enumerate(TOPICS * 4):
        question = f"Hashtags for {topic}" + " please, for our post" * (i % 4)
        answer = json.dumps({"topic": topic, "hashtags": [f"#{topic}", "#news"][: 1 + i % 2]})
        rows.append({"messages": [{"role": "user", "content": question},
                                  {"role": "assistant", "content": answer}]})
    return rows


def supervised(batch_size: int) -> dict[str, Any]:
    return {"type": "supervised", "supervised": {
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "generation_checks": {"samples": 0},
        "hyperparameters": {
            "batch_size": batch_size, "n_epochs": 2, "gradient_accumulation_steps": 1,
            "learning_rate": 1e-3, "lr_scheduler": "constant", "warmup_ratio": 0,
            "gradient_checkpointing": False, "logging_steps": 1, "eval_steps": 1000}}}


def test_a_two_process_lora_job_trains_like_one_process_with_the_global_batch(
        workers: Workers, offline_hub: Path, tmp_path: Path) -> None:
    install_in_hf_cache(offline_hub, QWEN)  # its config has no dropout; LoRA's is set to 0
    rows = chats()
    train = write_jsonl(tmp_path / "chats-32.jsonl", rows)
    validation = write_jsonl(tmp_path / "chats-4.jsonl", rows[:4])
    single = submit(workers, train, supervised(8), validation, model=QWEN)
    double = submit(workers, train, supervised(4), validation, model=QWEN, num_processes=2)
    for job_id in (single, double):
        finished(workers, job_id)
    one, two = losses(workers, single), losses(workers, double)
    print(json.dumps({"single-8": one, "2x4": two}))
    assert sorted(two) == sorted(one) == list(range(1, 9))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-3), (step, one, two)
    # It learnt: the last steps' loss is well below the first's.
    assert two[8] < 0.9 * two[1]
    job = workers.store.require_job(double)
    folder = workers.home / workers.store.get_model(job["fine_tuned_model"])["path"]
    assert (folder / "adapter_model.safetensors").is_file()


def test_a_two_process_job_pauses_resumes_and_cancels_on_all_ranks(
        workers: Workers, small_triplets: Path, model_id: str) -> None:
    job_id = submit(workers, small_triplets, embedding(4, n_epochs=4), model=model_id,
                    num_processes=2)
    workers.wait(job_id, lambda j: (j["progress"] or {}).get("step", 0) >= 2)
    workers.store.request_pause(job_id)
    job = workers.wait(job_id, lambda j: j["status"] in ("paused", "succeeded"), timeout=120)
    assert job["status"] == "paused"
    step = checkpoint_steps(workers.store, job_id)[-1]
    folder = workers.home / "jobs" / job_id / "checkpoints" / f"checkpoint-{step}"
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in folder.iterdir()}
    wait_gone(job_processes(job_id))
    workers.store.resume(job_id)
    finished(workers, job_id)
    assert f"Resuming from the checkpoint at step {step}." in workers.messages(job_id)

    cancelled = submit(workers, small_triplets, embedding(4, n_epochs=20), model=model_id,
                       num_processes=2)
    workers.wait(cancelled, lambda j: (j["progress"] or {}).get("step", 0) >= 2)
    ranks = job_processes(cancelled)
    assert len(ranks) == 3  # the launcher and its two ranks
    workers.store.request_cancel(cancelled)
    deadline = time.monotonic() + 120
    while workers.store.require_job(cancelled)["status"] != "cancelled":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    wait_gone(ranks)
