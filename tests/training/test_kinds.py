"""The table of training kinds: every kind a job spec takes has its module, and each kind says
which way its metrics rank models."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tuneforge.training.kinds import KINDS, better_by
from tuneforge.training.spec import JobCreate

HEAVY = ("torch", "transformers", "peft", "trl", "sentence_transformers", "datasets")


def test_every_kind_of_the_spec_is_in_the_table() -> None:
    schema = JobCreate.model_json_schema()
    methods = [ref["$ref"].split("/")[-1] for ref in schema["properties"]["method"]["oneOf"]]
    types = [schema["$defs"][m]["properties"]["type"]["const"] for m in methods]
    assert sorted(types) == sorted(KINDS)


@pytest.mark.parametrize(
    ("kind", "layout", "primary", "higher_is_better"),
    [
        ("embedding", "scored_pair", "spearman_cosine", True),
        ("embedding", "pair", "cosine_ndcg@10", True),
        ("classification", "classification", "f1_macro", True),
        ("supervised", "chat", "loss", False),
        ("dpo", "preference", "preference_accuracy", True),
        ("reinforcement", "reinforcement", "reward_mean", True),
        ("reranker", "labeled_pair", "spearman", True),
        ("reranker", "ranking", "ndcg@10", True),
    ],
)
def test_each_kind_ranks_its_primary_metric(
    kind: str, layout: str, primary: str, higher_is_better: bool
) -> None:
    assert KINDS[kind].primary_metric(layout) == primary
    assert KINDS[kind].greater_is_better(primary) is higher_is_better
    gain = better_by(KINDS[kind], primary, new=0.6, old=0.5)
    assert gain == pytest.approx(0.1 if higher_is_better else -0.1)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_loss_is_better_lower_in_every_kind(kind: str) -> None:
    assert not KINDS[kind].greater_is_better("loss")
    assert not KINDS[kind].greater_is_better("eval_loss")
    assert better_by(KINDS[kind], "eval_loss", new=0.2, old=0.5) == pytest.approx(0.3)


def test_supervised_metrics_both_ways() -> None:
    supervised = KINDS["supervised"]
    assert not supervised.greater_is_better("perplexity")
    assert not supervised.greater_is_better("eval_perplexity")
    assert supervised.greater_is_better("token_accuracy")


def test_the_table_loads_no_training_library() -> None:
    """The API, the worker and the study driver read the table: it must not import torch or
    transformers (the kinds import them when they train or measure)."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, tuneforge.training.kinds; "
         f"print([m for m in {HEAVY!r} if m in sys.modules])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert loaded == "[]"
