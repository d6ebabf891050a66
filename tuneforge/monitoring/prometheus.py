"""`/metrics` in Prometheus' text exposition format (version 0.0.4), written here: the format
is a few lines per sample and needs no library.

| metric                                          | type      | labels                   |
|-------------------------------------------------|-----------|--------------------------|
| `tuneforge_jobs`                                | gauge     | kind, status             |
| `tuneforge_queue_depth`                         | gauge     |                          |
| `tuneforge_job_duration_seconds`                | histogram | kind (jobs that ended)   |
| `tuneforge_serving_requests_total`              | counter   | endpoint, model, outcome |
| `tuneforge_serving_request_duration_seconds`    | histogram | endpoint, model          |
| `tuneforge_serving_tokens_total`                | counter   | endpoint, model, type    |
| `tuneforge_serving_unknown_model_requests_total`| counter   | endpoint                 |
| `tuneforge_worker_heartbeat_age_seconds`        | gauge     | worker, hostname         |
| `tuneforge_worker_busy`                         | gauge     | worker, hostname         |
| `tuneforge_gpu_memory_allocated_bytes`,         | gauge     | device                   |
| `…_reserved_bytes`, `…_total_bytes`             |           |                          |

Job figures are read from the database at each scrape (every process answers the same);
serving figures are this API process's since it started, as Prometheus counters are. GPU
memory is this process's (the models it serves), shown where torch runs here with CUDA.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from tuneforge import __version__
from tuneforge.db.store import Store
from tuneforge.jobs.status import JobStatus
from tuneforge.monitoring.usage import LATENCY_BOUNDS_MS, UsageMeter

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Upper bounds of the job duration histogram, seconds: 10 s to a day.
JOB_DURATION_BOUNDS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400)


class Exposition:
    """Metric families written one after another in the text format."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        if labels:
            pairs = ",".join(f'{key}="{escape(str(v))}"' for key, v in labels.items())
            self.lines.append(f"{name}{{{pairs}}} {number(value)}")
        else:
            self.lines.append(f"{name} {number(value)}")

    def histogram(
        self,
        name: str,
        labels: dict[str, str],
        bounds: tuple[float, ...],
        cumulative: list[int],
        count: int,
        total: float,
    ) -> None:
        """One labelled histogram: `cumulative[i]` observations at most `bounds[i]`."""
        for bound, below in zip(bounds, cumulative, strict=True):
            self.sample(f"{name}_bucket", {**labels, "le": number(bound)}, below)
        self.sample(f"{name}_bucket", {**labels, "le": "+Inf"}, count)
        self.sample(f"{name}_sum", labels, total)
        self.sample(f"{name}_count", labels, count)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def render_metrics(store: Store, meter: UsageMeter, stalled_after: float) -> str:
    """The whole exposition (see the module's docstring)."""
    out = Exposition()
    out.family("tuneforge_info", "gauge", "tuneforge's version (always 1).")
    out.sample("tuneforge_info", {"version": __version__}, 1)
    _jobs(out, store)
    _serving(out, meter)
    _workers(out, store, stalled_after)
    _gpu(out)
    return out.text()


def _jobs(out: Exposition, store: Store) -> None:
    counts = store.job_counts()
    out.family("tuneforge_jobs", "gauge", "Jobs by kind and status.")
    for kind, status, n in sorted(counts):
        out.sample("tuneforge_jobs", {"kind": kind, "status": status}, n)
    out.family("tuneforge_queue_depth", "gauge", "Jobs waiting for a worker (queued).")
    queued = sum(n for _, status, n in counts if status == JobStatus.QUEUED.value)
    out.sample("tuneforge_queue_depth", {}, queued)
    out.family(
        "tuneforge_job_duration_seconds",
        "histogram",
        "Running seconds of the jobs that ended (succeeded or failed), by kind.",
    )
    for kind, (cumulative, n, total) in sorted(
        store.duration_histogram(JOB_DURATION_BOUNDS).items()
    ):
        out.histogram(
            "tuneforge_job_duration_seconds",
            {"kind": kind},
            tuple(float(b) for b in JOB_DURATION_BOUNDS),
            cumulative,
            n,
            total,
        )


