"""From a model name in a request to a loaded model of the kind the endpoint serves.

The name resolves as everywhere else (`ft:` ids, `NAME@alias`, `NAME@vN`, base models; see
`registry.models.resolve_model`); the model's folder tells its kind:

| kind             | the folder holds                                  | served by               |
|------------------|---------------------------------------------------|-------------------------|
| `embedding`      | `modules.json` (sentence-transformers)            | `/v1/embeddings`        |
| `reranker`       | a sentence-transformers CrossEncoder: `modules.json` | `/v1/rerank`         |
|                  | with `model_type` CrossEncoder, or (older) a      |                         |
|                  | `config.json` with its `sentence_transformers` or |                         |
|                  | `sbert_ce_…` settings                             |                         |
| `causal_lm`      | `config.json` naming a `…ForCausalLM`, or one of  | `/v1/chat/completions`, |
|                  | our LoRA models (`adapter_config.json` +          | `/v1/completions`       |
|                  | `tuneforge.json`)                                 |                         |
| `classification` | `config.json` naming a `…ForSequenceClassification` | `/v1/classifications` |

One of our LoRA models loads as its adapters on its base's weights, which every LoRA model of
that base shares (and the base itself, when asked for by its own name: see
`serving.adapters`). A LoRA model whose base is itself one of our LoRA models, or whose base
is not on this machine while its merged weights are, loads whole instead.

Models run on the CUDA GPU when the machine has one, else on the CPU: the CPU always works,
and a GPU makes generation fast enough for interactive use (a training job on the same GPU
then shares its memory with the served models).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from tuneforge.config import Settings
from tuneforge.db.store import Store
from tuneforge.errors import InvalidRequestError, ModelNotFoundError
from tuneforge.registry.models import cached_snapshot, check_model_files, local_model
from tuneforge.serving.cache import ModelCache
from tuneforge.training.llm import MERGED, MODEL_INFO, base_location

ENDPOINTS = {
    "embedding": "/v1/embeddings",
    "reranker": "/v1/rerank",
    "causal_lm": "/v1/chat/completions or /v1/completions",
    "classification": "/v1/classifications",
}
DESCRIPTIONS = {
    "embedding": "an embedding model",
    "reranker": "a reranker (cross-encoder)",
    "causal_lm": "a causal language model",
    "classification": "a text-classification model",
}


def model_kind(location: Path) -> str | None:
    """The kind of the model saved at `location` (see the table above), or None."""
    config_file = location / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if (location / "modules.json").is_file():
        st_file = location / "config_sentence_transformers.json"
        st_config = json.loads(st_file.read_text()) if st_file.is_file() else {}
        return "reranker" if st_config.get("model_type") == "CrossEncoder" else "embedding"
    if (location / "adapter_config.json").is_file() and (location / MODEL_INFO).is_file():
        return "causal_lm"
    architectures = config.get("architectures") or []
    if any(a.endswith("ForCausalLM") for a in architectures):
        return "causal_lm"
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        older_cross_encoder = "sentence_transformers" in config or any(
            key.startswith("sbert_ce_") for key in config
        )
        return "reranker" if older_cross_encoder else "classification"
    return None


def require_kind(name: str, location: Path, kind: str) -> None:
    """Raise InvalidRequestError, naming the endpoint that serves it, unless the model at
    `location` is of `kind`."""
    found = model_kind(location) if location.is_dir() else None
    if found == kind:
        return
    if found is None:
        message = f"Model {name!r} is no model tuneforge can serve (its kind is unknown)."
    else:
        message = f"Model {name!r} is {DESCRIPTIONS[found]}; use {ENDPOINTS[found]}."
    raise InvalidRequestError(message, param="model")


@lru_cache(maxsize=1)
def serving_device() -> str:
    """`cuda` when a CUDA GPU is present, else `cpu` (see the module's docstring)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(kind: str, location: Path) -> Any:
    """Load the model at `location` as `kind` (embedding, reranker or causal_lm) on
    `serving_device()`."""
    if kind == "embedding":
        from tuneforge.serving.embeddings import Embedder

        return Embedder(location, serving_device())
    if kind == "reranker":
        from tuneforge.serving.reranking import Reranker

        return Reranker(location, serving_device())
    from tuneforge.serving.generation import Generator

    return Generator(location, serving_device())


def shared_base(location: Path) -> Path | None:
    """The folder of the base whose weights the LoRA model at `location` is served on, or
    None for a model that loads whole (see the module's docstring). ModelNotFoundError when
    neither its base nor its merged weights are on this machine."""
    if not (location / "adapter_config.json").is_file() or not (location / MODEL_INFO).is_file():
        return None
    base = base_location(location)
    folder = Path(base) if Path(base).is_dir() else cached_snapshot(base)
    if folder is None:
        if (location / MERGED).is_dir():
            return None
        raise ModelNotFoundError(
            f"The base model {base!r} of this LoRA model is not on this machine.", param="model"
        )
    if (folder / "adapter_config.json").is_file():
        return None  # adapters over adapters: served merged
    check_model_files(folder, base)
    return folder.resolve()


def served_model(store: Store, settings: Settings, cache: ModelCache, name: str, kind: str) -> Any:
    """The loaded model `name` of `kind`, from `cache` or loaded into it; a LoRA model on its
    base's shared weights. Raises ModelNotFoundError for unknown models and models not on
    this machine (requests never download), InvalidRequestError for models of another kind
    or needing remote code."""
    location = local_model(store, settings, name).resolve()
    require_kind(name, location, kind)
    base = shared_base(location) if kind == "causal_lm" else None
    if base is None:
        return cache.get(str(location), lambda: load_model(kind, location))
    from tuneforge.serving.generation import Generator

    device = serving_device()
    return cache.get_adapter(
        str(location),
        str(base),
        lambda: Generator(base, device),
        lambda host: Generator(location, device, base=host),
    )
