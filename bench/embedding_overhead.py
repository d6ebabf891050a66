"""How much does tuneforge cost on top of sentence-transformers? Embedding training, A against B.

A: tuneforge's path, `train_embedding` reporting through the real `JobReporter` into a real
   SQLite `Store` (a job row in a temporary data folder), with tuneforge's own trainer arguments.
B: a plain `SentenceTransformerTrainer` script: the same model, loss, batch sampler, learning
   rate, warm-up, scheduler, weight decay, seed and logging, everything else left at the
   library's defaults.

Both train all-MiniLM-L6-v2 with MultipleNegativesRankingLoss on (sentence1, sentence2) pairs of
STS rows scored >= 3.0, alternating A B A B ... in one process. The measure is the trainer's own
`train_runtime` (start of the training loop to its end), taken the same way for both; model
loading, tuneforge's baseline/final evaluations (off here: no validation rows) and the final
model save lie outside it. Reported per run: pairs/s, useful (non-padding) tokens/s and peak
RSS; then medians and the ratio tuneforge/baseline.

    python bench/embedding_overhead.py [--rows N] [--rounds R] [--batch-size B] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.offline_models when run as `python bench/...`

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "stsb-en-train.csv"
TARGET_RATIO = 0.97
# Cores other processes may use during a run before its timing counts as disturbed: on two
# cores, a test suite running elsewhere slows training by 2-5x.
QUIET_CORES = 0.1


@dataclass
class Run:
    """One training run: what the trainer did and what it cost."""

    path: str  # "tuneforge" or "baseline"
    round: int
    train_runtime_s: float  # the trainer's own measure, the same for both paths
    steps: int
    pairs: int
    useful_tokens: int
    pairs_per_s: float
    tokens_per_s: float
    peak_rss_mib: float
    start_rss_mib: float
    train_loss: float
    total_wall_s: float  # everything: model load, trainer set-up, training, (A) final save
    cpu_s: float  # CPU time of this process during the run
    # CPU the rest of the machine used meanwhile, in cores: above QUIET_CORES it was disturbed.
    other_load_cores: float
    # A only: time spent inside the reporter (the database writes), per method.
    reporter_seconds: dict[str, float] = field(default_factory=dict)
    reporter_calls: dict[str, int] = field(default_factory=dict)
    events_written: int = 0
    # A only: from the last step's end to the checkpoint callback, i.e. the epoch checkpoint.
    checkpoint_save_s: float | None = None


@dataclass
class Batches:
    """The batches one epoch trains on, replayed from the trainer's own sampler and collator."""

    sizes: list[int]
    useful_tokens: list[int]  # attention-mask ones: real tokens incl. [CLS]/[SEP], no padding
    padded_tokens: list[int]  # what the model computes on, padding included


# -- data and the offline model -------------------------------------------------------------


def load_pairs(path: Path, rows: int, min_score: float) -> list[dict[str, str]]:
    """The first `rows` (sentence1, sentence2) pairs scored >= min_score, as anchor/positive."""
    pairs = []
    with path.open(newline="", encoding="utf-8") as handle:
        for sentence1, sentence2, score in csv.reader(handle):
            if float(score) >= min_score:
                pairs.append({"anchor": sentence1, "positive": sentence2})
                if len(pairs) == rows:
                    break
    if len(pairs) < rows:
        raise SystemExit(f"{path} has only {len(pairs)} pairs with score >= {min_score}.")
    return pairs


def use_offline_model(folder: Path) -> str:
    """Lay out all-MiniLM-L6-v2 as an offline Hugging Face cache; returns its Hub id.

    Must run before transformers or huggingface_hub are imported: they read HF_HOME once."""
    from tests.offline_models import MINILM, build_hf_cache

    os.environ["HF_HOME"] = str(build_hf_cache(folder))
    os.environ["HF_HUB_OFFLINE"] = "1"
    return MINILM


# -- memory ---------------------------------------------------------------------------------


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


