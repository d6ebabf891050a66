"""The CUDA paths' decisions, called with what a GPU machine would report (device counts,
LOCAL_RANK, compute capabilities): this machine has no GPU, the decisions need none."""

from __future__ import annotations

import os

import pytest

from tuneforge.errors import InvalidRequestError
from tuneforge.jobs.worker import launch_command
from tuneforge.training import devices
from tuneforge.training.checkpoints import staging_name
from tuneforge.training.hyperparameters import ClassificationHyperparameters, LLMHyperparameters
from tuneforge.training.llm import finishing_steps, training_arguments

T4, V100, A100, H100 = (7, 5), (7, 0), (8, 0), (9, 0)


def test_one_process_job_sees_one_gpu_of_many() -> None:
    # Item 1: a 1-process job on an 8-GPU machine sees device 0 only, never all eight.
    assert devices.cuda_visible_devices_for(None, 1, None) == "0"
    assert devices.cuda_visible_devices_for([3], 1, None) == "3"
    assert devices.cuda_visible_devices_for(None, 2, None) == "0,1"
    # Counted among the worker's own devices: a worker given GPUs 4-7 hands out 4 and 6.
    assert devices.cuda_visible_devices_for([0, 2], 2, "4,5,6,7") == "4,6"
    assert devices.cuda_visible_devices_for(None, 1, "") == ""  # a worker that sees none
    with pytest.raises(InvalidRequestError, match=r"devices \[2\].*2 GPU") as caught:
        devices.cuda_visible_devices_for([2], 1, "4,5")
    assert caught.value.param == "devices"
    spec = {"device": "auto", "num_processes": 1}
    assert devices.job_device_environment(spec, None) == {"CUDA_VISIBLE_DEVICES": "0"}
    assert devices.job_device_environment({"device": "cpu"}, None) == {}


