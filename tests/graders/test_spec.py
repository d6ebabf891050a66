"""Grader specs: OpenAI's objects are read as they are, and every problem names its field."""

from __future__ import annotations

from typing import Any

import pytest

from tuneforge.errors import InvalidRequestError
from tuneforge.graders.spec import MultiGrader, ScoreModelGrader, parse_grader

STRING_CHECK = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}
SCORE_MODEL = {
    "type": "score_model",
    "name": "judge",
    "model": "tuneforge-test/tiny-qwen2",
    "input": [
        {"role": "system", "content": "Grade the answer."},
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "Answer: {{sample.output_text}}"}],
            "type": "message",
        },
    ],
    "range": [0, 10],
    "sampling_params": {"temperature": 0, "max_completions_tokens": 20, "seed": 1},
}


def problems(data: Any) -> list[dict[str, str]]:
    with pytest.raises(InvalidRequestError) as caught:
        parse_grader(data)
    assert caught.value.details[0]["param"] == caught.value.param
    return caught.value.details


def test_openai_graders_parse() -> None:
    multi = parse_grader(
        {
            "type": "multi",
            "name": "both",
            "graders": {"exact": STRING_CHECK, "judge": SCORE_MODEL},
            "calculate_output": "0.7 * exact + 0.3 * judge / 10",
        }
    )
    assert isinstance(multi, MultiGrader)
    judge = multi.graders["judge"]
    assert isinstance(judge, ScoreModelGrader) and judge.bounds() == (0, 10)
    python = parse_grader(
        {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"}
    )
    assert python.image_tag is None
    label = parse_grader(
        {
            "type": "label_model",
            "name": "l",
            "model": "m",
            "input": [{"role": "developer", "content": "Is {{sample.output_text}} polite?"}],
            "labels": ["polite", "rude"],
            "passing_labels": ["polite"],
        }
    )
    assert label.passing_labels == ["polite"]


def test_a_sub_grader_s_missing_field_is_named() -> None:
    broken = {k: v for k, v in STRING_CHECK.items() if k != "reference"}
    found = problems(
        {"type": "multi", "name": "m", "graders": {"a": broken}, "calculate_output": "a"}
    )
    assert found[0]["param"] == "grader.graders.a.reference"
    assert "required" in found[0]["message"].lower()


def test_every_problem_is_listed() -> None:
    found = problems(
        {
            "type": "multi",
            "name": "m",
            "graders": {
                "a": {**STRING_CHECK, "reference": "{{itme.answer}}"},
                "b": {**STRING_CHECK, "input": "{{sample.output}}"},
            },
            "calculate_output": "a + c",
        }
    )
    assert [p["param"] for p in found] == [
        "grader.graders.a.reference",
        "grader.graders.b.input",
        "grader.calculate_output",
    ]
    assert "'c' is no grader" in found[2]["message"]


@pytest.mark.parametrize(
    ("data", "param", "says"),
    [
        ({"type": "regex", "name": "x"}, "grader.type", "does not match any of the expected"),
        ({"name": "x"}, "grader.type", "Unable to extract tag"),
        ({**STRING_CHECK, "operation": "contains"}, "grader.operation", "'eq', 'ne'"),
        ({**STRING_CHECK, "pass_threshold": 1}, "grader.pass_threshold", "Extra inputs"),
        ({**SCORE_MODEL, "range": [1, 0]}, "grader.range", "lowest below highest"),
        (
            {
                **SCORE_MODEL,
                "input": [{"role": "user", "content": {"type": "input_image", "image_url": "x"}}],
            },
            "grader.input[0].content",
            "input_image is not supported",
        ),
        (
            {**SCORE_MODEL, "input": [{"role": "user", "content": "{{item}}"}]},
            "grader.input[0].content",
            "names the whole item",
        ),
        (
            {
                "type": "label_model",
                "name": "l",
                "model": "m",
                "input": [{"role": "user", "content": "?"}],
                "labels": ["a"],
                "passing_labels": ["b"],
            },
            "grader.passing_labels",
            "not among labels",
        ),
        (
            {"type": "python", "name": "p", "source": "def score(sample, item): return 1"},
            "grader.source",
            "must define grade(sample, item)",
        ),
        ({"type": "python", "name": "p", "source": "def grade(:"}, "grader.source", "parse"),
        (
            {
                "type": "multi",
                "name": "m",
                "graders": {"a": {"type": "multi"}},
                "calculate_output": "a",
            },
            "grader.graders.a.type",
            "does not match any of the expected tags",
        ),
        (
            {
                "type": "multi",
                "name": "m",
                "graders": {"a-b": STRING_CHECK},
                "calculate_output": "1",
            },
            "grader.graders.a-b",
            "A key a formula can name",
        ),
        (
            {"type": "tuneforge_checks", "name": "c", "json_valid": False},
            "grader",
            "checks nothing",
        ),
        ("not a grader", "grader", "valid dictionary"),
    ],
)
def test_bad_graders(data: Any, param: str, says: str) -> None:
    found = problems(data)
    assert found[0]["param"] == param
    assert says in found[0]["message"]
