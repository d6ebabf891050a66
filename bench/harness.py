"""The harness of the training benchmarks: tuneforge's path (A) against plain-library scripts
(B) on the same data, model and settings, alternating A B A B ... in one process.

A benchmark hands the harness its paths (one tuneforge path, one or more baselines), the
comparisons between them and how to count a batch; the harness runs every path once per round,
each in turn, and for every run records:

- what the trainer trained on, counted from the batches its training steps received
  (`BatchProbe`): examples, real (non-padding) tokens, computed tokens (padding included),
  trained tokens (labels other than -100) and the sum of squared sequence lengths;
- the trainer's own `train_runtime` (the training loop, timed the same way on both paths), the
  steps and the training loss, read from the trainer's state;
- peak memory: resident memory on the CPU (the kernel's high-water mark, reset per run),
  `torch.cuda.max_memory_allocated` on CUDA (reset per run);
- model FLOPs (`FlopsModel`) and MFU against this machine's matmul peak, measured in the same
  process (`measure_matmul_peak`);
- how much CPU other processes used meanwhile: a disturbed run is repeated.

It prints medians and ratios A/B, and writes `bench/results/<name>-<time>.{md,json}`.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.* when run as `python bench/...`

if TYPE_CHECKING:
    from tuneforge.training.spec import JobCreate

# The shared data sets beside the checkout; TUNEFORGE_SHARED_DATA points elsewhere (a GPU
# machine that gets a copy of the repository without its neighbours).
DATA = Path(os.environ.get("TUNEFORGE_SHARED_DATA") or ROOT.parent / "shared" / "data")
RESULTS = ROOT / "bench" / "results"
# Cores other processes may use during a run before its timing counts as disturbed: on two
# cores, a test suite running elsewhere slows training by 2-5x.
QUIET_CORES = 0.1
IGNORED = -100  # the label of a token the loss skips
# Modules applied once per sequence, not per token: left out of the model FLOPs.
PER_SEQUENCE_MODULES = ("pooler", "classifier")


# -- the offline hub and the device -----------------------------------------------------------


def offline_hub(folder: Path) -> str:
    """Lay out all-MiniLM-L6-v2 as an offline Hugging Face cache and switch the Hub off;
    returns the model's Hub id. Call before transformers or huggingface_hub are imported:
    they read HF_HOME once."""
    from tests.offline_models import MINILM, build_hf_cache

    os.environ["HF_HOME"] = str(build_hf_cache(folder))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    return MINILM


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
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# -- the machine's peak -------------------------------------------------------------------------


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
        if module.weight.requires_grad:
            trained += module.weight.numel()
        else:
            frozen += module.weight.numel()
    head_dim = config.hidden_size // config.num_attention_heads
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


# -- CPU contention -----------------------------------------------------------------------------


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process) so far."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    own = os.times()
    return (
        (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"),
        own.user + own.system,
    )


def other_load(seconds: float) -> float:
    """Cores the other processes kept busy over the next `seconds`."""
    busy, own = cpu_seconds()
    time.sleep(seconds)
    busy_after, own_after = cpu_seconds()
    return max(busy_after - busy - (own_after - own), 0.0) / seconds


def wait_until_quiet(max_wait: float) -> float:
    """Wait (at most max_wait seconds) until other processes use under QUIET_CORES cores.
    Returns the last load seen."""
    deadline = time.monotonic() + max_wait
    load = other_load(1.0)
    while load >= QUIET_CORES and time.monotonic() < deadline:
        load = other_load(2.0)
    return load


# -- tuneforge's side: a job row and the real reporter ------------------------------------------


def timed_reporter_class() -> type:
    from tuneforge.jobs.reporting import JobReporter

    class TimedJobReporter(JobReporter):
        """The real JobReporter; only times its calls, to say where tuneforge's time goes."""

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.seconds: dict[str, float] = {}
            self.calls: dict[str, int] = {}
            self.marks: list[tuple[str, float, float]] = []  # (method, start, end)

        def _timed(self, name: str, call: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                end = time.perf_counter()
                self.seconds[name] = self.seconds.get(name, 0.0) + end - start
                self.calls[name] = self.calls.get(name, 0) + 1
                self.marks.append((name, start, end))

        def progress(self, step: int, total_steps: int, epoch: float) -> None:
            self._timed("progress", super().progress, step, total_steps, epoch)

        def metrics(self, step: int, values: dict[str, float]) -> None:
            self._timed("metrics", super().metrics, step, values)

        def checkpoint(self, step: int, epoch: float, path: str) -> None:
            self._timed("checkpoint", super().checkpoint, step, epoch, path)

        def stop_reason(self) -> str | None:
            return self._timed("stop_reason", super().stop_reason)  # type: ignore[no-any-return]

        def ensure_lease(self) -> None:
            self._timed("ensure_lease", super().ensure_lease)

        def note(self, message: str, **kwargs: Any) -> None:
            self._timed("note", super().note, message, **kwargs)

        def checkpoint_save_seconds(self) -> float:
            """The checkpoints' writing: from the end of the call before each checkpoint call
            to its start (the trainer saving; the step's logging lies in between too)."""
            return sum(
                start - self.marks[i - 1][2]
                for i, (name, start, _end) in enumerate(self.marks)
                if name == "checkpoint" and i > 0
            )

    return TimedJobReporter


@dataclass
class TuneforgeJob:
    """A job of tuneforge's, as a worker would run it: a row in a fresh SQLite store, its
    folders, and the real JobReporter (timed)."""

    settings: Any
    store: Any
    job_id: str
    reporter: Any
    work_dir: Path
    output_dir: Path

    def overhead(self) -> dict[str, Any]:
        """Where tuneforge's time went besides training: the reporter's calls (database
        writes) and the checkpoints."""
        events, _ = self.store.list_events(self.job_id, limit=100_000)
        return {
            "reporter_seconds": dict(self.reporter.seconds),
            "reporter_calls": dict(self.reporter.calls),
            "events_written": len(events),
            "checkpoint_save_s": self.reporter.checkpoint_save_seconds(),
        }


@contextmanager
def tuneforge_job(folder: Path, spec: JobCreate) -> Iterator[TuneforgeJob]:
    """A running job of `spec` in a fresh tuneforge home under `folder`."""
    from tuneforge.config import Settings
    from tuneforge.db.store import Store, new_id
    from tuneforge.jobs.status import JobStatus

    settings = Settings(home=folder / "home")
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    job_id = new_id("ftjob")
    now = time.time()
    store.insert_job(
        {
            "id": job_id,
            "kind": spec.method.type,
            "model": spec.model,
            "status": JobStatus.RUNNING.value,
            "spec": spec.model_dump(mode="json"),
            "created_at": now,
            "started_at": now,
            "worker_id": "bench",
            "heartbeat_at": now,
        },
        "Benchmark job.",
    )
    reporter = timed_reporter_class()(store, settings, job_id, 0)  # lease 0: the inserted row
    work_dir = settings.jobs_dir / job_id
    work_dir.mkdir(parents=True)
    try:
        yield TuneforgeJob(
            settings, store, job_id, reporter, work_dir, settings.models_dir / job_id
        )
    finally:
        store.dispose()


# -- the benchmark ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a path's runner hands back besides what the harness reads from the trainer."""

    quality: dict[str, float] = field(default_factory=dict)  # measured after training
    overhead: dict[str, Any] = field(default_factory=dict)  # tuneforge: `TuneforgeJob.overhead`


# runner(folder to work in, device) -> Outcome; it trains once.
Runner = Callable[[Path, str], Outcome]


@dataclass
class TrainingPath:
    """One way to train: tuneforge's, or a baseline's."""

    key: str  # "tuneforge", "baseline", ...
    label: str  # what it is, in the report
    runner: Runner
    precision: str = "float32"  # what its matmuls compute in (MFU is against that peak)


@dataclass
class Comparison:
    """A (tuneforge) against B (a baseline): the ratio of `headline` and its target."""

    title: str
    a: str
    b: str
    headline: str  # a Run metric: "trained_tokens_per_s", "examples_per_s", ...
    target: float
    note: str = ""


@dataclass
class Benchmark:
    """What a benchmark hands the harness: its paths, its comparisons, how to count a batch."""

    name: str  # file names of the results
    title: str
    description: list[str]  # Markdown lines under the title
    paths: list[TrainingPath]
    comparisons: list[Comparison]
    count: Callable[[dict[str, Any]], dict[str, Any]]  # a batch's counts (see count_padded)
    flops: FlopsModel
    examples_name: str = "examples"  # "pairs", "conversations", "texts"
    config: dict[str, Any] = field(default_factory=dict)  # recorded in the JSON


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
    mfu: float
    peak_memory_mib: float
    start_memory_mib: float
    total_wall_s: float  # everything: model load, trainer set-up, training, save, evaluation
    cpu_s: float  # CPU time of this process during the run
    # CPU the rest of the machine used meanwhile, in cores: above QUIET_CORES it was disturbed.
    other_load_cores: float
    quality: dict[str, float] = field(default_factory=dict)
    overhead: dict[str, Any] = field(default_factory=dict)


# The metrics of the summary tables: (Run field, label, format).
METRICS = (
    ("trained_tokens_per_s", "trained tokens/s", "{:,.0f}"),
    ("examples_per_s", "{examples}/s", "{:,.2f}"),
    ("tokens_per_s", "real (non-padding) tokens/s", "{:,.0f}"),
    ("padding_share", "padding share of computed tokens", "{:.1%}"),
    ("mfu", "MFU", "{:.2%}"),
    ("peak_memory_mib", "peak memory (MiB)", "{:,.0f}"),
    ("train_runtime_s", "train_runtime (s)", "{:,.2f}"),
    ("total_wall_s", "whole run incl. load/save/eval (s)", "{:,.2f}"),
    ("train_loss", "training loss (mean over the run)", "{:.4f}"),
)
METRIC_NAMES = {m: label for m, label, _ in METRICS}


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark has; a benchmark adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: cuda when a GPU is at hand, else cpu",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each run, wait up to this many seconds for other processes "
        "to leave the CPUs idle (default 60; 0: never wait)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help=f"repeat a run disturbed by other processes (> {QUIET_CORES} cores) "
        "up to this many times (default 2)",
    )
    parser.add_argument(
        "--warm-up-steps",
        type=int,
        default=None,
        help="before round 1, train the first path once, not recorded: a whole run by "
        "default, this many steps when given, none with 0",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a tuneforge hyperparameter, for every path that takes tuneforge's "
        "settings (e.g. --set group_by_length=false); repeatable",
    )
    return parser


