"""Validation of reinforcement data (OpenAI's format: a prompt in `messages`, and the fields the
grader reads): prompts checked like chat prompts, every line checked against the grader's
`{{item.…}}` references, each problem with its line and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.datasets.reinforcement import read_reinforcement_file
from tuneforge.graders.spec import parse_grader

GRADER = parse_grader(
    {
        "type": "multi",
        "name": "answer and unit",
        "graders": {
            "answer": {
                "type": "string_check",
                "name": "answer",
                "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}",
                "operation": "like",
            },
            "unit": {
                "type": "string_check",
                "name": "unit",
                "input": "{{sample.output_text}}",
                "reference": "{{item.meta.units[0]}}",
                "operation": "ilike",
            },
        },
        "calculate_output": "answer * unit",
    },
    "method.reinforcement.grader",
)


def write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def line(question: str, **fields: Any) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "developer", "content": "Answer briefly."},
            {"role": "user", "content": question},
        ],
        **fields,
    }


def test_valid_lines_keep_the_whole_line_as_the_item(tmp_path: Path) -> None:
    rows = [line(f"How far is {n} km?", answer=str(n), meta={"units": ["km"]}) for n in range(3)]
    data = read_reinforcement_file(
        write(tmp_path / "rft.jsonl", rows),
        "jsonl",
        min_rows=1,
        grader=GRADER,
        grader_param="method.reinforcement.grader",
    )
    assert data.valid, data.report["problems"]
    assert data.layout == "reinforcement"
    first = data.rows[0]
    # A developer message is read as a system message; the item is the line as given.
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert first["item"] == rows[0]
    assert data.report["statistics"]["rows"] == 3


def test_each_line_without_a_field_of_the_grader_is_named(tmp_path: Path) -> None:
    rows = [
        line("a?", answer="1", meta={"units": ["km"]}),
        line("b?", meta={"units": ["km"]}),  # no answer
        line("c?", answer="3", meta={"units": []}),  # no units[0]
        line("d?", answer="4", meta={"units": ["m"]}),
    ]
    data = read_reinforcement_file(
        write(tmp_path / "rft.jsonl", rows),
        "jsonl",
        min_rows=1,
        grader=GRADER,
        grader_param="method.reinforcement.grader",
    )
    assert not data.valid and data.rows == []
    problems = data.report["problems"]
    assert [(p["line"], p["column"], p["code"]) for p in problems] == [
        (2, "answer", "missing_reference"),
        (3, "meta.units[0]", "missing_reference"),
    ]
    assert "method.reinforcement.grader.graders.answer.reference" in problems[0]["message"]
    assert "has 0 entries" in problems[1]["message"]


def test_prompts_must_end_with_the_users_turn(tmp_path: Path) -> None:
    answered = line("a?", answer="1", meta={"units": ["km"]})
    answered["messages"].append({"role": "assistant", "content": "1 km"})
    rows = [
        answered,
        {"answer": "2", "meta": {"units": ["km"]}},  # no prompt
        line("", answer="3", meta={"units": ["km"]}),
    ]
    data = read_reinforcement_file(write(tmp_path / "rft.jsonl", rows), "jsonl", min_rows=1)
    codes = [(p["line"], p["code"]) for p in data.report["problems"]]
    assert codes == [(1, "role_order"), (2, "missing_messages"), (3, "empty_content")]
