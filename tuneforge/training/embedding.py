"""The `embedding` kind: sentence-transformers' trainer, built from an EmbeddingMethod spec.

Plain steps over the library: load the model, build the loss and the evaluator for the data's
layout, measure the base model, train, measure again, save a sentence-transformers folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.training.base import RunContext, TrainResult, batch_arguments
from tuneforge.training.checkpoints import AtomicCheckpoints
from tuneforge.training.devices import amp_flags, cuda_capability
from tuneforge.training.spec import EmbeddingMethod, EmbeddingMethodParams
from tuneforge.training.unpadding import skip_padding

if TYPE_CHECKING:
    from tuneforge.training.callbacks import Reporter


def load_model(location: str, device: str, max_seq_length: int | None = None) -> Any:
    """A SentenceTransformer from a local folder or Hub id: safetensors only, no remote code."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        location, device=device, trust_remote_code=False, model_kwargs={"use_safetensors": True}
    )
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def embedding_dimension(location: str) -> int | None:
    """The size of a model's embeddings: read from its modules' configs where they say it
    (Transformer, Pooling, Dense, Normalize), else the model is loaded on the CPU to find
    out; remembered."""
    if location not in _DIMENSIONS:
        size = _configured_dimension(Path(location))
        if size is None:
            size = load_model(location, "cpu").get_embedding_dimension()
        _DIMENSIONS[location] = size
    return _DIMENSIONS[location]


def _configured_dimension(folder: Path) -> int | None:
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        size = None
        for module in modules:
            kind = str(module["type"]).rsplit(".", 1)[-1]
            if kind in ("Transformer", "Normalize"):
                continue
            config = json.loads((folder / module["path"] / "config.json").read_text("utf-8"))
            if kind == "Pooling":
                modes = [k for k, v in config.items() if k.startswith("pooling_mode_") and v]
                if any(not isinstance(config[k], bool) for k in modes) or not modes:
                    return None
                size = int(config["word_embedding_dimension"]) * len(modes)
            elif kind == "Dense":
                size = int(config["out_features"])
            else:
                return None
        return size
    except (OSError, ValueError, KeyError, TypeError):
        return None


_DIMENSIONS: dict[str, int | None] = {}


def build_loss(model: Any, params: EmbeddingMethodParams, layout: str, world_size: int = 1) -> Any:
    """The spec's loss (the data's default when it names none), wrapped in MatryoshkaLoss
    with `matryoshka_dims`. With several processes, in-batch negatives are gathered from all
    of them, so that N processes with batch B train like one with batch N×B."""
    from sentence_transformers.sentence_transformer import losses

    loss = _base_loss(model, params, params.loss_for(layout), world_size)
    if params.matryoshka_dims:
        return losses.MatryoshkaLoss(model, loss, matryoshka_dims=params.matryoshka_dims)
    return loss


def _base_loss(model: Any, params: EmbeddingMethodParams, name: str, world_size: int) -> Any:
    from sentence_transformers.sentence_transformer import losses

    hp = params.hyperparameters
    gather = world_size > 1
    match name:
        case "mnrl":
            return losses.MultipleNegativesRankingLoss(model, gather_across_devices=gather)
        case "cached_mnrl":
            return losses.CachedMultipleNegativesRankingLoss(
                model, mini_batch_size=hp.mini_batch_size, gather_across_devices=gather
            )
        case "triplet":
            return losses.TripletLoss(model, triplet_margin=hp.triplet_margin)
        case "cosine":
            return losses.CosineSimilarityLoss(model)
        case "cosent":
            return losses.CoSENTLoss(model)
    raise ValueError(name)


def build_evaluator(
    layout: str,
    rows: list[dict[str, Any]],
    batch_size: int,
    matryoshka_dims: list[int] | None = None,
) -> Any:
    """The evaluator that fits the layout: Spearman for scored pairs, accuracy for triplets,
    retrieval (MRR@10, NDCG@10, Recall@1/10) for pairs. With `matryoshka_dims`, the same
    again on embeddings cut to each size (metrics `dim_<size>_<metric>`); the primary metric
    stays the full embedding's."""
    from sentence_transformers.sentence_transformer import evaluation

    if not matryoshka_dims:
        return _evaluator(layout, rows, batch_size, None)
    parts = [_evaluator(layout, rows, batch_size, None)]
    parts += [_evaluator(layout, rows, batch_size, d) for d in matryoshka_dims]

    class EachSize(evaluation.SequentialEvaluator):  # type: ignore[misc]
        """The evaluators in turn; the full size's primary metric ranks the model (known
        once it has run, as sentence-transformers' evaluators set it then)."""

        def __call__(self, *args: Any, **kwargs: Any) -> dict[str, float]:
            results = super().__call__(*args, **kwargs)
            results.pop("sequential_score", None)
            self.primary_metric = self.evaluators[0].primary_metric
            return dict(results)

    combined = EachSize(parts)
    combined.primary_metric = PRIMARY_METRICS[layout]
    return combined


