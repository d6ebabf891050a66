"""Running graders that need no model: rewards, sub-rewards, and the answer's faults
reported in OpenAI's error flags rather than raised."""

from __future__ import annotations

from typing import Any

import pytest

from tuneforge.errors import PythonGradersDisabledError
from tuneforge.graders.run import GradeResult, check_item, run_grader
from tuneforge.graders.sandbox import PythonLimits
from tuneforge.graders.spec import parse_grader
from tuneforge.graders.templates import MissingReference, Sample


class ModelFree:
    """Backends for graders that use no model; python graders on or off."""

    def __init__(self, python_limits: PythonLimits | None = None):
        self.python_limits = python_limits

    def judge(self, *args: Any) -> Any:
        raise AssertionError("no judge here")

    def embed(self, texts: list[str]) -> Any:
        raise AssertionError("no embeddings here")


def grade(grader: dict[str, Any], answer: str, item: Any = None, **kw: Any) -> GradeResult:
    return run_grader(parse_grader(grader), Sample(answer), item or {}, ModelFree(**kw))


def check(operation: str, reference: str = "{{item.answer}}") -> dict[str, Any]:
    return {
        "type": "string_check",
        "name": "check",
        "input": "{{sample.output_text}}",
        "reference": reference,
        "operation": operation,
    }


@pytest.mark.parametrize(
    ("operation", "answer", "reward"),
    [
        ("eq", "Paris", 1.0),
        ("eq", "paris", 0.0),
        ("ne", "Lyon", 1.0),
        ("ne", "Paris", 0.0),
        ("like", "It is Paris.", 1.0),
        ("like", "It is PARIS.", 0.0),
        ("ilike", "It is PARIS.", 1.0),
        ("ilike", "It is Lyon.", 0.0),
    ],
)
def test_string_check(operation: str, answer: str, reward: float) -> None:
    result = grade(check(operation), answer, {"answer": "Paris"})
    assert result.reward == reward
    assert not any(v for v in result.errors.values())


def test_the_run_answer_has_openai_s_shape() -> None:
    body = grade(check("eq"), "Paris", {"answer": "Paris"}).as_openai()
    assert set(body) == {"reward", "metadata", "sub_rewards", "model_grader_token_usage_per_model"}
    assert set(body["metadata"]) == {
        "name",
        "type",
        "errors",
        "execution_time",
        "scores",
        "token_usage",
        "sampled_model_name",
    }
    assert len(body["metadata"]["errors"]) == 14
    assert body["metadata"]["type"] == "string_check" and body["metadata"]["name"] == "check"


def test_multi_combines_sub_rewards_by_its_formula() -> None:
    grader = {
        "type": "multi",
        "name": "tool call",
        "graders": {
            "name": check("eq", "{{item.name}}") | {"input": "{{sample.output_json.name}}"},
            "city": {
                "type": "text_similarity",
                "name": "city",
                "input": "{{sample.output_json.arguments.city}}",
                "reference": "{{item.city}}",
                "evaluation_metric": "fuzzy_match",
            },
        },
        "calculate_output": "0.5 * name + 0.5 * city",
    }
    answer = '{"name": "get_weather", "arguments": {"city": "kitten"}}'
    result = grade(grader, answer, {"name": "get_weather", "city": "sitting"})
    assert result.sub_rewards == {"name": 1.0, "city": pytest.approx(8 / 13)}
    assert result.reward == pytest.approx(0.5 + 0.5 * 8 / 13)
    assert result.scores == {"name": {"reward": 1.0}, "city": {"reward": pytest.approx(8 / 13)}}

    # An answer that is no JSON: both sub-graders fail with sample_parse_error, reward 0.
    result = grade(grader, "get_weather(Paris)", {"name": "get_weather", "city": "Paris"})
    assert result.reward == 0.0 and result.errors["sample_parse_error"]
    # JSON without the key: invalid_variable_error for that sub-grader only.
    result = grade(grader, '{"name": "get_weather"}', {"name": "get_weather", "city": "Paris"})
    assert result.sub_rewards == {"name": 1.0, "city": 0.0}
    assert result.errors["invalid_variable_error"] and not result.errors["sample_parse_error"]


