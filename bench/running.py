"""Running what the benchmarks measure: the training benchmarks' paths, tuneforge's (A) against
plain-library scripts (B) on the same data, model and settings, alternating A B A B ... in one
process; and for the service benchmark, `tuneforge serve` and a worker (`Service`).

A benchmark hands `run` its paths (one tuneforge path, one or more baselines), the comparisons
between them and how to count a batch; `run` trains every path once per round, each in turn,
and for every run records (with `measure`):

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

`report` then prints medians and ratios A/B, and writes `bench/results/<name>-<time>.{md,json}`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import report
from measure import (
    QUIET_CORES,
    BatchProbe,
    FlopsModel,
    Run,
    WarmUpDone,
    datasheet_peak,
    describe_device,
    machine_busy_seconds,
    measure_matmul_peak,
    own_cpu_seconds,
    peak_memory,
    pick_device,
    wait_until_quiet,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.* and tuneforge when run as `python bench/...`

from tests.server import Server  # noqa: E402

if TYPE_CHECKING:
    from tuneforge.training.spec import JobCreate

# The shared data sets beside the checkout; TUNEFORGE_SHARED_DATA points elsewhere (a GPU
# machine that gets a copy of the repository without its neighbours).
DATA = Path(os.environ.get("TUNEFORGE_SHARED_DATA") or ROOT.parent / "shared" / "data")


def offline_hub(folder: Path) -> str:
    """Lay out all-MiniLM-L6-v2 as an offline Hugging Face cache and switch the Hub off;
    returns the model's Hub id. Call before transformers or huggingface_hub are imported:
    they read HF_HOME once."""
    from tests.offline_models import MINILM, build_hf_cache

    os.environ["HF_HOME"] = str(build_hf_cache(folder))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    return MINILM


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

        def checkpoint(self, step: int, epoch: float, path: str, metrics: dict[str, float]) -> None:
            self._timed("checkpoint", super().checkpoint, step, epoch, path, metrics)

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
    """What a path's runner hands back besides what `run` reads from the trainer."""

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
    """What a benchmark hands `run`: its paths, its comparisons, how to count a batch."""

    name: str  # file names of the results
    title: str
    description: list[str]  # Markdown lines under the title
    paths: list[TrainingPath]
    comparisons: list[Comparison]
    count: Callable[[dict[str, Any]], dict[str, Any]]  # a batch's counts (see count_padded)
    flops: FlopsModel
    examples_name: str = "examples"  # "pairs", "conversations", "texts"
    config: dict[str, Any] = field(default_factory=dict)  # recorded in the JSON


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
    parser.add_argument("--out", type=Path, default=report.RESULTS)
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


# -- running the paths --------------------------------------------------------------------------


def measure_run(
    bench: Benchmark, path: TrainingPath, round_: int, folder: Path, device: str, peak: float
) -> Run:
    """Run `path` once, under the batch probe, the memory peak and the CPU accounting."""
    folder.mkdir(parents=True)
    try:
        with peak_memory(device) as memory, BatchProbe(bench.count) as probe:
            busy, own = machine_busy_seconds(), own_cpu_seconds()
            start = time.perf_counter()
            outcome = path.runner(folder, device)
            wall = time.perf_counter() - start
            busy_after, own_after = machine_busy_seconds(), own_cpu_seconds()
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
                    result = measure_run(
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
    sheet = datasheet_peak(torch.cuda.get_device_name()) if device == "cuda" else None
    for r in kept + repeated:
        r.mfu = r.model_flops / r.train_runtime_s / peak
        r.mfu_datasheet = r.model_flops / r.train_runtime_s / sheet if sheet else None
    machine = report.describe_machine(device, peak, peaks)
    machine["datasheet_peak_flops"] = sheet
    return report.write(bench, kept, repeated, machine, options.out)


# -- the service, for bench/service.py: `tuneforge serve` and a worker ---------------------------


@contextmanager
def database(url: str | None) -> Iterator[str | None]:
    """The run's database: None (SQLite in the data folder), or a fresh schema in the
    PostgreSQL database at `url`, dropped afterwards."""
    if url is None:
        yield None
        return
    import sqlalchemy

    schema = f"tf_bench_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


class Service(Server):
    """`tuneforge serve --no-worker` (the tests' `Server`) on a data folder in `workdir` and,
    once `start_worker` is called, a `tuneforge worker` on the same database. Their output goes
    to log files in `workdir`."""

    def __init__(self, workdir: Path, database_url: str | None):
        from tests.offline_models import build_hf_cache

        env = {
            "HF_HOME": str(build_hf_cache(workdir / "hf")),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            # The benchmark creates hundreds of jobs on purpose: no rate limit or queue bound.
            "TUNEFORGE_RATE_LIMIT_BURST": "1000000",
            "TUNEFORGE_MAX_QUEUED_JOBS_PER_KEY": "1000000",
        }
        super().__init__(workdir / "tuneforge-data", database_url, ("--no-worker",), env=env)
        self.workdir = workdir
        self.db_url = database_url or f"sqlite:///{self.home / 'tuneforge.db'}"
        self.worker: subprocess.Popen[bytes] | None = None

    def start_worker(self) -> None:
        """Start the worker and wait until it has registered, so that no measurement
        includes its start-up."""
        with (self.workdir / "worker.log").open("ab") as log:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "tuneforge.cli", "worker", "--worker-id", "bench-worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.worker.poll() is None:
            workers = self.client.get("/v1/workers").json()["data"]
            if any(w["id"] == "bench-worker" and w["alive"] for w in workers):
                return
            time.sleep(0.1)
        raise SystemExit(f"tuneforge worker did not start; see {self.workdir / 'worker.log'}")

    def wait_worker_idle(self, timeout: float = 120) -> float:
        """Wait until the worker runs no job (its last job's process has exited); seconds."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            workers = self.client.get("/v1/workers").json()["data"]
            if all(w["job_id"] is None for w in workers if w["id"] == "bench-worker"):
                return time.monotonic() - started
            time.sleep(0.05)
        raise SystemExit(f"the worker still runs a job after {timeout:.0f}s")

    def create_job(self, body: dict[str, Any]) -> str:
        r = self.client.post("/v1/fine_tuning/jobs", json=body)
        if r.status_code != 200:
            raise SystemExit(f"POST /v1/fine_tuning/jobs: {r.status_code} {r.text}")
        return str(r.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.client.get(f"/v1/fine_tuning/jobs/{job_id}")
        r.raise_for_status()
        return dict(r.json())

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """The job's events, oldest first, with `created_at` unrounded (from the database)."""
        from tuneforge.db.store import Store

        store = Store(self.db_url)
        try:
            rows, more = store.list_events(job_id, limit=100_000, newest_first=False)
        finally:
            store.dispose()
        assert not more
        return [dict(row, data=row["data"] or {}) for row in rows]

    def stop(self) -> None:
        """SIGTERM, worker first; a worker that does not stop in 60 s is killed."""
        if self.worker is not None:
            if self.worker.poll() is None:
                self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        super().stop()