def _evaluator(layout: str, rows: list[dict[str, Any]], batch_size: int, dim: int | None) -> Any:
    from sentence_transformers.sentence_transformer import evaluation

    name = f"dim_{dim}" if dim else ""
    if layout == "scored_pair":
        return evaluation.EmbeddingSimilarityEvaluator(
            [r["sentence1"] for r in rows],
            [r["sentence2"] for r in rows],
            [r["score"] for r in rows],
            batch_size=batch_size,
            name=name,
            truncate_dim=dim,
        )
    if layout in ("triplet", "n_tuple"):  # an n-tuple's first negative (mined: the hardest)
        return evaluation.TripletEvaluator(
            [r["anchor"] for r in rows],
            [r["positive"] for r in rows],
            [r["negative"] if layout == "triplet" else r["negatives"][0] for r in rows],
            batch_size=batch_size,
            name=name,
            truncate_dim=dim,
        )
    queries = {f"q{i}": r["anchor"] for i, r in enumerate(rows)}
    corpus = {f"d{i}": r["positive"] for i, r in enumerate(rows)}
    relevant = {f"q{i}": {f"d{i}"} for i in range(len(rows))}
    return evaluation.InformationRetrievalEvaluator(
        queries,
        corpus,
        relevant,
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1, 10],
        precision_recall_at_k=[1, 10],
        map_at_k=[10],
        batch_size=batch_size,
        name=name,
        show_progress_bar=False,
        truncate_dim=dim,
    )


def evaluate(evaluator: Any, model: Any) -> dict[str, float]:
    """Run an evaluator; metric names without the evaluator's prefix."""
    return {k: float(v) for k, v in evaluator(model).items()}


# The metric each layout's evaluator ranks models by (sentence-transformers' primary_metric).
PRIMARY_METRICS = {
    "scored_pair": "spearman_cosine",
    "triplet": "cosine_accuracy",
    "n_tuple": "cosine_accuracy",
    "pair": "cosine_ndcg@10",
}


def primary_metric(layout: str) -> str:
    """The metric that ranks models on data of `layout`."""
    return PRIMARY_METRICS[layout]


def greater_is_better(metric: str) -> bool:
    """Higher is better for every metric of the evaluators; lower for the trainer's loss."""
    return metric.removeprefix("eval_") != "loss"


def evaluate_model(
    model_location: str, layout: str, rows: list[dict[str, Any]], device: str
) -> dict[str, float]:
    """Metrics of a saved model on rows of `layout`: Spearman/Pearson of cosine similarity
    for scored pairs, triplet accuracy, or retrieval (MRR@10, NDCG@10, accuracy/recall@1/10)
    for pairs, each question against the pool of all positives."""
    model = load_model(model_location, device)
    return evaluate(build_evaluator(layout, rows, batch_size=32), model)


