"""The classification kind: its metrics, class weights, spec, the job's data (stratified split,
validation classes) and, with all-MiniLM-L6-v2, early stopping and multi-label training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from sklearn.metrics import f1_score, precision_score, recall_score
from sklearn.utils.class_weight import compute_class_weight

from tests.datasets.test_classification_validation import SEED_003
from tests.offline_models import MINILM, REVISION
from tuneforge.api.errors import field_path
from tuneforge.config import Settings
from tuneforge.datasets.ingest import ingest_file
from tuneforge.db.store import Store
from tuneforge.errors import InvalidDatasetError
from tuneforge.jobs.data import JobInputs, load_job_data
from tuneforge.training import classification
from tuneforge.training.classification_metrics import (
    class_report,
    majority_predictions,
    metric_values,
    predicted,
)
from tuneforge.training.hyperparameters import ClassificationHyperparameters
from tuneforge.training.spec import JobCreate

from .conftest import RecordingReporter, run_context


def classification_job(**params: object) -> dict:
    return {"model": MINILM, "training_file": "file-x",
            "method": {"type": "classification", "classification": params}}


# -- metrics --------------------------------------------------------------------------------------


def test_metrics_by_hand() -> None:
    # True 0 0 1 2, predicted 0 1 1 1: class 0 P 1 R .5; class 1 P 1/3 R 1; class 2 P 0 R 0.
    values = metric_values(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]))
    assert values["accuracy"] == 0.5
    assert values["precision_macro"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert values["recall_macro"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert values["f1_macro"] == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    assert values["f1_micro"] == values["precision_micro"] == values["recall_micro"] == 0.5
    # Weighted by support 2, 1, 1.
    assert values["f1_weighted"] == pytest.approx((2 * 2 / 3 + 0.5 + 0) / 4)

    report = class_report(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), ["a", "b", "c", "d"])
    # Rows: the true class; columns: the predicted one; "d" is in neither and still listed.
    assert report["confusion_matrix"] == [
        [1, 1, 0, 0],
        [0, 1, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 0, 0],
    ]
    assert report["per_class"][0] == {
        "label": "a", "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert [c["support"] for c in report["per_class"]] == [2, 1, 1, 0]


def test_multi_label_metrics_count_whole_sets_for_accuracy() -> None:
    y_true = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    y_pred = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 0]])
    values = metric_values(y_true, y_pred)
    assert values["accuracy"] == pytest.approx(1 / 3)  # only the first row is wholly right
    for average in ("macro", "micro", "weighted"):
        assert values[f"f1_{average}"] == pytest.approx(
            f1_score(y_true, y_pred, average=average, zero_division=0))
        assert values[f"precision_{average}"] == pytest.approx(
            precision_score(y_true, y_pred, average=average, zero_division=0))
        assert values[f"recall_{average}"] == pytest.approx(
            recall_score(y_true, y_pred, average=average, zero_division=0))
    report = class_report(y_true, y_pred, ["x", "y", "z"])
    # Per class [[tn, fp], [fn, tp]]: class x has one false positive (row 2).
    assert report["confusion_matrix"][0] == [[0, 1], [0, 2]]
    assert report["confusion_matrix"][2] == [[2, 0], [1, 0]]


def test_predictions_from_logits() -> None:
    logits = np.array([[0.2, 1.5, -1.0], [-0.1, -2.0, 0.0]])
    assert predicted(logits, multi_label=False).tolist() == [1, 2]
    # Sigmoid >= 0.5 is logit >= 0.
    assert predicted(logits, multi_label=True).tolist() == [[1, 1, 0], [0, 0, 1]]


def test_majority_baseline_answers_the_most_frequent_training_class() -> None:
    assert majority_predictions([2, 0, 2, 1], 3, multi_label=False).tolist() == [2, 2, 2]
    assert majority_predictions([1, 0, 0, 1], 2, multi_label=False).tolist() == [0, 0]  # tie
    sets = [[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
    assert majority_predictions(sets, 2, multi_label=True).tolist() == [[1, 1], [1, 1]]


def test_balanced_class_weights_are_scikit_learns() -> None:
    ids = [0] * 6 + [1] * 3 + [2]
    expected = compute_class_weight("balanced", classes=np.arange(3), y=np.array(ids))
    assert classification.balanced_weights(ids, 3, multi_label=False) == pytest.approx(expected)
    # Multi-label: each class's positives weigh its negatives over its positives.
    vectors = [[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]
    assert classification.balanced_weights(vectors, 2, multi_label=True) == [1 / 3, 3.0]


def test_weighted_loss_is_the_weighted_mean_cross_entropy() -> None:
    import torch

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    loss = classification.weighted_loss([1.0, 3.0], multi_label=False)({"logits": logits}, labels)
    per_row = -torch.log_softmax(logits, dim=-1)[torch.arange(3), labels]
    expected = (per_row * torch.tensor([1.0, 3.0, 3.0])).sum() / 7.0
    assert float(loss) == pytest.approx(float(expected))


# -- spec -----------------------------------------------------------------------------------------


def test_the_default_learning_rate_follows_the_model_size() -> None:
    hp = ClassificationHyperparameters()
    small = torch.nn.Linear(4000, 4000, device="meta")  # 16M parameters, MiniLM's class
    large = torch.nn.Linear(8000, 8000, device="meta")  # 64M
    assert classification.learning_rate(hp, classification.parameter_count(small)) == 1e-4
    assert classification.learning_rate(hp, classification.parameter_count(large)) == 5e-5
    chosen = ClassificationHyperparameters(learning_rate=3e-5)
    assert classification.learning_rate(chosen, classification.parameter_count(small)) == 3e-5


def test_classification_spec_defaults_and_auto() -> None:
    spec = JobCreate.model_validate(classification_job(
        hyperparameters={"n_epochs": "auto", "learning_rate": "auto"}))
    params = spec.method.classification  # type: ignore[union-attr]
    hp = params.hyperparameters
    assert (hp.n_epochs, hp.learning_rate, hp.metric_for_best_model) == (3, None, "f1_macro")
    assert (hp.class_weights, hp.early_stopping_patience, params.tuning) == ("none", None, "full")
    assert (params.text_column, params.label_column, params.multi_label) == (None, None, False)
    # What ranks classifiers when no job names a metric (evaluations, the registry).
    assert classification.primary_metric("classification") == hp.metric_for_best_model
    # Without `type`, a method is an embedding method, as it was before there were others.
    untyped = JobCreate.model_validate({"model": MINILM, "training_file": "file-x",
                                        "method": {"embedding": {"loss": "cosent"}}})
    assert untyped.method.type == "embedding"


@pytest.mark.parametrize(("params", "path"), [
    ({"hyperparameters": {"metric_for_best_model": "loss"}},
     "method.classification.hyperparameters.metric_for_best_model"),
    ({"hyperparameters": {"class_weights": "inverse"}},
     "method.classification.hyperparameters.class_weights"),
    ({"tuning": "qlora"}, "method.classification.tuning"),
    ({"lora": {"r": 0}}, "method.classification.lora.r"),
    ({"hyperparameters": {"early_stopping_patience": 0}},
     "method.classification.hyperparameters.early_stopping_patience"),
    ({"hyperparameters": {"save_best_model": True, "checkpoint_steps": 10}},
     "method.classification.hyperparameters"),
    ({"loss": "mnrl"}, "method.classification.loss"),
    ({"text_column": ""}, "method.classification.text_column"),
])
def test_classification_spec_refuses_bad_values(params: dict, path: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JobCreate.model_validate(classification_job(**params))
    assert [field_path(e["loc"]) for e in caught.value.errors()] == [path]


def test_unknown_method_type_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        JobCreate.model_validate({"model": MINILM, "training_file": "file-x",
                                  "method": {"type": "regression"}})
    error = caught.value.errors()[0]
    assert field_path(error["loc"]) == "method" and "classification" in error["msg"]


# -- the job's data -------------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> tuple[Store, Settings]:
    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    yield store, settings
    store.dispose()


def upload(store: Store, settings: Settings, name: str, content: str) -> str:
    path = settings.home / name
    path.write_text(content, encoding="utf-8")
    with path.open("rb") as f:
        return ingest_file(store, settings, name, f)["id"]


def test_job_data_is_split_by_class(local: tuple[Store, Settings]) -> None:
    store, settings = local
    lines = ["text,label"] + [f"text {i},{'big' if i < 40 else 'small'}" for i in range(50)]
    file_id = upload(store, settings, "data.csv", "\n".join(lines) + "\n")
    spec = JobCreate.model_validate({**classification_job(), "training_file": file_id})
    data = load_job_data(JobInputs(store, settings, spec), seed=5)
    assert data.layout == "classification" and data.validation_source == "auto-split"
    # 10% held out, 4 of the 40 "big" and 1 of the 10 "small": the shares stay as they were.
    held = [row["label"] for row in data.eval_rows]
    assert sorted(held) == ["big"] * 4 + ["small"]
    assert len(data.train_rows) == 45
    assert load_job_data(JobInputs(store, settings, spec), seed=5).eval_rows == data.eval_rows


def test_named_columns_and_validation_classes_not_in_training(
        local: tuple[Store, Settings]) -> None:
    store, settings = local
    records = [{"utterance": f"u{i}", "intent": "a" if i % 2 else "b"} for i in range(6)]
    train = upload(store, settings, "train.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    held = [{"utterance": "v1", "intent": "a"}, {"utterance": "v2", "intent": "c"},
            {"utterance": "v3", "intent": "c"}]
    valid = upload(store, settings, "valid.jsonl", "".join(json.dumps(r) + "\n" for r in held))
    spec = JobCreate.model_validate({
        **classification_job(text_column="utterance", label_column="intent"),
        "training_file": train, "validation_file": valid})
    with pytest.raises(InvalidDatasetError) as caught:
        load_job_data(JobInputs(store, settings, spec), seed=1)
    error = caught.value
    assert error.param == "validation_file"
    assert [(p["line"], p["code"]) for p in error.details["problems"]] == [
        (2, "unseen_label"), (3, "unseen_label")]

    # The same files without the unseen class serve the job; the columns are the named ones.
    valid = upload(store, settings, "valid2.jsonl", json.dumps(held[0]) + "\n")
    spec = spec.model_copy(update={"validation_file": valid})
    data = load_job_data(JobInputs(store, settings, spec), seed=1)
    assert data.validation_source == "file"
    assert data.eval_rows == [{"text": "v1", "label": "a"}]
    assert data.train_rows[0] == {"text": "u0", "label": "b"}


# -- training -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def minilm(offline_hub: Path) -> Path:
    return offline_hub / "hub" / f"models--{MINILM.replace('/', '--')}" / "snapshots" / REVISION


def seed_003_rows() -> list[dict[str, str]]:
    import csv
    import io

    return [{"text": r["chunk_text"], "label": r["frame_name"]}
            for r in csv.DictReader(io.StringIO(SEED_003))]


@pytest.mark.slow
def test_early_stopping_ends_training_after_patience_evaluations(
        tmp_path: Path, minilm: Path) -> None:
    rows = seed_003_rows()
    reporter = RecordingReporter()
    # A learning rate too small to change any prediction: the metric never improves.
    method = {"type": "classification", "classification": {"hyperparameters": {
        "n_epochs": 20, "batch_size": 4, "learning_rate": 1e-12, "eval_steps": 1,
        "early_stopping_patience": 2, "metric_for_best_model": "accuracy"}}}
    ctx = run_context(tmp_path, minilm, method, rows[:10], rows[10:],
                      layout="classification", reporter=reporter)
    result = classification.run(ctx)
    # The first evaluation sets the best; two without improvement stop the run.
    assert result.steps == 3 and len(reporter.logged("eval_accuracy")) == 3
    # Each of the three evaluations reported a per-class report and confusion matrix, once
    # (the final prediction no longer announces a fourth copy of the last one).
    reports = [data for message, data in reporter.notes if message.startswith("Evaluation:")]
    assert len(reports) == 3 and all("confusion_matrix" in r for r in reports)
    assert not result.stopped_early and result.primary_metric == "accuracy"
    assert set(result.evaluation) == set(result.baseline) == {
        f"{m}_{a}" for m in ("precision", "recall", "f1") for a in ("macro", "micro", "weighted")
    } | {"accuracy"}
    saved = json.loads((ctx.output_dir / "evaluation.json").read_text())
    assert saved["metrics"] == result.evaluation and saved["labels"] == sorted(
        {r["label"] for r in rows[:10]})


@pytest.mark.slow
def test_multi_label_training_learns_label_sets(tmp_path: Path, minilm: Path) -> None:
    import csv

    from tests.conftest import DATA

    with (DATA / "banking77-train.csv").open(encoding="utf-8", newline="") as f:
        wanted = ("card_arrival", "exchange_rate", "lost_or_stolen_phone", "top_up_failed")
        by_class: dict[str, list[str]] = {c: [] for c in wanted}
        for row in csv.DictReader(f):
            if row["category"] in by_class:
                by_class[row["category"]].append(row["text"])
    # A row with two questions carries both of their intents.
    unused = {c: iter(texts) for c, texts in by_class.items()}
    rows: list[dict] = []
    for i in range(60):
        a, b = wanted[i % 4], wanted[(i + 1 + i // 4 % 3) % 4]
        rows.append({"text": next(unused[a]), "labels": [a]})
        rows.append({"text": f"{next(unused[a])} {next(unused[b])}", "labels": [a, b]})
    train, held = rows[:96], rows[96:]
    method = {"type": "classification", "classification": {
        "multi_label": True,
        "hyperparameters": {"n_epochs": 2, "batch_size": 16, "learning_rate": 3e-4,
                            "max_seq_length": 64, "class_weights": "balanced"}}}
    ctx = run_context(tmp_path, minilm, method, train, held,
                      layout="multi_label_classification")
    result = classification.run(ctx)
    assert result.evaluation["f1_micro"] > 0.8
    assert result.evaluation["accuracy"] > result.baseline["accuracy"] + 0.3
    assert len(result.details["confusion_matrix"]) == 4  # one 2x2 matrix per class

    from tuneforge.serving.classifier import Classifier

    tuned = Classifier(ctx.output_dir)
    assert tuned.multi_label and tuned.labels == sorted(wanted)
    text = f"{by_class['card_arrival'][-1]} {by_class['exchange_rate'][-1]}"
    prediction = tuned.predict([text])[0]
    assert set(prediction.labels) == {"card_arrival", "exchange_rate"}
    assert classification.evaluate_model(
        str(ctx.output_dir), "multi_label_classification", held, "cpu"
    ) == pytest.approx(result.evaluation)
