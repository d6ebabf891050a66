"""The `reranker` kind: sentence-transformers' CrossEncoderTrainer, built from a RerankerMethod
spec (see `training.reranker_spec` for the losses and `datasets.reranker` for the layouts).

Plain steps over the library: load the cross-encoder (an embedding model's weights, such as
all-MiniLM-L6-v2's, start one with a fresh one-label head), build the loss and the evaluation
for the data's layout, measure the base model, train, measure again, save a CrossEncoder
folder.

The evaluation reranks a candidate list per validation query and reports NDCG@10, MRR@10 and
MAP, beside the same metrics without reranking (`no_reranking_…`): the retriever's order when
the job names one, else the query's own candidates (its positive and negatives, or its labeled
documents) in a shuffled order. Labeled pairs are also scored by Spearman and Pearson
correlation of the model's scores with the labels.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.training.base import RunContext, TrainResult, batch_arguments
from tuneforge.training.checkpoints import AtomicCheckpoints
from tuneforge.training.devices import amp_flags, cuda_capability
from tuneforge.training.reranker_spec import RerankerMethod, RerankerMethodParams
from tuneforge.training.unpadding import skip_padding

if TYPE_CHECKING:
    from tuneforge.training.callbacks import Reporter

# Labeled documents at or above this (labels scaled to [0, 1]) are relevant to their query.
RELEVANT = 0.5
AT_K = 10
PRIMARY_METRICS = {"labeled_pair": "spearman", "ranking": f"ndcg@{AT_K}"}


def load_model(location: str, device: str, max_seq_length: int | None = None) -> Any:
    """A CrossEncoder with one output (a relevance score) from a local folder or Hub id:
    a saved cross-encoder as it is, any other encoder with a fresh head. Safetensors only, no
    remote code."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(
        location,
        num_labels=1,
        max_length=max_seq_length,
        device=device,
        trust_remote_code=False,
        model_kwargs={"use_safetensors": True},
    )


def primary_metric(layout: str) -> str:
    """The metric that ranks models on data of `layout`."""
    return PRIMARY_METRICS[layout]


def greater_is_better(metric: str) -> bool:
    """Higher is better for every evaluation metric; lower for the trainer's loss."""
    return metric.removeprefix("eval_") != "loss"


def candidate_lists(layout: str, rows: list[dict[str, Any]]) -> list[dict]:
    """One reranking sample per query with a relevant and an irrelevant candidate:
    {query, positive: [...], documents: [...]}, the documents in the order without
    reranking (see the module's docstring). The shuffle is seeded by the query, so that a
    query's baseline order is the same in every job and evaluation."""
    grouped: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for row in rows:
        positives, negatives = grouped[row["query"]]
        if layout == "ranking":
            positives.append(row["positive"])
            negatives.extend(row["negatives"])
        else:
            (positives if row["label"] >= RELEVANT else negatives).append(row["document"])
    retriever = rows[0].get("retriever") if rows else None
    if retriever:
        return _retrieved(grouped, retriever, int(rows[0]["retriever_top_k"]))
    samples = []
    for query, (positives, negatives) in grouped.items():
        if positives and negatives:
            documents = list(dict.fromkeys(positives + negatives))
            random.Random(query).shuffle(documents)
            samples.append({"query": query, "positive": positives, "documents": documents})
    return samples


def _retrieved(
    grouped: dict[str, tuple[list[str], list[str]]], retriever: str, top_k: int
) -> list[dict]:
    """The retriever's top_k of all validation documents for each query with a positive."""
    from sentence_transformers import SentenceTransformer, util

    corpus = list(dict.fromkeys(d for pos, neg in grouped.values() for d in pos + neg))
    queries = [q for q, (pos, _) in grouped.items() if pos]
    model = SentenceTransformer(retriever, device="cpu", trust_remote_code=False)
    hits = util.semantic_search(
        model.encode(queries, convert_to_tensor=True, show_progress_bar=False),
        model.encode(corpus, convert_to_tensor=True, show_progress_bar=False),
        top_k=min(top_k, len(corpus)),
    )
    return [
        {
            "query": q,
            "positive": grouped[q][0],
            "documents": [corpus[int(h["corpus_id"])] for h in found],
        }
        for q, found in zip(queries, hits, strict=True)
    ]


