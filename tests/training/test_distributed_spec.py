"""The distributed fields of a job spec: every problem named at once, bad ones refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tuneforge.training.base import batch_arguments
from tuneforge.training.spec import JobCreate


def spec(**fields: Any) -> JobCreate:
    return JobCreate.model_validate({"model": "m", "training_file": "file-1", **fields})


def test_two_processes_on_cuda_devices_are_accepted() -> None:
    job = spec(num_processes=2, devices=[0, 3], device="cuda", distributed={"strategy": "fsdp",
               "config": {"fsdp_sharding_strategy": "FULL_SHARD"}})
    assert job.world_size() == 2
    assert spec().world_size() == 1


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        spec(num_processes=2, devices=[1, 1, 2], device="cpu",
             distributed={"strategy": "deepspeed", "num_machines": 2})
    message = str(caught.value)
    for part in ("devices lists 3 device(s) but num_processes is 2", "must not repeat",
                 "device is cpu", "deepspeed needs CUDA"):
        assert part in message, message


def test_several_machines_need_no_address_and_ranks_are_not_the_users() -> None:
    job = spec(num_processes=2, distributed={"num_machines": 3})
    assert job.world_size() == 6
    assert job.distributed is not None and job.distributed.join_timeout_seconds == 600
    # A spec stored before ranks were assigned by tuneforge still loads.
    stored = spec(distributed={"num_machines": 1, "machine_rank": 0})
    assert "machine_rank" not in stored.model_dump()["distributed"]
    with pytest.raises(ValidationError, match="machine_rank is assigned by tuneforge"):
        spec(distributed={"num_machines": 2, "machine_rank": 1})
    with pytest.raises(ValidationError, match="join_timeout_seconds"):
        spec(distributed={"num_machines": 2, "join_timeout_seconds": 1})


def test_a_classification_job_cannot_be_distributed() -> None:
    with pytest.raises(ValidationError, match="classification jobs train in one process"):
        spec(num_processes=2, method={"type": "classification"})


def test_processes_share_global_batches() -> None:
    assert batch_arguments(4, 1) == {
        "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4}
    assert batch_arguments(4, 2) == {
        "per_device_train_batch_size": 8, "per_device_eval_batch_size": 8,
        "accelerator_config": {"split_batches": True}}
