"""Loaded models kept in memory under a budget, for the OpenAI-compatible endpoints.

A model loads on its first request and stays loaded: a stream of requests pays for loading
once. What stays is bounded by the bytes of the loaded models (on the CPU their parameters'
bytes, on a GPU the device memory each took as it loaded: see `footprint`): when a newly
loaded model brings the sum over the budget, the least recently used others are unloaded
until it fits. A model larger than the whole budget still loads, and is then the only one.
The new model is measured after it has loaded (its size is only known then), so for a
moment the process holds the budget plus that model.

A LoRA model served on its base's weights (`serving.adapters`) is an entry of its own that
costs its adapters' bytes, beside its base's entry: N fine-tunes of one base cost the base
once plus N adapters. Using such a model uses its base too (both become the most recently
used); a base goes with all of its adapters; an adapter that goes alone is unloaded from its
base (`unload`), which may wait for the generation under way, outside the table's lock.

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


class Adapter(Protocol):
    """Adapters loaded into a base's weights: `nbytes` of their own, freed by `unload()`."""

    nbytes: int

    def unload(self) -> None: ...


S = TypeVar("S", bound=Servable)
A = TypeVar("A", bound=Adapter)


def parameter_bytes(module: Any) -> int:
    """The bytes a torch module's parameters take (shared parameters counted once)."""
    unique = {id(p): p for p in module.parameters()}
    return sum(p.numel() * p.element_size() for p in unique.values())


def device_allocated(device: str) -> int:
    """The bytes this process's tensors hold on `device` now (0 on the CPU)."""
    if device == "cpu":
        return 0
    import torch

    return int(torch.cuda.memory_allocated())


def footprint(module: Any, device: str, allocated_before: int) -> int:
    """What a model loaded on `device` counts against the budget: on a GPU the device memory
    its load took (its weights, buffers and quantization state, measured from
    `allocated_before`), at least its parameters' bytes; on the CPU its parameters' bytes."""
    own = parameter_bytes(module)
    if device == "cpu":
        return own
    return max(own, device_allocated(device) - allocated_before)


def free_memory() -> None:
    """After models are unloaded: collect them (a model holds reference cycles) and give the
    CUDA allocator's cached blocks back, so that the memory serves the next model, or a
    training job on the same GPU."""
    from tuneforge.training.devices import free_device_memory

    free_device_memory()


class ModelCache:
    """Loaded models by key (their folder), least recently used first, their parameters
    within `budget_bytes` (see the module's docstring)."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._models: OrderedDict[str, Servable] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._base_of: dict[str, str] = {}  # adapters' key -> their base's key

    def get(self, key: str, load: Callable[[], S]) -> S:
        """The model under `key`, loaded with `load()` if it is not loaded yet; it becomes
        the most recently used. Errors of `load` reach the caller and leave nothing behind."""
        return self._get(key, lambda: (load(), None), None)  # type: ignore[return-value]

    def get_adapter(
        self, key: str, base_key: str, load_base: Callable[[], S], attach: Callable[[S], A]
    ) -> A:
        """The adapters under `key`, attached with `attach(base)` to the base under
        `base_key` (itself loaded with `load_base()` when it is not loaded yet) if they are
        not loaded yet; both become the most recently used."""

        def load() -> tuple[A, S]:
            base = self.get(base_key, load_base)
            return attach(base), base

        while True:
            adapter = self._get(key, load, base_key)
            if adapter is not None:
                return adapter  # type: ignore[return-value]
            # The base was unloaded while the adapters loaded into it: again, on a base in
            # the table.

    def _get(
        self,
        key: str,
        load: Callable[[], tuple[Servable, Servable | None]],
        base_key: str | None,
    ) -> Servable | None:
        """The model under `key`, loaded with `load()` ((model, its base or None)) if need
        be; None when the base `load()` used is no longer the loaded one."""
        with self._lock:
            found = self._touch(key)
            if found is not None:
                return found
            loading = self._loading.setdefault(key, threading.Lock())
        unload: list[Adapter] = []
        evicted = False
        with loading:
            with self._lock:
                found = self._touch(key)
            if found is not None:  # loaded by the request we waited for
                return found
            try:
                model, base = load()
                with self._lock:
                    if base_key is not None:
                        if self._models.get(base_key) is not base:
                            unload = [model]  # type: ignore[list-item]
                            model = None  # type: ignore[assignment]
                        else:
                            self._base_of[key] = base_key
                    if model is not None:
                        self._models[key] = model
                        before = len(self._models)
                        unload = self._evict(key)
                        evicted = len(self._models) < before
            finally:
                with self._lock:
                    self._loading.pop(key, None)
        for adapter in unload:
            adapter.unload()
        if evicted:
            free_memory()
        return model

    def loaded(self) -> list[str]:
        """Keys of the loaded models, least recently used first."""
        with self._lock:
            return list(self._models)

    def loaded_bytes(self) -> int:
        """The parameter bytes of the loaded models together."""
        with self._lock:
            return sum(m.nbytes for m in self._models.values())

    def evict(self, key: str) -> bool:
        """Unload the model under `key` now (a deleted model), with the adapters loaded
        into it when it is a base; whether it was loaded. Requests still running keep it
        until they end."""
        with self._lock:
            model = self._models.pop(key, None)
            unload: list[Any] = []
            if key in self._base_of:
                del self._base_of[key]
                unload.append(model)
            for adapter in [a for a, b in self._base_of.items() if b == key]:
                del self._base_of[adapter]
                self._models.pop(adapter, None)
        for adapter in unload:
            if adapter is not None:
                adapter.unload()
        return model is not None

    def clear(self) -> None:
        """Unload every model (requests still running keep theirs until they end)."""
        with self._lock:
            self._models.clear()
            self._base_of.clear()
        free_memory()

    def _touch(self, key: str) -> Servable | None:
        model = self._models.get(key)
        if model is not None:
            base_key = self._base_of.get(key)
            if base_key is not None:
                self._models.move_to_end(base_key)
            self._models.move_to_end(key)
        return model

    def _evict(self, newest: str) -> list[Adapter]:
        """Unload the least recently used models until the rest fit the budget, never the
        newest one nor its base; returns the adapters to unload from their bases."""
        kept = {newest, self._base_of.get(newest)}
        total = sum(m.nbytes for m in self._models.values())
        unload: list[Adapter] = []
        for key in list(self._models):
            if total <= self.budget_bytes:
                break
            if key in kept or key not in self._models:
                continue
            evicted = self._models.pop(key)
            total -= evicted.nbytes
            if key in self._base_of:
                del self._base_of[key]
                unload.append(evicted)  # type: ignore[arg-type]
                continue
            # A base goes with its adapters (they go with its weights).
            for adapter in [a for a, b in self._base_of.items() if b == key]:
                del self._base_of[adapter]
                total -= self._models.pop(adapter).nbytes
        return unload
