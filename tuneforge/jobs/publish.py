"""Publishing a finished job: the model moved into place, registered as a new version, an
alias moved by the promotion gate, and the job succeeded, all in one fenced transaction.

No other process can take the job over between the move and the commit, and the model, its
version and its files appear together or not at all.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from tuneforge.config import Settings
from tuneforge.db.store import Row, Store
from tuneforge.jobs.reporting import JobReporter
from tuneforge.jobs.status import JobStatus
from tuneforge.registry.versions import prepare_version, registry_name
from tuneforge.training.base import JobData, TrainResult
from tuneforge.training.kinds import Kind, better_by
from tuneforge.training.spec import JobCreate


def evaluation_of(result: TrainResult) -> dict[str, Any]:
    """Base model vs fine-tuned model on the job's validation split, with deltas."""
    return {
        "primary_metric": result.primary_metric,
        "base_model": result.baseline,
        "fine_tuned_model": result.evaluation,
        "delta": {
            k: result.evaluation[k] - result.baseline[k]
            for k in result.evaluation
            if k in result.baseline
        },
    }


def base_comparison(kind: Kind, result: TrainResult) -> dict[str, Any] | None:
    """How the kept model compares with its base on the validation split's primary metric:
    `worse_than_base`, the gain (positive: better), and which weights the run kept. None
    without a primary metric measured on both."""
    key = result.primary_metric
    if not key or key not in result.evaluation or key not in result.baseline:
        return None
    new, old = result.evaluation[key], result.baseline[key]
    gain = better_by(kind, key, new, old)
    kept = result.details.get("kept") or {}
    comparison: dict[str, Any] = {
        "metric": key,
        "base_model": old,
        "fine_tuned_model": new,
        "gain": gain,
        "worse_than_base": gain < 0,
        "kept": kept.get("model"),
    }
    if gain < 0:
        comparison["warning"] = (
            f"The fine-tuned model scores below its base on the validation split: {key} "
            f"{new:.4f} vs {old:.4f} (base). No alias moves to it without force; try "
            "another learning rate or more data, or save_best_model to keep the base's "
            "weights when no checkpoint beats them."
        )
    elif kept.get("model") == "base":
        comparison["warning"] = (
            f"The base model was best on the validation split ({key} {old:.4f}; no "
            "checkpoint beat it): best-model selection kept the base model's weights, "
            "registered unchanged as this job's model."
        )
    return comparison


def promotion_gate(
    store: Store,
    settings: Settings,
    spec: JobCreate,
    result: TrainResult,
    kind: Kind,
    data: JobData,
    device: str,
    saved: Path,
) -> dict[str, Any] | None:
    """Decide whether the new version takes the alias: it must beat the version the alias
    points at or, without one, the base model, by `min_delta`. None when the job asks for no
    gate. With `promote.grader` the models are compared by the grader's `reward_mean`
    (`evaluation.graded`), the new one loaded from `saved`.

    Against a version, both models are measured now, the same way: loaded from their folders
    (the new one from `saved`) in the kind's serving precision, on this job's validation
    rows. (The job's own measurement may be of a 4-bit model: a QLoRA model would otherwise
    be judged quantized against an unquantized old version.) Against the base model, the
    job's two measurements compare, made the same way during training. A model worse than
    its base passes only with a negative `min_delta`, the explicit override. The caller frees
    the trainer's memory first."""
    if spec.promote is None:
        return None
    gate = spec.promote
    name = registry_name(spec)
    if gate.grader is not None:
        result, kind = _graded(store, settings, spec, data, device, saved)
    metric = gate.metric or result.primary_metric
    decision: dict[str, Any] = {
        "alias": gate.alias,
        "metric": metric,
        "min_delta": gate.min_delta,
        "promote": False,
    }
    if not metric or metric not in result.evaluation:
        decision["reason"] = f"the job has no {metric or 'primary'} metric (no validation data?)"
        return decision
    current = store.alias_version(name, gate.alias)
    new = result.evaluation[metric]
    if current is not None:
        version = store.get_version(name, current)
        assert version is not None
        old_metrics = kind.evaluate_model(
            str(settings.home / version["path"]), data.layout, data.eval_rows, device
        )
        new_metrics = kind.evaluate_model(str(saved), data.layout, data.eval_rows, device)
        if metric not in new_metrics:
            decision["reason"] = f"the new model has no {metric} on this data"
            return decision
        new = new_metrics[metric]
        against = f"{name} version {current}"
    else:
        old_metrics = result.baseline
        against = "the base model"
    if metric not in old_metrics:
        decision["reason"] = f"{against} has no {metric} on this data"
        return decision
    old = old_metrics[metric]
    gain = better_by(kind, metric, new, old)
    base = base_comparison(kind, result)
    if base is not None and base["worse_than_base"] and gate.min_delta >= 0:
        decision.update(new=new, old=old, against=against, against_version=current, gain=gain)
        decision["reason"] = (
            f"the fine-tuned model is worse than its base ({base['metric']} "
            f"{base['fine_tuned_model']:.4f} vs {base['base_model']:.4f})"
        )
        return decision
    decision.update(
        new=new,
        old=old,
        against=against,
        against_version=current,
        gain=gain,
        promote=gain >= gate.min_delta,
    )
    return decision


