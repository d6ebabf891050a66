"""Whether a training job fits before it runs: its estimate (tuneforge.jobs.estimate) from the
model's config and the job's settings and data, against the worker's device memory and the
data folder's free space.

The model's shape comes from its config on the meta device: nothing is loaded. The sequence
length is the longest of the job's examples (tokenized, a few of the longest), capped at
max_seq_length: the longest batch sets the peak.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tuneforge.config import Settings
from tuneforge.errors import InsufficientDiskError, InsufficientMemoryError
from tuneforge.jobs.estimate import (
    Estimate,
    ModelShape,
    TrainingSetup,
    estimate,
    fitting_settings,
    gib,
)
from tuneforge.training.base import JobData
from tuneforge.training.spec import JobCreate

# How many of the longest examples are tokenized to find the longest sequence.
LONGEST_SAMPLED = 16
# A classification model's maximum when neither the job nor the tokenizer says.
DEFAULT_ENCODER_SEQ = 512


@lru_cache(maxsize=16)
def model_shape(location: str) -> ModelShape:
    """The shape of the model at `location` (a folder or a Hub id in the local cache), from
    its config, built on the meta device: no weights are read (kept for the next job)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(_base_folder(location))
    causal = any(a.endswith("ForCausalLM") for a in (config.architectures or []))
    with torch.device("meta"):
        model = (AutoModelForCausalLM if causal else AutoModel).from_config(config)
    return shape_of(model, config, decoder=causal)


def shape_of(model: Any, config: Any, *, decoder: bool) -> ModelShape:
    """A ModelShape from a model (on the meta device) and its config."""
    import torch

    linears: list[tuple[int, int]] = []
    names: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layer" in f".{name}":
            linears.append((module.in_features, module.out_features))
            names.append(name.rsplit(".", 1)[-1])
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    seen: set[int] = set()
    parameters = 0
    for p in model.parameters():  # tied weights once
        if id(p) not in seen:
            seen.add(id(p))
            parameters += p.numel()
    gated = any(n in ("gate_proj", "w1", "gate_up_proj") for n in names)
    return ModelShape(
        parameters=parameters,
        linears=tuple(linears),
        layers=int(config.num_hidden_layers),
        hidden=hidden,
        intermediate=int(getattr(config, "intermediate_size", 4 * hidden)),
        heads=heads,
        kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
        head_dim=head_dim,
        vocab=int(config.vocab_size),
        decoder=decoder,
        gated_mlp=gated,
        linear_names=tuple(names),
    )


def _base_folder(location: str) -> str:
    """A LoRA adapter's base (its own folder holds no full config)."""
    folder = Path(location)
    adapter = folder / "adapter_config.json"
    if adapter.is_file() and not (folder / "config.json").is_file():
        from tuneforge.training.llm import base_location

        return base_location(folder)
    return location


@dataclass(frozen=True)
class Capacity:
    """What a worker has for a job: its device, that device's free memory, its name."""

    device: str
    free_bytes: int
    name: str = ""
    cores: int = 1


def gpu_memory(devices: list[int] | None = None) -> list[tuple[str, int]]:
    """(name, free bytes) of each CUDA device (or of `devices`), from nvidia-smi: no CUDA
    context in this process. Empty where there is no NVIDIA driver."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.strip().splitlines():
        index, name, free = (part.strip() for part in line.split(","))
        if devices is None or int(index) in devices:
            found.append((name, int(float(free)) * 2**20))
    return found


def capacity(spec: JobCreate, settings: Settings) -> Capacity:
    """The device this machine would train the job on, and what that device has free: the
    smallest free memory of the GPUs it would use, or the CPU's available memory."""
    import psutil

    cores = settings.job_threads or os.cpu_count() or 1
    if spec.device != "cpu":
        wanted = spec.devices or list(range(spec.num_processes))
        gpus = gpu_memory(wanted)
        if gpus:
            name, free = min(gpus, key=lambda g: g[1])
            return Capacity("cuda", free, name, cores)
    return Capacity("cpu", int(psutil.virtual_memory().available), "", cores)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])


def _longest(tokenizer: Any, rows: list[dict[str, Any]], columns: int = 1) -> tuple[int, float]:
    """(tokens of the longest text unit, tokens per character): for `columns` 1 a row's
    texts together (a conversation), else each text on its own (an embedding pair)."""
    units = (
        [" ".join(_strings(r)) for r in rows]
        if columns == 1
        else [s for r in rows for s in _strings(r)]
    )
    if not units:
        return 1, 0.25
    longest = sorted(units, key=len, reverse=True)[:LONGEST_SAMPLED]
    counts = [_tokens(tokenizer, u) + 4 * u.count("\n") for u in longest]
    # Chat templates add a few tokens per message.
    per_char = sum(counts) / max(sum(len(u) for u in longest), 1)
    return max(counts), per_char