def _serving(out: Exposition, meter: UsageMeter) -> None:
    totals, unknown = meter.snapshot()
    ordered = sorted(totals.items())
    name = "tuneforge_serving_requests_total"
    out.family(name, "counter", "Served requests by endpoint, model and outcome.")
    for (endpoint, model), counts in ordered:
        labels = {"endpoint": endpoint, "model": model}
        out.sample(name, {**labels, "outcome": "success"}, counts.requests - counts.errors)
        out.sample(name, {**labels, "outcome": "error"}, counts.errors)
    name = "tuneforge_serving_request_duration_seconds"
    out.family(name, "histogram", "Seconds from a served request's start to its answer.")
    bounds = tuple(b / 1000.0 for b in LATENCY_BOUNDS_MS)
    for (endpoint, model), counts in ordered:
        cumulative = [sum(counts.buckets[: i + 1]) for i in range(len(bounds))]
        labels = {"endpoint": endpoint, "model": model}
        seconds = counts.latency_ms_sum / 1000.0
        out.histogram(name, labels, bounds, cumulative, counts.requests, seconds)
    name = "tuneforge_serving_tokens_total"
    out.family(name, "counter", "Tokens read (prompt) and written (completion) by served models.")
    for (endpoint, model), counts in ordered:
        labels = {"endpoint": endpoint, "model": model}
        out.sample(name, {**labels, "type": "prompt"}, counts.prompt_tokens)
        out.sample(name, {**labels, "type": "completion"}, counts.completion_tokens)
    name = "tuneforge_serving_unknown_model_requests_total"
    out.family(name, "counter", "Requests that named no model this server has.")
    for endpoint, n in sorted(unknown.items()):
        out.sample(name, {"endpoint": endpoint}, n)


def _workers(out: Exposition, store: Store, stalled_after: float) -> None:
    """Workers that have not stopped and were heard from within 10 stall periods (one gone
    long ago is no longer watched)."""
    now = time.time()
    workers = [
        w
        for w in store.list_workers()
        if w["stopped_at"] is None and now - w["heartbeat_at"] < 10 * stalled_after
    ]
    out.family(
        "tuneforge_worker_heartbeat_age_seconds", "gauge", "Seconds since a worker's heartbeat."
    )
    for w in workers:
        labels = {"worker": w["id"], "hostname": w["hostname"]}
        out.sample(
            "tuneforge_worker_heartbeat_age_seconds", labels, round(now - w["heartbeat_at"], 3)
        )
    out.family("tuneforge_worker_busy", "gauge", "1 while a worker runs a job, else 0.")
    for w in workers:
        labels = {"worker": w["id"], "hostname": w["hostname"]}
        out.sample("tuneforge_worker_busy", labels, int(w["job_id"] is not None))


def _gpu(out: Exposition) -> None:
    """GPU memory of this process, where it runs torch with CUDA (torch is never imported
    for a scrape: a process that has not loaded it has nothing on the GPU)."""
    torch: Any = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return

    def total(index: int) -> int:
        return int(torch.cuda.get_device_properties(index).total_memory)

    figures = {
        "tuneforge_gpu_memory_allocated_bytes": (
            "Bytes of GPU memory held by tensors.",
            torch.cuda.memory_allocated,
        ),
        "tuneforge_gpu_memory_reserved_bytes": (
            "Bytes of GPU memory reserved by torch.",
            torch.cuda.memory_reserved,
        ),
        "tuneforge_gpu_memory_total_bytes": ("Bytes of memory the GPU has.", total),
    }
    for name, (help_text, read) in figures.items():
        out.family(name, "gauge", help_text)
        for index in range(torch.cuda.device_count()):
            out.sample(name, {"device": f"cuda:{index}"}, int(read(index)))