def RerankerEvaluator(  # noqa: N802 - builds an instance of a class defined on first use
    layout: str, rows: list[dict[str, Any]], batch_size: int
) -> Any:
    """Reranking (and for labeled pairs, correlation) metrics of a CrossEncoder, as one
    sentence-transformers evaluator (`primary_metric`, `greater_is_better`)."""
    return _evaluator_class()(layout, rows, batch_size)


@lru_cache(maxsize=1)
def _evaluator_class() -> type:
    # sentence-transformers is imported only when a reranker is measured.
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

    class Evaluator(BaseEvaluator):  # type: ignore[misc]
        def __init__(self, *args: Any) -> None:
            super().__init__()
            _setup(self, *args)

        def __call__(
            self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1
        ) -> dict[str, float]:
            return _measure(self, model)

        def store_metrics_in_model_card_data(self, *args: Any, **kwargs: Any) -> None:
            """Our model card is the registry's (see registry.versions)."""

        def get_config_dict(self) -> dict[str, Any]:
            return {}

    return Evaluator


def _setup(self: Any, layout: str, rows: list[dict[str, Any]], batch_size: int) -> None:
    from sentence_transformers.cross_encoder.evaluation import (
        CrossEncoderCorrelationEvaluator,
        CrossEncoderRerankingEvaluator,
    )

    self.parts = []
    if layout == "labeled_pair":
        self.parts.append(
            CrossEncoderCorrelationEvaluator(
                [[r["query"], r["document"]] for r in rows],
                [r["label"] for r in rows],
                batch_size=batch_size,
                write_csv=False,
            )
        )
    samples = candidate_lists(layout, rows)
    if samples:
        self.parts.append(
            CrossEncoderRerankingEvaluator(
                samples,
                at_k=AT_K,
                always_rerank_positives=not rows[0].get("retriever"),
                batch_size=batch_size,
                write_csv=False,
            )
        )
    self.primary_metric = PRIMARY_METRICS[layout] if samples or layout != "ranking" else None
    self.greater_is_better = True


def _measure(self: Any, model: Any) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for part in self.parts:
        for key, value in part(model).items():
            name = "no_reranking_" + key[len("base_") :] if key.startswith("base_") else key
            metrics[name] = float(value)
    return metrics


def evaluate_model(
    model_location: str, layout: str, rows: list[dict[str, Any]], device: str
) -> dict[str, float]:
    """Metrics of a saved cross-encoder on rows of `layout` (see the module's docstring)."""
    return RerankerEvaluator(layout, rows, batch_size=32)(load_model(model_location, device))


def to_dataset(
    layout: str, loss: str, rows: list[dict[str, Any]], both_orders: bool = False
) -> Any:
    """The training rows in the columns `loss` reads: (query, document, label) pairs for bce
    (with `both_orders`, each pair also as (document, query, label)), (query, positive,
    negative_1 … negative_n) for mnrl, (query, documents, labels) lists for lambda and
    listnet."""
    from datasets import Dataset

    if layout == "labeled_pair":
        if both_orders:
            swapped = [{**r, "query": r["document"], "document": r["query"]} for r in rows]
            rows = [r for pair in zip(rows, swapped, strict=True) for r in pair]
        return Dataset.from_dict({c: [r[c] for r in rows] for c in ("query", "document", "label")})
    if loss == "bce":
        pairs = [
            (r["query"], doc, float(doc == r["positive"]))
            for r in rows
            for doc in [r["positive"], *r["negatives"]]
        ]
        return Dataset.from_dict(
            {k: [p[i] for p in pairs] for i, k in enumerate(("query", "document", "label"))}
        )
    if loss == "mnrl":
        # Every row needs as many negatives: shorter lists repeat their own.
        n = max(len(r["negatives"]) for r in rows)
        columns: dict[str, list[str]] = {"query": [], "positive": []}
        columns.update({f"negative_{i + 1}": [] for i in range(n)})
        for r in rows:
            columns["query"].append(r["query"])
            columns["positive"].append(r["positive"])
            for i in range(n):
                columns[f"negative_{i + 1}"].append(r["negatives"][i % len(r["negatives"])])
        return Dataset.from_dict(columns)
    return Dataset.from_dict(
        {
            "query": [r["query"] for r in rows],
            "documents": [[r["positive"], *r["negatives"]] for r in rows],
            "labels": [[1.0] + [0.0] * len(r["negatives"]) for r in rows],
        }
    )


