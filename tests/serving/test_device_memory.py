"""What the model cache does for a GPU's memory, shown on the CPU: an evicted model is
collected at once (reference cycles included), so that the CUDA cache it held can go back."""

from __future__ import annotations

import gc
import weakref

from tuneforge.serving.cache import ModelCache, footprint, parameter_bytes


class Model:
    """A loaded model as the cache sees it, holding a reference cycle as torch modules do."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.me = self


def test_an_evicted_model_is_collected_at_once() -> None:
    gc.disable()  # only the cache's own collection may free the cycle
    try:
        cache = ModelCache(budget_bytes=100)
        first = cache.get("a", lambda: Model(80))
        gone = weakref.ref(first)
        del first
        cache.get("b", lambda: Model(80))
        assert cache.loaded() == ["b"]
        assert gone() is None
    finally:
        gc.enable()


def test_footprint_on_the_cpu_is_the_parameters() -> None:
    import torch

    layer = torch.nn.Linear(8, 4)
    assert footprint(layer, "cpu", 0) == parameter_bytes(layer) == (8 * 4 + 4) * 4
