"""The job process's side of synthetic data: answer the prompts, filter, store the dataset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tuneforge.config import Settings
from tuneforge.datasets.dedup import clean
from tuneforge.datasets.prepare import write_dataset
from tuneforge.db.store import Row, Store
from tuneforge.errors import EndpointError, InvalidDatasetError, JobCancelledError
from tuneforge.jobs.reporting import JobReporter
from tuneforge.jobs.status import JobStatus
from tuneforge.synthetic.endpoint_keys import endpoint_key
from tuneforge.synthetic.quality import answer_problem, duplicate_answers
from tuneforge.synthetic.service import SyntheticCreate, fill_prompts

EXAMPLES_PER_REASON = 5


class EndpointAnswers:
    """Answers from `POST {url}/v1/chat/completions` of an OpenAI-compatible server."""

    def __init__(self, endpoint: dict[str, Any], api_key: str | None):
        base = endpoint["url"].rstrip("/")
        self.url = (base if base.endswith("/v1") else base + "/v1") + "/chat/completions"
        self.model = endpoint["model"]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=endpoint["timeout_seconds"])

    def __call__(
        self, messages: list[dict[str, str]], temperature: float, max_tokens: int, seed: int
    ) -> str:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "seed": seed,
        }
        try:
            response = self.client.post(self.url, json=body)
        except httpx.HTTPError as error:
            raise EndpointError(
                f"Could not reach {self.url}: {type(error).__name__}: {error}", param="endpoint"
            ) from error
        if response.status_code != 200:
            raise EndpointError(
                f"{self.url} answered {response.status_code}: {response.text[:500]}",
                param="endpoint",
            )
        try:
            return str(response.json()["choices"][0]["message"]["content"] or "")
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise EndpointError(
                f"{self.url} sent no chat completion: {response.text[:300]}", param="endpoint"
            ) from error


class LocalAnswers:
    """Answers written in this process by one of tuneforge's models (see serving.generation)."""

    def __init__(self, store: Store, settings: Settings, model: str, device: str):
        from tuneforge.registry.models import resolve_model
        from tuneforge.serving.generation import Generator

        self.generator = Generator(Path(resolve_model(store, settings, model).location), device)

    def __call__(
        self, messages: list[dict[str, str]], temperature: float, max_tokens: int, seed: int
    ) -> str:
        from tuneforge.serving.generation import Sampling

        ids = self.generator.chat_prompt(messages)
        limit = self.generator.max_tokens(len(ids), max_tokens)
        sampling = Sampling(max_tokens=limit, temperature=temperature, seed=seed)
        return self.generator.answer(ids, sampling).text


def run_synthetic(
    store: Store, settings: Settings, job: Row, reporter: JobReporter, device: str
) -> None:
    """Answer every prompt, filter the answers, store them as a dataset, end the job."""
    request = SyntheticCreate.model_validate(job["spec"])
    config = request.generation_config
    prompts = fill_prompts(request)
    if request.model is not None:
        answer = LocalAnswers(store, settings, request.model, device)
        source = f"{request.model} on {device}"
    else:
        assert request.endpoint is not None
        endpoint = request.endpoint.model_dump()
        key = endpoint_key(settings, job["id"], endpoint)
        answer = EndpointAnswers(endpoint, key)  # type: ignore[assignment]
        source = f"{request.endpoint.model} at {request.endpoint.url}"
    reporter.note(f"Generating {len(prompts)} answers with {source}.")
    rows: list[Row] = []
    for i, prompt in enumerate(prompts):
        if reporter.stop_reason() is not None:  # (a lost lease raises here)
            raise JobCancelledError("Cancelled.")
        system = (
            [{"role": "system", "content": request.system_prompt}] if request.system_prompt else []
        )
        messages = [*system, {"role": "user", "content": prompt}]
        text = answer(messages, config.temperature, config.max_tokens, request.seed + i)
        rows.append({"messages": [*messages, {"role": "assistant", "content": clean(text)}]})
        reporter.progress(i + 1, len(prompts), 0.0)
    kept, removed, examples = filter_rows(rows, request)
    if len(kept) < settings.min_rows:
        raise InvalidDatasetError(
            f"{len(kept)} of {len(rows)} generated answers passed the quality filter; a "
            f"dataset needs at least {settings.min_rows} (removed: {dict(removed)}).",
            param="quality",
            details={"removed": dict(removed), "examples": examples},
        )
    summary = {
        "job_id": job["id"],
        "source": {"model": request.model}
        if request.model
        else {"endpoint": request.endpoint.url, "model": request.endpoint.model},  # type: ignore[union-attr]
        "generated": len(rows),
        "kept": len(kept),
        "removed": dict(removed),
        "examples": examples,
        "quality_filter": config.quality_filter,
    }
    dataset = write_dataset(
        store, settings, f"synthetic-{job['id']}.jsonl", "supervised", kept, {"synthetic": summary}
    )
    report = dataset["report"]
    result = dict(summary, dataset_id=dataset["id"], dataset_valid=report["valid"])
    store.transition(
        job["id"],
        JobStatus.SUCCEEDED,
        f"Synthetic data done: {len(kept)} of {len(rows)} answers kept, dataset {dataset['id']}.",
        expected={JobStatus.RUNNING},
        lease=reporter.lease,
        result=result,
    )


def filter_rows(
    rows: list[Row], request: SyntheticCreate
) -> tuple[list[Row], Counter[str], dict[str, list[dict[str, Any]]]]:
    """(kept rows, removed counts by reason, examples by reason). Empty answers are always
    removed (they are no training example); the rest only with `quality_filter`."""
    removed: Counter[str] = Counter()
    examples: dict[str, list[dict[str, Any]]] = {}
    quality = request.quality.model_dump()

    def drop(index: int, reason: str, detail: str | None = None) -> None:
        removed[reason] += 1
        shown = examples.setdefault(reason, [])
        if len(shown) < EXAMPLES_PER_REASON:
            messages = rows[index]["messages"]
            shown.append(
                {
                    "sample": index,
                    "prompt": messages[-2]["content"][:200],
                    "answer": messages[-1]["content"][:200],
                    "detail": detail,
                }
            )

    candidates = []
    for index, row in enumerate(rows):
        text = row["messages"][-1]["content"]
        problem: tuple[str, str | None] | None = ("empty", None) if not text else None
        if problem is None and request.generation_config.quality_filter:
            problem = answer_problem(text, quality)
        if problem is not None:
            drop(index, *problem)
        else:
            candidates.append(index)
    if request.generation_config.quality_filter:
        answers = [rows[i]["messages"][-1]["content"] for i in candidates]
        repeats = duplicate_answers(answers, quality["near_duplicate_threshold"])
        for position, of in repeats.items():
            drop(candidates[position], "duplicate", f"repeats sample {candidates[of]}")
        candidates = [i for p, i in enumerate(candidates) if p not in repeats]
    return [rows[i] for i in candidates], removed, examples
