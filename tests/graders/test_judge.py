"""Model graders: the judge's prompt, and scores and labels read from fixed answers."""

from __future__ import annotations

import pytest

from tuneforge.graders.judge import prompt_messages, read_label, read_score, sampling
from tuneforge.graders.spec import parse_grader
from tuneforge.graders.templates import Sample

LABELS = ["correct", "incorrect", "partially correct"]


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ('{"result": 0.8}', 0.8),
        ('Sure! {"steps": [], "result": "0.25"} done', 0.25),
        ('{"score": 1}', 1.0),
        ("0.5", 0.5),
        ("I would rate it 0.7.", 0.7),
        ("Out of 0 to 1, this gets 1", 1.0),
    ],
)
def test_scores_are_read(answer: str, score: float) -> None:
    assert read_score(answer, 0, 1).value == score


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ("I cannot grade this.", "No score"),
        ('{"result": 7}', "outside [0, 1]"),
        ("Score: 3 out of 5", "outside [0, 1]"),
        ('{"result": true}', "No score"),
    ],
)
def test_answers_without_a_score_in_range(answer: str, says: str) -> None:
    verdict = read_score(answer, 0, 1)
    assert verdict.value is None and says in (verdict.problem or "")


def test_a_wider_range() -> None:
    assert read_score("Score: 7", 1, 10).value == 7.0
    assert read_score("-3", -5, 5).value == -3.0


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ('{"result": "incorrect"}', "incorrect"),
        ("Correct.", "correct"),
        ('"partially correct"', "partially correct"),
        ("The answer is incorrect because it names Lyon.", "incorrect"),
        ('{"label": "CORRECT"}', "correct"),
    ],
)
def test_labels_are_read(answer: str, label: str) -> None:
    assert read_label(answer, LABELS).value == label


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ("It is correct, or maybe partially correct.", "several labels"),
        ("No idea.", "none of the labels"),
        ('{"result": "wrong"}', "none of the labels"),
    ],
)
def test_answers_without_one_label(answer: str, says: str) -> None:
    verdict = read_label(answer, LABELS)
    assert verdict.value is None and says in (verdict.problem or "")


def test_the_prompt_is_the_rendered_input_with_the_format_asked_for() -> None:
    grader = parse_grader(
        {
            "type": "score_model",
            "name": "judge",
            "model": "m",
            "input": [
                {"role": "developer", "content": "You grade answers about {{item.topic}}."},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Reference: {{item.answer}}"},
                        {"type": "output_text", "text": "Answer: {{sample.output_text}}"},
                    ],
                },
            ],
            "range": [1, 5],
            "sampling_params": {"max_completions_tokens": 40, "temperature": 0.5},
        }
    )
    messages = prompt_messages(
        grader, Sample("Lyon"), {"topic": "capitals", "answer": "Paris"}, "grader"
    )
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith("You grade answers about capitals.\n\n")
    assert 'Answer with a JSON object {"result": SCORE} only' in messages[0]["content"]
    assert "from 1 to 5" in messages[0]["content"]
    assert messages[1] == {"role": "user", "content": "Reference: Paris\nAnswer: Lyon"}
    assert sampling(grader).max_tokens == 40 and sampling(grader).temperature == 0.5

    label = parse_grader(
        {
            "type": "label_model",
            "name": "l",
            "model": "m",
            "input": [{"role": "user", "content": "Polite? {{sample.output_text}}"}],
            "labels": ["yes", "no"],
            "passing_labels": ["yes"],
        }
    )
    messages = prompt_messages(label, Sample("Thanks!"), {}, "grader")
    assert messages[0] == {
        "role": "system",
        "content": 'Answer with a JSON object {"result": LABEL} only, LABEL being one of: '
        '"yes", "no".',
    }
    assert sampling(label).temperature == 0.0
