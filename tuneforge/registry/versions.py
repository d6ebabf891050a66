"""Building a registry version when a job succeeds, and reading versions back.

A version records everything needed to trust and reproduce it: the job, the base model, the
data files with their SHA-256, the full spec, library versions, metrics and evaluation, and
every artefact file with its size and checksum. Its folder holds a model card (README.md)
that says the same in words.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import re
from pathlib import Path
from typing import Any

from tuneforge.db.store import Row, Store, new_id
from tuneforge.training.spec import JobCreate

LIBRARIES = ("tuneforge", "torch", "transformers", "sentence-transformers", "peft", "trl")


def registry_name(spec: JobCreate) -> str:
    """The registered model a job's result becomes a version of."""
    if spec.registered_model:
        return spec.registered_model
    if "@" in spec.model:  # a new version of the model it continues
        return spec.model.split("@")[0]
    base = spec.model.removeprefix("models--").split("/")[-1].split("--")[-1]
    base = base.split(":")[1] if base.startswith("ft:") else base
    name = f"{base}-{spec.suffix}" if spec.suffix else base
    return re.sub(r"[^A-Za-z0-9._\-]", "-", name)[:100]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def artefacts(folder: Path) -> list[dict[str, Any]]:
    """Every file of a model folder: relative path, size and SHA-256."""
    return [
        {"path": str(p.relative_to(folder)), "bytes": p.stat().st_size, "sha256": sha256_of(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def data_files(store: Store, spec: JobCreate) -> list[dict[str, Any]]:
    files = [("training", f) for f in spec.all_training_files()]
    if spec.validation_file:
        files.append(("validation", spec.validation_file))
    described = []
    for role, file_id in files:
        row: Row = store.get_file(file_id) or {}
        described.append(
            {
                "id": file_id,
                "role": role,
                "filename": row.get("filename"),
                "sha256": row.get("sha256"),
                "bytes": row.get("bytes"),
            }
        )
    return described


def prepare_version(
    store: Store,
    *,
    job: Row,
    spec: JobCreate,
    model_id: str,
    folder: Path,
    relative_path: str,
    result: dict[str, Any],
    metrics: dict[str, Any] | None,
) -> Row:
    """Write the model card into `folder` and describe the version (all but its number,
    which the registry gives inside the publishing transaction)."""
    row: Row = {
        "id": new_id("mv"),
        "name": registry_name(spec),
        "model_id": model_id,
        "job_id": job["id"],
        "kind": spec.method.type,
        "base_model": spec.model,
        "spec": spec.model_dump(mode="json"),
        "data_files": data_files(store, spec),
        "library_versions": library_versions(),
        "metrics": metrics or {},
        "evaluation": result.get("evaluation"),
        "path": relative_path,
        "description": None,
        "tags": [],
    }
    files = artefacts(folder)
    (folder / "README.md").write_text(model_card(row, files, result), encoding="utf-8")
    card = folder / "README.md"
    files = [f for f in files if f["path"] != "README.md"]
    files.append({"path": "README.md", "bytes": card.stat().st_size, "sha256": sha256_of(card)})
    row["artefacts"] = files
    return row


def model_card(row: Row, files: list[dict[str, Any]], result: dict[str, Any]) -> str:
    """The version's README.md: what it is, how it was made, how good it is."""
    spec = row["spec"]
    method = spec["method"]
    params = method.get(method["type"], {})
    lines = [
        f"# {row['name']} ({row['model_id']})",
        "",
        f"A {row['kind']} model fine-tuned by tuneforge job `{row['job_id']}` from the base "
        f"model `{row['base_model']}`.",
        "",
        "## Training data",
        "",
    ]
    for f in row["data_files"]:
        lines.append(
            f"- {f['role']}: `{f['filename']}` ({f['id']}, {f['bytes']} bytes, "
            f"SHA-256 `{f['sha256']}`)"
        )
    lines += ["", "## Training", ""]
    lines.append(f"- seed: {spec.get('seed')}; steps: {result.get('steps')}")
    if result.get("train_loss") is not None:
        lines.append(f"- final training loss: {result['train_loss']:.4f}")
    for key, value in sorted(params.items()):
        if key != "hyperparameters":
            lines.append(f"- {key}: {value}")
    for key, value in sorted((params.get("hyperparameters") or {}).items()):
        lines.append(f"- {key}: {value}")
    evaluation = result.get("evaluation") or {}
    lines += ["", "## Evaluation", ""]
    tuned, base = evaluation.get("fine_tuned_model") or {}, evaluation.get("base_model") or {}
    if tuned:
        lines.append(
            f"On the job's validation split (primary metric: {evaluation.get('primary_metric')}):"
        )
        lines += ["", "| metric | base model | fine-tuned | delta |", "|---|---|---|---|"]
        for key in sorted(tuned):
            before = base.get(key)
            shown = f"{before:.4f}" if isinstance(before, float) else "-"
            delta = f"{tuned[key] - before:+.4f}" if isinstance(before, float) else "-"
            lines.append(f"| {key} | {shown} | {tuned[key]:.4f} | {delta} |")
    else:
        lines.append("No validation data; not evaluated.")
    lines += ["", "## Files", "", "| file | bytes | SHA-256 |", "|---|---|---|"]
    for f in files:
        lines.append(f"| {f['path']} | {f['bytes']} | `{f['sha256']}` |")
    lines.append("| README.md | (this file) | |")
    lines += ["", "## Libraries", ""]
    lines += [f"- {k} {v}" for k, v in sorted(row["library_versions"].items())]
    return "\n".join(lines) + "\n"


