"""The model cache: least recently used models go first when the loaded models' parameters
would exceed the budget. Real models: three tiny causal LMs and all-MiniLM-L6-v2."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.offline_models import MINILM, REVISION
from tests.tiny_llm import build_tiny_llm
from tuneforge.errors import InvalidRequestError
from tuneforge.serving.cache import ModelCache
from tuneforge.serving.embeddings import Embedder
from tuneforge.serving.generation import Generator


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, offline_hub: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    minilm = offline_hub / "hub" / ("models--" + MINILM.replace("/", "--")) / "snapshots"
    return {
        "qwen": build_tiny_llm(root / "qwen", "qwen2"),
        "llama": build_tiny_llm(root / "llama", "llama"),
        "qwen-2": build_tiny_llm(root / "qwen-2", "qwen2", seed=2),
        "minilm": minilm / REVISION,
    }


@pytest.fixture(scope="module")
def models(folders: dict[str, Path]) -> dict[str, Generator | Embedder]:
    """Each model loaded once; the caches under test get these very objects."""
    return {
        name: Embedder(folder, "cpu") if name == "minilm" else Generator(folder, "cpu")
        for name, folder in folders.items()
    }


class Loads:
    """Loaders handing out the loaded models, counting how often each was asked for."""

    def __init__(self, models: dict[str, Generator | Embedder]):
        self.models = models
        self.count: dict[str, int] = {}

    def __call__(self, name: str):
        def load() -> Generator | Embedder:
            self.count[name] = self.count.get(name, 0) + 1
            return self.models[name]

        return load


def test_a_model_is_measured_by_its_parameters(
    models: dict[str, Generator | Embedder], folders: dict[str, Path]
) -> None:
    # float32 weights: the safetensors file is the parameters plus a small header.
    for name, model in models.items():
        weights = folders[name] / "model.safetensors"
        assert 0 < weights.stat().st_size - model.nbytes < 64 * 1024, name
    assert models["minilm"].nbytes > 50 * models["qwen"].nbytes


def test_least_recently_used_models_go_first_to_stay_within_the_budget(
    models: dict[str, Generator | Embedder],
) -> None:
    tiny = ("qwen", "llama", "qwen-2")
    # Any two tiny models fit, the three together do not.
    budget = sum(models[n].nbytes for n in tiny) - 1
    cache, loads = ModelCache(budget), Loads(models)

    assert cache.get("qwen", loads("qwen")) is models["qwen"]
    assert cache.get("llama", loads("llama")) is models["llama"]
    assert cache.get("qwen", loads("qwen")) is models["qwen"]  # used again: now the newest
    assert cache.loaded() == ["llama", "qwen"]
    cache.get("qwen-2", loads("qwen-2"))
    assert cache.loaded() == ["qwen", "qwen-2"]  # llama was the least recently used
    assert cache.loaded_bytes() == models["qwen"].nbytes + models["qwen-2"].nbytes <= budget
    assert loads.count == {"qwen": 1, "llama": 1, "qwen-2": 1}

    # A model larger than the whole budget loads, alone.
    assert cache.get("minilm", loads("minilm")) is models["minilm"]
    assert cache.loaded() == ["minilm"]
    cache.get("llama", loads("llama"))
    assert cache.loaded() == ["llama"]
    assert loads.count["llama"] == 2


def test_concurrent_requests_load_a_model_once(models: dict[str, Generator | Embedder]) -> None:
    cache, loads = ModelCache(10**9), Loads(models)
    cache.get("qwen", loads("qwen"))
    loading, release = threading.Event(), threading.Event()
    got: list[object] = []

    def slow_load() -> Generator | Embedder:
        loading.set()
        release.wait(10)
        return loads("minilm")()

    threads = [
        threading.Thread(target=lambda: got.append(cache.get("minilm", slow_load)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    assert loading.wait(10)
    # While one model loads, a loaded one is served.
    assert cache.get("qwen", loads("qwen")) is models["qwen"]
    assert got == []
    release.set()
    for thread in threads:
        thread.join()
    assert loads.count == {"minilm": 1, "qwen": 1}
    assert len(got) == 4 and all(model is models["minilm"] for model in got)
    assert cache.loaded() == ["qwen", "minilm"]


def test_a_failed_load_leaves_nothing_behind(models: dict[str, Generator | Embedder]) -> None:
    cache, loads = ModelCache(10**9), Loads(models)

    def refused() -> Generator:
        raise InvalidRequestError("no")

    with pytest.raises(InvalidRequestError):
        cache.get("qwen", refused)
    assert cache.loaded() == []
    assert cache.get("qwen", loads("qwen")) is models["qwen"]