def overrides(options: argparse.Namespace) -> dict[str, str]:
    """The --set NAME=VALUE pairs (the spec's pydantic model converts the values)."""
    pairs = [item.split("=", 1) for item in options.overrides]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit("--set takes NAME=VALUE")
    return dict(pairs)


def measure(
    bench: Benchmark, path: TrainingPath, round_: int, folder: Path, device: str, peak: float
) -> Run:
    """Run `path` once, under the batch probe, the memory peak and the CPU accounting."""
    folder.mkdir(parents=True)
    try:
        with peak_memory(device) as memory, BatchProbe(bench.count) as probe:
            busy, own = cpu_seconds()
            start = time.perf_counter()
            outcome = path.runner(folder, device)
            wall = time.perf_counter() - start
            busy_after, own_after = cpu_seconds()
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # checkpoints, saved models
    if probe.trainer is None:
        raise RuntimeError(f"{path.key}: no trainer ran a training step")
    final = probe.trainer.state.log_history[-1]
    steps = probe.trainer.state.global_step
    probe.trainer = None
    counts = probe.totals()
    runtime = float(final["train_runtime"])
    flops = bench.flops.of_run(counts["real_tokens"], counts["squared_lengths"])
    return Run(
        path=path.key,
        round=round_,
        train_runtime_s=runtime,
        steps=steps,
        train_loss=float(final["train_loss"]),
        **counts,
        model_flops=flops,
        examples_per_s=counts["examples"] / runtime,
        tokens_per_s=counts["real_tokens"] / runtime,
        trained_tokens_per_s=counts["trained_tokens"] / runtime,
        padding_share=1 - counts["real_tokens"] / max(counts["computed_tokens"], 1),
        mfu=flops / runtime / peak,
        peak_memory_mib=memory["peak"],
        start_memory_mib=memory["start"],
        total_wall_s=wall,
        cpu_s=own_after - own,
        other_load_cores=max(busy_after - busy - (own_after - own), 0.0) / wall,
        quality=outcome.quality,
        overhead=outcome.overhead,
    )


