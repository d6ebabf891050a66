"""What a job computes on, and in what precision: the decisions of the CUDA paths as small
functions of what the machine reports (device count, `LOCAL_RANK`, compute capability), so
that a test on a machine without a GPU can call them with the values a GPU machine would
give, and the few calls that apply them.

| decision | function | on a GPU machine |
|---|---|---|
| devices a job's process sees | `cuda_visible_devices_for` | its `devices`, else the first N |
| where a quantized model loads | `device_map_for` | the rank's own device |
| compute dtype | `choose_dtype` | bf16 from Ampere (8.0), else fp16 |
| the trainer's mixed precision | `precision_flags` | bf16 or fp16, never emulated bf16 |
| autocast of encoder kinds | `amp_flags` | bf16 where native (default) |
| Accelerate's config (fsdp/ds) | `accelerate_config` | with `mixed_precision` |
| QLoRA weights under FSDP | `bnb_quant_storage` | the compute dtype |
| DDP with adapters | `ddp_arguments` | no unused-parameter search |

`torch.cuda.is_bf16_supported()` answers True on a T4 or V100 too (it counts emulation, which
is slower than fp16): the capability decides here instead.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping
from typing import Any

from tuneforge.errors import InvalidRequestError

Capability = tuple[int, int]
# The first compute capability with bf16 in its tensor cores (A100, Ampere).
NATIVE_BF16: Capability = (8, 0)


def cuda_capability() -> Capability | None:
    """The current CUDA device's compute capability, None without a CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return int(major), int(minor)


