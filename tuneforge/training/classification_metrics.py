"""The metrics of a classifier on labelled rows, as scikit-learn computes them.

| layout                       | `y_true`, `y_pred`                 | accuracy: rows with...  |
|------------------------------|------------------------------------|-------------------------|
| `classification`             | class ids, (rows,)                 | the right class         |
| `multi_label_classification` | 0/1 indicators, (rows, classes)    | exactly the right set   |

Precision, recall and F1 come averaged three ways: `macro` (every class counts the same),
`micro` (every decision counts the same) and `weighted` (classes by their support). Single-label
averages run over the classes that occur among the true or the predicted labels, scikit-learn's
default; a class that is neither true nor predicted anywhere has nothing to measure. A ratio
with nothing to divide by (a class never predicted has no precision) counts as 0.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

AVERAGES = ("macro", "micro", "weighted")


def metric_values(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Accuracy and precision, recall and F1 with every average (see the module's table)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    values = {"accuracy": float(accuracy_score(y_true, y_pred))}
    for average in AVERAGES:
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=0
        )
        values[f"precision_{average}"] = float(precision)
        values[f"recall_{average}"] = float(recall)
        values[f"f1_{average}"] = float(f1)
    return values


def class_report(y_true: Any, y_pred: Any, labels: list[str]) -> dict[str, Any]:
    """Per class (every one of `labels`, in order): precision, recall, F1 and support; and the
    confusion matrix. Single-label: one matrix, rows the true class and columns the predicted
    one. Multi-label: one 2x2 matrix per class, `[[tn, fp], [fn, tp]]`."""
    from sklearn.metrics import (
        confusion_matrix,
        multilabel_confusion_matrix,
        precision_recall_fscore_support,
    )

    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, average=None, zero_division=0
    )
    multi_label = np.ndim(y_true) == 2
    matrix = (
        multilabel_confusion_matrix(y_true, y_pred, labels=ids)
        if multi_label
        else confusion_matrix(y_true, y_pred, labels=ids)
    )
    return {
        "labels": list(labels),
        "per_class": [
            {
                "label": label,
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        ],
        "confusion_matrix": matrix.tolist(),
    }


def predicted(logits: Any, multi_label: bool) -> Any:
    """Predictions from a model's logits: the highest class, or (multi-label) every class whose
    sigmoid reaches 0.5, that is whose logit is at least 0."""
    logits = np.asarray(logits)
    return (logits >= 0).astype(int) if multi_label else logits.argmax(axis=-1)


def majority_predictions(train_targets: list[Any], n_rows: int, multi_label: bool) -> Any:
    """What always answering the training data's most frequent class (multi-label: its most
    frequent label set) predicts for `n_rows` rows; ties go to the smallest class id."""
    keys = [tuple(t) if multi_label else t for t in train_targets]
    counts = Counter(keys)
    most = min(counts, key=lambda key: (-counts[key], key))
    return np.array([most] * n_rows, dtype=int)
