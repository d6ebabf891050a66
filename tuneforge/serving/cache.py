"""Loaded models kept in memory under a budget, for the OpenAI-compatible endpoints.

A model loads on its first request and stays loaded: a stream of requests pays for loading
once. What stays is bounded by the bytes of the loaded models' parameters: when a newly
loaded model brings the sum over the budget, the least recently used others are unloaded
until it fits. A model larger than the whole budget still loads, and is then the only one.
The new model is measured after it has loaded (its size is only known then), so for a
moment the process holds the budget plus that model.

Requests arrive on many threads (FastAPI runs sync routes in a thread pool): the table is
guarded by one lock, and each model loads under a lock of its own, so that two requests for
the same model load it once while requests for models already loaded are served meanwhile.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, TypeVar


class Servable(Protocol):
    """A loaded model: its parameters take `nbytes` bytes of memory."""

    nbytes: int


S = TypeVar("S", bound=Servable)


def parameter_bytes(module: Any) -> int:
    """The bytes a torch module's parameters take (shared parameters counted once)."""
    unique = {id(p): p for p in module.parameters()}
    return sum(p.numel() * p.element_size() for p in unique.values())


class ModelCache:
    """Loaded models by key (their folder), least recently used first, their parameters
    within `budget_bytes` (see the module's docstring)."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._models: OrderedDict[str, Servable] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, key: str, load: Callable[[], S]) -> S:
        """The model under `key`, loaded with `load()` if it is not loaded yet; it becomes
        the most recently used. Errors of `load` reach the caller and leave nothing behind."""
        with self._lock:
            found = self._touch(key)
            if found is not None:
                return found  # type: ignore[return-value]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                found = self._touch(key)
            if found is not None:  # loaded by the request we waited for
                return found  # type: ignore[return-value]
            try:
                model = load()
                with self._lock:
                    self._models[key] = model
                    self._evict()
            finally:
                with self._lock:
                    self._loading.pop(key, None)
        return model

    def loaded(self) -> list[str]:
        """Keys of the loaded models, least recently used first."""
        with self._lock:
            return list(self._models)

    def loaded_bytes(self) -> int:
        """The parameter bytes of the loaded models together."""
        with self._lock:
            return sum(m.nbytes for m in self._models.values())

    def clear(self) -> None:
        """Unload every model (requests still running keep theirs until they end)."""
        with self._lock:
            self._models.clear()

    def _touch(self, key: str) -> Servable | None:
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
        return model

    def _evict(self) -> None:
        # The newest model is last: it is never the one to go.
        total = sum(m.nbytes for m in self._models.values())
        while total > self.budget_bytes and len(self._models) > 1:
            _, oldest = self._models.popitem(last=False)
            total -= oldest.nbytes