def probe_capability(env: Mapping[str, str]) -> Capability | None:
    """The compute capability of the first device a process with `env` sees, asked of a
    short-lived process: the worker itself never starts CUDA (its context would take GPU
    memory for as long as it runs). None without a CUDA GPU or torch."""
    import json
    import subprocess
    import sys

    probe = (
        "import json, torch; print(json.dumps(torch.cuda.get_device_capability() "
        "if torch.cuda.is_available() else None))"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    return (int(found[0]), int(found[1])) if found else None


def choose_dtype(capability: Capability | None) -> str:
    """The compute dtype's name: float32 on the CPU (`capability` None), bfloat16 on GPUs
    with native bf16 (capability 8.0 and newer), float16 on older GPUs (T4 7.5, V100 7.0)."""
    if capability is None:
        return "float32"
    return "bfloat16" if capability >= NATIVE_BF16 else "float16"


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def precision_flags(capability: Capability | None) -> dict[str, bool]:
    """The trainer's `bf16` / `fp16` for LLM training on this device (none on the CPU)."""
    dtype = choose_dtype(capability)
    return {"bf16": dtype == "bfloat16", "fp16": dtype == "float16"}


def amp_flags(use_amp: bool | None, capability: Capability | None) -> dict[str, bool]:
    """The trainer's `bf16` / `fp16` for the encoder kinds (classification, embedding), whose
    weights stay float32: `use_amp` None (auto) autocasts to bf16 where the GPU has it, as
    sentence-transformers' and transformers' GPU recipes do, and computes in float32
    elsewhere; True autocasts on every GPU (fp16 before Ampere); False never."""
    if capability is None or use_amp is False:
        return {"bf16": False, "fp16": False}
    native = capability >= NATIVE_BF16
    return {"bf16": native, "fp16": bool(use_amp) and not native}


def mixed_precision(capability: Capability | None) -> str:
    """Accelerate's `mixed_precision` for this device: bf16, fp16 or no."""
    flags = precision_flags(capability)
    return "bf16" if flags["bf16"] else "fp16" if flags["fp16"] else "no"


def cuda_visible_devices_for(
    devices: list[int] | None, num_processes: int, inherited: str | None
) -> str:
    """`CUDA_VISIBLE_DEVICES` of a job's processes: the devices the job names, else the first
    `num_processes`, counted among those the worker itself sees (`inherited`, its own
    `CUDA_VISIBLE_DEVICES`, None when unset). A job with one process then sees one GPU,
    never all of them (the Trainer would count them and fall into DataParallel).
    InvalidRequestError when the job names a device the worker does not see."""
    wanted = list(devices) if devices else list(range(num_processes))
    if inherited is None:
        return ",".join(str(d) for d in wanted)
    pool = [d.strip() for d in inherited.split(",") if d.strip()]
    if not pool:
        return ""  # the worker sees no GPU: neither does its job
    missing = [d for d in wanted if d >= len(pool)]
    if missing:
        raise InvalidRequestError(
            f"devices {missing} are not among the {len(pool)} GPU(s) this worker sees "
            f"(CUDA_VISIBLE_DEVICES={inherited}).",
            param="devices",
        )
    return ",".join(pool[d] for d in wanted)


def job_device_environment(spec: Mapping[str, Any], inherited: str | None) -> dict[str, str]:
    """The environment additions that give a CUDA job (`device` cuda or auto) its devices;
    none for a CPU job."""
    if spec.get("device", "auto") == "cpu":
        return {}
    devices = cuda_visible_devices_for(
        spec.get("devices"), int(spec.get("num_processes", 1)), inherited
    )
    return {"CUDA_VISIBLE_DEVICES": devices}


def local_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank on its machine (`LOCAL_RANK`, set by the launchers), 0 alone."""
    return int((os.environ if env is None else env).get("LOCAL_RANK", "0"))


def device_map_for(rank_on_machine: int) -> dict[str, int]:
    """The `device_map` of a model loaded whole onto this rank's own GPU: each process of a
    job sees its devices in order, so local rank N trains on visible device N."""
    return {"": rank_on_machine}


def bnb_quant_storage(strategy: str | None, dtype_name: str) -> dict[str, str]:
    """The extra BitsAndBytesConfig arguments of a 4-bit model: under FSDP its packed weights
    are stored in the compute dtype, which FSDP needs to shard them with the rest (uint8
    storage mixes dtypes within a flat parameter)."""
    return {"bnb_4bit_quant_storage": dtype_name} if strategy == "fsdp" else {}


def ddp_arguments(tuning: str, world_size: int) -> dict[str, Any]:
    """The trainer's DDP settings: with LoRA every trainable parameter takes part in every
    step, so DDP's search for unused parameters (a graph walk per step) is turned off."""
    if world_size <= 1:
        return {}
    return {"ddp_find_unused_parameters": tuning != "lora"}


def accelerate_config(
    strategy: str, config: Mapping[str, Any] | None, precision: str
) -> dict[str, Any]:
    """Accelerate's config file for an fsdp or deepspeed job: the user's `config` passed
    through under its key, and the mixed precision the job trains in (`mixed_precision`),
    which Accelerate otherwise sets to no."""
    if strategy not in ("fsdp", "deepspeed"):
        raise ValueError(f"no Accelerate config for strategy {strategy!r}")
    key = "fsdp_config" if strategy == "fsdp" else "deepspeed_config"
    return {
        "distributed_type": "FSDP" if strategy == "fsdp" else "DEEPSPEED",
        "mixed_precision": precision,
        key: dict(config or {}),
    }


def deepspeed_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


def check_strategy(strategy: str | None, *, installed: bool | None = None) -> None:
    """Refuse a deepspeed job where the deepspeed package is missing (it is an extra):
    InvalidRequestError naming the field and the install command."""
    if strategy != "deepspeed":
        return
    if installed is None:
        installed = deepspeed_installed()
    if not installed:
        raise InvalidRequestError(
            "distributed.strategy deepspeed needs the deepspeed package, which tuneforge does "
            "not install by default: pip install 'tuneforge[deepspeed]' (CUDA machines), or "
            "use strategy fsdp, which needs nothing more.",
            param="distributed.strategy",
        )


def enable_fast_matmul() -> None:
    """TF32 for float32 matmuls and convolutions on GPUs that have it (Ampere and newer):
    about 8x the float32 matmul rate for a 10-bit mantissa in the products, which training
    tolerates. No effect on the CPU."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def make_deterministic(on: bool) -> None:
    """With `on`: deterministic algorithms everywhere torch has them (a kernel without one
    raises), and scaled-dot-product attention on its math kernel, whose backward pass is
    deterministic (the flash and memory-efficient kernels' are not). cuBLAS needs its
    workspace setting before its first use, set here too."""
    if not on:
        return
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.enable_flash_sdp(False)
    torch.backends.cuda.enable_mem_efficient_sdp(False)
    torch.backends.cuda.enable_math_sdp(True)


def free_device_memory() -> None:
    """Collect unreachable objects (a trainer and its optimizer hold cycles) and hand the
    CUDA allocator's cached blocks back, so that the next model loads into free memory."""
    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
