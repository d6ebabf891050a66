"""Quality of the `reranker` kind: a cross-encoder started from all-MiniLM-L6-v2's weights (a
fresh one-output head), trained on the STS Benchmark en train file with tuneforge's default
reranker settings, against the bi-encoder it started from, by Spearman on the dev file.

The files are read by the product's reader (`datasets.reranker`: STS scores 0-5 scaled to
[0, 1]) and the reranker is trained and measured by the kind's own code
(`training.reranker.train_reranker`, what a job's process runs), in this process: no worker,
so that a loaded machine cannot cost the run its lease. The bi-encoder's dev Spearman is the
embedding kind's measurement (`training.embedding.evaluate_model`) of all-MiniLM-L6-v2.
Results go to bench/results/reranker.json (or `--out`) and a Markdown table on stdout.

    OMP_NUM_THREADS=2 python bench/reranker.py                 # ~8 min on 2 idle cores
    python bench/reranker.py --set n_epochs=2 --set learning_rate=3e-5
    python bench/reranker.py --train-rows 200                  # a quick look
    python bench/reranker.py --skip-bi-encoder --seed 1 --out seed1.json   # another seed
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import report
import running


class PrintingReporter:
    """The reporter a job's process gets, reduced to printing the metrics."""

    def progress(self, step: int, total_steps: int, epoch: float) -> None:
        if step % 50 == 0:
            print(f"step {step}/{total_steps}", flush=True)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if any(k.startswith("eval_") for k in values):
            print(f"step {step}: {values}", flush=True)

    def checkpoint(self, *args: Any, **kwargs: Any) -> None:
        pass

    def stop_reason(self) -> None:
        return None

    def adopt_stop(self, reason: Any) -> None:
        pass

    def ensure_lease(self) -> None:
        pass

    def note(self, message: str, **kwargs: Any) -> None:
        print(message, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-rows", type=int, default=0, help="Use the first N rows (0: all).")
    parser.add_argument("--skip-bi-encoder", action="store_true", help="Only the reranker.")
    parser.add_argument("--seed", type=int, default=42, help="The training's seed.")
    parser.add_argument("--out", default="reranker.json", help="File name under bench/results.")
    parser.add_argument(
        "--set", action="append", default=[], help="A reranker hyperparameter, name=value."
    )
    args = parser.parse_args()
    hyperparameters = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as tmp:
        model = running.offline_hub(Path(tmp) / "hf")  # all-MiniLM-L6-v2, offline
        from tuneforge.datasets.reranker import read_reranker_file
        from tuneforge.training import embedding
        from tuneforge.training.reranker import evaluate_model, train_reranker
        from tuneforge.training.reranker_spec import RerankerMethodParams

        train = read_reranker_file(running.DATA / "stsb-en-train.csv", "csv", min_rows=1).rows
        dev = read_reranker_file(running.DATA / "stsb-en-dev.csv", "csv", min_rows=1).rows
        train = train[: args.train_rows] if args.train_rows else train
        pairs = [
            {"sentence1": r["query"], "sentence2": r["document"], "score": r["label"]} for r in dev
        ]
        bi_encoder = (
            {"spearman_cosine": float("nan")}
            if args.skip_bi_encoder
            else embedding.evaluate_model(model, "scored_pair", pairs, "cpu")
        )
        print(f"bi-encoder dev: {bi_encoder}", flush=True)
        params = RerankerMethodParams.model_validate({"hyperparameters": hyperparameters})
        started = time.perf_counter()
        # Measured once, after training (a fresh head's Spearman is noise around 0): no
        # evaluation inside the run, which on a busy CPU costs as much as the training.
        output = Path(tmp) / "job" / "model"
        result = train_reranker(
            model_location=model,
            params=params,
            layout="labeled_pair",
            train_rows=train,
            eval_rows=[],
            seed=args.seed,
            device="cpu",
            work_dir=Path(tmp) / "job",
            output_dir=output,
            reporter=PrintingReporter(),
        )
        wall = round(time.perf_counter() - started, 1)
        trained = evaluate_model(str(output), "labeled_pair", dev, "cpu")
    row = {
        "seed": args.seed,
        "train_rows": len(train),
        "dev_rows": len(dev),
        "hyperparameters": params.hyperparameters.model_dump(exclude_none=True),
        "steps": result.steps,
        "bi_encoder_base_spearman": bi_encoder["spearman_cosine"],
        "reranker_trained_spearman": trained["spearman"],
        "reranker_trained_pearson": trained["pearson"],
        "train_wall_seconds": wall,
    }
    out = report.RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / args.out).write_text(json.dumps(row, indent=2))
    print(json.dumps(row, indent=2))
    print("| model | dev Spearman |\n|---|---|")
    print(f"| bi-encoder all-MiniLM-L6-v2 | {row['bi_encoder_base_spearman']:.4f} |")
    what = f"reranker, {row['train_rows']} train rows, {row['steps']} steps"
    print(f"| {what} | {row['reranker_trained_spearman']:.4f} |")


if __name__ == "__main__":
    main()
