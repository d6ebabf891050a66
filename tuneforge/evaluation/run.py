"""The job process's side of an evaluation: read the rows, measure, store the result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tuneforge.config import Settings
from tuneforge.db.store import Row, Store
from tuneforge.errors import JobCancelledError
from tuneforge.evaluation.graded import (
    PRIMARY_METRIC,
    check_grader,
    check_references,
    graded_metrics,
    prompt_rows,
)
from tuneforge.jobs.data import JobInputs, load_job_data, read_job_file
from tuneforge.jobs.reporting import JobReporter
from tuneforge.jobs.status import JobStatus, StopReason
from tuneforge.registry.models import resolve_model
from tuneforge.training.kinds import KINDS
from tuneforge.training.spec import JobCreate


def evaluation_rows(
    store: Store, settings: Settings, spec: dict[str, Any]
) -> tuple[str, list[dict[str, Any]], str]:
    """(layout, rows, where from) of an evaluation's data."""
    if spec.get("training_job"):
        job = store.require_job(spec["training_job"])
        job_spec = JobCreate.model_validate(job["spec"])
        assert job_spec.seed is not None
        data = load_job_data(JobInputs(store, settings, job_spec), job_spec.seed)
        return data.layout, data.eval_rows, f"validation split of {job['id']}"
    model_job = _job_of_model(store, spec["model"])
    base = model_job["spec"] if model_job else {"model": spec["model"]}
    reading = JobCreate.model_validate(
        dict(
            base,
            model=base["model"],
            training_file=spec["file_id"],
            training_files=None,
            validation_file=None,
            method=base.get("method") or {"type": spec["kind"]},
        )
    )
    read = read_job_file(
        JobInputs(store, settings, reading), spec["file_id"], "file_id", for_training=False
    )
    return str(read.layout), read.rows, f"file {spec['file_id']}"


def _job_of_model(store: Store, model: str) -> Row | None:
    row = store.get_model(model)
    if row is None or not row.get("job_id"):
        return None
    return store.get_job(row["job_id"])


def run_evaluation(
    store: Store, settings: Settings, job: Row, reporter: JobReporter, device: str
) -> None:
    """Measure the model (and baseline) on the rows, then end the job with the result."""
    spec = job["spec"]
    kind = spec["kind"]
    layout, rows, source = evaluation_rows(store, settings, spec)
    reporter.note(f"Evaluating on {len(rows)} rows ({layout}, {source}) on {device}.")
    measure = KINDS[kind]
    evaluate: Callable[[str, str, list[dict[str, Any]], str], dict[str, float]]
    evaluate = measure.evaluate_model
    primary = measure.primary_metric(layout)
    if spec.get("grader") is not None:
        grader = check_grader(store, settings, spec["grader"], kind, "grader")
        rows = prompt_rows(kind, rows)
        check_references(grader, rows, "grader")
        primary = PRIMARY_METRIC

        def graded(location: str, _: str, rows: list[Any], device: str) -> dict[str, float]:
            return graded_metrics(
                store, settings, grader, location, rows, device, spec["max_new_tokens"]
            )

        evaluate = graded

    results: dict[str, Any] = {}
    for role in ("model", "baseline_model"):
        name = spec.get(role)
        if name is None:
            continue
        location = resolve_model(store, settings, name).location
        metrics = evaluate(location, layout, rows, device)
        results[role] = {"id": name, "metrics": metrics}
        reporter.note(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if reporter.stop_reason() == StopReason.CANCELLED:  # (a lost lease raises here)
            raise JobCancelledError("Cancelled.")
    model_metrics = results["model"]["metrics"]
    base_metrics = results.get("baseline_model", {}).get("metrics", {})
    result = {
        "kind": kind,
        "layout": layout,
        "rows": len(rows),
        "data": source,
        "primary_metric": primary,
        "model": results["model"],
        "baseline": results.get("baseline_model"),
        "delta": {
            k: model_metrics[k] - base_metrics[k] for k in model_metrics if k in base_metrics
        },
    }
    summary = f"{primary} {model_metrics.get(primary, float('nan')):.4f}"
    if primary in base_metrics:
        summary += f" vs {base_metrics[primary]:.4f} (baseline)"
    store.transition(
        job["id"],
        JobStatus.SUCCEEDED,
        f"Evaluation done: {summary}.",
        expected={JobStatus.RUNNING},
        lease=reporter.lease,
        result=result,
    )
