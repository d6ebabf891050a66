"""Two training jobs on one machine: each with every core's worth of threads (as before the
thread budget), against each on its share (tuneforge.jobs.threads), against one job alone.

Each job is a process of its own that trains a small Qwen2-shaped causal LM (4 layers, hidden
384, LoRA-free full steps: forward, backward, AdamW) on random tokens, batch 4 x 128, and
reports its seconds per step after two warm-up steps. Its threads come from the job
processes' own `thread_budget` and `use_thread_budget`, with `job_slots` 1 (oversubscribed:
each job takes all cores) or 2 (each takes half).

    python bench/threads.py [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(slots: int, steps: int) -> dict[str, Any]:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tuneforge.config import Settings
    from tuneforge.jobs.threads import thread_budget, use_thread_budget

    threads = thread_budget(Settings(job_slots=slots))
    use_thread_budget(threads)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=4096,
        hidden_size=384,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=6,
        num_key_value_heads=2,
    )
    model = Qwen2ForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = torch.randint(0, 4096, (4, 128))
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= 2:
            times.append(time.perf_counter() - start)
    return {"threads": threads, "seconds_per_step": sum(times) / len(times)}


def run(slots: int, jobs: int, steps: int) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("OMP_NUM_THREADS", "TUNEFORGE_JOB_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
    command = [sys.executable, __file__, "--child", str(slots), "--steps", str(steps)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(jobs)]  # fmt: skip
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--child", type=int)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; seconds per training step (mean of {args.steps})\n")
    print("| setting | threads per job | s/step, each job |")
    print("|---|---:|---:|")
    results = {}
    for label, slots, jobs in (
        ("one job alone", 1, 1),
        ("two jobs, every core's worth each (before)", 1, 2),
        ("two jobs, job_slots 2 (the budget)", 2, 2),
    ):
        found = run(slots, jobs, args.steps)
        results[label] = found
        each = ", ".join(f"{r['seconds_per_step']:.2f}" for r in found)
        print(f"| {label} | {found[0]['threads']} | {each} |", flush=True)
    out = ROOT / "bench" / "results" / f"threads-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cores": cores, "results": results}, indent=2))


if __name__ == "__main__":
    main()