def to_dataset(layout: str, rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    from tuneforge.datasets.embedding import LAYOUTS

    if layout == "n_tuple":  # the negatives as columns negative_1 … negative_n
        count = len(rows[0]["negatives"]) if rows else 0
        table = {c: [r[c] for r in rows] for c in ("anchor", "positive")}
        for i in range(count):
            table[f"negative_{i + 1}"] = [r["negatives"][i] for r in rows]
        return Dataset.from_dict(table)
    columns = LAYOUTS[layout]
    return Dataset.from_dict({c: [r[c] for r in rows] for c in columns})


def run(ctx: RunContext) -> TrainResult:
    """The `embedding` kind, as the job runner calls it."""
    assert isinstance(ctx.spec.method, EmbeddingMethod)
    return train_embedding(
        model_location=ctx.model_location,
        params=ctx.spec.method.embedding,
        layout=ctx.data.layout,
        train_rows=ctx.data.train_rows,
        eval_rows=ctx.data.eval_rows,
        seed=ctx.seed,
        device=ctx.device,
        work_dir=ctx.work_dir,
        output_dir=ctx.output_dir,
        reporter=ctx.reporter,
        resume_from=ctx.resume_from,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )


def train_embedding(
    *,
    model_location: str,
    params: EmbeddingMethodParams,
    layout: str,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    seed: int,
    device: str,
    work_dir: Path,
    output_dir: Path,
    reporter: Reporter,
    resume_from: Path | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> TrainResult:
    """Train and save; continue from the checkpoint `resume_from` when given. Stops early
    (no model saved; a checkpoint unless cancelled) when `reporter.stop_reason()` says so.
    In a distributed job (launched once per rank), only rank 0 measures and saves."""
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import set_seed

    from tuneforge.training.callbacks import ReportingCallback

    class CheckpointingTrainer(AtomicCheckpoints, SentenceTransformerTrainer):
        pass

    hp = params.hyperparameters
    set_seed(seed)
    model = load_model(model_location, device, hp.max_seq_length)
    loss = build_loss(model, params, layout, world_size)
    evaluator = (
        build_evaluator(layout, eval_rows, hp.batch_size, params.matryoshka_dims)
        if eval_rows
        else None
    )
    result = TrainResult(primary_metric=None)
    main = rank == 0
    if evaluator is not None and not main:
        result.primary_metric = str(evaluator.primary_metric)
    elif evaluator is not None:
        # The base model is measured once per job; a resumed run reads that measurement.
        baseline_file = work_dir / "baseline.json"
        if baseline_file.is_file():
            saved = json.loads(baseline_file.read_text())
            result.baseline, result.primary_metric = saved["metrics"], saved["primary_metric"]
        else:
            result.baseline = evaluate(evaluator, model)
            result.primary_metric = str(evaluator.primary_metric)
            baseline_file.write_text(
                json.dumps({"metrics": result.baseline, "primary_metric": result.primary_metric})
            )
            reporter.metrics(0, {f"eval_{k}": v for k, v in result.baseline.items()})

    in_batch_negatives = params.loss_for(layout) in ("mnrl", "cached_mnrl")
    evaluate_by = ("steps" if hp.eval_steps else "epoch") if eval_rows else "no"
    # The best model can only be kept when every evaluation has a checkpoint to go back to.
    keep_best = hp.keeps_best_model and evaluator is not None
    save_steps = hp.checkpoint_steps or (hp.eval_steps if keep_best else None)
    amp = amp_flags(hp.use_amp, cuda_capability() if device == "cuda" else None)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work_dir / "checkpoints"),
        num_train_epochs=hp.n_epochs,
        **batch_arguments(hp.batch_size, world_size),
        # Sentence-transformers lets a process's last batch be smaller or missing; gathered
        # negatives need equal slices on every process, so a distributed run leaves out an
        # incomplete last global batch.
        dataloader_drop_last=world_size > 1,
        learning_rate=hp.learning_rate,
        warmup_ratio=hp.warmup_ratio if hp.warmup_steps is None else 0.0,
        warmup_steps=hp.warmup_steps or 0,
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        lr_scheduler_type=hp.lr_scheduler,
        seed=seed,
        data_seed=seed,
        logging_steps=hp.logging_steps,
        eval_strategy=evaluate_by,
        eval_steps=hp.eval_steps,
        save_strategy="steps" if save_steps else "epoch",
        save_steps=save_steps or 500,
        load_best_model_at_end=keep_best,
        metric_for_best_model=f"eval_{result.primary_metric}" if keep_best else None,
        greater_is_better=True if keep_best else None,
        dataloader_num_workers=hp.dataloader_num_workers,
        save_total_limit=3,
        bf16=amp["bf16"],
        fp16=amp["fp16"],
        use_cpu=device == "cpu",
        report_to=[],
        disable_tqdm=True,
        # Duplicates inside a batch would be false negatives for in-batch-negative losses.
        batch_sampler=(
            BatchSamplers.NO_DUPLICATES if in_batch_negatives else BatchSamplers.BATCH_SAMPLER
        ),
    )
    trainer = CheckpointingTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(layout, train_rows),
        eval_dataset=to_dataset(layout, eval_rows) if eval_rows else None,
        loss=loss,
        evaluator=evaluator,
        callbacks=[ReportingCallback(reporter, hp.batch_size * world_size)],
    )
    with skip_padding(model, hp.skip_padding):
        trained = result.train(trainer, reporter, resume_from)
    if not trained or not main:
        return result
    if evaluator is not None:
        result.evaluation = evaluate(evaluator, model)
    # Best-model selection counts the base model (step 0) too.
    if result.keep(trainer, keep_best, base_counts=True):
        model = load_model(model_location, device, hp.max_seq_length)
    if evaluator is not None and params.matryoshka_dims:
        full = model.get_embedding_dimension()
        result.details["matryoshka"] = matryoshka_table(result, full, params.matryoshka_dims)
    model.save(str(output_dir), safe_serialization=True)
    return result


def matryoshka_table(result: TrainResult, full: int, dims: list[int]) -> list[dict[str, Any]]:
    """The primary metric at the full size and at each Matryoshka size, base and tuned."""
    key = str(result.primary_metric)
    table: list[dict[str, Any]] = [{"dimensions": full, "metric": key}]
    table += [{"dimensions": d, "metric": f"dim_{d}_{key}"} for d in dims if d != full]
    for entry in table:
        entry["base_model"] = result.baseline.get(entry["metric"])
        entry["fine_tuned_model"] = result.evaluation.get(entry["metric"])
    return table
