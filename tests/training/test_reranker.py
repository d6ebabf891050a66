"""The reranker kind's pieces without a server: candidate lists (the data's, or a retriever's
top-k), the training rows each loss reads, and a short training on STS pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import RecordingReporter
from tuneforge.training.reranker import candidate_lists, to_dataset

ROWS = [
    {"query": "Who wrote Hamlet?", "positive": "Hamlet is a play by William Shakespeare.",
     "negatives": ["Paris is the capital of France.", "Spiders have eight legs."]},
    {"query": "What causes the tides?", "positive": "The Moon's gravity causes the tides.",
     "negatives": ["Water boils at 100 degrees.", "Light is fast.", "Paris is in France."]},
]


def test_the_data_candidates_are_shuffled_the_same_way_in_any_row_order() -> None:
    forward = candidate_lists("ranking", ROWS)
    backward = candidate_lists("ranking", ROWS[::-1])
    assert {s["query"]: s["documents"] for s in forward} == {
        s["query"]: s["documents"] for s in backward}
    first = forward[0]
    assert first["positive"] == [ROWS[0]["positive"]]
    assert sorted(first["documents"]) == sorted([ROWS[0]["positive"], *ROWS[0]["negatives"]])


def test_labeled_pairs_group_by_query_and_skip_queries_without_both_kinds() -> None:
    rows = [
        {"query": "q1", "document": "good", "label": 1.0},
        {"query": "q1", "document": "bad", "label": 0.2},
        {"query": "q2", "document": "only good", "label": 0.9},
    ]
    samples = candidate_lists("labeled_pair", rows)
    assert len(samples) == 1 and samples[0]["positive"] == ["good"]
    assert sorted(samples[0]["documents"]) == ["bad", "good"]


def test_a_retriever_hands_over_its_top_k_of_all_validation_documents(model_id: str) -> None:
    from tuneforge.registry.models import cached_snapshot

    retriever = str(cached_snapshot(model_id))
    rows = [dict(r, retriever=retriever, retriever_top_k=3) for r in ROWS]
    samples = candidate_lists("ranking", rows)
    assert [s["query"] for s in samples] == [r["query"] for r in ROWS]
    for sample, row in zip(samples, ROWS, strict=True):
        assert len(sample["documents"]) == 3
        # all-MiniLM-L6-v2 puts the answer first among these documents.
        assert sample["documents"][0] == row["positive"]


@pytest.mark.parametrize(("loss", "columns"), [
    ("bce", ["query", "document", "label"]),
    ("mnrl", ["query", "positive", "negative_1", "negative_2", "negative_3"]),
    ("lambda", ["query", "documents", "labels"]),
    ("listnet", ["query", "documents", "labels"]),
])
def test_each_loss_gets_the_columns_it_reads(loss: str, columns: list[str]) -> None:
    dataset = to_dataset("ranking", loss, ROWS)
    assert dataset.column_names == columns
    if loss == "bce":
        assert len(dataset) == 7 and sum(dataset["label"]) == 2
    if loss == "mnrl":  # the shorter list repeats its own negatives
        assert dataset[0]["negative_3"] == ROWS[0]["negatives"][0]
    if loss in ("lambda", "listnet"):
        assert dataset[1]["labels"] == [1.0, 0.0, 0.0, 0.0]


def test_both_orders_adds_each_labeled_pair_swapped() -> None:
    rows = [{"query": "a cat sits", "document": "a cat is sitting", "label": 0.9},
            {"query": "it rains", "document": "stocks fell", "label": 0.0}]
    plain = to_dataset("labeled_pair", "bce", rows)
    assert list(zip(plain["query"], plain["document"], strict=True)) == [
        ("a cat sits", "a cat is sitting"), ("it rains", "stocks fell")]
    both = to_dataset("labeled_pair", "bce", rows, both_orders=True)
    assert sorted(zip(both["query"], both["document"], both["label"], strict=True)) == sorted([
        ("a cat sits", "a cat is sitting", 0.9), ("a cat is sitting", "a cat sits", 0.9),
        ("it rains", "stocks fell", 0.0), ("stocks fell", "it rains", 0.0)])


def test_a_reranker_learns_sts_pairs(model_id: str, tmp_path: Path) -> None:
    from tests.conftest import DATA
    from tuneforge.datasets.reranker import read_reranker_file
    from tuneforge.registry.models import cached_snapshot
    from tuneforge.training.reranker import evaluate_model, train_reranker
    from tuneforge.training.reranker_spec import RerankerMethodParams

    train = read_reranker_file(DATA / "stsb-en-train.csv", "csv", min_rows=1).rows[:320]
    dev = read_reranker_file(DATA / "stsb-en-dev.csv", "csv", min_rows=1).rows[:300]
    params = RerankerMethodParams.model_validate(
        {"hyperparameters": {"n_epochs": 1, "max_seq_length": 64}})
    result = train_reranker(
        model_location=str(cached_snapshot(model_id)), params=params, layout="labeled_pair",
        train_rows=train, eval_rows=[], seed=7, device="cpu", work_dir=tmp_path / "job",
        output_dir=tmp_path / "model", reporter=RecordingReporter(),
    )
    assert result.steps == 20
    # A fresh head scores at random (Spearman near 0); 20 steps at the default rate already
    # rank the pairs (0.65 at the old 1e-4).
    spearman = evaluate_model(str(tmp_path / "model"), "labeled_pair", dev, "cpu")["spearman"]
    assert spearman > 0.7, spearman  # 0.81 measured with the defaults