def warm_up_run(bench: Benchmark, folder: Path, device: str, steps: int | None) -> None:
    """The first path once, not recorded (ended after `steps` training steps when given).

    The first run of a process that meets a batch shape pays for it (kernel selection and
    first-touch memory): in supervised_lora with random batches, round 1's first path ran ~10 %
    slower than the same path in round 2, and the next path, on the same batches, did not."""
    folder.mkdir(parents=True)
    try:
        with BatchProbe(bench.count, stop_after=steps):
            bench.paths[0].runner(folder, device)
    except WarmUpDone:
        pass
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(bench: Benchmark, options: argparse.Namespace) -> dict[str, Any]:
    """Measure the peak, warm up, run every path once per round (in turn, repeating disturbed
    runs), then report: Markdown on stdout and in `options.out`, with a JSON file of every run."""
    import torch

    device = pick_device(options.device)
    if options.quiet_wait > 0:
        wait_until_quiet(options.quiet_wait)
    peaks = {"before": measure_matmul_peak(device)}
    if device == "cpu":
        # For comparison only: without native bfloat16 (AVX512-BF16, AMX) it is far slower.
        peaks["bfloat16"] = measure_matmul_peak(device, torch.bfloat16, size=512, seconds=1.0)
    print(
        f"{bench.name}: {describe_device(device)}; matmul peak "
        f"{peaks['before'] / 1e9:,.1f} GFLOP/s",
        flush=True,
    )
    kept: list[Run] = []
    repeated: list[Run] = []
    with tempfile.TemporaryDirectory(prefix=f"tuneforge-bench-{bench.name}-") as tmp:
        if options.warm_up_steps != 0:
            warm_up_run(bench, Path(tmp) / "warm-up", device, options.warm_up_steps)
        for round_ in range(1, options.rounds + 1):
            for path in bench.paths:
                for attempt in range(options.retries + 1):
                    if options.quiet_wait > 0:
                        wait_until_quiet(options.quiet_wait)
                    result = measure(
                        bench,
                        path,
                        round_,
                        Path(tmp) / f"{path.key}-{round_}-{attempt}",
                        device,
                        peaks["before"],
                    )
                    print(
                        f"round {round_} {path.key}: train_runtime {result.train_runtime_s:.2f}"
                        f" s, {result.steps} steps, loss {result.train_loss:.4f}, "
                        f"{result.trained_tokens_per_s or result.tokens_per_s:,.0f} tokens/s, "
                        f"peak {result.peak_memory_mib:,.0f} MiB, other processes "
                        f"{result.other_load_cores:.2f} cores",
                        flush=True,
                    )
                    if result.other_load_cores <= QUIET_CORES or attempt == options.retries:
                        break
                    repeated.append(result)
                kept.append(result)
    peaks["after"] = measure_matmul_peak(device)
    # A disturbed measurement would understate the peak (and overstate MFU): keep the best.
    peak = max(peaks["before"], peaks["after"])
    for r in kept + repeated:
        r.mfu = r.model_flops / r.train_runtime_s / peak
    machine = {
        "device": device,
        "description": describe_device(device),
        "matmul_peak_flops": peak,
        "matmul_peaks": peaks,
        "peak_dtype": "bfloat16" if device == "cuda" else "float32",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "versions": {
            name: __import__(name).__version__
            for name in (
                "torch",
                "transformers",
                "trl",
                "peft",
                "sentence_transformers",
                "datasets",
                "tuneforge",
            )
        },
    }
    summary = summarize(bench, kept)
    report = markdown(bench, kept, repeated, summary, machine)
    print("\n" + report)
    options.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (options.out / f"{bench.name}-{stamp}.md").write_text(report)
    results = {
        "benchmark": bench.name,
        "machine": machine,
        "config": bench.config,
        "flops_model": asdict(bench.flops),
        "summary": summary,
        "runs": [asdict(r) for r in kept],
        "repeated_runs": [asdict(r) for r in repeated],
        "quiet_cores": QUIET_CORES,
    }
    (options.out / f"{bench.name}-{stamp}.json").write_text(json.dumps(results, indent=2))
    print(f"Wrote {options.out}/{bench.name}-{stamp}.{{md,json}}")
    return results


