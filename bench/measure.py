"""Measuring, for the benchmarks: the device and its matmul peak, model FLOPs, what a trainer
trains on (`BatchProbe`), peak memory, the CPU that this process and the others use, and the
statistics of durations. No benchmark's logic: `running` drives the training benchmarks,
`report` writes what they measured."""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Cores other processes may use during a run before its timing counts as disturbed: on two
# cores, a test suite running elsewhere slows training by 2-5x.
QUIET_CORES = 0.1
IGNORED = -100  # the label of a token the loss skips
# Modules applied once per sequence, not per token: left out of the model FLOPs.
PER_SEQUENCE_MODULES = ("pooler", "classifier")


# -- the device ---------------------------------------------------------------------------------


def pick_device(requested: str = "auto") -> str:
    """`cuda` when asked for or, with `auto`, when a CUDA GPU is at hand; else `cpu`."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def describe_device(device: str) -> str:
    """The device in words, for the report."""
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA), {os.cpu_count()} CPUs"
    return (
        f"CPU: {os.cpu_count()} cores ({platform.machine()}, {cpu_model()}), "
        f"torch threads {torch.get_num_threads()}"
    )


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def measure_matmul_peak(
    device: str, dtype: Any = None, size: int | None = None, seconds: float = 2.0
) -> float:
    """FLOP/s of large square matmuls on `device`, the best of repeated timings over about
    `seconds`: float32 of 2048 x 2048 on the CPU, bfloat16 of 8192 x 8192 on CUDA by default.
    What this machine's matmuls attain, the denominator of MFU."""
    import torch

    dtype = dtype or (torch.bfloat16 if device == "cuda" else torch.float32)
    n = size or (8192 if device == "cuda" else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def timed(repeats: int) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            torch.matmul(a, b, out=out)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    once = timed(1)  # warm-up: thread pools, kernel choice
    repeats = max(1, int(0.2 / max(once, 1e-6)))
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        best = max(best, 2 * n**3 * repeats / timed(repeats))
        if time.perf_counter() >= deadline:
            return best


# Datasheet peaks, dense bf16 tensor-core FLOP/s (without sparsity), by the name torch gives the
# device ("NVIDIA H100 80GB HBM3" is the SXM card). A measured large matmul reaches about 0.8
# of these: MFU is reported against both.
DATASHEET_BF16_DENSE = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM (HBM3)
    ("A100", 312e12),
)


def datasheet_peak(device_name: str) -> float | None:
    """The datasheet's dense bf16 FLOP/s of a GPU by its name, None for one not in the
    table (and for CPUs)."""
    for key, flops in DATASHEET_BF16_DENSE:
        if key in device_name:
            return flops
    return None


# -- model FLOPs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlopsModel:
    """Model FLOPs of a training run (forward and backward, no recomputation), from the
    weights of the model's per-token matmuls and its attention:

    - a trained weight matrix of N entries costs 6N per token (forward 2N, backward 2N for the
      input's gradient and 2N for its own), a frozen one 4N (no weight gradient): full
      training 6N, LoRA 4N + 6 x (the adapters' weights);
    - attention costs 12 x layers x width x s per token of a sequence of s tokens (QK^T and
      AV, 2 x 2 x s x width each forward, twice that backward, over the whole s x s square
      as PaLM counts it), i.e. 12 x layers x width x (sum of s^2) per run.

    Embedding look-ups, norms, the softmax and heads applied once per sequence (pooler,
    classifier) are left out."""

    frozen_params: int  # weights of per-token matmuls that are not trained (LoRA's base)
    trained_params: int  # weights of per-token matmuls that are trained
    layers: int
    attention_width: int  # query heads x head dimension

    def of_run(self, real_tokens: int, squared_lengths: int) -> float:
        linear = (4 * self.frozen_params + 6 * self.trained_params) * real_tokens
        return linear + 12 * self.layers * self.attention_width * squared_lengths

    def per_token(self, mean_length: float) -> float:
        """FLOPs per token at sequences of `mean_length` tokens."""
        return self.of_run(1, 0) + 12 * self.layers * self.attention_width * mean_length


