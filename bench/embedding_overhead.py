"""How much does tuneforge cost on top of sentence-transformers? Embedding training, A against B.

A: tuneforge's path, `train_embedding` reporting through the real `JobReporter` into a real
   SQLite `Store` (a job row in a temporary data folder), with tuneforge's own trainer arguments.
B: a plain `SentenceTransformerTrainer` script: the same model, loss, batch sampler, learning
   rate, warm-up, scheduler, weight decay, seed and logging, everything else left at the
   library's defaults.
C: the same script with `SentenceTransformerTrainingArguments`' defaults (batch 8, no warm-up,
   no weight decay, batches that may hold a duplicate text, which MNRL then counts as a wrong
   answer): what one gets without choosing settings, against A with tuneforge's defaults.

Both train all-MiniLM-L6-v2 with MultipleNegativesRankingLoss on (sentence1, sentence2) pairs of
STS rows scored >= 3.0, alternating A B A B ... in one process (`running`). The measure is the
trainer's own `train_runtime` (start of the training loop to its end), taken the same way for
both; model loading, tuneforge's baseline/final evaluations (off here: no validation rows) and
the final model save lie outside it. Reported per run: pairs/s, useful (non-padding) tokens/s,
MFU and peak memory; then medians and the ratio tuneforge/baseline. Every trained model is then
measured on held-out STS Benchmark dev pairs: Spearman correlation of cosine similarity with
the human scores (the untrained model's is printed for reference).

    python bench/embedding_overhead.py [--rows N] [--rounds R] [--batch-size B] [--out DIR]
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path
from typing import Any

import measure
import running

DATA = running.DATA / "stsb-en-train.csv"
DEV = running.DATA / "stsb-en-dev.csv"


def load_scored(path: Path, rows: int) -> list[tuple[str, str, float]]:
    """The first `rows` scored pairs of an STS CSV without header."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [(a, b, float(score)) for a, b, score in list(csv.reader(handle))[:rows]]


def spearman(model: Any, scored: list[tuple[str, str, float]]) -> dict[str, float]:
    """Spearman correlation of the model's cosine similarities with the gold scores."""
    import torch
    from scipy.stats import spearmanr

    first = model.encode([a for a, _, _ in scored], batch_size=64, convert_to_tensor=True)
    second = model.encode([b for _, b, _ in scored], batch_size=64, convert_to_tensor=True)
    cosine = torch.nn.functional.cosine_similarity(first, second).cpu().numpy()
    return {"spearman": float(spearmanr(cosine, [s for _, _, s in scored]).statistic)}


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


def count_pairs(inputs: dict[str, Any]) -> dict[str, Any]:
    """A batch of the sentence-transformers collator: one attention mask per column."""
    return measure.count_padded([v for k, v in inputs.items() if k.endswith("_attention_mask")])


# -- A: tuneforge -------------------------------------------------------------------------------


def tuneforge_runner(
    model_id: str,
    pairs: list[dict[str, str]],
    hp: Any,
    seed: int,
    held_out: list[tuple[str, str, float]],
) -> running.Runner:
    """train_embedding as the job runner calls it, with a job row in a fresh SQLite store."""

    def run(folder: Path, device: str) -> running.Outcome:
        from tuneforge.training.embedding import train_embedding
        from tuneforge.training.spec import EmbeddingMethod, EmbeddingMethodParams, JobCreate

        params = EmbeddingMethodParams(loss="mnrl", hyperparameters=hp)
        spec = JobCreate(
            model=model_id,
            training_file="file-bench",
            seed=seed,
            method=EmbeddingMethod(embedding=params),
            device=device,
        )
        with running.tuneforge_job(folder, spec) as job:
            train_embedding(
                model_location=model_id,
                params=params,
                layout="pair",
                train_rows=pairs,
                eval_rows=[],
                seed=seed,
                device=device,
                work_dir=job.work_dir,
                output_dir=job.output_dir,
                reporter=job.reporter,
            )
            overhead = job.overhead()
            from sentence_transformers import SentenceTransformer

            trained = SentenceTransformer(str(job.output_dir), device=device)
            return running.Outcome(quality=spearman(trained, held_out), overhead=overhead)

    return run


# -- B: the plain script ------------------------------------------------------------------------


