"""Finding base models: our fine-tuned models, configured model folders, the Hub cache, the Hub.

A request names a model; it never gives a path. Names resolve, in order, to a fine-tuned model
of ours or a base model imported here (tuneforge.imports), a folder of that name in
`settings.model_dirs`, a model in the local Hugging Face cache, and (when the Hub is
reachable) a Hub id.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tuneforge.config import Settings
from tuneforge.db.store import Store
from tuneforge.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    RemoteCodeRefusedError,
    UnsafeWeightsError,
)
from tuneforge.registry.service import resolve_reference
from tuneforge.security.paths import inside
from tuneforge.training.spec import MODEL_NAME, cache_folder_of, hub_id_of


@dataclass(frozen=True)
class ModelSource:
    """Where a named model loads from: a local folder, or a Hub id still to be downloaded."""

    name: str
    location: str
    is_local: bool
    hub_id: str | None = None


def resolve_model(store: Store, settings: Settings, name: str) -> ModelSource:
    """Resolve a model name, or raise ModelNotFoundError (never loads weights). A local model
    is checked at once (`check_model_files`): every caller that loads from its folder gets
    only models that run no code of their own."""
    if not MODEL_NAME.match(name):
        raise InvalidRequestError(f"{name!r} is not a valid model name.", param="model")
    if "@" in name:
        name = resolve_reference(store, name)
    row = store.get_model(name)
    if row is not None and (row["kind"] == "fine-tuned" or row["provenance"] is not None):
        # Ours, in the data folder: a fine-tuned model, or a base model imported here.
        return _checked(ModelSource(name, str(inside(settings.home, row["path"])), True))
    for folder in settings.model_dirs:
        # MODEL_NAME has no `..`; the operator's links are theirs. A Hub id is also found as
        # its cache folder (`models--org--name`): one model, whichever of its names is used.
        for candidate in (folder / name, folder / cache_folder_of(hub_id_of(name))):
            if candidate.is_dir():
                return _checked(ModelSource(name, str(snapshot_or_self(candidate)), True))
    hub_id = hub_id_of(name)
    if name.startswith("ft:") or "/" not in hub_id and ":" in hub_id:
        raise ModelNotFoundError(f"No fine-tuned model named {name!r}.", param="model")
    cached = cached_snapshot(hub_id)
    if cached is not None:
        return _checked(ModelSource(name, str(cached), True, hub_id))
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelNotFoundError(
            f"Model {name!r} is not available locally and the Hub is offline.", param="model"
        )
    return ModelSource(name, hub_id, False, hub_id)


def _checked(source: ModelSource) -> ModelSource:
    check_model_files(Path(source.location), source.name)
    return source


def cached_snapshot(hub_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(hub_id, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None


def snapshot_or_self(folder: Path) -> Path:
    """A Hub-cache style folder (`refs/main` + `snapshots/<rev>`) loads from its snapshot."""
    ref = folder / "refs" / "main"
    if ref.is_file():
        snapshot = folder / "snapshots" / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    return folder


# Files that are pickles: loading them runs whatever code they name.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def local_model(store: Store, settings: Settings, name: str) -> Path:
    """The folder of a model that is on this machine and safe to load (see
    `check_model_files`); ModelNotFoundError for one that is not here (requests never
    download)."""
    source = resolve_model(store, settings, name)
    if not source.is_local:
        raise ModelNotFoundError(
            f"Model {name!r} is not available locally; train or download it first.",
            param="model",
        )
    return Path(source.location)


def check_model_files(location: Path, name: str) -> None:
    """Refuse a model folder that would run code when loaded: custom (remote) code named by
    `auto_map` in its config or tokenizer config, Python files beside the weights, a
    sentence-transformers module from outside sentence-transformers, or weights only as
    pickles (`*.bin`, `*.pt`, `*.pkl` ...; tuneforge loads safetensors only)."""
    for config_name in ("config.json", "tokenizer_config.json"):
        config = _json_of(location / config_name)
        if isinstance(config, dict) and config.get("auto_map"):
            raise RemoteCodeRefusedError(
                f"Model {name!r} needs custom code ({config_name} has auto_map), and "
                "tuneforge never runs a model's own code (trust_remote_code is never set).",
                param="model",
            )
    code = sorted(p.name for p in location.glob("*.py"))
    if code:
        raise RemoteCodeRefusedError(
            f"Model {name!r} ships its own code ({', '.join(code[:3])}), which tuneforge "
            "never runs.",
            param="model",
        )
    folders = [location]
    modules = _json_of(location / "modules.json")
    if isinstance(modules, list):
        for module in modules:
            kind = str(module.get("type", "")) if isinstance(module, dict) else ""
            if not kind.startswith("sentence_transformers."):
                raise RemoteCodeRefusedError(
                    f"Model {name!r} uses the module {kind!r} from outside "
                    "sentence-transformers, which tuneforge does not load.",
                    param="model",
                )
            if module.get("path"):
                folders.append(location / str(module["path"]))
    for folder in folders:
        if not folder.is_dir() or any(folder.glob("*.safetensors")):
            continue
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        pickles = [p for p in pickles if p != "training_args.bin"]
        if pickles:
            raise UnsafeWeightsError(
                f"Model {name!r} has its weights only as pickles ({', '.join(pickles[:3])}), "
                "which can run code when loaded; tuneforge loads safetensors only. Convert "
                "them (e.g. save_pretrained(..., safe_serialization=True)) on a trusted "
                "machine.",
                param="model",
            )


def _json_of(path: Path) -> object:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