def training_setup(
    spec: JobCreate,
    shape: ModelShape,
    data: JobData,
    location: str,
    cap: Capacity,
) -> TrainingSetup:
    """The setup of a job's run on `cap`'s device, from its spec and its data."""
    kind = spec.method.type
    params: Any = getattr(spec.method, kind)
    hp = params.hyperparameters
    gpu = cap.device == "cuda"
    rows = data.train_rows
    chars = sum(len(" ".join(_strings(r))) for r in rows)
    common: dict[str, Any] = {
        "kind": kind,
        "device": cap.device,
        "processes": spec.world_size(),
        "device_name": cap.name,
        "cpu_cores": cap.cores,
    }
    if kind in ("embedding", "classification"):
        tokenizer = _encoder_tokenizer(location)
        columns = 1 if kind == "classification" else max(len(_strings(rows[0])), 1)
        longest, per_char = _longest(tokenizer, rows, columns)
        limit = hp.max_seq_length or min(int(tokenizer.model_max_length), DEFAULT_ENCODER_SEQ)
        seq = min(longest, limit)
        tuning = getattr(params, "tuning", "full")
        lora = getattr(params, "lora", None)
        return TrainingSetup(
            **common,
            tuning=tuning,
            weights="fp32",
            compute_bytes=4,
            lora_rank=lora.r if lora else 16,
            lora_targets=_targets(lora),
            batch=hp.batch_size,
            seq=seq,
            passes=columns,
            labels=max(len(_labels(rows)), 2),
            tokens=int(chars * per_char * hp.n_epochs),
        )
    from tuneforge.training.llm import cached_chat_tokenizer

    tokenizer = cached_chat_tokenizer(location)
    longest, per_char = _longest(tokenizer, rows)
    seq = min(longest, hp.max_seq_length)
    quantization = params.quantization
    if quantization == "auto":
        quantization = "4bit" if gpu and _bitsandbytes() else "none"
    full = params.tuning == "full"
    weights = quantization if quantization in ("4bit", "8bit") else ("bf16" if gpu else "fp32")
    batch, passes, generated = hp.batch_size, 1, 0
    if kind == "supervised" and hp.packing:
        seq = hp.max_seq_length
    if kind == "dpo":
        passes = 2  # chosen and rejected
    if kind == "reinforcement":
        generations = hp.generations
        batch = hp.batch_size * generations // hp.gradient_accumulation_steps
        seq = min(longest, hp.max_seq_length) + hp.max_completion_length
        generated = generations
    return TrainingSetup(
        **common,
        tuning=params.tuning,
        weights="fp32" if full else weights,
        compute_bytes=2 if gpu else 4,
        lora_rank=params.lora.r,
        lora_targets=_targets(params.lora),
        batch=batch,
        seq=max(seq, 1),
        gradient_accumulation=hp.gradient_accumulation_steps,
        gradient_checkpointing=hp.gradient_checkpointing,
        passes=passes,
        reference_copy=kind in ("dpo", "reinforcement") and full,
        tokens=int(chars * per_char * hp.n_epochs),
        generated_tokens=generated,
        merge=params.merge and not full,
        saved_bytes=2.0,
    )