def flops_model(model: Any, config: Any) -> FlopsModel:
    """The FlopsModel of a torch model (a peft model included): its `nn.Linear` weights,
    trained or frozen as their `requires_grad` says, and its config's layers and heads."""
    import torch

    frozen = trained = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if any(part in name.split(".") for part in PER_SEQUENCE_MODULES):
            continue
        # Counted by shape: a 4-bit layer's weight tensor holds its entries packed, two a byte.
        entries = module.in_features * module.out_features
        if module.weight.requires_grad:
            trained += entries
        else:
            frozen += entries
    # Models that set head_dim (Qwen3, Gemma) may have heads x head_dim != hidden_size.
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return FlopsModel(
        frozen, trained, config.num_hidden_layers, config.num_attention_heads * head_dim
    )


# -- counting batches -------------------------------------------------------------------------


COUNTS = ("examples", "real_tokens", "computed_tokens", "trained_tokens", "squared_lengths")


def count_padded(masks: list[Any], labels: Any = None) -> dict[str, Any]:
    """Counts of a batch from its attention masks (one per input column, 1 = real token) and,
    for a language model, its labels. Tensors, left on their device: no synchronisation."""
    lengths = [m.sum(dim=1) for m in masks]
    counts = {
        "examples": masks[0].shape[0],
        "real_tokens": sum(x.sum() for x in lengths),
        "computed_tokens": sum(m.numel() for m in masks),
        "squared_lengths": sum((x * x).sum() for x in lengths),
    }
    counts["trained_tokens"] = (labels != IGNORED).sum() if labels is not None else 0
    return counts


def count_lm_batch(inputs: dict[str, Any]) -> dict[str, Any]:
    """Counts of a causal-LM batch: padded (attention_mask) or padding-free/packed
    (cu_seq_lens_q, as trl's collator writes it)."""
    if "attention_mask" in inputs:
        return count_padded([inputs["attention_mask"]], inputs["labels"])
    lengths = inputs["cu_seq_lens_q"].diff()
    return {
        "examples": lengths.numel(),
        "real_tokens": lengths.sum(),
        "computed_tokens": inputs["input_ids"].numel(),
        "squared_lengths": (lengths * lengths).sum(),
        "trained_tokens": (inputs["labels"] != IGNORED).sum(),
    }


class WarmUpDone(Exception):
    """Ends a warm-up run (`BatchProbe(stop_after=...)`) from inside the training loop."""