def baseline_runner(
    model_id: str,
    pairs: list[dict[str, str]],
    hp: Any,
    seed: int,
    held_out: list[tuple[str, str, float]],
    same_settings: bool = True,
) -> running.Runner:
    """What one would write by hand from the sentence-transformers docs: with tuneforge's
    settings, or with nothing chosen (`same_settings=False`: the library's defaults)."""

    def run(folder: Path, device: str) -> running.Outcome:
        from datasets import Dataset
        from sentence_transformers import (
            SentenceTransformer,
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
        )
        from sentence_transformers.base.sampler import BatchSamplers
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,
        )
        from transformers import set_seed

        set_seed(seed)
        model = SentenceTransformer(model_id, device=device)
        chosen: dict[str, Any] = {"num_train_epochs": hp.n_epochs}
        if same_settings:
            chosen |= {
                "per_device_train_batch_size": hp.batch_size,
                "learning_rate": hp.learning_rate,
                "warmup_ratio": hp.warmup_ratio,
                "weight_decay": hp.weight_decay,
                "max_grad_norm": hp.max_grad_norm,
                "lr_scheduler_type": hp.lr_scheduler,
                "data_seed": seed,
                "logging_steps": hp.logging_steps,
                "batch_sampler": BatchSamplers.NO_DUPLICATES,
            }
        args = SentenceTransformerTrainingArguments(
            output_dir=str(folder / "baseline"),
            seed=seed,
            report_to="none",
            disable_tqdm=True,
            **chosen,
        )
        columns = ("anchor", "positive")
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            loss=MultipleNegativesRankingLoss(model),
            train_dataset=Dataset.from_dict({c: [p[c] for p in pairs] for c in columns}),
        )
        trainer.train()
        return running.Outcome(quality=spearman(trainer.model, held_out))

    return run


# -- the benchmark ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = running.parser(__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=832, help="training pairs (default 832)")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per step (default 32)")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the pairs (default 1)")
    parser.add_argument("--min-score", type=float, default=3.0, help="STS score of a pair")
    parser.add_argument("--data", type=Path, default=DATA, help="STS-B CSV without header")
    parser.add_argument(
        "--held-out", type=int, default=500, help="STS dev pairs to measure on (default 500)"
    )
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as tmp:
        model_id = running.offline_hub(Path(tmp) / "hf")
        import transformers

        transformers.logging.set_verbosity_error()  # the same quiet console for A and B
        from sentence_transformers import SentenceTransformer

        from tuneforge.training.hyperparameters import EmbeddingHyperparameters

        hp = EmbeddingHyperparameters.model_validate(
            {
                "batch_size": options.batch_size,
                "n_epochs": options.epochs,
                **running.overrides(options),
            }
        )
        pairs = load_pairs(options.data, options.rows, options.min_score)
        held_out = load_scored(DEV, options.held_out)
        model = SentenceTransformer(model_id, device="cpu")
        flops = measure.flops_model(model, model[0].model.config)
        untrained = spearman(model, held_out)["spearman"]
        del model

        bench = running.Benchmark(
            name="embedding_overhead",
            title="Embedding training: tuneforge vs a plain SentenceTransformerTrainer script",
            description=[
                f"all-MiniLM-L6-v2, MultipleNegativesRankingLoss, {len(pairs)} STS pairs "
                f"(score >= {options.min_score}), batch {hp.batch_size} (no duplicates), "
                f"{hp.n_epochs} epoch(s), {options.rounds} rounds A/B alternating.",
                "Throughput is over the trainer's `train_runtime`; tokens are the attention-mask "
                "ones of both columns (real tokens with [CLS]/[SEP], no padding).",
                f"Quality: Spearman of cosine similarity vs gold scores on {len(held_out)} STS "
                f"dev pairs (untrained model: {untrained:.4f}).",
            ],
            paths=[
                running.TrainingPath(
                    "tuneforge",
                    "tuneforge `train_embedding` (job row, JobReporter, atomic checkpoints)",
                    tuneforge_runner(model_id, pairs, hp, options.seed, held_out),
                ),
                running.TrainingPath(
                    "baseline",
                    "SentenceTransformerTrainer with the same settings, the rest library defaults",
                    baseline_runner(model_id, pairs, hp, options.seed, held_out),
                ),
                running.TrainingPath(
                    "st-defaults",
                    "SentenceTransformerTrainer with its defaults (batch 8, default sampler)",
                    baseline_runner(model_id, pairs, hp, options.seed, held_out, False),
                ),
            ],
            comparisons=[
                running.Comparison(
                    "(a) identical settings: overhead",
                    "tuneforge",
                    "baseline",
                    "examples_per_s",
                    0.97,
                ),
                running.Comparison(
                    "(b) each side's defaults", "tuneforge", "st-defaults", "examples_per_s", 1.3
                ),
            ],
            count=count_pairs,
            flops=flops,
            examples_name="pairs",
            config={
                "pairs": len(pairs),
                "min_score": options.min_score,
                "data": str(options.data),
                "held_out": len(held_out),
                "untrained_spearman": untrained,
                "hyperparameters": hp.model_dump(),
            },
        )
        running.run(bench, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