@lru_cache(maxsize=8)
def _encoder_tokenizer(location: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(location)


def _labels(rows: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for row in rows:
        found.update(str(x) for x in (row["labels"] if "labels" in row else [row.get("label")]))
    return found


def _targets(lora: Any) -> tuple[str, ...] | None:
    if lora is None or lora.target_modules == "all-linear":
        return None
    return tuple(lora.target_modules)


def _bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def estimate_job(
    spec: JobCreate, data: JobData, location: str, settings: Settings
) -> tuple[Estimate, Capacity, ModelShape, TrainingSetup]:
    """The job's estimate on this machine's device, with what it was computed from."""
    cap = capacity(spec, settings)
    shape = model_shape(location)
    setup = training_setup(spec, shape, data, location, cap)
    return estimate(shape, setup), cap, shape, setup


def check_fit(
    spec: JobCreate,
    found: Estimate,
    cap: Capacity,
    shape: ModelShape,
    setup: TrainingSetup,
    settings: Settings,
) -> None:
    """Refuse a job whose estimate does not fit the device's free memory or the data
    folder's free space (InsufficientMemoryError / InsufficientDiskError, 400), saying what
    it needs, what is free, and the nearest settings that fit."""
    kind = spec.method.type
    # On the CPU every process of the job holds its own replica in the same memory.
    replicas = spec.num_processes if cap.device == "cpu" else 1
    need, free = found.peak_bytes * replicas, cap.free_bytes
    override = "Set TUNEFORGE_CHECK_FIT=false on the server to create it anyway."
    if need > free:
        where = f"{cap.name or 'the GPU'}" if cap.device == "cuda" else "this machine's RAM"
        parts = ", ".join(
            f"{k} {gib(v)}" for k, v in found.memory.items() if k != "total" and v >= 2**20
        )
        fits = fitting_settings(shape, setup, free // replicas, gpu=cap.device == "cuda")
        hint = (
            "Nearest settings that fit: "
            + ", ".join(
                f"method.{kind}.hyperparameters.{k}={json.dumps(v)}"
                if k not in ("quantization",)
                else f"method.{kind}.{k}={json.dumps(v)}"
                for k, v in fits.items()
            )
            + "."
            if fits
            else "No smaller batch, checkpointing, 4-bit weights or shorter sequence fits: use "
            "a smaller model or a device with more memory."
        )
        raise InsufficientMemoryError(
            f"The job needs about {gib(need)} of memory on {where} ({parts}); "
            f"{gib(free)} is free. {hint} {override}",
            param=f"method.{kind}.hyperparameters.batch_size",
            details={"estimate": found.to_dict(), "free_bytes": free, "fits": fits},
        )
    check_disk(found.disk, settings, override)


def check_disk(disk: dict[str, int], settings: Settings, override: str = "") -> None:
    """InsufficientDiskError when the checkpoints, model and merged copy of an estimate's
    `disk` do not fit the free space where they are written."""
    for folder, need in disk_needs(disk, settings):
        free_disk = shutil.disk_usage(folder).free
        if need <= free_disk:
            continue
        name = f"{settings.home.name}/{folder.relative_to(settings.home)}/".replace("/./", "/")
        kept = disk["checkpoints"] // max(disk["checkpoint"], 1)
        raise InsufficientDiskError(
            f"The job needs about {gib(need)} of disk in {name} ({kept} checkpoints of "
            f"{gib(disk['checkpoint'])} (weights and optimizer state), the model "
            f"{gib(disk['model'])}"
            + (f", the merged model {gib(disk['merged'])}" if disk["merged"] else "")
            + f"); {gib(free_disk)} is free there. Free space, or use a smaller model. {override}",
            param="model",
            details={"disk": disk, "free_bytes": free_disk, "folder": name},
        )


def disk_needs(disk: dict[str, int], settings: Settings) -> list[tuple[Path, int]]:
    """(folder, bytes) the run writes on each file system: the checkpoints in the jobs
    folder, the model (and a merged copy) in the models folder; one entry when they share
    a disk."""
    places: dict[int, tuple[Path, int]] = {}
    for folder, need in (
        (settings.jobs_dir, disk["checkpoints"]),
        (settings.models_dir, disk["model"] + disk["merged"]),
    ):
        where = folder if folder.exists() else settings.home
        device = where.stat().st_dev
        first, total = places.get(device, (where, 0))
        places[device] = (first, total + need)
    return list(places.values())


def check_on_worker(
    stored: dict[str, Any] | None,
    spec: JobCreate,
    data: JobData,
    location: str,
    settings: Settings,
    reporter: Any,
) -> None:
    """Before a job's first run trains, on the worker that runs it: its estimate (the one
    `stored` at creation when made for this kind of device, else made anew) against this
    worker's device, as an event (a warning when it may not fit: the run goes on, and adapts
    if it does run out); a data folder without room for it fails the job at once with
    disk_full, before anything is written."""
    from tuneforge.errors import DiskFullError

    cap = capacity(spec, settings)
    if stored is not None and stored["assumptions"]["device"] == cap.device:
        peak, disk = int(stored["memory"]["total"]), stored["disk"]
    else:
        try:
            found = estimate(
                model_shape(location),
                training_setup(spec, model_shape(location), data, location, cap),
            )
        except Exception as exc:  # an estimate must never stop a job that would run
            reporter.note(f"No memory estimate on this worker: {type(exc).__name__}: {exc}")
            return
        peak, disk = found.peak_bytes, found.disk
    where = cap.name or cap.device.upper()
    fits = peak <= cap.free_bytes
    reporter.note(
        f"On this worker's {where}: the job needs about {gib(peak)} per device, "
        f"{gib(cap.free_bytes)} is free"
        + ("." if fits else "; it may run out of memory (the micro-batch then halves)."),
        level="info" if fits else "warn",
        data={"peak_bytes": peak, "free_bytes": cap.free_bytes, "device": cap.device},
    )
    if settings.check_fit:
        try:
            check_disk(disk, settings)
        except InsufficientDiskError as exc:
            raise DiskFullError(exc.message, param=exc.param) from None
