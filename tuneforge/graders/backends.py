"""Graders' backends on this machine: judges and the cosine metric's embedding model are
models tuneforge serves (loaded through the serving cache, as `/v1/chat/completions` and
`/v1/embeddings` load them), python graders run in the sandbox with the limits of
`Settings`, the data folder hidden from them."""

from __future__ import annotations

from typing import Any

from tuneforge.config import Settings
from tuneforge.db.store import Store
from tuneforge.errors import InvalidRequestError, TuneforgeError
from tuneforge.graders.judge import JudgeSampling
from tuneforge.graders.run import JudgeAnswer, JudgeFailed, require_allowed
from tuneforge.graders.sandbox import PythonLimits
from tuneforge.graders.spec import LabelModelGrader, ScoreModelGrader, leaves, parse_grader
from tuneforge.registry.models import local_model
from tuneforge.serving.cache import ModelCache
from tuneforge.serving.generation import Sampling
from tuneforge.serving.loading import require_kind, served_model


class ServedBackends:
    """`run.Backends` from the served models and the settings."""

    def __init__(self, store: Store, settings: Settings, cache: ModelCache):
        self.store = store
        self.settings = settings
        self.cache = cache
        self.python_limits = (
            PythonLimits(
                seconds=settings.python_grader_seconds,
                cpu_seconds=settings.python_grader_cpu_seconds,
                memory_mb=settings.python_grader_memory_mb,
                hidden=(settings.home,),
            )
            if settings.python_graders
            else None
        )

    def check_models(self, grader: Any, param: str = "grader") -> None:
        """Raise (naming the field) unless every judge of `grader` is a causal LM here."""
        check_models(self.store, self.settings, grader, param)

    def judge(
        self, model: str, messages: list[dict[str, str]], sampling: JudgeSampling, param: str
    ) -> JudgeAnswer:
        with _naming(param):
            generator = served_model(self.store, self.settings, self.cache, model, "causal_lm")
        try:
            prompt = generator.chat_prompt(messages)
            max_tokens = generator.max_tokens(len(prompt), sampling.max_tokens)
        except InvalidRequestError as error:
            raise JudgeFailed(error.message) from error
        answer = generator.answer(
            prompt,
            Sampling(
                max_tokens=max_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                seed=sampling.seed,
            ),
        )
        return JudgeAnswer(answer.text, len(prompt), answer.finish.tokens)

    def embed(self, texts: list[str]) -> list[list[float]]:
        name = self.settings.grader_embedding_model
        embedder = served_model(self.store, self.settings, self.cache, name, "embedding")
        vectors, _ = embedder.embed(texts)
        return [[float(x) for x in vector] for vector in vectors]


def check_models(store: Store, settings: Settings, grader: Any, param: str = "grader") -> None:
    """Raise (naming the field) unless every judge of `grader` is a causal LM here."""
    for path, leaf in leaves(grader, param):
        if isinstance(leaf, ScoreModelGrader | LabelModelGrader):
            with _naming(f"{path}.model"):
                location = local_model(store, settings, leaf.model).resolve()
                require_kind(leaf.model, location, "causal_lm")


def check_job_grader(store: Store, settings: Settings, data: Any, param: str) -> Any:
    """The grader of a reinforcement job, parsed and checked as the grader endpoints check
    one: every bad field (400), python graders while they are off (403), judges that are no
    causal LM here; `param` is the grader's field in the job."""
    grader = parse_grader(data, param)
    require_allowed(grader, settings.python_graders, param)
    check_models(store, settings, grader, param)
    return grader


class _naming:
    """Errors about the model inside are about the field `param`."""

    def __init__(self, param: str):
        self.param = param

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if isinstance(error, TuneforgeError) and error.param == "model":
            error.param = self.param
