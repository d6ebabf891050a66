"""What a job would train on, but not as asked: found when it is created, kept on the job
(`warnings`, each a code, a sentence and its numbers) and shown at the top of it.

- `truncated_texts`: texts longer than the model's maximum length, cut when training
  (embedding and classification; the chat kinds refuse such examples instead);
- `validation_overlap`: validation rows identical to training rows;
- `warmup_longer_than_training`: warm-up steps at or beyond the training's last step;
- `device_unavailable`: the device asked for is not the worker's (added by the worker that
  runs the job, see `jobs.runner.pick_device`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tuneforge.training.base import JobData
from tuneforge.training.spec import ClassificationMethod, EmbeddingMethod, JobCreate

# The columns of a row that training tokenizes, by kind.
TEXT_COLUMNS = {
    "embedding": ("anchor", "positive", "negative", "sentence1", "sentence2"),
    "classification": ("text",),
}


def warning(code: str, message: str, **data: Any) -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


def job_warnings(spec: JobCreate, data: JobData, model_location: str | None) -> list[dict]:
    """The warnings of a job about to be queued (`model_location`: the base model's folder,
    None when it is still to be downloaded)."""
    found = [validation_overlap(data), warmup_longer_than_training(spec, data)]
    if model_location is not None:
        found.append(truncated_texts(spec, data, Path(model_location)))
    return [w for w in found if w is not None]


def row_key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)


def validation_overlap(data: JobData) -> dict[str, Any] | None:
    """Validation rows that are also training rows: they measure memory, not learning."""
    trained = {row_key(row) for row in data.train_rows}
    shared = sum(row_key(row) in trained for row in data.eval_rows)
    if not shared:
        return None
    where = (
        "the validation file"
        if data.validation_source == "file"
        else "the held-out rows (the training file repeats them)"
    )
    share = shared / len(data.eval_rows)
    return warning(
        "validation_overlap",
        f"{shared} of the {len(data.eval_rows)} rows of {where} ({share:.0%}) are also "
        "training rows: the evaluation measures them as learnt, not as new data.",
        rows=shared,
        validation_rows=len(data.eval_rows),
        share=round(share, 4),
    )


def total_steps(spec: JobCreate, data: JobData) -> int | None:
    """Optimizer steps the run will take (None for the kinds whose steps the data does not
    fix: reinforcement)."""
    if spec.method.type == "reinforcement":
        return None
    params = getattr(spec.method, spec.method.type)
    hp = params.hyperparameters
    rows = len(data.train_rows)
    if getattr(hp, "max_samples", 0):
        rows = min(rows, hp.max_samples)
    per_step = hp.batch_size * getattr(hp, "gradient_accumulation_steps", 1)
    return max(1, math.ceil(rows / per_step)) * hp.n_epochs


def warmup_longer_than_training(spec: JobCreate, data: JobData) -> dict[str, Any] | None:
    """`warmup_steps` at or past the last step: the learning rate never reaches its peak."""
    if spec.method.type == "reinforcement":
        return None
    hp = getattr(spec.method, spec.method.type).hyperparameters
    warmup = getattr(hp, "warmup_steps", None)
    steps = total_steps(spec, data)
    if warmup is None or steps is None or warmup < steps:
        return None
    return warning(
        "warmup_longer_than_training",
        f"warmup_steps is {warmup}, but the training takes {steps} steps "
        f"({len(data.train_rows)} rows, batch size {hp.batch_size}, {hp.n_epochs} epoch(s)): "
        f"the learning rate never reaches {hp.learning_rate or 'its peak'}. Use fewer "
        "warm-up steps or warmup_ratio.",
        warmup_steps=warmup,
        total_steps=steps,
    )


def max_tokens(spec: JobCreate, folder: Path) -> int | None:
    """The length the job cuts texts at, in tokens: max_seq_length where the job names one,
    else the model's own (sentence-transformers' config, the tokenizer's)."""
    hp = getattr(spec.method, spec.method.type).hyperparameters
    own = _json(folder / "sentence_bert_config.json").get("max_seq_length")
    model_max = _json(folder / "tokenizer_config.json").get("model_max_length")
    limit = model_max if isinstance(model_max, int) and model_max < 10**6 else None
    if isinstance(spec.method, ClassificationMethod):
        return min(hp.max_seq_length, limit) if limit else hp.max_seq_length
    if hp.max_seq_length:
        return int(hp.max_seq_length)
    return int(own) if isinstance(own, int) else limit


def truncated_texts(spec: JobCreate, data: JobData, folder: Path) -> dict[str, Any] | None:
    """Texts of the training and validation rows longer than the job's maximum length, in
    the base model's tokens (special tokens included, as training counts them)."""
    if not isinstance(spec.method, EmbeddingMethod | ClassificationMethod):
        return None
    limit = max_tokens(spec, folder)
    if not limit or not (folder / "tokenizer.json").is_file():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    columns = TEXT_COLUMNS[spec.method.type]
    texts = [
        row[c] for row in [*data.train_rows, *data.eval_rows]
        for c in columns if isinstance(row.get(c), str)
    ]
    # A token covers at least one byte of its text: a text of fewer bytes than the limit
    # (less room for the special tokens) is not cut, and needs no tokenizing.
    suspects = [t for t in texts if len(t.encode("utf-8")) + 4 > limit]
    lengths = [len(e.ids) for e in tokenizer.encode_batch(suspects)] if suspects else []
    cut = [n for n in lengths if n > limit]
    if not cut:
        return None
    share = len(cut) / len(texts)
    return warning(
        "truncated_texts",
        f"{len(cut)} of {len(texts)} texts ({share:.1%}) are longer than {limit} tokens, the "
        f"longest {max(cut)}: training reads only their first {limit} tokens. Shorten or "
        "split them, or raise max_seq_length (up to the model's limit).",
        texts=len(cut),
        of=len(texts),
        share=round(share, 4),
        max_tokens=limit,
        longest=max(cut),
    )


def _json(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