def summarize(bench: Benchmark, runs: list[Run]) -> dict[str, Any]:
    """Medians per path (metrics and quality), and per comparison the ratios A/B."""
    medians: dict[str, dict[str, float]] = {}
    for path in bench.paths:
        mine = [r for r in runs if r.path == path.key]
        values = {m: statistics.median(getattr(r, m) for r in mine) for m, _, _ in METRICS}
        for key in sorted({k for r in mine for k in r.quality}):
            values[key] = statistics.median(r.quality[key] for r in mine if key in r.quality)
        medians[path.key] = values
    comparisons = []
    for c in bench.comparisons:
        a, b = medians[c.a], medians[c.b]
        ratios = {m: a[m] / b[m] for m in a if b.get(m)}
        comparisons.append(
            {
                "title": c.title,
                "a": c.a,
                "b": c.b,
                "headline": c.headline,
                "target": c.target,
                "ratio": ratios[c.headline],
                "ratios": ratios,
                "met": ratios[c.headline] >= c.target,
            }
        )
    return {"medians": medians, "comparisons": comparisons}


def markdown(
    bench: Benchmark,
    runs: list[Run],
    repeated: list[Run],
    summary: dict[str, Any],
    machine: dict[str, Any],
) -> str:
    labels = {p.key: p.label for p in bench.paths}
    precision = {p.key: p.precision for p in bench.paths}
    peak = machine["matmul_peak_flops"]
    lines = [
        f"# {bench.title}",
        "",
        *bench.description,
        "",
        f"{machine['date']}, {machine['description']}; measured matmul peak "
        f"{peak / 1e9:,.1f} GFLOP/s ({machine['peak_dtype']})"
        + (
            f", bfloat16 {machine['matmul_peaks']['bfloat16'] / 1e9:,.1f} GFLOP/s"
            if "bfloat16" in machine["matmul_peaks"]
            else ""
        )
        + ".",
        f"Model FLOPs per token: {bench.flops.of_run(1, 0) / 1e6:,.1f} M (matmuls) + "
        f"{12 * bench.flops.layers * bench.flops.attention_width:,} × sequence length "
        "(attention).",
        "",
    ]
    medians = summary["medians"]
    for comparison, c in zip(bench.comparisons, summary["comparisons"], strict=True):
        a, b = medians[c["a"]], medians[c["b"]]
        lines += [f"## {c['title']}", "", f"A: {labels[c['a']]}.", f"B: {labels[c['b']]}."]
        if comparison.note:
            lines += ["", comparison.note]
        lines += ["", "| metric (median) | A | B | A/B |", "|---|---:|---:|---:|"]
        for metric, label, fmt in METRICS:
            if metric == "trained_tokens_per_s" and not a[metric]:
                continue
            lines.append(
                f"| {label.format(examples=bench.examples_name)} | {fmt.format(a[metric])}"
                f" | {fmt.format(b[metric])} | {c['ratios'].get(metric, 0):.3f}× |"
            )
        for key in sorted(k for k in a if k in b and k not in METRIC_NAMES):
            lines.append(
                f"| {key} (after training) | {a[key]:.4f} | {b[key]:.4f} | "
                f"{a[key] / b[key] if b[key] else 0:.3f}× |"
            )
        name = METRIC_NAMES[c["headline"]]
        lines += [
            "",
            f"**{name.format(examples=bench.examples_name)}: A/B = {c['ratio']:.3f}×**"
            f" — target ≥ {c['target']}×: {'met' if c['met'] else 'NOT met'}.",
            "",
        ]
    odd = [k for k, p in precision.items() if p != machine["peak_dtype"]]
    if odd:
        lines += [
            f"MFU of {', '.join(odd)} ({', '.join(precision[k] for k in odd)}) is "
            f"against the {machine['peak_dtype']} peak too.",
            "",
        ]
    lm = any(r.trained_tokens for r in runs)
    lines += [
        "## Every run",
        "",
        f"| round | path | train_runtime (s) | steps | {bench.examples_name}/s | tokens/s | "
        + ("trained tokens/s | " if lm else "")
        + "padding | MFU | peak memory (MiB) | "
        "loss | whole run (s) | CPU (s) | other load (cores) |",
        "|---:|---|" + "---:|" * (12 if lm else 11),
    ]
    for r in runs:
        lines.append(
            f"| {r.round} | {r.path} | {r.train_runtime_s:.2f} | {r.steps} | "
            f"{r.examples_per_s:,.2f} | {r.tokens_per_s:,.0f} | "
            + (f"{r.trained_tokens_per_s:,.0f} | " if lm else "")
            + f"{r.padding_share:.1%} | {r.mfu:.2%} | {r.peak_memory_mib:,.0f} | "
            f"{r.train_loss:.4f} | {r.total_wall_s:.1f} | {r.cpu_s:.1f} | "
            f"{r.other_load_cores:.2f} |"
        )
    lines += ["", "Per run, each path trained on (the first round's counts):", ""]
    for path in bench.paths:
        r = next(r for r in runs if r.path == path.key)
        lines.append(
            f"- {path.key}: {r.examples:,} {bench.examples_name}, {r.real_tokens:,} "
            f"real tokens, {r.computed_tokens:,} computed (padding included)"
            + (f", {r.trained_tokens:,} trained" if lm else "")
            + f", {r.model_flops / 1e12:,.2f} model TFLOPs"
        )
    disturbed = [f"{r.round}/{r.path}" for r in runs if r.other_load_cores > QUIET_CORES]
    if disturbed:
        lines += [
            "",
            f"Warning: other processes used > {QUIET_CORES} cores during "
            f"{', '.join(disturbed)} even after retries; those timings are not clean.",
        ]
    if repeated:
        lines += [
            "",
            f"{len(repeated)} disturbed run(s) were repeated: "
            + ", ".join(
                f"{d.round}/{d.path} ({d.other_load_cores:.2f} cores, {d.train_runtime_s:.1f} s)"
                for d in repeated
            )
            + ".",
        ]
    lines += overhead_lines(runs, medians)
    return "\n".join(lines) + "\n"