def test_a_formula_without_a_value_is_flagged() -> None:
    grader = {
        "type": "multi",
        "name": "m",
        "graders": {"a": check("eq")},
        "calculate_output": "1 / a",
    }
    result = grade(grader, "Lyon", {"answer": "Paris"})
    assert result.reward == 0.0 and result.errors["formula_parse_error"]


def test_an_item_without_the_referenced_field_is_the_request_s_fault() -> None:
    with pytest.raises(MissingReference) as caught:
        grade(check("eq"), "Paris", {"solution": "Paris"})
    assert caught.value.param == "grader.reference"
    assert "{{item.answer}}" in caught.value.message and "solution" in caught.value.message


def test_data_lines_are_checked_against_the_item_references() -> None:
    grader = parse_grader(
        {
            "type": "multi",
            "name": "m",
            "graders": {
                "a": check("eq", "{{item.answer}}"),
                "b": check("like", "{{item.meta.keywords[0]}}"),
            },
            "calculate_output": "a + b",
        }
    )
    check_item(grader, {"answer": "x", "meta": {"keywords": ["k"]}})
    with pytest.raises(MissingReference) as caught:
        check_item(grader, {"answer": "x", "meta": {"keywords": []}})
    assert caught.value.param == "grader.graders.b.reference"
    assert "{{item.meta.keywords[0]}}" in caught.value.message


def test_python_graders_are_refused_while_off() -> None:
    grader = {"type": "python", "name": "p", "source": "def grade(s, i):\n    return 1\n"}
    with pytest.raises(PythonGradersDisabledError, match="TUNEFORGE_PYTHON_GRADERS=1") as caught:
        grade(
            {"type": "multi", "name": "m", "graders": {"p": grader}, "calculate_output": "p"}, "x"
        )
    assert caught.value.param == "grader.graders.p"


CHECKS = {"type": "tuneforge_checks", "name": "goals"}


@pytest.mark.parametrize(
    ("grader", "answer", "item", "reward", "scores"),
    [
        (CHECKS, '{"post": "Hi"}', {}, 1.0, {"json_valid": 1.0}),
        (CHECKS, '```json\n["a"]\n```', {}, 1.0, {"json_valid": 1.0}),
        (CHECKS, "Hello!", {}, 0.0, {"json_valid": 0.0}),
        (
            CHECKS | {"reference": "{{item.reference}}"},
            '{"post": "Hi"}',
            {"reference": '{"post": "x", "hashtags": []}'},
            0.5,
            {"json_valid": 1.0, "expected_keys": 0.0},
        ),
        (
            CHECKS | {"expected_keys": "{{item.keys}}", "max_chars": 10},
            '{"a": 1, "b": 2}',
            {"keys": ["a", "b"]},
            2 / 3,
            {"json_valid": 1.0, "expected_keys": 1.0, "length": 0.0},
        ),
        (
            CHECKS | {"json_valid": False, "language": "prompt"},
            "Das Wetter in Berlin ist heute sonnig und warm, am Abend regnet es ein wenig.",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": "Wie wird das Wetter morgen in Berlin und in Hamburg sein?",
                    }
                ]
            },
            1.0,
            {"language": 1.0},
        ),
        (
            CHECKS | {"json_valid": False, "language": "{{item.language}}"},
            '{"text": "The weather in Berlin is sunny and warm today, with rain tonight."}',
            {"language": "de"},
            0.0,
            {"language": 0.0},
        ),
    ],
)
def test_tuneforge_checks(
    grader: dict[str, Any], answer: str, item: Any, reward: float, scores: dict[str, Any]
) -> None:
    result = grade(grader, answer, item)
    assert result.reward == pytest.approx(reward)
    assert {k: v for k, v in result.scores.items() if v is not None} == scores
