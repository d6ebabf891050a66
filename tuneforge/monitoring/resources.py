"""Resources a job uses, sampled by the job's own process: CPU, memory, and GPU memory where
it runs on CUDA. Each sample is a metrics event of the job (`data` as below, beside `step`
and `elapsed_seconds`), written at the start, every `resource_sample_seconds`, and once more
when training ends; the dashboard draws them beside the loss curves.

| key                               | what                                                 |
|-----------------------------------|------------------------------------------------------|
| `cpu_percent`                     | CPU time of the process and its children since the   |
|                                   | last sample, in % of one core (400: four cores busy)  |
| `cpu_utilization_percent`         | the same, in % of the cores the process may use      |
| `system_cpu_percent`              | the whole machine's CPU use                          |
| `rss_bytes`, `peak_rss_bytes`     | resident memory of the process and its children, now |
|                                   | and the most seen (the kernel's high-water mark too)  |
| `system_memory_percent`           | the machine's memory in use                          |
| `gpu_memory_allocated_bytes`,     | torch's CUDA memory held by tensors, reserved by its |
| `gpu_memory_reserved_bytes`,      | allocator, and the most held since the job began     |
| `peak_gpu_memory_allocated_bytes` | (only where the job runs on CUDA)                    |
| `gpu_utilization_percent`         | the GPU's utilisation, where NVML answers            |
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from tuneforge.db.store import Store
from tuneforge.errors import LeaseLostError

log = logging.getLogger(__name__)


class ResourceSampler:
    """Samples this process (with its children) and the machine; remembers the peaks."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.cores = _usable_cores()
        self.peak_rss = 0
        psutil.cpu_percent(None)  # the machine's first reading starts its interval
        self._last = (time.monotonic(), self._cpu_seconds())

    def _cpu_seconds(self) -> float:
        # Children that ended are in children_user/system; the living ones are asked.
        times = self.process.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in self._children():
            try:
                child_times = child.cpu_times()
            except psutil.Error:
                continue
            total += child_times.user + child_times.system
        return total

    def _children(self) -> list[psutil.Process]:
        try:
            return self.process.children(recursive=True)
        except psutil.Error:
            return []

    def sample(self) -> dict[str, float]:
        now, cpu = time.monotonic(), self._cpu_seconds()
        last_time, last_cpu = self._last
        self._last = (now, cpu)
        cpu_percent = 100.0 * (cpu - last_cpu) / (now - last_time) if now > last_time else 0.0
        rss = self.process.memory_info().rss
        for child in self._children():
            try:
                rss += child.memory_info().rss
            except psutil.Error:
                continue
        self.peak_rss = max(self.peak_rss, rss, _high_water_mark())
        values: dict[str, float] = {
            "cpu_percent": round(cpu_percent, 2),
            "cpu_utilization_percent": round(cpu_percent / self.cores, 2),
            "system_cpu_percent": psutil.cpu_percent(None),
            "rss_bytes": rss,
            "peak_rss_bytes": self.peak_rss,
            "system_memory_percent": psutil.virtual_memory().percent,
        }
        values.update(_gpu())
        return values


def _usable_cores() -> int:
    """The cores this process may run on (its affinity, where the system has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS: no affinity
        return os.cpu_count() or 1


def _high_water_mark() -> int:
    """The kernel's peak resident memory of this process (Linux: VmHWM), or 0."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _gpu() -> dict[str, float]:
    """torch's CUDA memory figures, where this process has started CUDA (never imports torch,
    never starts CUDA itself)."""
    torch: Any = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    device = torch.cuda.current_device()
    values: dict[str, float] = {
        "gpu_memory_allocated_bytes": torch.cuda.memory_allocated(device),
        "gpu_memory_reserved_bytes": torch.cuda.memory_reserved(device),
        "peak_gpu_memory_allocated_bytes": torch.cuda.max_memory_allocated(device),
        "gpu_memory_total_bytes": torch.cuda.get_device_properties(device).total_memory,
    }
    # NVML (pynvml) missing or not answering: utilisation unknown.
    with contextlib.suppress(Exception):
        values["gpu_utilization_percent"] = float(torch.cuda.utilization(device))
    return values


class ResourceMonitor:
    """A thread that writes a sample as a metrics event of the job every `interval`
    seconds, under the job's lease; `stop` writes the last one."""

    def __init__(
        self, store: Store, job_id: str, lease: int, interval: float, step: Callable[[], int]
    ):
        self.store = store
        self.job_id = job_id
        self.lease = lease
        self.interval = interval
        self.step = step
        self.sampler = ResourceSampler()
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._lost = False
        self._thread = threading.Thread(target=self._run, name="tuneforge-resources", daemon=True)

    def start(self) -> None:
        self.write()
        self._thread.start()

    def stop(self) -> None:
        """End the sampling, with a last sample while the job still runs (once)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.write()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.write()

    def write(self) -> None:
        """Record a sample; never raises (the job goes on without its resource samples)."""
        if self._lost:
            return
        try:
            self._write()
        except LeaseLostError:
            self._lost = True  # the job ended or moved on: nothing more to record
        except Exception:
            log.exception("recording the resources of job %s failed", self.job_id)

    def _write(self) -> None:
        values = self.sampler.sample()
        message = (
            f"Resources: CPU {values['cpu_percent']:.0f}%, memory "
            f"{values['rss_bytes'] / 2**20:.0f} MiB (peak {values['peak_rss_bytes'] / 2**20:.0f})"
        )
        if "gpu_memory_allocated_bytes" in values:
            message += f", GPU memory {values['gpu_memory_allocated_bytes'] / 2**20:.0f} MiB"
        data = {
            "step": self.step(),
            "elapsed_seconds": round(time.monotonic() - self.started, 2),
            **values,
        }
        self.store.add_event(self.job_id, message, type="metrics", data=data, lease=self.lease)
