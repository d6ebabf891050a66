"""Predictions of text-classification models, for `POST /v1/classifications` and
`tuneforge predict`.

A model is loaded once and kept in memory, the few most recently used ones, so that a stream of
requests pays for loading once. Predictions run on the CPU: the GPU is left to training jobs.
Texts are truncated as in training (the saved tokenizer's `model_max_length`).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import InvalidRequestError
from tuneforge.training.devices import device_map_for, local_rank

# Models kept loaded; the least recently used one goes first.
MAX_LOADED = 2
BATCH_SIZE = 32
# Texts in one request.
MAX_INPUTS = 2048


@dataclass
class Prediction:
    """One text's prediction."""

    label: str  # the highest-scoring class
    labels: list[str]  # the predicted classes: [label], or (multi-label) every one >= threshold
    scores: list[tuple[str, float]]  # classes with their scores, highest first
    tokens: int  # tokens the model read (after truncation)


def require_classifier(name: str, location: Path) -> None:
    """Raise InvalidRequestError unless the model at `location` is a text classifier."""
    config_file = location / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise InvalidRequestError(
            f"Model {name!r} is not a text-classification model; train one with a job of "
            "method type 'classification'.",
            param="model",
        )


class Classifier:
    """A saved sequence-classification model and its tokenizer, ready to predict."""

    # Multi-label models predict every class whose sigmoid score reaches this.
    threshold = 0.5

    def __init__(self, location: Path, device: str = "cpu"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False)
        # On a GPU straight onto it (device_map), never through the CPU's memory.
        placement = {"device_map": device_map_for(local_rank())} if device == "cuda" else {}
        self.model = AutoModelForSequenceClassification.from_pretrained(
            location, use_safetensors=True, trust_remote_code=False, **placement
        ).to(device)
        self.model.eval()
        config = self.model.config
        self.labels: list[str] = [config.id2label[i] for i in range(config.num_labels)]
        self.multi_label = config.problem_type == "multi_label_classification"
        # Tokenizers without a limit of their own report a huge one: the positions bound it.
        self.max_length = min(self.tokenizer.model_max_length, config.max_position_embeddings)

    def scores(self, texts: list[str]) -> Any:
        """Class probabilities, (texts, classes): softmax, or sigmoid per class (multi-label)."""
        return self._run(texts)[0]

    def predict(self, texts: list[str], top_k: int | None = None) -> list[Prediction]:
        """The prediction for each text; `scores` holds the `top_k` best classes (all if None)."""
        probabilities, tokens = self._run(texts)
        predictions = []
        for row, n_tokens in zip(probabilities, tokens, strict=True):
            order = row.argsort()[::-1]
            ranked = [(self.labels[i], float(row[i])) for i in order]
            chosen = (
                [name for name, score in ranked if score >= self.threshold]
                if self.multi_label
                else [ranked[0][0]]
            )
            predictions.append(Prediction(ranked[0][0], chosen, ranked[:top_k], int(n_tokens)))
        return predictions

    def _run(self, texts: list[str]) -> tuple[Any, list[int]]:
        import numpy as np
        import torch

        batches, tokens = [], []
        with torch.inference_mode():
            for start in range(0, len(texts), BATCH_SIZE):
                encoded = self.tokenizer(
                    texts[start : start + BATCH_SIZE],
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(self.device)
                logits = self.model(**encoded).logits.float()
                probabilities = logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)
                batches.append(probabilities.cpu().numpy())
                tokens.extend(encoded["attention_mask"].sum(dim=-1).tolist())
        return np.concatenate(batches), tokens


_loaded: OrderedDict[Path, Classifier] = OrderedDict()
_lock = threading.Lock()


def loaded_classifier(name: str, location: Path) -> Classifier:
    """The classifier saved at `location` (named `name` in errors), loaded once and kept
    among the MAX_LOADED most recently used."""
    with _lock:
        if location in _loaded:
            _loaded.move_to_end(location)
            return _loaded[location]
        require_classifier(name, location)
        classifier = Classifier(location)
        _loaded[location] = classifier
        while len(_loaded) > MAX_LOADED:
            _loaded.popitem(last=False)
        return classifier
