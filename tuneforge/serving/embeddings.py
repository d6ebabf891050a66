"""Embeddings of sentence-transformers models, for `POST /v1/embeddings`.

The vectors are the model's own, exactly what `SentenceTransformer(folder).encode(texts)`
returns (normalised when the model ends in a `Normalize` module, as most do). With
`dimensions` they are cut to their first `dimensions` values and normalised again, as
OpenAI's shortened embeddings are: Matryoshka-trained models keep most of their quality so.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tuneforge.errors import InvalidRequestError
from tuneforge.serving.cache import device_allocated, footprint

BATCH_SIZE = 32
# Texts in one request, as OpenAI allows.
MAX_INPUTS = 2048


class Embedder:
    """A loaded sentence-transformers model. One request encodes at a time (`lock`)."""

    def __init__(self, location: Path, device: str):
        from sentence_transformers import SentenceTransformer

        before = device_allocated(device)
        self.model = SentenceTransformer(str(location), device=device, trust_remote_code=False)
        self.model.eval()
        self.dimension: int = self.model.get_embedding_dimension() or 0
        self.nbytes = footprint(self.model, device, before)
        self.lock = threading.Lock()

    def embed(self, texts: list[str], dimensions: int | None = None) -> tuple[Any, int]:
        """(float32 array of shape (texts, dimensions or the model's dimension), the tokens
        the model read, after truncation to its `max_seq_length`). Raises
        InvalidRequestError for `dimensions` larger than the model's."""
        import numpy as np

        if dimensions is not None and dimensions > self.dimension:
            raise InvalidRequestError(
                f"dimensions is {dimensions}, but the model's embeddings have {self.dimension}.",
                param="dimensions",
            )
        with self.lock:
            vectors = self.model.encode(
                texts, batch_size=BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False
            )
            tokens = int(self.model.preprocess(texts)["attention_mask"].sum())
        vectors = np.asarray(vectors, dtype=np.float32)
        if dimensions is not None and dimensions < self.dimension:
            vectors = vectors[:, :dimensions]
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, np.finfo(np.float32).tiny)
        return vectors, tokens
