"""The job process's side of a deployment: make sure the version exists in the target's
format, put it there, check it, and only then count it as live; when the check fails, what
was live before is restored."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tuneforge.config import Settings
from tuneforge.db.store import Row, Store
from tuneforge.deploy.ollama import OllamaServer, agreement, backup_name, full_name, read_modelfile
from tuneforge.errors import DeploymentError
from tuneforge.jobs.reporting import JobReporter
from tuneforge.jobs.status import JobStatus
from tuneforge.registry.models import resolve_model

# Texts an embedding or classification model is checked on when its job had no validation rows.
CHECK_TEXTS = ["A man is playing a guitar.", "The weather is nice today.", "Wie spät ist es?"]


def run_deployment(store: Store, settings: Settings, job: Row, reporter: JobReporter) -> None:
    spec = job["spec"]
    if spec["target"]["type"] == "ollama":
        result = _to_ollama(store, settings, job, reporter)
    elif spec["target"]["type"] == "huggingface":
        from tuneforge.deploy.hub import to_huggingface

        result = to_huggingface(store, settings, job, reporter, local_health_check)
    else:
        result = _to_local(store, settings, job, reporter)
    reporter.ensure_lease()
    store.transition(
        job["id"],
        JobStatus.SUCCEEDED,
        f"{spec['name']} v{spec['version']} is live on {spec['target_key']}.",
        expected={JobStatus.RUNNING},
        lease=reporter.lease,
        result=result,
    )


# -- ollama ------------------------------------------------------------------------------------


def verified_export(store: Store, spec: dict[str, Any]) -> tuple[Row, dict[str, Any]] | None:
    """The newest GGUF file of the version in the target's quantization that passed its
    verification: an export's, or one an earlier deployment wrote; with its details."""
    names = {spec["model_id"], f"{spec['name']}@v{spec['version']}"}
    quantization = spec["target"]["quantization"]
    for kind in ("export", "deployment"):
        after = None
        while True:
            rows, more = store.list_jobs(
                after=after, limit=100, kind=kind, status=JobStatus.SUCCEEDED.value
            )
            for row in rows:
                s, result = row["spec"], row.get("result") or {}
                if kind == "export" and s.get("model") in names and s.get("format") == "gguf" \
                        and s.get("quantization") == quantization:
                    return row, result
                if kind == "deployment" and result.get("export") == row["id"] \
                        and s.get("model_id") == spec["model_id"] \
                        and s["target"].get("quantization") == quantization:
                    return row, result["export_details"]
            if not more or not rows:
                break
            after = rows[-1]["id"]
    return None


def _gguf_files(
    store: Store, settings: Settings, job: Row, reporter: JobReporter
) -> tuple[Path, dict[str, Any], str]:
    """(the GGUF file, its export's details, where they came from): a verified export if one
    exists, else one written and verified now, beside the deployment."""
    from tuneforge.export.run import _gguf
    from tuneforge.export.service import export_folder, file_stem

    spec = job["spec"]
    found = verified_export(store, spec)
    if found is not None:
        row, details = found
        folder = export_folder(settings, row["id"])
        reporter.note(f"Using the GGUF file {row['id']} verified ({details['gguf_file']}).")
        return folder / details["gguf_file"], details, row["id"]
    reporter.note(f"No verified {spec['target']['quantization']} export yet: exporting now.")
    location = Path(resolve_model(store, settings, spec["model_id"]).location)
    final = export_folder(settings, job["id"])
    staging = final.parent / f".staging-{job['id']}-{reporter.lease}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    export_spec = {
        "model": spec["model_id"],
        "quantization": spec["target"]["quantization"],
        "verify_prompts": 8,
        "verify_max_tokens": 48,
        "system": None,
    }
    gguf_name, details = _gguf(
        store, settings, {"id": job["id"], "spec": export_spec}, location, staging,
        file_stem(spec["model_id"]), reporter,
    )
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final / gguf_name, details, job["id"]