def test_launcher_gives_ranks_their_devices_and_precision(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setattr(devices, "deepspeed_installed", lambda: False)
    ddp = {"device": "cuda", "num_processes": 2, "distributed": {"strategy": "ddp"}}
    _, env = launch_command(ddp, "tuneforge.jobs.runner", [])
    assert env == {"CUDA_VISIBLE_DEVICES": "2,3"}
    fsdp = {**ddp, "distributed": {"strategy": "fsdp", "config": {"fsdp_version": 2}}}
    command, _ = launch_command(fsdp, "tuneforge.jobs.runner", [])
    config_file = command[command.index("--config_file") + 1]
    import json
    from pathlib import Path

    config = json.loads(Path(config_file).read_text())
    os.unlink(config_file)
    # No GPU here: the probe finds none, and Accelerate is told so rather than left to guess.
    assert config == {
        "distributed_type": "FSDP",
        "mixed_precision": "no",
        "fsdp_config": {"fsdp_version": 2},
    }
    with pytest.raises(InvalidRequestError, match=r"tuneforge\[deepspeed\]"):
        launch_command({**ddp, "distributed": {"strategy": "deepspeed"}}, "m", [])


def test_accelerate_config_and_mixed_precision() -> None:
    assert devices.accelerate_config("deepspeed", {"zero_stage": 3}, "bf16") == {
        "distributed_type": "DEEPSPEED",
        "mixed_precision": "bf16",
        "deepspeed_config": {"zero_stage": 3},
    }
    assert [devices.mixed_precision(c) for c in (None, T4, A100)] == ["no", "fp16", "bf16"]
    with pytest.raises(ValueError):
        devices.accelerate_config("ddp", None, "no")
    devices.check_strategy("deepspeed", installed=True)
    devices.check_strategy("fsdp", installed=False)
    with pytest.raises(InvalidRequestError) as caught:
        devices.check_strategy("deepspeed", installed=False)
    assert caught.value.param == "distributed.strategy"


def test_each_rank_loads_onto_its_own_gpu() -> None:
    # Item 2: rank 1 of a 2-GPU QLoRA job loads onto device 1, not onto device 0.
    assert devices.device_map_for(devices.local_rank({"LOCAL_RANK": "1"})) == {"": 1}
    assert devices.local_rank({}) == 0


def test_pre_ampere_gpus_compute_in_fp16() -> None:
    # Item 4: a T4 or V100 reports bf16 "supported" (emulated): it gets fp16.
    assert [devices.choose_dtype(c) for c in (None, V100, T4, A100, H100)] == [
        "float32",
        "float16",
        "float16",
        "bfloat16",
        "bfloat16",
    ]
    assert devices.precision_flags(T4) == {"bf16": False, "fp16": True}
    assert devices.precision_flags(H100) == {"bf16": True, "fp16": False}
    assert devices.precision_flags(None) == {"bf16": False, "fp16": False}


def test_encoder_kinds_autocast_bf16_where_native() -> None:
    # Item 12: classification and embedding jobs no longer run fp32 on an A100 by default.
    auto = ClassificationHyperparameters().use_amp
    assert auto is None
    assert devices.amp_flags(auto, A100) == {"bf16": True, "fp16": False}
    assert devices.amp_flags(auto, T4) == {"bf16": False, "fp16": False}
    assert devices.amp_flags(True, T4) == {"bf16": False, "fp16": True}
    assert devices.amp_flags(False, H100) == {"bf16": False, "fp16": False}
    assert devices.amp_flags(True, None) == {"bf16": False, "fp16": False}


def test_fsdp_qlora_stores_packed_weights_in_the_compute_dtype() -> None:
    assert devices.bnb_quant_storage("fsdp", "bfloat16") == {"bnb_4bit_quant_storage": "bfloat16"}
    assert devices.bnb_quant_storage("ddp", "bfloat16") == {}
    assert devices.bnb_quant_storage(None, "float16") == {}


def test_lora_under_ddp_skips_the_unused_parameter_search(tmp_path) -> None:
    # Item 7, through the arguments the trainers get.
    hp = LLMHyperparameters(learning_rate=1e-4)
    args = dict(device="cpu", seed=1, work_dir=tmp_path, has_eval=False)
    lora = training_arguments(hp, **args, world_size=2, tuning="lora")
    full = training_arguments(hp, **args, world_size=2, tuning="full")
    alone = training_arguments(hp, **args, world_size=1, tuning="lora")
    assert lora["ddp_find_unused_parameters"] is False
    assert full["ddp_find_unused_parameters"] is True
    assert "ddp_find_unused_parameters" not in alone
    assert alone["bf16"] is False and alone["fp16"] is False


def test_fsdp_runs_finish_on_every_rank() -> None:
    # Item 3: under FSDP every rank measures and gathers; rank 0 then saves the full dict.
    assert finishing_steps("fsdp") == (True, True)
    assert finishing_steps("ddp") == (False, False)
    assert finishing_steps(None) == (False, False)


def test_checkpoint_staging_is_named_alike_on_every_machine() -> None:
    # Item 10: by job and step, never by a process id that differs between machines.
    name = staging_name("ftjob-abc", 40)
    assert name == ".staging-ftjob-abc-40"
    assert str(os.getpid()) not in name and str(os.getppid()) not in name


def test_new_options_default_off() -> None:
    hp = LLMHyperparameters()
    assert hp.qlora_upcast is False and hp.deterministic is False
    assert ClassificationHyperparameters(deterministic=True).deterministic is True


def test_deterministic_mode_and_tf32(monkeypatch) -> None:
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        devices.make_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cuda.flash_sdp_enabled()
        assert not torch.backends.cuda.mem_efficient_sdp_enabled()
        assert torch.backends.cuda.math_sdp_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cuda.enable_flash_sdp(True)
        torch.backends.cuda.enable_mem_efficient_sdp(True)
    devices.enable_fast_matmul()
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_capability_probe_without_a_gpu() -> None:
    # The worker asks a short-lived process, which finds no GPU here.
    assert devices.probe_capability(dict(os.environ)) is None
