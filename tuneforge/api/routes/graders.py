"""`/v1/fine_tuning/alpha/graders`: OpenAI's grader endpoints. `run` grades one model sample
against an item; `validate` checks a grader without running it. The graders themselves are
in `tuneforge.graders`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from tuneforge.api.deps import ModelCacheDep, SettingsDep, StoreDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.graders import GraderRunResponse, GraderValidateResponse
from tuneforge.graders.backends import ServedBackends
from tuneforge.graders.run import require_allowed, run_grader
from tuneforge.graders.spec import GRADER_TYPES, parse_grader
from tuneforge.graders.templates import Sample

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["graders"])

GRADER = Field(
    ...,
    description=f"A grader object; its `type` is one of {', '.join(GRADER_TYPES)}.",
)


class GraderRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grader: dict[str, Any] = GRADER
    model_sample: str = Field(
        ...,
        max_length=1024 * 1024,
        description="The answer graded: `sample.output_text`, and `sample.output_json` when "
        "it is JSON.",
    )
    item: Any = Field(None, description="The data line graded against: the `item` namespace.")


class GraderValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grader: dict[str, Any] = GRADER


@router.post("/run", response_model=GraderRunResponse, responses=error_responses(400, 403, 404))
def run_grader_endpoint(
    store: StoreDep, settings: SettingsDep, cache: ModelCacheDep, request: GraderRunRequest
) -> GraderRunResponse:
    """Grade `model_sample` (an answer to `item`) with `grader`: the reward, and what went
    wrong where something did (`metadata.errors`)."""
    backends = ServedBackends(store, settings, cache)
    grader = parse_grader(request.grader)
    require_allowed(grader, settings.python_graders)
    backends.check_models(grader)
    item = {} if request.item is None else request.item
    result = run_grader(grader, Sample.of_answer(request.model_sample), item, backends)
    return GraderRunResponse.model_validate(result.as_openai())


@router.post(
    "/validate",
    response_model=GraderValidateResponse,
    responses=error_responses(400, 403, 404),
)
def validate_grader(
    store: StoreDep, settings: SettingsDep, cache: ModelCacheDep, request: GraderValidateRequest
) -> GraderValidateResponse:
    """Check a grader without running it: its fields, templates, formula, python source
    (parsed, not run) and judge models. Answers the grader as understood."""
    grader = parse_grader(request.grader)
    require_allowed(grader, settings.python_graders)
    ServedBackends(store, settings, cache).check_models(grader)
    return GraderValidateResponse(grader=grader.model_dump(mode="json", exclude_unset=True))
