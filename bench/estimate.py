"""The memory estimate (tuneforge.jobs.estimate) against the measured peak on the CPU.

Each case runs in a process of its own, as a job process would: it imports the training
libraries, estimates the job from the model's config (meta device) and its rows
(tuneforge.jobs.fit), trains it with the kind's own `run` on the CPU, and reports the
process's peak resident memory (VmHWM, the high-water mark of its address space). The
estimate is within ±25% of the measurement when `ok`.

    python bench/estimate.py [--cases tiny-llama-lora,minilm-embedding,...] [--threads N]
    python bench/estimate.py --child CASE      # one case, a JSON line on stdout

Cases: tiny-llama-lora, tiny-qwen-full (the tests' tiny models), minilm-embedding,
minilm-classification (all-MiniLM-L6-v2), smollm2-lora (SmolLM2-135M-Instruct, LoRA on
conversations of ~250 tokens).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("TUNEFORGE_SHARED_DATA") or ROOT.parent / "shared" / "data")
CASES = (
    "tiny-llama-lora",
    "tiny-qwen-full",
    "minilm-embedding",
    "minilm-classification",
    "smollm2-lora",
)
TOLERANCE = 0.25


def _stsb(n: int) -> list[list[str]]:
    with (DATA / "stsb-en-train.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))[:n]


def _long_chats(n: int) -> list[dict[str, Any]]:
    """Conversations of about 250 tokens: STS sentences asked back as a JSON list."""
    rows = _stsb(n * 8)
    chats = []
    for i in range(n):
        sentences = [a for a, _b, _s in rows[i * 8 : (i + 1) * 8]]
        chats.append(
            {
                "messages": [
                    {"role": "user", "content": "List these sentences: " + " ".join(sentences)},
                    {"role": "assistant", "content": json.dumps({"sentences": sentences})},
                ]
            }
        )
    return chats


def case_job(case: str, folder: Path) -> tuple[str, dict[str, Any], str, list[dict[str, Any]]]:
    """(model location, method, layout, training rows) of a case."""
    from tests.offline_models import MINILM, build_hf_cache, install_smollm2
    from tests.tiny_llm import build_tiny_llm
    from tests.training.conftest import json_chats

    hf = build_hf_cache(Path(os.environ["HF_HOME"]))
    minilm = hf / "hub" / f"models--{MINILM.replace('/', '--')}" / "snapshots"
    no_checks = {"generation_checks": {"samples": 0}}
    if case == "tiny-llama-lora":
        model = build_tiny_llm(folder / "tiny-llama", "llama")
        method = {"type": "supervised", "supervised": {**no_checks, "hyperparameters": {
            "n_epochs": 2, "batch_size": 4, "gradient_accumulation_steps": 1}}}
        return str(model), method, "chat", json_chats() * 4
    if case == "tiny-qwen-full":
        model = build_tiny_llm(folder / "tiny-qwen", "qwen2")
        method = {"type": "supervised", "supervised": {**no_checks, "tuning": "full",
                  "hyperparameters": {"n_epochs": 2, "batch_size": 4}}}
        return str(model), method, "chat", json_chats() * 4
    if case == "minilm-embedding":
        method = {"type": "embedding", "embedding": {"loss": "mnrl", "hyperparameters": {
            "batch_size": 32, "n_epochs": 1}}}
        rows = [{"anchor": a, "positive": b} for a, b, _s in _stsb(512)]
        return str(next(minilm.iterdir())), method, "pair", rows
    if case == "minilm-classification":
        with (DATA / "banking77-train.csv").open(encoding="utf-8", newline="") as f:
            picked = list(csv.DictReader(f))[::25][:400]
        rows = [{"text": r["text"], "label": r["category"]} for r in picked]
        method = {"type": "classification", "classification": {"hyperparameters": {
            "batch_size": 16, "n_epochs": 1}}}
        return str(next(minilm.iterdir())), method, "classification", rows
    if case == "smollm2-lora":
        model = install_smollm2(hf)
        method = {"type": "supervised", "supervised": {**no_checks, "hyperparameters": {
            "n_epochs": 1, "batch_size": 4, "gradient_accumulation_steps": 1,
            "max_seq_length": 512}}}
        return str(model), method, "chat", _long_chats(12)
    raise SystemExit(f"unknown case {case!r}; cases: {', '.join(CASES)}")


def _peak_rss() -> int:
    """This process's peak resident memory, in bytes: VmHWM, the high-water mark of its own
    address space. (`ru_maxrss` would not do: Linux carries into it the RSS of the process
    that forked this one, as it stood at the exec, so a child of a large test worker would
    report the worker's size.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(case: str, threads: int) -> dict[str, Any]:
    """Run one case in this process: estimate, train, measure the peak."""
    import torch

    torch.set_num_threads(threads)
    from tests.training.conftest import RecordingReporter
    from tuneforge.jobs.estimate import estimate
    from tuneforge.jobs.fit import Capacity, model_shape, training_setup
    from tuneforge.training.base import JobData, RunContext
    from tuneforge.training.kinds import KINDS
    from tuneforge.training.spec import JobCreate

    with tempfile.TemporaryDirectory(prefix="tuneforge-estimate-") as tmp:
        folder = Path(tmp)
        location, method, layout, rows = case_job(case, folder)
        spec = JobCreate.model_validate(
            {"model": "bench/model", "training_file": "file-x", "seed": 1,
             "method": method, "device": "cpu"}
        )
        data = JobData(layout, rows, rows[:4], "file")
        shape = model_shape(location)
        setup = training_setup(spec, shape, data, location, Capacity("cpu", 0, "", threads))
        found = estimate(shape, setup)
        start = time.monotonic()
        ctx = RunContext(
            spec=spec, data=data, model_location=location, device="cpu", seed=1,
            work_dir=folder / "work", output_dir=folder / "model",
            reporter=RecordingReporter(), resume_from=None,
        )
        (folder / "work").mkdir()
        KINDS[spec.method.type].run(ctx)
        peak = _peak_rss()
    estimated = found.peak_bytes
    return {
        "case": case,
        "estimated_mib": round(estimated / 2**20, 1),
        "measured_mib": round(peak / 2**20, 1),
        "error": round(estimated / peak - 1, 3),
        "ok": abs(estimated / peak - 1) <= TOLERANCE,
        "parts_mib": {k: round(v / 2**20, 1) for k, v in found.memory.items()},
        "seq": setup.seq,
        "batch": setup.batch,
        "parameters": shape.parameters,
        "train_seconds": round(time.monotonic() - start, 1),
        "estimated_seconds": found.seconds,
    }


def measure_case(case: str, threads: int = 1, timeout: float = 3600) -> dict[str, Any]:
    """One case in a fresh process (its peak is its own); its JSON result."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as hf_home:
        env["HF_HOME"] = os.environ.get("HF_HOME", hf_home)
        out = subprocess.run(
            [sys.executable, __file__, "--child", case, "--threads", str(threads)],
            capture_output=True, text=True, env=env, timeout=timeout, check=False,
        )
    if out.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{out.stderr[-4000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.threads)))
        return
    print("| case | parameters | batch x seq | estimated peak | measured peak (RSS) | error |")
    print("|---|---:|---:|---:|---:|---:|")
    results = []
    for case in args.cases.split(","):
        r = measure_case(case, args.threads)
        results.append(r)
        print(
            f"| {case} | {r['parameters'] / 1e6:.1f} M | {r['batch']} x {r['seq']} | "
            f"{r['estimated_mib']:.0f} MiB | {r['measured_mib']:.0f} MiB | "
            f"{100 * r['error']:+.0f}% |",
            flush=True,
        )
    out = ROOT / "bench" / "results" / f"estimate-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    if not all(r["ok"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