def build_loss(model: Any, loss: str, params: RerankerMethodParams) -> Any:
    from sentence_transformers.cross_encoder import losses

    match loss:
        case "bce":
            return losses.BinaryCrossEntropyLoss(model)
        case "mnrl":
            return losses.MultipleNegativesRankingLoss(
                model, num_negatives=params.hyperparameters.mnrl_negatives
            )
        case "lambda":
            return losses.LambdaLoss(model)
        case "listnet":
            return losses.ListNetLoss(model)
    raise ValueError(loss)


def run(ctx: RunContext) -> TrainResult:
    """The `reranker` kind, as the job runner calls it."""
    assert isinstance(ctx.spec.method, RerankerMethod)
    return train_reranker(
        model_location=ctx.model_location,
        params=ctx.spec.method.reranker,
        layout=ctx.data.layout,
        train_rows=ctx.data.train_rows,
        eval_rows=ctx.data.eval_rows,
        seed=ctx.seed,
        device=ctx.device,
        work_dir=ctx.work_dir,
        output_dir=ctx.output_dir,
        reporter=ctx.reporter,
        resume_from=ctx.resume_from,
    )


def train_reranker(
    *,
    model_location: str,
    params: RerankerMethodParams,
    layout: str,
    train_rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]],
    seed: int,
    device: str,
    work_dir: Path,
    output_dir: Path,
    reporter: Reporter,
    resume_from: Path | None = None,
) -> TrainResult:
    """Train and save; continue from the checkpoint `resume_from` when given. Stops early
    (no model saved; a checkpoint unless cancelled) when `reporter.stop_reason()` says so."""
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from transformers import set_seed

    from tuneforge.training.callbacks import ReportingCallback

    class CheckpointingTrainer(AtomicCheckpoints, CrossEncoderTrainer):
        pass

    hp = params.hyperparameters
    loss_name = params.loss_for(layout)
    set_seed(seed)
    model = load_model(model_location, device, hp.max_seq_length)
    evaluator = RerankerEvaluator(layout, eval_rows, hp.batch_size) if eval_rows else None
    if evaluator is not None and evaluator.primary_metric is None:
        evaluator = None  # no query with both a relevant and an irrelevant candidate
    result = TrainResult(primary_metric=None, details={"loss": loss_name})
    if evaluator is not None:
        # The base model is measured once per job; a resumed run reads that measurement.
        baseline_file = work_dir / "baseline.json"
        if baseline_file.is_file():
            saved = json.loads(baseline_file.read_text())
            result.baseline, result.primary_metric = saved["metrics"], saved["primary_metric"]
        else:
            result.baseline = evaluator(model)
            result.primary_metric = evaluator.primary_metric
            baseline_file.write_text(
                json.dumps({"metrics": result.baseline, "primary_metric": result.primary_metric})
            )
            reporter.metrics(0, {f"eval_{k}": v for k, v in result.baseline.items()})

    keep_best = hp.keeps_best_model and evaluator is not None
    save_steps = hp.checkpoint_steps or (hp.eval_steps if keep_best else None)
    amp = amp_flags(hp.use_amp, cuda_capability() if device == "cuda" else None)
    args = CrossEncoderTrainingArguments(
        output_dir=str(work_dir / "checkpoints"),
        num_train_epochs=hp.n_epochs,
        **batch_arguments(hp.batch_size, 1),
        learning_rate=hp.learning_rate,
        warmup_ratio=hp.warmup_ratio if hp.warmup_steps is None else 0.0,
        warmup_steps=hp.warmup_steps or 0,
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        lr_scheduler_type=hp.lr_scheduler,
        seed=seed,
        data_seed=seed,
        logging_steps=hp.logging_steps,
        eval_strategy=("steps" if hp.eval_steps else "epoch") if evaluator else "no",
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
        # Duplicates inside a batch would be false negatives for in-batch negatives.
        batch_sampler=(
            BatchSamplers.NO_DUPLICATES if loss_name == "mnrl" else BatchSamplers.BATCH_SAMPLER
        ),
    )
    trainer = CheckpointingTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(layout, loss_name, train_rows, hp.both_orders),
        loss=build_loss(model, loss_name, params),
        evaluator=evaluator,
        callbacks=[ReportingCallback(reporter, hp.batch_size)],
    )
    with skip_padding(model, True):
        trained = result.train(trainer, reporter, resume_from)
    if not trained:
        return result
    if evaluator is not None:
        result.evaluation = evaluator(model)
    # Best-model selection counts the base model (step 0) too.
    if result.keep(trainer, keep_best, base_counts=True):
        model = load_model(model_location, device, hp.max_seq_length)
    model.save(str(output_dir), safe_serialization=True)
    return result