@contextmanager
def peak_rss() -> Iterator[dict[str, float]]:
    """Peak resident memory of this process during the block, in MiB ("start", "peak").

    Runs share one process, so the lifetime peak (ru_maxrss) says nothing about a single run:
    the kernel's high-water mark is reset instead (clear_refs 5); where that is not allowed, a
    thread samples VmRSS every 10 ms."""
    gc.collect()
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


# -- CPU contention -------------------------------------------------------------------------


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process) so far."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    own = os.times()
    return ((user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"),
            own.user + own.system)


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


# -- A: tuneforge ---------------------------------------------------------------------------


def timed_reporter_class() -> type:
    from tuneforge.jobs.reporting import JobReporter

    class TimedJobReporter(JobReporter):
        """The real JobReporter; only times its calls, to say where tuneforge's time goes."""

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.seconds: dict[str, float] = {}
            self.calls: dict[str, int] = {}
            self.marks: list[tuple[str, float, float]] = []  # (method, start, end)

        def _timed(self, name: str, call: Any, *args: Any) -> Any:
            start = time.perf_counter()
            try:
                return call(*args)
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

        def checkpoint_save_seconds(self) -> float | None:
            """From the end of the call before the first checkpoint call to its start: the
            trainer saving its checkpoint (the last step's logging and saving lie between)."""
            for i, (name, start, _end) in enumerate(self.marks):
                if name == "checkpoint" and i > 0:
                    return start - self.marks[i - 1][2]
            return None

    return TimedJobReporter


def run_tuneforge(model_id: str, pairs: list[dict[str, str]], hp: Any, seed: int,
                  folder: Path) -> tuple[dict[str, Any], Any]:
    """train_embedding as the job runner calls it, with a job row in a fresh SQLite store."""
    from tuneforge.config import Settings
    from tuneforge.db.store import Store, new_id
    from tuneforge.jobs.status import JobStatus
    from tuneforge.training.embedding import train_embedding
    from tuneforge.training.spec import EmbeddingMethod, EmbeddingMethodParams, JobCreate

    settings = Settings(home=folder / "home")
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    params = EmbeddingMethodParams(loss="mnrl", hyperparameters=hp)
    spec = JobCreate(model=model_id, training_file="file-bench", seed=seed,
                     method=EmbeddingMethod(embedding=params), device="cpu")
    job_id = new_id("ftjob")
    now = time.time()
    store.insert_job({
        "id": job_id, "kind": "embedding", "model": model_id,
        "status": JobStatus.RUNNING.value, "spec": spec.model_dump(mode="json"),
        "created_at": now, "started_at": now, "worker_id": "bench", "heartbeat_at": now,
    }, "Benchmark job.")
    reporter = timed_reporter_class()(store, settings, job_id, 0)  # lease 0: the inserted row
    work_dir = settings.jobs_dir / job_id
    work_dir.mkdir(parents=True)
    try:
        start = time.perf_counter()
        result = train_embedding(
            model_location=model_id, params=params, layout="pair", train_rows=pairs,
            eval_rows=[], seed=seed, device="cpu", work_dir=work_dir,
            output_dir=settings.models_dir / job_id, reporter=reporter)
        total = time.perf_counter() - start
        events, _ = store.list_events(job_id, limit=100_000)
    finally:
        store.dispose()
    # The trainer's final log carries train_runtime; the ReportingCallback forwards it.
    return {
        "train_runtime_s": reporter.latest["train_runtime"], "steps": result.steps,
        "train_loss": result.train_loss, "total_wall_s": total,
        "reporter_seconds": reporter.seconds, "reporter_calls": reporter.calls,
        "events_written": len(events), "checkpoint_save_s": reporter.checkpoint_save_seconds(),
    }, None


# -- B: the plain script --------------------------------------------------------------------


def run_baseline(model_id: str, pairs: list[dict[str, str]], hp: Any, seed: int,
                 folder: Path) -> tuple[dict[str, Any], Any]:
    """What one would write by hand from the sentence-transformers docs."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import set_seed

    start = time.perf_counter()
    set_seed(seed)
    model = SentenceTransformer(model_id, device="cpu")
    args = SentenceTransformerTrainingArguments(
        output_dir=str(folder / "baseline"),
        num_train_epochs=hp.n_epochs,
        per_device_train_batch_size=hp.batch_size,
        learning_rate=hp.learning_rate,
        warmup_ratio=hp.warmup_ratio,
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        lr_scheduler_type=hp.lr_scheduler,
        seed=seed,
        data_seed=seed,
        logging_steps=hp.logging_steps,
        report_to="none",
        disable_tqdm=True,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, loss=MultipleNegativesRankingLoss(model),
        train_dataset=Dataset.from_dict({c: [p[c] for p in pairs] for c in ("anchor", "positive")}),
    )
    output = trainer.train()
    return {
        "train_runtime_s": output.metrics["train_runtime"], "steps": trainer.state.global_step,
        "train_loss": output.training_loss, "total_wall_s": time.perf_counter() - start,
    }, trainer


# -- tokens ---------------------------------------------------------------------------------


def replay_batches(trainer: Any, epochs: int) -> Batches:
    """The batches of every epoch, from the trainer's own batch sampler (seeded as in training)
    and its own data collator, so the token counts are those of the model's inputs."""
    import torch

    dataset = trainer.train_dataset
    generator = torch.Generator()
    generator.manual_seed(trainer.args.seed)
    sampler = trainer.get_batch_sampler(
        dataset, batch_size=trainer.args.train_batch_size,
        drop_last=trainer.args.dataloader_drop_last,
        valid_label_columns=trainer.data_collator.valid_label_columns,
        generator=generator, seed=trainer.args.seed)
    batches = Batches([], [], [])
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for indices in sampler:
            inputs = trainer.data_collator([dataset[i] for i in indices])
            masks = [v for k, v in inputs.items() if k.endswith("_attention_mask")]
            batches.sizes.append(len(indices))
            batches.useful_tokens.append(int(sum(int(m.sum()) for m in masks)))
            batches.padded_tokens.append(int(sum(m.numel() for m in masks)))
    return batches


# -- the benchmark --------------------------------------------------------------------------


def measure(path: str, round_: int, runner: Any, model_id: str, pairs: list[dict[str, str]],
            hp: Any, seed: int, folder: Path) -> tuple[dict[str, Any], Any]:
    folder.mkdir(parents=True)
    try:
        with peak_rss() as memory:
            busy, own = cpu_seconds()
            start = time.perf_counter()
            values, trainer = runner(model_id, pairs, hp, seed, folder)
            wall = time.perf_counter() - start
            busy_after, own_after = cpu_seconds()
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # checkpoints: ~270 MB a run
    values.update(path=path, round=round_, peak_rss_mib=memory["peak"],
                  start_rss_mib=memory["start"], cpu_s=own_after - own,
                  other_load_cores=max(busy_after - busy - (own_after - own), 0.0) / wall)
    return values, trainer


def finish(values: dict[str, Any], batches: Batches) -> Run:
    steps = values["steps"]
    if steps > len(batches.sizes):
        raise RuntimeError(f"{values['path']} trained {steps} steps; the replay has "
                           f"{len(batches.sizes)} batches.")
    pairs = sum(batches.sizes[:steps])
    tokens = sum(batches.useful_tokens[:steps])
    runtime = values["train_runtime_s"]
    return Run(pairs=pairs, useful_tokens=tokens, pairs_per_s=pairs / runtime,
               tokens_per_s=tokens / runtime, **values)


def summarize(runs: list[Run]) -> dict[str, dict[str, float]]:
    """Medians per path and the ratio tuneforge/baseline for each metric."""
    metrics = ("pairs_per_s", "tokens_per_s", "train_runtime_s", "peak_rss_mib", "total_wall_s")
    summary: dict[str, dict[str, float]] = {}
    for metric in metrics:
        a = statistics.median(getattr(r, metric) for r in runs if r.path == "tuneforge")
        b = statistics.median(getattr(r, metric) for r in runs if r.path == "baseline")
        summary[metric] = {"tuneforge": a, "baseline": b, "ratio": a / b}
    return summary


def markdown(runs: list[Run], discarded: list[Run], summary: dict[str, dict[str, float]],
             batches: Batches, config: dict[str, Any]) -> str:
    a_runs = [r for r in runs if r.path == "tuneforge"]
    lines = [
        "# Embedding training: tuneforge vs a plain SentenceTransformerTrainer script",
        "",
        f"all-MiniLM-L6-v2, MultipleNegativesRankingLoss, {config['pairs']} STS pairs "
        f"(score >= {config['min_score']}), batch {config['batch_size']}, "
        f"{config['epochs']} epoch(s), {len(batches.sizes)} steps, {config['rounds']} rounds "
        f"A/B alternating; {config['cpu']}, torch threads {config['torch_threads']}.",
        f"Useful tokens per epoch {sum(batches.useful_tokens):,} (padding included: "
        f"{sum(batches.padded_tokens):,}). Throughput is over the trainer's `train_runtime`.",
        "",
        "| metric (median) | tuneforge | baseline | tuneforge/baseline |",
        "|---|---:|---:|---:|",
    ]
    names = {"pairs_per_s": "pairs/s", "tokens_per_s": "useful tokens/s",
             "train_runtime_s": "train_runtime (s)", "peak_rss_mib": "peak RSS (MiB)",
             "total_wall_s": "whole run incl. load/save (s)"}
    for metric, name in names.items():
        s = summary[metric]
        lines.append(f"| {name} | {s['tuneforge']:,.2f} | {s['baseline']:,.2f} | "
                     f"{s['ratio']:.3f}× |")
    ratio = summary["pairs_per_s"]["ratio"]
    lines += ["", f"Throughput ratio {ratio:.3f}× — target ≥ {TARGET_RATIO}×: "
              f"{'met' if ratio >= TARGET_RATIO else 'NOT met'}.", "",
              "| round | path | train_runtime (s) | pairs/s | tokens/s | peak RSS (MiB) | "
              "start RSS (MiB) | train loss | whole run (s) | CPU (s) | other load (cores) |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(f"| {r.round} | {r.path} | {r.train_runtime_s:.2f} | {r.pairs_per_s:.1f} | "
                     f"{r.tokens_per_s:,.0f} | {r.peak_rss_mib:,.0f} | {r.start_rss_mib:,.0f} | "
                     f"{r.train_loss:.5f} | {r.total_wall_s:.2f} | {r.cpu_s:.1f} | "
                     f"{r.other_load_cores:.2f} |")
    disturbed = [f"{r.round}/{r.path}" for r in runs if r.other_load_cores > QUIET_CORES]
    if disturbed:
        lines += ["", f"Warning: other processes used > {QUIET_CORES} cores during "
                  f"{', '.join(disturbed)} even after retries; those timings are not clean."]
    if discarded:
        lines += ["", f"{len(discarded)} disturbed run(s) were repeated: "
                  + ", ".join(f"{d.round}/{d.path} ({d.other_load_cores:.2f} cores, "
                              f"{d.train_runtime_s:.1f} s)" for d in discarded) + "."]
    lines += ["", "Where tuneforge's time went inside `train_runtime` (medians over its runs):", ""]
    saves = [r.checkpoint_save_s or 0.0 for r in a_runs]
    lines.append(f"- epoch checkpoint save (save_strategy='epoch'; model, optimizer, scheduler): "
                 f"{statistics.median(saves):.2f} s")
    for method in sorted({m for r in a_runs for m in r.reporter_seconds}):
        seconds = statistics.median(r.reporter_seconds.get(method, 0.0) for r in a_runs)
        calls = statistics.median(r.reporter_calls.get(method, 0) for r in a_runs)
        lines.append(f"- JobReporter.{method}: {calls:.0f} calls, {seconds * 1000:.1f} ms")
    events = statistics.median(r.events_written for r in a_runs)
    lines.append(f"- events written per run: {events:.0f}")
    # Noise-free view: the time tuneforge demonstrably adds, as a share of its own runtime.
    added = statistics.median(
        (r.checkpoint_save_s or 0.0) + sum(r.reporter_seconds.values()) for r in a_runs)
    runtime = summary["train_runtime_s"]["tuneforge"]
    lines.append(f"- attributed overhead (checkpoint save + reporter): {added:.2f} s of "
                 f"{runtime:.2f} s, i.e. an expected ratio of {(runtime - added) / runtime:.3f}×")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1024, help="training pairs (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per step (default 32)")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the pairs (default 1)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--min-score", type=float, default=3.0, help="STS score of a pair")
    parser.add_argument("--data", type=Path, default=DATA, help="STS-B CSV without header")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="before each run, wait up to this many seconds for other processes "
                        "to leave the CPUs idle (default 60; 0: never wait)")
    parser.add_argument("--retries", type=int, default=2,
                        help=f"repeat a run disturbed by other processes (> {QUIET_CORES} cores) "
                        "up to this many times (default 2)")
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as tmp:
        temp = Path(tmp)
        model_id = use_offline_model(temp / "hf")
        import torch
        import transformers

        transformers.logging.set_verbosity_error()  # the same quiet console for A and B
        from tuneforge.training.spec import EmbeddingHyperparameters

        hp = EmbeddingHyperparameters.model_validate(
            {"batch_size": options.batch_size, "n_epochs": options.epochs})
        pairs = load_pairs(options.data, options.rows, options.min_score)
        # Imports and first reads of the model files would otherwise fall on the first run (A).
        from sentence_transformers import SentenceTransformer

        SentenceTransformer(model_id, device="cpu").encode(["warm up"] * 8)

        kept: list[dict[str, Any]] = []
        repeated: list[dict[str, Any]] = []
        batches: Batches | None = None
        for round_ in range(1, options.rounds + 1):
            for path, runner in (("tuneforge", run_tuneforge), ("baseline", run_baseline)):
                for attempt in range(options.retries + 1):
                    if options.quiet_wait > 0:
                        wait_until_quiet(options.quiet_wait)
                    values, trainer = measure(path, round_, runner, model_id, pairs, hp,
                                              options.seed, temp / f"{path}-{round_}-{attempt}")
                    if batches is None and trainer is not None:
                        batches = replay_batches(trainer, options.epochs)
                    del trainer
                    print(f"round {round_} {path}: train_runtime "
                          f"{values['train_runtime_s']:.2f} s, {values['steps']} steps, loss "
                          f"{values['train_loss']:.5f}, peak RSS {values['peak_rss_mib']:.0f} MiB,"
                          f" other processes {values['other_load_cores']:.2f} cores", flush=True)
                    if values["other_load_cores"] <= QUIET_CORES or attempt == options.retries:
                        break
                    repeated.append(values)
                kept.append(values)
        assert batches is not None
        runs = [finish(values, batches) for values in kept]
        discarded = [finish(values, batches) for values in repeated]

    summary = summarize(runs)
    config = {
        "pairs": options.rows, "min_score": options.min_score, "batch_size": options.batch_size,
        "epochs": options.epochs, "rounds": options.rounds, "seed": options.seed,
        "data": str(options.data), "hyperparameters": hp.model_dump(),
        "cpu": f"{os.cpu_count()} CPUs ({platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "versions": {name: __import__(name).__version__ for name in
                     ("torch", "transformers", "sentence_transformers", "datasets", "tuneforge")},
    }
    report = markdown(runs, discarded, summary, batches, config)
    print("\n" + report)
    options.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (options.out / f"embedding_overhead-{stamp}.md").write_text(report)
    (options.out / f"embedding_overhead-{stamp}.json").write_text(json.dumps({
        "config": config, "summary": summary, "runs": [asdict(r) for r in runs],
        "discarded_runs": [asdict(r) for r in discarded], "batches": asdict(batches),
        "target_ratio": TARGET_RATIO, "quiet_cores": QUIET_CORES,
    }, indent=2))
    print(f"Wrote {options.out}/embedding_overhead-{stamp}.{{md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
