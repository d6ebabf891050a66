"""LoRA models served on their base's weights: one copy of a base in memory, whatever number of
its fine-tunes are served (as LoRAX and Fireworks do).

A LoRA fine-tune is its base model plus small adapter matrices. Loading it merged would copy
the whole base for every fine-tune; here the base loads once (`AdapterHost`) and each
fine-tune adds only its adapters to it, under a name of its own (peft's multi-adapter
`PeftModel`). A request picks its adapters for the time of its generation: the host's lock
is held from choosing the adapters to the last token, so an answer is written by one
adapter from start to end however many requests for other adapters (or for the base
itself, with every adapter off) arrive meanwhile. Requests for models that share a base
take turns, as requests for one model do.

peft can also apply different adapters to the rows of one batch (`adapter_names=` in
`generate`; checked with peft 0.21.2). tuneforge writes one answer at a time, each with its
own sampling settings, so that is left for a server that batches requests.
"""

from __future__ import annotations

import itertools
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class AdapterHost:
    """A loaded causal LM (`model`) that LoRA adapters join and leave. `lock` is held by the
    generation under way (see the module's docstring)."""

    def __init__(self, model: Any):
        self.model = model
        self.lock = threading.Lock()
        self._peft: Any = None  # the PeftModel wrapped around `model` once an adapter joins
        self._names = itertools.count(1)

    def attach(self, folder: Path) -> str:
        """Load the adapters saved in `folder` (peft's `adapter_config.json` and
        `adapter_model.safetensors`) beside the others; returns their name on the host."""
        name = f"adapter{next(self._names)}"
        with self.lock:
            self._load(name, folder)
        return name

    def detach(self, name: str) -> None:
        """Remove adapter `name` and free its weights (after the generation under way)."""
        with self.lock:
            self._delete(name)

    def loaded(self) -> list[str]:
        """The names of the adapters loaded on the host."""
        with self.lock:
            return [] if self._peft is None else list(self._peft.peft_config)

    def adapter_bytes(self, name: str) -> int:
        """The bytes of adapter `name`'s weights."""
        marker = f".{name}."
        return sum(
            p.numel() * p.element_size() for n, p in self.model.named_parameters() if marker in n
        )

    @contextmanager
    def using(self, name: str | None, folder: Path | None = None) -> Iterator[Any]:
        """Hold the lock with adapter `name` active (None: the base alone, every adapter off)
        and yield the model to generate with. An adapter detached meanwhile (unloaded by
        the cache while its request was on its way) is loaded again from `folder` for this
        generation only."""
        with self.lock:
            if name is None:
                if self._peft is None:
                    yield self.model
                else:
                    with self._peft.disable_adapter():
                        yield self.model
                return
            transient = self._peft is None or name not in self._peft.peft_config
            if transient:
                assert folder is not None, "a detached adapter needs its folder"
                self._load(name, folder)
            try:
                self._peft.set_adapter(name)
                yield self.model
            finally:
                if transient:
                    self._delete(name)

    def _load(self, name: str, folder: Path) -> None:
        from peft import PeftModel

        if self._peft is None:
            # Injects the adapter layers into `model` itself: it stays the model to call.
            self._peft = PeftModel.from_pretrained(self.model, str(folder), adapter_name=name)
        else:
            self._peft.load_adapter(str(folder), adapter_name=name)
        self.model.eval()

    def _delete(self, name: str) -> None:
        if self._peft is None or name not in self._peft.peft_config:
            return
        with warnings.catch_warnings():
            # peft warns when the active adapter goes; the next generation picks its own.
            warnings.simplefilter("ignore", UserWarning)
            self._peft.delete_adapter(name)