class BatchProbe:
    """While active, counts every batch a transformers `Trainer` (or a subclass: trl's,
    sentence-transformers', tuneforge's) trains on, by wrapping `Trainer.training_step`, and
    keeps the last trainer seen. The same wrapper on every path: a few tensor sums a step.
    With `stop_after`, raises WarmUpDone at that training step."""

    def __init__(
        self, count: Callable[[dict[str, Any]], dict[str, Any]], stop_after: int | None = None
    ):
        self.count = count
        self.stop_after = stop_after
        self.steps = 0
        self.trainer: Any = None
        self._totals: dict[str, Any] = dict.fromkeys(COUNTS, 0)
        self._original: Any = None

    def __enter__(self) -> BatchProbe:
        from transformers import Trainer

        self._original = original = Trainer.training_step
        probe = self

        def training_step(trainer: Any, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            probe.trainer = trainer
            if probe.steps == probe.stop_after:
                raise WarmUpDone
            probe.steps += 1
            for key, value in probe.count(inputs).items():
                probe._totals[key] = probe._totals[key] + value
            return original(trainer, model, inputs, *args, **kwargs)

        Trainer.training_step = training_step  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        from transformers import Trainer

        Trainer.training_step = self._original  # type: ignore[method-assign]

    def totals(self) -> dict[str, int]:
        return {key: int(value) for key, value in self._totals.items()}


# -- memory -------------------------------------------------------------------------------------


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


@contextmanager
def peak_memory(device: str) -> Iterator[dict[str, float]]:
    """Peak memory of the block, in MiB ("start", "peak"): on CUDA the tensors allocated
    (`max_memory_allocated`), on the CPU this process's resident memory.

    Runs share one process, so lifetime peaks say nothing about a single run: CUDA's peak
    statistics, and on the CPU the kernel's high-water mark (clear_refs 5), are reset first;
    where the kernel does not allow that, a thread samples VmRSS every 10 ms."""
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        result = {"start": torch.cuda.memory_allocated() / 2**20, "peak": 0.0}
        try:
            yield result
        finally:
            result["peak"] = torch.cuda.max_memory_allocated() / 2**20
        return
    # Hand freed heap back to the system, so that a run does not start on its predecessor's.
    with suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    result = {"start": _status_mib("VmRSS"), "peak": 0.0}
    try:
        Path("/proc/self/clear_refs").write_text("5")
        sampler = None
    except OSError:
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.01):
                result["peak"] = max(result["peak"], _status_mib("VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    try:
        yield result
    finally:
        if sampler is None:
            result["peak"] = _status_mib("VmHWM")
        else:
            stop.set()
            sampler.join()
        result["peak"] = max(result["peak"], _status_mib("VmRSS"))


# -- CPU ------------------------------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds(*, children: bool = False) -> float:
    """CPU seconds of this process; with `children`, also of every child it has waited for."""
    t = os.times()
    return t.user + t.system + (t.children_user + t.children_system if children else 0.0)


def other_load(seconds: float) -> float:
    """Cores the other processes kept busy over the next `seconds`."""
    busy, own = machine_busy_seconds(), own_cpu_seconds()
    time.sleep(seconds)
    busy_after, own_after = machine_busy_seconds(), own_cpu_seconds()
    return max(busy_after - busy - (own_after - own), 0.0) / seconds


def wait_until_quiet(max_wait: float, quiet_cores: float = QUIET_CORES) -> float:
    """Wait (at most max_wait seconds) until other processes use under `quiet_cores` cores.
    Returns the last load seen."""
    deadline = time.monotonic() + max_wait
    load = other_load(1.0)
    while load >= quiet_cores and time.monotonic() < deadline:
        load = other_load(2.0)
    return load


class CpuMeter:
    """CPU cores a process used between `start()` and `stop()` (its threads included)."""

    def __init__(self, pid: int):
        import psutil

        self.process = psutil.Process(pid)

    def _seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def start(self) -> CpuMeter:
        self._cpu, self._wall = self._seconds(), time.monotonic()
        return self

    def stop(self) -> float:
        return round((self._seconds() - self._cpu) / (time.monotonic() - self._wall), 3)


# -- a training run and durations -------------------------------------------------------------


@dataclass
class Run:
    """One training run: what the trainer trained on and what it cost."""

    path: str
    round: int
    train_runtime_s: float  # the trainer's own measure, the same on every path
    steps: int
    train_loss: float
    examples: int
    real_tokens: int  # non-padding tokens the model read
    computed_tokens: int  # padding included: what the model computed on
    trained_tokens: int  # tokens with a label (causal LMs; 0 elsewhere)
    squared_lengths: int
    model_flops: float
    examples_per_s: float
    tokens_per_s: float  # real tokens
    trained_tokens_per_s: float
    padding_share: float  # of computed tokens
    mfu: float  # against the matmul peak measured on this machine
    peak_memory_mib: float
    start_memory_mib: float
    total_wall_s: float  # everything: model load, trainer set-up, training, save, evaluation
    cpu_s: float  # CPU time of this process during the run
    # CPU the rest of the machine used meanwhile, in cores: above QUIET_CORES it was disturbed.
    other_load_cores: float
    quality: dict[str, float] = field(default_factory=dict)
    overhead: dict[str, Any] = field(default_factory=dict)
    mfu_datasheet: float | None = None  # against the GPU's datasheet peak (DATASHEET_BF16_DENSE)


def spread(seconds: list[float]) -> dict[str, float]:
    """n, p50, p99, max and mean of durations, in milliseconds."""
    ordered = sorted(seconds)
    if not ordered:
        return {"n": 0}

    def at(q: float) -> float:
        # Linear interpolation between closest ranks, as numpy's default percentile.
        pos = q * (len(ordered) - 1)
        low = int(pos)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)

    return {
        "n": len(ordered),
        "p50": round(at(0.50) * 1000, 2),
        "p99": round(at(0.99) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
        "mean": round(statistics.fmean(ordered) * 1000, 2),
    }
