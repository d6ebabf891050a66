"""The training kinds: what the job process asks of each (`Kind`), and the one table that
maps a job's `method.type` to the module that trains and measures it.

| kind             | module                    | primary metric                                  |
|------------------|---------------------------|-------------------------------------------------|
| `embedding`      | `training.embedding`      | spearman_cosine, cosine_accuracy or             |
|                  |                           | cosine_ndcg@10, by layout                       |
| `classification` | `training.classification` | the job's metric_for_best_model (f1_macro)      |
| `supervised`     | `training.supervised`     | loss (lower is better)                          |
| `dpo`            | `training.dpo`            | preference_accuracy                             |
| `reinforcement`  | `training.reinforcement`  | reward_mean (graded validation answers)         |
| `reranker`       | `training.reranker`       | spearman (labeled pairs) or ndcg@10 (ranking)   |

The kinds' modules import their libraries (torch, transformers …) only when they train or
measure, so reading this table costs the API and the worker nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

from tuneforge.training import (
    classification,
    dpo,
    embedding,
    reinforcement,
    reranker,
    supervised,
)
from tuneforge.training.base import RunContext, TrainResult


class Kind(Protocol):
    """A training kind, as the job runner, evaluations and promotion gates use it."""

    def run(self, ctx: RunContext) -> TrainResult:
        """Train (or continue from `ctx.resume_from`), measure, save into `ctx.output_dir`."""
        ...

    def evaluate_model(
        self, model_location: str, layout: str, rows: list[dict[str, Any]], device: str
    ) -> dict[str, float]:
        """Metrics of a saved model of this kind on rows of `layout`."""
        ...

    def primary_metric(self, layout: str) -> str:
        """The metric that ranks this kind's models on data of `layout`."""
        ...

    def greater_is_better(self, metric: str) -> bool:
        """Whether a higher `metric` (or `eval_<metric>`) is the better model."""
        ...


KINDS: dict[str, Kind] = {
    "embedding": embedding,
    "classification": classification,
    "supervised": supervised,
    "dpo": dpo,
    "reinforcement": reinforcement,
    "reranker": reranker,
}


def better_by(kind: Kind, metric: str, new: float, old: float) -> float:
    """How much better `new` is than `old` by `metric` (positive: better), in the direction
    `kind` ranks it."""
    return new - old if kind.greater_is_better(metric) else old - new