def overhead_lines(runs: list[Run], medians: dict[str, dict[str, float]]) -> list[str]:
    """Where tuneforge's time went inside `train_runtime`, medians over its runs."""
    mine = [r for r in runs if r.overhead]
    if not mine:
        return []
    lines = ["", "## Where tuneforge's time went inside train_runtime (medians)", ""]
    saves = statistics.median(r.overhead["checkpoint_save_s"] for r in mine)
    lines.append(
        f"- checkpoint saves (model/adapters, optimizer, scheduler; staged, fsynced): {saves:.2f} s"
    )
    for method in sorted({m for r in mine for m in r.overhead["reporter_seconds"]}):
        seconds = statistics.median(r.overhead["reporter_seconds"].get(method, 0.0) for r in mine)
        calls = statistics.median(r.overhead["reporter_calls"].get(method, 0) for r in mine)
        lines.append(f"- JobReporter.{method}: {calls:.0f} calls, {seconds * 1000:.1f} ms")
    events = statistics.median(r.overhead["events_written"] for r in mine)
    lines.append(f"- events written per run: {events:.0f}")
    added = statistics.median(
        r.overhead["checkpoint_save_s"] + sum(r.overhead["reporter_seconds"].values()) for r in mine
    )
    runtime = medians[mine[0].path]["train_runtime_s"]
    lines.append(
        f"- attributed overhead (checkpoint saves + reporter): {added:.2f} s of "
        f"{runtime:.2f} s, i.e. an expected ratio of {(runtime - added) / runtime:.3f}×"
    )
    return lines
