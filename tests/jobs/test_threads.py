"""Each job process's CPU thread budget: its share of the cores."""

from __future__ import annotations

import os

import pytest
import torch

from tuneforge.config import Settings
from tuneforge.jobs.threads import thread_budget, use_thread_budget


def test_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("TUNEFORGE_JOB_THREADS", raising=False)
    alone = Settings()
    assert alone.job_threads is None
    assert thread_budget(alone, cores=8) == 8
    # Two workers on the machine: half each; the serving endpoints' cores are left out.
    assert thread_budget(Settings(job_slots=2), cores=8) == 4
    assert thread_budget(Settings(job_slots=2, serving_threads=2), cores=8) == 3
    # A job of 2 processes shares its budget between them; never below one thread.
    assert thread_budget(Settings(job_slots=2), processes=2, cores=8) == 2
    assert thread_budget(Settings(job_slots=4, serving_threads=2), cores=2) == 1
    # Set per worker: TUNEFORGE_JOB_THREADS, or OMP_NUM_THREADS as libraries read it.
    monkeypatch.setenv("TUNEFORGE_JOB_THREADS", "6")
    assert thread_budget(Settings(job_slots=2), cores=8) == 6
    monkeypatch.delenv("TUNEFORGE_JOB_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_budget(Settings(), cores=8) == 3


def test_the_job_process_computes_on_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        monkeypatch.setenv(name, "2")
    before = torch.get_num_threads()
    try:
        use_thread_budget(1)
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"  # and the processes it starts
    finally:
        torch.set_num_threads(before)
