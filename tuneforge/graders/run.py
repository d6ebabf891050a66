"""Running a grader on one sample: its reward, and what OpenAI's run endpoint reports beside
it (errors by kind, scores, sub-rewards, the judges' token usage).

What a grader needs from outside (judge models, an embedding model, the python sandbox) comes
through `Backends`; `backends.ServedBackends` serves them from this machine's models.

An answer's own faults are reported, not raised: a reference into the sample it does not
have (`sample_parse_error` when it is no JSON, else `invalid_variable_error`), a judge's
answer without a score or label (`model_grader_parse_error`), a python grader that fails or
runs too long (`python_grader_runtime_error`, `unresponsive_reward_error`); such a grader's
reward is 0. The request's faults raise, before anything is graded: a reference the item
does not have (`MissingReference`), an unknown model, python graders while they are off
(`PythonGradersDisabledError`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from tuneforge.errors import InvalidRequestError, PythonGradersDisabledError
from tuneforge.graders import checks, formula, judge
from tuneforge.graders.sandbox import PythonLimits, run_python
from tuneforge.graders.similarity import TextTooLong, similarity
from tuneforge.graders.spec import (
    ChecksGrader,
    LabelModelGrader,
    MultiGrader,
    PythonGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
    leaves,
    templates,
)
from tuneforge.graders.templates import (
    Sample,
    SampleReferenceError,
    references,
    render,
    resolve,
)

ERROR_FLAGS = (
    "formula_parse_error",
    "invalid_variable_error",
    "model_grader_parse_error",
    "model_grader_refusal_error",
    "model_grader_server_error",
    "other_error",
    "python_grader_runtime_error",
    "python_grader_server_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
)
ERROR_DETAILS = (
    "model_grader_server_error_details",
    "python_grader_runtime_error_details",
    "python_grader_server_error_type",
)
PYTHON_GRADERS_OFF = (
    "Python graders are off on this server: they run code sent with the request. The "
    "operator turns them on with TUNEFORGE_PYTHON_GRADERS=1 (see SECURITY.md, "
    '"Python graders").'
)


@dataclass(frozen=True)
class JudgeAnswer:
    text: str
    prompt_tokens: int
    completion_tokens: int


class JudgeFailed(Exception):
    """The judge could not answer (its context is too short for the prompt, …)."""


class Backends(Protocol):
    """What graders use from outside. `python_limits` None: python graders are off."""

    python_limits: PythonLimits | None

    def judge(
        self,
        model: str,
        messages: list[dict[str, str]],
        sampling: judge.JudgeSampling,
        param: str,
    ) -> JudgeAnswer:
        """The model's answer; JudgeFailed when it cannot write one. `param`: the field
        naming the model, for errors about it."""
        ...

    def embed(self, texts: list[str]) -> list[list[float]]: ...


@dataclass
class GradeResult:
    """A grader's verdict on one sample, as OpenAI's run endpoint reports it
    (`as_openai`)."""

    name: str
    type: str
    reward: float = 0.0
    scores: dict[str, Any] = field(default_factory=dict)
    sub_rewards: dict[str, float] = field(default_factory=dict)
    errors: dict[str, Any] = field(
        default_factory=lambda: dict.fromkeys(ERROR_FLAGS, False) | dict.fromkeys(ERROR_DETAILS)
    )
    token_usage: dict[str, dict[str, int]] = field(default_factory=dict)
    execution_time: float = 0.0

    def as_openai(self) -> dict[str, Any]:
        """The body of `POST /v1/fine_tuning/alpha/graders/run` (GraderRunResponse)."""
        total = sum(u["total_tokens"] for u in self.token_usage.values())
        return {
            "reward": self.reward,
            "metadata": {
                "name": self.name,
                "type": self.type,
                "errors": self.errors,
                "execution_time": self.execution_time,
                "scores": self.scores,
                "token_usage": total if self.token_usage else None,
                "sampled_model_name": None,
            },
            "sub_rewards": self.sub_rewards,
            "model_grader_token_usage_per_model": self.token_usage,
        }


def require_allowed(grader: Any, python_on: bool, param: str = "grader") -> None:
    """PythonGradersDisabledError when the grader is or holds a python grader while they
    are off."""
    for path, leaf in leaves(grader, param):
        if isinstance(leaf, PythonGrader) and not python_on:
            raise PythonGradersDisabledError(PYTHON_GRADERS_OFF, param=path)


def check_item(grader: Any, item: Any, param: str = "grader") -> None:
    """MissingReference (naming the grader's field and the reference) when `item` lacks a
    field the grader's templates name: a data line checked before any sample is graded."""
    for path, template in templates(grader, param):
        for reference in references(template, path):
            if reference.namespace == "item":
                resolve(reference, None, item, path)


def run_grader(
    grader: Any, sample: Sample, item: Any, backends: Backends, param: str = "grader"
) -> GradeResult:
    """Grade `sample` (an answer to `item`) with `grader` (see the module's docstring)."""
    started = time.perf_counter()
    require_allowed(grader, backends.python_limits is not None, param)
    check_item(grader, item, param)  # the item's faults first, before the answer's
    result = GradeResult(name=grader.name, type=grader.type)
    if isinstance(grader, MultiGrader):
        for path, leaf in leaves(grader, param):
            key = path.rsplit(".", 1)[1]
            details: dict[str, Any] = {}
            reward = _grade(leaf, sample, item, backends, path, result, details)
            result.sub_rewards[key] = reward
            result.scores[key] = {"reward": reward, **details}
        try:
            parsed = formula.parse(grader.calculate_output, grader.graders)
            result.reward = parsed.evaluate(result.sub_rewards)
        except formula.FormulaError:
            result.errors["formula_parse_error"] = True
    else:
        result.reward = _grade(grader, sample, item, backends, param, result, result.scores)
    result.execution_time = time.perf_counter() - started
    return result


def _grade(
    grader: Any,
    sample: Sample,
    item: Any,
    backends: Backends,
    param: str,
    result: GradeResult,
    details: dict[str, Any],
) -> float:
    """One grader's reward (0 on the answer's faults, which are marked in `result`); what
    more it found goes into `details` (a judge's result and answer, the checks' verdicts)."""
    try:
        if isinstance(grader, StringCheckGrader):
            return _string_check(grader, sample, item, param)
        if isinstance(grader, TextSimilarityGrader):
            return _text_similarity(grader, sample, item, backends, param)
        if isinstance(grader, ScoreModelGrader | LabelModelGrader):
            return _model(grader, sample, item, backends, param, result, details)
        if isinstance(grader, PythonGrader):
            return _python(grader, sample, item, backends, result)
        if isinstance(grader, ChecksGrader):
            verdicts = checks.check(grader, sample, item, param)
            details.update(verdicts)
            return checks.reward(verdicts)
    except SampleReferenceError as error:
        flag = "sample_parse_error" if error.parse_error else "invalid_variable_error"
        return _failed(result, flag)
    except TextTooLong:
        return _failed(result, "other_error")
    raise AssertionError(f"no grading for {type(grader).__name__}")


def _failed(result: GradeResult, flag: str) -> float:
    result.errors[flag] = True
    return 0.0


def _string_check(grader: StringCheckGrader, sample: Sample, item: Any, param: str) -> float:
    text = render(grader.input, sample, item, f"{param}.input")
    reference = render(grader.reference, sample, item, f"{param}.reference")
    passed = {
        "eq": text == reference,
        "ne": text != reference,
        "like": reference in text,
        "ilike": reference.lower() in text.lower(),
    }[grader.operation]
    return float(passed)


def _text_similarity(
    grader: TextSimilarityGrader, sample: Sample, item: Any, backends: Backends, param: str
) -> float:
    text = render(grader.input, sample, item, f"{param}.input")
    reference = render(grader.reference, sample, item, f"{param}.reference")
    if grader.evaluation_metric != "cosine":
        return similarity(grader.evaluation_metric, text, reference)
    a, b = backends.embed([text, reference])
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norms if norms else 0.0


def _model(
    grader: ScoreModelGrader | LabelModelGrader,
    sample: Sample,
    item: Any,
    backends: Backends,
    param: str,
    result: GradeResult,
    details: dict[str, Any],
) -> float:
    messages = judge.prompt_messages(grader, sample, item, param)
    try:
        answer = backends.judge(grader.model, messages, judge.sampling(grader), f"{param}.model")
    except JudgeFailed as error:
        result.errors["model_grader_server_error_details"] = str(error)
        return _failed(result, "model_grader_server_error")
    usage = result.token_usage.setdefault(
        grader.model, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    )
    usage["prompt_tokens"] += answer.prompt_tokens
    usage["completion_tokens"] += answer.completion_tokens
    usage["total_tokens"] += answer.prompt_tokens + answer.completion_tokens
    if isinstance(grader, ScoreModelGrader):
        verdict = judge.read_score(answer.text, *grader.bounds())
    else:
        verdict = judge.read_label(answer.text, grader.labels)
    details.update(result=verdict.value, output=answer.text)
    if verdict.value is None:
        return _failed(result, "model_grader_parse_error")
    if isinstance(grader, LabelModelGrader):
        return float(verdict.value in grader.passing_labels)
    return float(verdict.value)


def _python(
    grader: PythonGrader, sample: Sample, item: Any, backends: Backends, result: GradeResult
) -> float:
    if backends.python_limits is None:  # require_allowed has refused it already
        raise InvalidRequestError(PYTHON_GRADERS_OFF)
    outcome = run_python(grader.source, [(sample.as_dict(), item)], backends.python_limits)[0]
    if outcome.server_error is not None:
        result.errors["python_grader_server_error_type"] = outcome.server_error
        result.errors["python_grader_runtime_error_details"] = outcome.error
        return _failed(result, "python_grader_server_error")
    if outcome.error is not None:
        result.errors["python_grader_runtime_error_details"] = outcome.error
        if outcome.timed_out:
            result.errors["unresponsive_reward_error"] = True
        return _failed(result, "python_grader_runtime_error")
    assert outcome.reward is not None
    return outcome.reward
