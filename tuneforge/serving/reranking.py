"""Relevance scores of cross-encoders, for `POST /v1/rerank`.

A score is what `CrossEncoder(folder).predict([(query, document), ...])` returns: the
model's logit through its activation (a sigmoid for one-output rerankers, so a score in
[0, 1]). Documents are truncated to the model's `max_length` with their query, as in training.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tuneforge.serving.cache import parameter_bytes

BATCH_SIZE = 32
# Documents in one request (Cohere allows 1,000; TEI's default is its batch limit).
MAX_DOCUMENTS = 1000


class Reranker:
    """A loaded sentence-transformers CrossEncoder. One request scores at a time (`lock`)."""

    def __init__(self, location: Path, device: str):
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(str(location), device=device, trust_remote_code=False)
        self.model.eval()
        self.nbytes = parameter_bytes(self.model)
        self.lock = threading.Lock()

    def scores(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        """(each document's relevance to `query`, the tokens the model read after
        truncation)."""
        pairs = [(query, document) for document in documents]
        with self.lock:
            scores = self.model.predict(
                pairs, batch_size=BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False
            )
            tokens = int(self.model.preprocess(pairs)["attention_mask"].sum())
        return [float(s) for s in scores], tokens