def _to_ollama(
    store: Store, settings: Settings, job: Row, reporter: JobReporter
) -> dict[str, Any]:
    from tuneforge.export.run import (
        FALLBACK_CONVERSATIONS,
        _training_rows,
        validation_conversations,
    )

    spec = job["spec"]
    check = spec["health_check"]
    server = OllamaServer(spec["target"]["url"])
    name = full_name(spec["ollama_name"])
    live_before = name in server.models()  # also: reachable, before anything is written
    gguf, details, export_id = _gguf_files(store, settings, job, reporter)
    modelfile = read_modelfile((gguf.parent / details["modelfile"]).read_text(encoding="utf-8"))
    backup = backup_name(name, job["id"]) if live_before else None
    if backup:
        server.copy(name, backup)
        reporter.note(f"Kept the model live under {name} as {backup} until the check passes.")
    reporter.ensure_lease()
    digest = server.create(name, gguf, modelfile)
    reporter.note(f"Created {name} on {server.url} from {gguf.name} ({digest[:19]}…).")
    rows = _training_rows(store, settings, spec["model_id"])
    conversations = validation_conversations(rows) or FALLBACK_CONVERSATIONS
    samples = details["verification"]["samples"]
    checks = []
    for messages, sample in list(zip(conversations, samples, strict=False))[: check["prompts"]]:
        reporter.ensure_lease()
        answer = server.greedy_answer(name, messages, check["max_tokens"])
        checks.append(
            {
                "prompt": messages[-1]["content"],
                "answer": answer,
                "verified": sample["gguf"],
                "agreement": round(agreement(answer, sample["gguf"]), 4),
            }
        )
    score = sum(c["agreement"] for c in checks) / len(checks) if checks else 0.0
    health = {"prompts": len(checks), "agreement": round(score, 4),
              "min_agreement": check["min_agreement"], "passed": bool(checks)
              and score >= check["min_agreement"], "answers": checks}
    reporter.note(
        f"Health check: {len(checks)} prompt(s), agreement with the verified answers "
        f"{score:.0%} (at least {check['min_agreement']:.0%} needed).",
        level="info" if health["passed"] else "error",
        data={"health_check": health},
    )
    if not health["passed"]:
        _restore(server, name, backup, spec["rollback_on_failure"], reporter)
        raise DeploymentError(
            f"{name} on {server.url} failed its health check: its answers agree {score:.0%} "
            f"with the verified export's (at least {check['min_agreement']:.0%} needed)"
            + ("; what was live before is restored." if spec["rollback_on_failure"] else ".")
        )
    if backup:
        server.delete(backup)
    result = {"target": spec["target_key"], "ollama_model": name, "digest": digest,
              "export": export_id, "gguf_file": gguf.name, "replaced": live_before,
              "health_check": health}
    if export_id == job["id"]:  # written here: a later deployment of the version reuses it
        result["export_details"] = details
    return result


def _restore(
    server: OllamaServer, name: str, backup: str | None, rollback: bool, reporter: JobReporter
) -> None:
    if not rollback:
        reporter.note(f"Left {name} as created: rollback_on_failure is off.", level="warn")
        return
    if backup:
        server.copy(backup, name)
        server.delete(backup)
        reporter.note(f"Rolled back: {name} is the model that was live before again.")
    else:
        server.delete(name)
        reporter.note(f"Rolled back: removed {name}, which did not exist before.")


# -- local -------------------------------------------------------------------------------------


def _to_local(
    store: Store, settings: Settings, job: Row, reporter: JobReporter
) -> dict[str, Any]:
    spec = job["spec"]
    alias = spec["target"]["alias"]
    location = Path(resolve_model(store, settings, spec["model_id"]).location)
    health = local_health_check(store, settings, spec, location)
    reporter.note(
        f"Health check: {health['summary']}.",
        level="info" if health["passed"] else "error",
        data={"health_check": health},
    )
    if not health["passed"]:
        raise DeploymentError(
            f"{spec['name']} v{spec['version']} failed its health check ({health['summary']}); "
            f"{spec['name']}@{alias} stays where it was."
        )
    before = store.alias_version(spec["name"], alias)
    store.set_alias(spec["name"], alias, spec["version"])
    reporter.note(f"{spec['name']}@{alias} now serves v{spec['version']}"
                  + (f" (was v{before})." if before else "."))
    return {"target": spec["target_key"], "alias": alias, "previous_version": before,
            "health_check": health}


def local_health_check(
    store: Store, settings: Settings, spec: dict[str, Any], location: Path
) -> dict[str, Any]:
    """Load the version as the endpoints would and answer a few inputs with it."""
    import math

    from tuneforge.export.run import (
        FALLBACK_CONVERSATIONS,
        _training_rows,
        validation_conversations,
    )
    from tuneforge.serving.loading import model_kind

    check = spec["health_check"]
    kind = model_kind(location)
    n = check["prompts"]
    if kind == "causal_lm":
        from tuneforge.serving.generation import Generator, Sampling

        rows = _training_rows(store, settings, spec["model_id"])
        conversations = (validation_conversations(rows) or FALLBACK_CONVERSATIONS)[:n]
        generator = Generator(location, "cpu")
        answers = [
            generator.answer(generator.chat_prompt(m), Sampling(check["max_tokens"], 0.0)).text
            for m in conversations
        ]
        passed = all(a.strip() for a in answers)
        return {"kind": kind, "passed": passed, "answers": answers,
                "summary": f"{sum(bool(a.strip()) for a in answers)} of {len(answers)} "
                "prompts answered"}
    if kind == "embedding":
        from tuneforge.serving.embeddings import Embedder

        embedder = Embedder(location, "cpu")
        vectors, _ = embedder.embed(CHECK_TEXTS[:n])
        finite = all(math.isfinite(float(v)) for row in vectors for v in row)
        return {"kind": kind, "passed": finite and vectors.shape[1] == embedder.dimension,
                "summary": f"{len(vectors)} texts embedded in {vectors.shape[1]} dimensions"
                + ("" if finite else ", with values that are not finite")}
    if kind == "classification":
        from tuneforge.serving.classifier import Classifier

        predictions = Classifier(location).predict(CHECK_TEXTS[:n])
        sums = [sum(score for _, score in p.scores) for p in predictions]
        # Softmax scores add up to 1; sigmoid scores (multi-label) each lie in [0, 1].
        passed = bool(predictions) and all(
            all(0.0 <= score <= 1.0 for _, score in p.scores) and math.isfinite(total)
            for p, total in zip(predictions, sums, strict=True)
        )
        return {"kind": kind, "passed": passed,
                "summary": f"{len(predictions)} texts classified"}
    return {"kind": kind, "passed": False, "summary": "the version is no model tuneforge serves"}
