"""The `reranker` kind's spec: a cross-encoder (sentence-transformers' CrossEncoder) trained to
score how relevant a document is to a query. Beside its trainer, `training.reranker`.

| loss      | trains on (see `datasets.reranker`)        | what it optimises                  |
|-----------|--------------------------------------------|------------------------------------|
| `bce`     | labeled pairs; ranking rows (the positive  | each pair's label (binary cross-   |
|           | labeled 1, each negative 0)                | entropy on the logit)              |
| `mnrl`    | ranking rows                               | the positive above its negatives   |
|           |                                            | and other queries' documents       |
| `lambda`  | ranking rows                               | NDCG of each query's list          |
| `listnet` | ranking rows                               | each query's list, as a softmax    |

Without a loss, the data chooses: bce for labeled pairs, mnrl for ranking rows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tuneforge.training.hyperparameters import (
    Epochs,
    Hyperparameters,
    LoaderWorkers,
    Strict,
    UseAmp,
    WarmupSteps,
)

RERANKER_LOSSES = ("bce", "mnrl", "lambda", "listnet")
# Which data layouts each loss trains on.
RERANKER_LOSS_LAYOUTS: dict[str, tuple[str, ...]] = {
    "bce": ("labeled_pair", "ranking"),
    "mnrl": ("ranking",),
    "lambda": ("ranking",),
    "listnet": ("ranking",),
}
# The loss of a job that names none, by its data's layout.
DEFAULT_RERANKER_LOSS = {"labeled_pair": "bce", "ranking": "mnrl"}


class RerankerHyperparameters(Hyperparameters):
    """Hyperparameters of a reranker job. The defaults are the recipe sentence-transformers'
    STS Benchmark cross-encoders were trained with (4 epochs, batch 16, 10% warm-up) with a
    higher learning rate, 2e-4 instead of 2e-5: a fresh head on a small encoder learns faster
    with it (STSb-en dev Spearman, seed 42: 0.8600 with 2e-5, 0.8663 with 1e-4, 0.8678 with
    1.5e-4, 0.8703 with 2e-4, 0.8664 with 3e-4; 2e-4 over three seeds: mean 0.8690, against
    the bi-encoder's 0.8672; bench/reranker.py, bench/README.md). `"auto"` takes the
    default."""

    n_epochs: Epochs = 4
    batch_size: int = Field(
        16, ge=1, le=65536, description="Rows per step (a query with all its documents is one)."
    )
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate (AdamW).")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Share of steps to warm up over.")
    warmup_steps: WarmupSteps = None
    mnrl_negatives: int = Field(
        4,
        ge=1,
        le=256,
        description="mnrl only: documents of other queries in the batch each query is also "
        "ranked against.",
    )
    both_orders: bool = Field(
        False,
        description="Labeled pairs only: also train on each pair with its two texts swapped, "
        "for symmetric tasks (STS, duplicate questions) where either text may come first. A "
        "cross-encoder reads its texts in order; this teaches it both. Doubles the steps per "
        "epoch.",
    )
    use_amp: UseAmp = None
    save_best_model: bool = Field(
        False, description="Keep the weights of the best evaluation, not the last step's."
    )
    dataloader_num_workers: LoaderWorkers = 0

    keep_best_fields = ("save_best_model",)


class RerankerMethodParams(Strict):
    loss: Literal["bce", "mnrl", "lambda", "listnet"] | None = Field(
        None,
        description="bce: labeled pairs or ranking rows; mnrl, lambda, listnet: a query with "
        "its positive and negatives. Default: bce for labeled pairs, mnrl for ranking rows.",
    )
    score_range: tuple[float, float] | None = Field(
        None,
        description="[lowest, highest] a label may be (scaled to [0, 1] for training). "
        "Default: [0, 1], or [0, 5] (the STS Benchmark's scale) when a label is above 1.",
    )
    retriever: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="An embedding model (same names as everywhere: ft:…, NAME@alias, a base "
        "model on this machine). The evaluation then reranks its top retriever_top_k of the "
        "validation documents for each query, and its order is the no-reranking baseline; "
        "without one, each query's own candidates (positive and negatives, or its labeled "
        "documents) are reranked, against their order shuffled.",
    )
    retriever_top_k: int = Field(
        20, ge=2, le=1000, description="Documents the retriever hands the reranker per query."
    )
    hyperparameters: RerankerHyperparameters = Field(default_factory=RerankerHyperparameters)

    @field_validator("score_range")
    @classmethod
    def _rising(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError("the lowest score must be below the highest")
        return value

    def loss_for(self, layout: str) -> str:
        """The loss a job trains with on data of `layout`."""
        return self.loss or DEFAULT_RERANKER_LOSS[layout]


class RerankerMethod(Strict):
    type: Literal["reranker"] = "reranker"
    reranker: RerankerMethodParams = Field(default_factory=RerankerMethodParams)
