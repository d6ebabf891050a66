"""The job process's side of an export: write the files aside, check them, move them into
place, and end the job with their names, sizes and SHA-256 sums."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from tuneforge.config import Settings
from tuneforge.db.store import Row, Store
from tuneforge.errors import VerificationError
from tuneforge.jobs.reporting import JobReporter
from tuneforge.jobs.status import JobStatus
from tuneforge.registry.models import resolve_model

# Conversations a GGUF file is checked on when the model has no validation data of its own.
FALLBACK_CONVERSATIONS = [
    [{"role": "user", "content": "Write a short post about our new product."}],
    [{"role": "user", "content": "Which hashtags fit a post about machine learning?"}],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello in German."},
    ],
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "List three fruits that are red."}],
    [{"role": "user", "content": "Explain in two sentences what a neural network is."}],
    [{"role": "user", "content": "What is 17 times 3?"}],
    [{"role": "user", "content": "Give me a name for a friendly robot."}],
]
Rows = tuple[list[dict[str, Any]], list[dict[str, Any]]]  # (training, validation)
_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def run_export(store: Store, settings: Settings, job: Row, reporter: JobReporter) -> None:
    from tuneforge.export.service import export_folder, file_stem

    spec = job["spec"]
    location = Path(resolve_model(store, settings, spec["model"]).location)
    final = export_folder(settings, job["id"])
    staging = final.parent / f".staging-{job['id']}-{reporter.lease}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    stem = file_stem(spec["model"])
    details: dict[str, Any] = {}
    if spec["format"] == "sentence-transformers":
        primary = _sentence_transformers(location, staging / stem, reporter)
    elif spec["format"] == "merged":
        primary = _merged(location, staging / stem, spec["dtype"], reporter)
    else:
        primary, details = _gguf(store, settings, job, location, staging, stem, reporter)
    reporter.ensure_lease()
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    files = _describe_files(final)
    size = sum(f["bytes"] for f in files)
    reporter.note(f"Export written: {len(files)} file(s), {size / 2**20:.1f} MiB.")
    store.transition(
        job["id"],
        JobStatus.SUCCEEDED,
        f"Export done: {primary}.",
        expected={JobStatus.RUNNING},
        lease=reporter.lease,
        result=dict(details, files=files, primary_file=primary),
    )


def _describe_files(folder: Path) -> list[dict[str, Any]]:
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        files.append(
            {
                "name": path.relative_to(folder).as_posix(),
                "bytes": path.stat().st_size,
                "sha256": digest.hexdigest(),
            }
        )
    return files


# -- sentence-transformers ---------------------------------------------------------------------


def _sentence_transformers(location: Path, target: Path, reporter: JobReporter) -> str:
    """Copy the model folder and check the copy embeds (a reranker: scores) exactly as the
    model does."""
    from sentence_transformers import CrossEncoder, SentenceTransformer

    from tuneforge.serving.loading import model_kind

    shutil.copytree(location, target, ignore=shutil.ignore_patterns("checkpoint-*", ".*"))
    texts = ["A man is playing a guitar.", "Ein Mann spielt Gitarre.", "The weather is nice."]
    if model_kind(location) == "reranker":
        pairs = [(texts[0], text) for text in texts]
        original = CrossEncoder(str(location), device="cpu").predict(pairs)
        copied = CrossEncoder(str(target), device="cpu").predict(pairs)
        done = f"Checked: the exported reranker scores {len(pairs)} pairs identically."
    else:
        original = SentenceTransformer(str(location), device="cpu").encode(texts)
        copied = SentenceTransformer(str(target), device="cpu").encode(texts)
        done = f"Checked: the exported folder embeds {len(texts)} texts identically."
    if not (original == copied).all():
        raise VerificationError("The exported folder computes differently from the model.")
    reporter.note(done)
    return target.name


# -- merged ------------------------------------------------------------------------------------


def write_merged(location: Path, target: Path, dtype: str) -> None:
    """The causal LM at `location` with any LoRA adapters merged in, as safetensors with its
    tokenizer and chat template, in `dtype` (auto: as the base stores its weights)."""
    from tuneforge.training.llm import load_causal_lm, load_chat_tokenizer

    model = load_causal_lm(str(location), device="cpu", dtype=_DTYPES.get(dtype, "auto"))
    model.save_pretrained(str(target), safe_serialization=True)
    load_chat_tokenizer(str(location)).save_pretrained(str(target))


def _merged(location: Path, target: Path, dtype: str, reporter: JobReporter) -> str:
    """Write the merged model and check it computes the same logits as the model."""
    import torch

    from tuneforge.training.llm import load_causal_lm, load_chat_tokenizer

    write_merged(location, target, dtype)
    tokenizer = load_chat_tokenizer(str(target))
    ids = torch.tensor([tokenizer("Hello, how are you?", add_special_tokens=False).input_ids])
    with torch.inference_mode():
        want = load_causal_lm(str(location), device="cpu", dtype=torch.float32)(ids).logits
        got = load_causal_lm(str(target), device="cpu", dtype=torch.float32)(ids).logits
    tolerance = 1e-4 if dtype in ("auto", "float32") else 5e-2
    difference = float((want - got).abs().max())
    if difference > tolerance * max(1.0, float(want.abs().max())):
        raise VerificationError(
            f"The merged weights compute logits up to {difference:.3g} away from the model's."
        )
    reporter.note(f"Checked: merged model logits within {difference:.2g} of the model's.")
    return target.name


# -- gguf --------------------------------------------------------------------------------------


def _gguf(
    store: Store,
    settings: Settings,
    job: Row,
    location: Path,
    staging: Path,
    stem: str,
    reporter: JobReporter,
) -> tuple[str, dict[str, Any]]:
    """Write the GGUF file and its Modelfile, and verify both in llama.cpp."""
    from tuneforge.export.gguf_export import export_gguf

    spec = job["spec"]

    def note(message: str) -> None:
        reporter.note(message)
        reporter.ensure_lease()

    rows = _training_rows(store, settings, spec["model"])
    conversations = validation_conversations(rows) or FALLBACK_CONVERSATIONS
    gguf_name, details = export_gguf(
        location,
        staging,
        settings.jobs_dir / job["id"],
        stem,
        spec["quantization"],
        conversations[: spec["verify_prompts"]],
        system=spec.get("system") or shared_system_prompt(rows),
        max_tokens=spec["verify_max_tokens"],
        note=note,
    )
    report = details["verification"]
    reporter.note(
        f"Verified: tokenization, template and stop tokens identical; greedy token agreement "
        f"with transformers {report['token_agreement']:.1%} (minimum "
        f"{report['min_agreement']:.0%})"
        + (" (identical)" if report["identical"] else "")
        + (f" (identical up to {report['near_ties']} near-tie(s))" if report["near_ties"] else "")
        + f"; tensor types {details['tensor_types']}.",
        data={"verification": {k: v for k, v in report.items() if k != "samples"}},
    )
    return gguf_name, details


def _training_rows(store: Store, settings: Settings, model: str) -> Rows | None:
    """(training rows, validation rows) of the job that made `model`, if it was ours."""
    from tuneforge.jobs.data import JobInputs, load_job_data
    from tuneforge.training.spec import JobCreate

    if "@" in model:
        from tuneforge.registry.service import resolve_reference

        model = resolve_reference(store, model)
    row = store.get_model(model)
    if row is None or not row.get("job_id"):
        return None
    job = store.get_job(row["job_id"])
    if job is None:
        return None
    spec = JobCreate.model_validate(job["spec"])
    assert spec.seed is not None
    try:
        data = load_job_data(JobInputs(store, settings, spec), spec.seed)
    except Exception:  # the files may have been deleted since: fall back to general prompts
        return None
    return data.train_rows, data.eval_rows


def _prompt_of(row: dict[str, Any]) -> list[dict[str, str]] | None:
    """The conversation up to the last assistant turn (chat rows), or the prompt (preference
    rows)."""
    messages = row.get("messages") or row.get("prompt")
    if not isinstance(messages, list):
        return None
    cut = list(messages)
    while cut and cut[-1].get("role") == "assistant":
        cut.pop()
    prompt = [{"role": m["role"], "content": str(m["content"])} for m in cut]
    return prompt if prompt and prompt[-1]["role"] == "user" else None


def validation_conversations(rows: Rows | None) -> list[list[dict[str, str]]]:
    """Prompts from the model's validation rows (training rows if it had none)."""
    if rows is None:
        return []
    train, validation = rows
    prompts = [_prompt_of(r) for r in (validation or train)]
    return [p for p in prompts if p]


def shared_system_prompt(rows: Rows | None) -> str | None:
    """The system prompt every training conversation of the model starts with, if one does."""
    if not rows or not rows[0]:
        return None
    systems = set()
    for row in rows[0]:
        messages = row.get("messages") or row.get("prompt") or []
        first = messages[0] if messages else {}
        if first.get("role") != "system":
            return None
        systems.add(first["content"])
    return systems.pop() if len(systems) == 1 else None