class _Graded:
    """A kind for the gate that compares by a grader: `measure(location)` gives a model's
    metrics, and higher rewards are better."""

    def __init__(self, measure: Any):
        self.measure = measure

    def greater_is_better(self, metric: str) -> bool:
        return metric != "answer_tokens"

    def evaluate_model(
        self, model_location: str, layout: str, rows: list[dict[str, Any]], device: str
    ) -> dict[str, float]:
        return dict(self.measure(model_location))


def _graded(
    store: Store, settings: Settings, spec: JobCreate, data: JobData, device: str, new: Path
) -> tuple[TrainResult, Any]:
    """The new model and the base model measured with the gate's grader, as a TrainResult,
    and the kind that measures the alias's version alike."""
    from tuneforge.evaluation.graded import PRIMARY_METRIC, graded_metrics, prompt_rows
    from tuneforge.graders.spec import parse_grader
    from tuneforge.registry.models import resolve_model

    assert spec.promote is not None and spec.promote.grader is not None
    grader = parse_grader(spec.promote.grader, "promote.grader")
    rows = prompt_rows(spec.method.type, data.eval_rows)

    def measure(location: str | Path) -> dict[str, float]:
        return graded_metrics(store, settings, grader, location, rows, device)

    graded = TrainResult(primary_metric=PRIMARY_METRIC if rows else None)
    if rows:
        graded.evaluation = measure(new)
        graded.baseline = measure(resolve_model(store, settings, spec.model).location)
    return graded, _Graded(measure)


def publish(
    store: Store,
    settings: Settings,
    job: Row,
    spec: JobCreate,
    reporter: JobReporter,
    staging: Path,
    result: TrainResult,
    model_id: str,
    gate: dict[str, Any] | None,
    kind: Kind,
) -> None:
    """Move the model into place, register its version, apply the gate, end the job."""
    job_id, lease = job["id"], reporter.lease
    final = settings.models_dir / job_id
    relative = str(final.resolve().relative_to(settings.home.resolve()))
    evaluation = evaluation_of(result)
    job_result = {
        "train_loss": result.train_loss,
        "steps": result.steps,
        "evaluation": evaluation,
        "model_path": final.name,
        **result.details,
    }
    comparison = base_comparison(kind, result)
    if comparison is not None:
        job_result["worse_than_base"] = comparison["worse_than_base"]
        job_result["base_comparison"] = comparison
        evaluation["worse_than_base"] = comparison["worse_than_base"]
    version_row = prepare_version(
        store,
        job=job,
        spec=spec,
        model_id=model_id,
        folder=staging,
        relative_path=relative,
        result=job_result,
        metrics=store.require_job(job_id).get("metrics"),
    )
    summary = ""
    key = result.primary_metric
    if key and key in result.evaluation:
        summary = (
            f" {key}: {result.baseline.get(key, float('nan')):.4f} (base) -> "
            f"{result.evaluation[key]:.4f}."
        )
    warning = (comparison or {}).get("warning")
    if warning:
        summary = f" Warning: {warning}{summary}"
    with store.fenced(job_id, lease) as conn:
        if warning:
            store.add_event(job_id, warning, level="warn", data=comparison, conn=conn)
        if final.exists():
            shutil.rmtree(final)  # left by a run that crashed before its commit
        os.replace(staging, final)
        store.upsert_model(
            {
                "id": model_id,
                "kind": "fine-tuned",
                "owned_by": "user",
                "created_at": time.time(),
                "base_model": spec.model,
                "job_id": job_id,
                "path": relative,
            },
            conn=conn,
        )
        name = version_row["name"]
        version = store.add_model_version(version_row, conn=conn)
        job_result["registered_model"] = {"name": name, "version": version}
        if gate is not None:
            _apply_gate(store, conn, job_id, name, version, gate)
            job_result["promotion"] = gate
        store.transition(
            job_id,
            JobStatus.SUCCEEDED,
            f"Job succeeded; model saved as {model_id} ({name} version {version}).{summary}",
            expected={JobStatus.RUNNING},
            lease=lease,
            conn=conn,
            fine_tuned_model=model_id,
            result=job_result,
            data={"fine_tuned_model": model_id, "name": name, "version": version},
        )


def _apply_gate(
    store: Store, conn: Any, job_id: str, name: str, version: int, gate: dict[str, Any]
) -> None:
    alias, metric = gate["alias"], gate["metric"]
    if gate["promote"]:
        # The alias must still be where it was when the gate measured it.
        now_at = store.alias_version(name, alias, conn=conn)
        if now_at != gate.get("against_version"):
            gate["promote"] = False
            gate["reason"] = f"alias {alias} moved to version {now_at} while the job ran"
    if gate["promote"]:
        store.set_alias(name, alias, version, conn=conn)
        message = (
            f"Promotion gate passed: {metric} {gate['new']:.4f} vs {gate['old']:.4f} "
            f"({gate['against']}), better by {gate['gain']:+.4f} >= {gate['min_delta']}; "
            f"alias {alias} -> {name} version {version}."
        )
    elif "gain" in gate and "reason" not in gate:
        message = (
            f"Promotion gate refused: {metric} {gate['new']:.4f} vs {gate['old']:.4f} "
            f"({gate['against']}), better by {gate['gain']:+.4f} < {gate['min_delta']}; "
            f"alias {alias} unchanged."
        )
    else:
        message = f"Promotion gate refused: {gate['reason']}; alias {alias} unchanged."
    store.add_event(job_id, message, data={"promotion": gate}, conn=conn)
