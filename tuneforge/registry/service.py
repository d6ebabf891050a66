"""Reading and changing the registry: what the REST API and the CLI share."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tuneforge.config import Settings
from tuneforge.db.store import Row, Store
from tuneforge.errors import InvalidRequestError, InvalidStateError, ModelNotFoundError
from tuneforge.training.spec import ALIAS_NAME


def require_registered(store: Store, name: str) -> Row:
    row = store.get_registered_model(name)
    if row is None:
        raise ModelNotFoundError(f"No registered model named {name!r}.", param="name")
    return row


def require_version(store: Store, name: str, version: int) -> Row:
    require_registered(store, name)
    row = store.get_version(name, version)
    if row is None:
        raise ModelNotFoundError(f"{name} has no version {version}.", param="version")
    return row


def aliases_by_version(store: Store, name: str) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for row in store.aliases(name):
        found.setdefault(row["version"], []).append(row["alias"])
    return found


def metric_of(row: Row, metric: str) -> float | None:
    """A version's value of `metric` on its job's validation split."""
    tuned = (row.get("evaluation") or {}).get("fine_tuned_model") or {}
    value = tuned.get(metric)
    return float(value) if isinstance(value, int | float) else None


def search_versions(
    store: Store,
    *,
    name: str | None = None,
    kind: str | None = None,
    base_model: str | None = None,
    tag: str | None = None,
    alias: str | None = None,
    metric: str | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
) -> list[tuple[Row, list[str]]]:
    """Versions matching every filter given, each with the aliases that point at it; `name`
    matches any part of the name."""
    if (min_value is not None or max_value is not None) and not metric:
        raise InvalidRequestError("min_value and max_value need a metric.", param="metric")
    all_aliases: dict[tuple[str, int], list[str]] = {}
    for a in store.aliases():
        all_aliases.setdefault((a["name"], a["version"]), []).append(a["alias"])
    found: list[tuple[Row, list[str]]] = []
    for row in store.list_versions():
        key = (row["name"], row["version"])
        if name and name.lower() not in row["name"].lower():
            continue
        if kind and row["kind"] != kind:
            continue
        if base_model and row["base_model"] != base_model:
            continue
        if tag and tag not in (row["tags"] or []):
            continue
        if alias and alias not in all_aliases.get(key, []):
            continue
        if metric:
            value = metric_of(row, metric)
            if value is None:
                continue
            if min_value is not None and value < min_value:
                continue
            if max_value is not None and value > max_value:
                continue
        found.append((row, all_aliases.get(key, [])))
    return found


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def compare_versions(store: Store, name: str, versions: list[int]) -> dict[str, Any]:
    """Metrics side by side and the spec fields in which the versions differ (the fields of
    `ModelComparisonPublic`)."""
    if len(versions) < 2:
        raise InvalidRequestError("Name at least two versions to compare.", param="versions")
    rows = [require_version(store, name, v) for v in versions]
    metrics = sorted(
        {k for r in rows for k in ((r["evaluation"] or {}).get("fine_tuned_model") or {})}
    )
    specs = [_flatten(r["spec"] or {}) for r in rows]
    keys = sorted({k for s in specs for k in s})
    differences = {
        k: [s.get(k) for s in specs] for k in keys if len({repr(s.get(k)) for s in specs}) > 1
    }
    return {
        "name": name,
        "versions": versions,
        "metrics": {m: [metric_of(r, m) for r in rows] for m in metrics},
        "base_model_metrics": {
            m: [((r["evaluation"] or {}).get("base_model") or {}).get(m) for r in rows]
            for m in metrics
        },
        "spec_differences": differences,
    }


def set_alias(store: Store, name: str, alias: str, version: int, force: bool = False) -> None:
    """Point `alias` at a version of `name`; moves it if set. A version that scored below
    its base model on its job's validation split takes no alias without `force` (409)."""
    if not ALIAS_NAME.match(alias):
        raise InvalidRequestError(
            "An alias has letters, digits, '_' and '-', starting with a letter.", param="alias"
        )
    row = require_version(store, name, version)
    evaluation = row.get("evaluation") or {}
    if evaluation.get("worse_than_base") and not force:
        key = evaluation.get("primary_metric")
        tuned = (evaluation.get("fine_tuned_model") or {}).get(key)
        base = (evaluation.get("base_model") or {}).get(key)
        raise InvalidStateError(
            f"{name} version {version} scored below its base model on its job's validation "
            f"split ({key} {tuned:.4f} vs {base:.4f}); alias {alias} not moved. Send "
            "force: true to move it anyway.",
            param="force",
        )
    store.set_alias(name, alias, version)


def delete_version(store: Store, settings: Settings, name: str, version: int) -> Path:
    """Delete a version and its files; 409 while an alias points at it. Returns the folder
    the version was served from (the serving cache's key of it)."""
    require_registered(store, name)
    row = store.delete_version(name, version)
    folder = (settings.home / row["path"]).resolve()
    if folder.is_relative_to(settings.models_dir.resolve()) and folder.is_dir():
        shutil.rmtree(folder)
    return folder


def delete_fine_tuned_model(store: Store, settings: Settings, model_id: str) -> Path | None:
    """OpenAI's model deletion: a fine-tuned model, its registry version and its files.
    Base models are refused (they are the Hub's or an import's), and so is a version an alias
    points at (409, as in the registry). Returns the folder it was served from, if any."""
    row = store.get_model(model_id)
    if row is None:
        raise ModelNotFoundError(f"No model named {model_id!r}.", param="model")
    if row["kind"] == "base":
        raise InvalidRequestError(
            f"{model_id} is a base model; only fine-tuned models can be deleted.", param="model"
        )
    version = store.version_of_model(model_id)
    if version is not None:
        return delete_version(store, settings, version.name, version.version)
    store.delete_model(model_id)
    folder = (settings.home / row["path"]).resolve() if row.get("path") else None
    if folder and folder.is_relative_to(settings.models_dir.resolve()) and folder.is_dir():
        shutil.rmtree(folder)
    return folder


def resolve_reference(store: Store, reference: str) -> str:
    """`name@alias` or `name@vN` -> the fine-tuned model id it stands for (ft:...)."""
    name, _, which = reference.partition("@")
    require_registered(store, name)
    if which[:1] == "v" and which[1:].isdigit():
        version = int(which[1:])
    else:
        found = store.alias_version(name, which)
        if found is None:
            raise ModelNotFoundError(f"{name} has no alias {which!r}.", param="model")
        version = found
    return str(require_version(store, name, version)["model_id"])
