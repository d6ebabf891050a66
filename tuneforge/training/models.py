"""Finding base models: our fine-tuned models, configured model folders, the Hub cache, the Hub.

A request names a model; it never gives a path. Names resolve, in order, to a fine-tuned model
of ours, a folder of that name in `settings.model_dirs`, a model in the local Hugging Face
cache, and (when the Hub is reachable) a Hub id.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tuneforge.config import Settings
from tuneforge.db.store import Store
from tuneforge.errors import InvalidRequestError, ModelNotFoundError
from tuneforge.training.spec import MODEL_NAME


@dataclass(frozen=True)
class ModelSource:
    """Where a named model loads from: a local folder, or a Hub id still to be downloaded."""

    name: str
    location: str
    is_local: bool
    hub_id: str | None = None


def hub_id_of(name: str) -> str:
    """`models--org--name` (the Hub cache's folder name, as seed 000 uses it) -> `org/name`."""
    if name.startswith("models--"):
        parts = name[len("models--") :].split("--", 1)
        return "/".join(parts)
    return name


def resolve_model(store: Store, settings: Settings, name: str) -> ModelSource:
    """Resolve a model name, or raise ModelNotFoundError (never loads weights)."""
    if not MODEL_NAME.match(name):
        raise InvalidRequestError(f"{name!r} is not a valid model name.", param="model")
    if "@" in name:
        from tuneforge.registry.service import resolve_reference

        name = resolve_reference(store, name)
    row = store.get_model(name)
    if row is not None and row["kind"] == "fine-tuned":
        return ModelSource(name, str((settings.home / row["path"]).resolve()), True)
    for folder in settings.model_dirs:
        candidate = folder / name
        if candidate.is_dir():
            return ModelSource(name, str(_snapshot_or_self(candidate)), True)
    hub_id = hub_id_of(name)
    if name.startswith("ft:") or "/" not in hub_id and ":" in hub_id:
        raise ModelNotFoundError(f"No fine-tuned model named {name!r}.", param="model")
    cached = cached_snapshot(hub_id)
    if cached is not None:
        return ModelSource(name, str(cached), True, hub_id)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelNotFoundError(
            f"Model {name!r} is not available locally and the Hub is offline.", param="model"
        )
    return ModelSource(name, hub_id, False, hub_id)


def cached_snapshot(hub_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(hub_id, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None


def _snapshot_or_self(folder: Path) -> Path:
    """A Hub-cache style folder (`refs/main` + `snapshots/<rev>`) loads from its snapshot."""
    ref = folder / "refs" / "main"
    if ref.is_file():
        snapshot = folder / "snapshots" / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    return folder


def refuse_remote_code(location: Path) -> None:
    """Models whose config asks for custom code are refused: we never run remote code."""
    config = location / "config.json"
    if config.is_file() and "auto_map" in json.loads(config.read_text()):
        raise InvalidRequestError(
            f"Model at {location.name} needs custom (remote) code, which tuneforge never runs.",
            param="model",
        )
