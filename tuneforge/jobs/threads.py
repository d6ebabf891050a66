"""A job process's CPU thread budget: its share of the machine's cores.

Two job processes that each use every core's worth of threads oversubscribe the CPU: each
waits on the other's threads at every parallel region (on 2 cores, SmolLM2 LoRA steps took
70-100 s beside another job and 10 s alone). Each job process therefore computes on its
share: the cores, less those kept for the serving endpoints, divided by the jobs that run at
once on the machine, and by the job's own processes.
"""

from __future__ import annotations

import os

from tuneforge.config import Settings


def thread_budget(settings: Settings, processes: int = 1, cores: int | None = None) -> int:
    """Threads for each of a job's `processes` on this machine: `job_threads` when set (or
    OMP_NUM_THREADS), else (cores - serving_threads) / job_slots / processes, at least 1."""
    if settings.job_threads:
        return max(1, settings.job_threads // max(processes, 1))
    if cores is None:
        affinity = getattr(os, "sched_getaffinity", None)
        cores = len(affinity(0)) if affinity else os.cpu_count() or 1
    share = (cores - settings.serving_threads) // (settings.job_slots * max(processes, 1))
    return max(1, share)


def use_thread_budget(threads: int) -> None:
    """Compute on `threads` threads in this process (torch's intra-op pool) and in the
    processes it starts (OpenMP, MKL, tokenizers' pool)."""
    import torch

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
