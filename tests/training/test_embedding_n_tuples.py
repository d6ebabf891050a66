"""Embedding n-tuples (anchor, positive, negative_1 … negative_n), as hard-negative mining
writes them: read and checked line by line, and trained on with in-batch negatives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training.conftest import RecordingReporter
from tuneforge.datasets.embedding import read_embedding_file
from tuneforge.training import embedding
from tuneforge.training.base import JobData, RunContext
from tuneforge.training.spec import JobCreate

TOPICS = [
    ("How do I reset my password?", "Use the 'forgot password' link on the login page."),
    ("When does the store open?", "The store opens at nine every morning."),
    ("Can I pay by card?", "We take all major credit and debit cards."),
    ("Where is my parcel?", "Track your parcel with the number in your e-mail."),
    ("How do I cancel my order?", "Orders can be cancelled from your account page."),
    ("Do you ship abroad?", "We ship to every country in the European Union."),
    ("Is there a student discount?", "Students get ten percent off with a valid ID."),
    ("How long is the warranty?", "Every device has a two-year warranty."),
]


def n_tuples(count: int = 3) -> list[dict[str, str]]:
    rows = []
    for i, (anchor, positive) in enumerate(TOPICS):
        others = [p for j, (_, p) in enumerate(TOPICS) if j != i]
        rows.append({"anchor": anchor, "positive": positive,
                     **{f"negative_{n + 1}": others[n] for n in range(count)}})
    return rows


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_n_tuples_read_with_their_negatives_and_a_short_row_is_named(tmp_path: Path) -> None:
    good = read_embedding_file(write(tmp_path / "good.jsonl", n_tuples()), "jsonl", min_rows=2)
    assert good.valid and good.layout == "n_tuple"
    assert good.rows[0]["negatives"] == [TOPICS[1][1], TOPICS[2][1], TOPICS[3][1]]
    assert good.report["statistics"]["negatives_per_row"] == 3
    rows = n_tuples()
    del rows[4]["negative_3"]
    rows[6]["negative_2"] = 7
    bad = read_embedding_file(write(tmp_path / "bad.jsonl", rows), "jsonl", min_rows=2)
    assert not bad.valid
    found = {(p["line"], p["code"]) for p in bad.report["problems"]}
    assert found == {(5, "negative_count"), (7, "wrong_type")}


@pytest.mark.slow
def test_an_embedding_job_trains_on_n_tuples(model_id: str, tmp_path: Path) -> None:
    from tuneforge.registry.models import cached_snapshot

    rows = read_embedding_file(write(tmp_path / "t.jsonl", n_tuples()), "jsonl", min_rows=2).rows
    spec = JobCreate.model_validate({
        "model": model_id, "training_file": "file-x", "seed": 1, "device": "cpu",
        "method": {"type": "embedding", "embedding": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 4}}},
    })
    assert spec.method.embedding.loss_for("n_tuple") == "mnrl"
    ctx = RunContext(
        spec=spec, data=JobData("n_tuple", rows, rows[:4], "file"),
        model_location=str(cached_snapshot(model_id)), device="cpu", seed=1,
        work_dir=tmp_path / "work", output_dir=tmp_path / "model",
        reporter=RecordingReporter(), resume_from=None,
    )
    ctx.work_dir.mkdir()
    result = embedding.run(ctx)
    assert result.steps == 2  # 8 rows, 4 a batch
    # Measured before and after on the first (hardest) negative: triplet accuracy.
    assert result.primary_metric == "cosine_accuracy"
    assert 0.0 <= result.evaluation["cosine_accuracy"] <= 1.0
    assert "cosine_accuracy" in result.baseline
    assert (ctx.output_dir / "modules.json").is_file()
