"""The answers of `/v1/fine_tuning/alpha/graders`, in the shapes of OpenAI's
`GraderRunResponse` and `GraderValidateResponse`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tuneforge.api.schemas.base import Public


class GraderRunErrors(Public):
    """Which kinds of failure happened while grading (a failed grader's reward is 0)."""

    formula_parse_error: bool
    invalid_variable_error: bool = Field(
        ..., description="A reference into the sample that the answer does not have."
    )
    model_grader_parse_error: bool = Field(
        ..., description="No score or label could be read from a judge's answer."
    )
    model_grader_refusal_error: bool
    model_grader_server_error: bool
    model_grader_server_error_details: str | None
    other_error: bool
    python_grader_runtime_error: bool
    python_grader_runtime_error_details: str | None
    python_grader_server_error: bool
    python_grader_server_error_type: str | None
    sample_parse_error: bool = Field(..., description="output_json used, and no JSON answer.")
    truncated_observation_error: bool
    unresponsive_reward_error: bool = Field(..., description="A python grader ran too long.")


class GraderRunMetadata(Public):
    errors: GraderRunErrors
    execution_time: float = Field(..., description="Seconds the grading took.")
    name: str
    sampled_model_name: str | None
    scores: dict[str, Any] = Field(
        ...,
        description="A judge's `result` and `output`, the checks' verdicts; of a multi grader, "
        "each sub-grader's by its key, with its `reward`.",
    )
    token_usage: int | None = Field(..., description="Tokens the judges read and wrote.")
    type: str


class GraderRunResponse(Public):
    metadata: GraderRunMetadata
    model_grader_token_usage_per_model: dict[str, Any] = Field(
        ..., description="Per judge model: prompt_tokens, completion_tokens, total_tokens."
    )
    reward: float
    sub_rewards: dict[str, Any] = Field(..., description="A multi grader's rewards by key.")


class GraderValidateResponse(Public):
    grader: dict[str, Any] = Field(..., description="The grader, as it was understood.")
