"""Quality, not speed: fine-tune all-MiniLM-L6-v2 on the whole STS Benchmark train file with
tuneforge's default embedding settings and measure Spearman on its dev file, against the base
model, for English and German.

It goes through the product: the files are ingested (validated), the job runs on the job
engine (a worker, a job process, checkpoints, the registry), and the measurement is an
evaluation job (`POST /v1/evaluations`'s code path) with the base model as its baseline.
Results go to bench/results/stsb_quality.json and a Markdown table on stdout.

    python bench/stsb_quality.py                   # en and de, 1 epoch each: ~15 min on 2 cores
    python bench/stsb_quality.py --languages en --epochs 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import report
import running

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def run_language(language: str, epochs: int, home: Path) -> dict[str, object]:
    from tuneforge.config import Settings
    from tuneforge.datasets.ingest import ingest_file
    from tuneforge.db.store import Store
    from tuneforge.evaluation.service import EvaluationCreate, create_evaluation
    from tuneforge.jobs.service import create_job
    from tuneforge.jobs.worker import Worker
    from tuneforge.training.spec import JobCreate

    settings = Settings(home=home / language)
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    ids = {}
    for split in ("train", "dev"):
        path = running.DATA / f"stsb-{language}-{split}.csv"
        with path.open("rb") as f:
            ids[split] = ingest_file(store, settings, path.name, f)["id"]
    spec = JobCreate.model_validate({
        "model": MODEL, "training_file": ids["train"], "seed": 42, "suffix": f"stsb-{language}",
        "method": {"type": "embedding", "embedding": {
            "loss": "cosent", "hyperparameters": {"n_epochs": epochs}}}})
    worker = Worker(store, settings, "bench")
    started = time.perf_counter()
    job = create_job(store, settings, spec)
    while worker.run_once(job["id"]):
        pass
    job = store.require_job(job["id"])
    train_seconds = time.perf_counter() - started
    if job["status"] != "succeeded":
        raise SystemExit(f"{language}: training {job['status']}: {job['error']}")
    evaluation = create_evaluation(store, settings, EvaluationCreate(
        model=job["fine_tuned_model"], baseline_model=MODEL, file_id=ids["dev"]))
    worker.run_once(evaluation["id"])
    result = store.require_job(evaluation["id"])["result"]
    store.dispose()
    tuned = result["model"]["metrics"]
    base = result["baseline"]["metrics"]
    return {
        "language": language,
        "train_steps": job["result"]["steps"],
        "epochs": epochs,
        "dev_rows": result["rows"],
        "spearman_base": base["spearman_cosine"],
        "spearman_fine_tuned": tuned["spearman_cosine"],
        "pearson_base": base["pearson_cosine"],
        "pearson_fine_tuned": tuned["pearson_cosine"],
        "train_wall_seconds": round(train_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--languages", default="en,de")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as tmp:
        running.offline_hub(Path(tmp) / "hf")  # all-MiniLM-L6-v2, offline
        rows = [run_language(lang, args.epochs, Path(tmp)) for lang in args.languages.split(",")]
    out = report.RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "stsb_quality.json").write_text(json.dumps(rows, indent=2))
    print("| language | epochs | dev rows | Spearman base | Spearman fine-tuned | train wall |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['language']} | {r['epochs']} | {r['dev_rows']} | {r['spearman_base']:.4f} | "
            f"{r['spearman_fine_tuned']:.4f} | {r['train_wall_seconds']} s |"
        )


if __name__ == "__main__":
    main()
