"""Defaults that never leave a model worse: a job with tuneforge's defaults (no loss, no
hyperparameters) on public data, measured on the dev split against its base model.

- `stsb-en`, `stsb-de`: all-MiniLM-L6-v2 (offline) on STS Benchmark train (scored pairs, so
  the loss follows the data: CoSENT), validation file = the STS Benchmark dev split (1,500
  pairs); the job's own evaluation gives Spearman of the base and the fine-tuned model.
- `banking77`: all-MiniLM-L6-v2 with a new head on BANKING77 (`--per-class` questions of each
  of the 77 intents to train, the next `--dev-per-class` as the validation file); macro F1
  against the job's baseline (always the most frequent class).

Everything goes through the product: files ingested, the job created by `create_job` (the
loss and the method chosen as for an API request) and run by a worker, its evaluation read
from the finished job. `--train` subsamples STS train (seeded) to keep runs modest on shared
CPUs; `--set key=value` changes a hyperparameter (to compare candidates for a default).

    python bench/defaults.py                           # stsb-en, stsb-de, banking77
    python bench/defaults.py --tasks stsb-en --train 2000 --set learning_rate=2e-5
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import report
import running

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def stsb_files(language: str, train: int, dev: int, seed: int) -> tuple[bytes, bytes]:
    """(train CSV, dev CSV) of STS Benchmark, each subsampled (seeded; 0: all rows)."""
    out = []
    for split, count in (("train", train), ("dev", dev)):
        lines = (running.DATA / f"stsb-{language}-{split}.csv").read_bytes().splitlines(True)
        if count and count < len(lines):
            lines = random.Random(seed).sample(lines, count)
        out.append(b"".join(lines))
    return out[0], out[1]


def banking_files(per_class: int, dev_per_class: int) -> tuple[bytes, bytes]:
    """(train CSV, dev CSV) of BANKING77: the first `per_class` questions of every intent,
    and the next `dev_per_class` as the dev split."""
    by_class: dict[str, list[str]] = defaultdict(list)
    with (running.DATA / "banking77-train.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            by_class[row["category"]].append(row["text"])
    out = []
    for start, count in ((0, per_class), (per_class, dev_per_class)):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["text", "label"])
        for label, texts in sorted(by_class.items()):
            for text in texts[start : start + count]:
                writer.writerow([text, label])
        out.append(buffer.getvalue().encode("utf-8"))
    return out[0], out[1]


def run_task(task: str, args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from tuneforge.config import Settings
    from tuneforge.datasets.ingest import ingest_file
    from tuneforge.db.store import Store
    from tuneforge.jobs.service import create_job
    from tuneforge.jobs.worker import Worker
    from tuneforge.training.spec import JobCreate

    settings = Settings(home=home / task)
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    if task == "banking77":
        train, dev = banking_files(args.per_class, args.dev_per_class)
    else:
        train, dev = stsb_files(task.split("-")[1], args.train, args.dev, args.seed)
    ids = {
        name: ingest_file(store, settings, f"{task}-{name}.csv", io.BytesIO(data))["id"]
        for name, data in (("train", train), ("dev", dev))
    }
    chosen = dict(kv.split("=", 1) for kv in args.set)
    body: dict[str, Any] = {
        "model": MODEL,
        "training_file": ids["train"],
        "validation_file": ids["dev"],
        "seed": args.seed,
    }
    if chosen:  # the method still follows the data; these go into its hyperparameters
        body["hyperparameters"] = {k: _value(v) for k, v in chosen.items()}
    spec = JobCreate.model_validate(body)
    worker = Worker(store, settings, "bench")
    started = time.perf_counter()
    job = create_job(store, settings, spec)
    while worker.run_once(job["id"]):
        pass
    job = store.require_job(job["id"])
    wall = time.perf_counter() - started
    if job["status"] != "succeeded":
        raise SystemExit(f"{task}: {job['status']}: {job['error']}")
    result = job["result"]
    evaluation = result["evaluation"]
    key = evaluation["primary_metric"]
    method = job["spec"]["method"]
    params = method[method["type"]]
    store.dispose()
    return {
        "task": task,
        "kind": method["type"],
        "loss": params.get("loss"),
        "hyperparameters": params["hyperparameters"],
        "train_rows": len(train.splitlines()) - (task == "banking77"),
        "dev_rows": len(dev.splitlines()) - (task == "banking77"),
        "steps": result["steps"],
        "metric": key,
        "base": evaluation["base_model"][key],
        "fine_tuned": evaluation["fine_tuned_model"][key],
        "worse_than_base": result.get("worse_than_base"),
        "wall_seconds": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="stsb-en,stsb-de,banking77")
    parser.add_argument("--train", type=int, default=2000, help="STS train rows (0: all)")
    parser.add_argument("--dev", type=int, default=0, help="STS dev rows (0: all 1,500)")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--dev-per-class", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--set", action="append", default=[], help="hyperparameter=value")
    parser.add_argument("--out", default="defaults.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as tmp:
        running.offline_hub(Path(tmp) / "hf")
        rows = [run_task(t, args, Path(tmp)) for t in args.tasks.split(",")]
    out = report.RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / args.out).write_text(json.dumps(rows, indent=2))
    print("| task | loss | settings | train / dev rows | steps | metric | base | fine-tuned "
          "| wall |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['task']} | {r['loss'] or '-'} | {' '.join(args.set) or 'defaults'} | "
            f"{r['train_rows']} / {r['dev_rows']} | {r['steps']} | {r['metric']} | "
            f"{r['base']:.4f} | {r['fine_tuned']:.4f} | {r['wall_seconds']} s |"
        )


if __name__ == "__main__":
    main()
