"""The multi grader's formula: arithmetic and functions, read without eval."""

from __future__ import annotations

import math

import pytest

from tuneforge.graders.formula import FormulaError, parse

VALUES = {"name": 1.0, "args": 0.5, "zero": 0.0}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.5 * name + 0.5 * args", 0.75),
        ("name + args * 2", 2.0),
        ("(name + args) * 2", 3.0),
        ("2 ^ 3 ^ 2", 512.0),  # right first
        ("2 ** 3", 8.0),
        ("-2 ^ 2", -4.0),
        ("-args", -0.5),
        ("min(name, args) + max(name, args, 3)", 3.5),
        ("abs(zero - name) + floor(2.7) + ceil(0.2)", 4.0),
        ("exp(zero) + sqrt(16) + log(1) + log(8, 2)", 8.0),
        (" 1e-1 + .5 ", 0.6),
        ("name / 4", 0.25),
    ],
)
def test_values(text: str, value: float) -> None:
    assert math.isclose(parse(text, VALUES).evaluate(VALUES), value)


def test_names_used_are_known() -> None:
    assert parse("name * 2 + args", VALUES).names == {"name", "args"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name +", "ends too early"),
        ("other * 2", "'other' is no grader of this multi grader; graders: args, name, zero"),
        ("min", "a function needs parentheses"),
        ("__import__(1)", "__import__() is no function of formulas"),
        ("__import__('os')", "Cannot read"),
        ("name.real", "Cannot read"),
        ("min()", "min() takes 1 or more arguments, not 0"),
        ("abs(1, 2)", "abs() takes 1 argument, not 2"),
        ("log(1, 2, 3)", "log() takes 1 to 2 arguments"),
        ("name args", "Unexpected 'args'"),
        ("", "empty"),
        ("(" * 60 + "1" + ")" * 60, "deeper than 50"),
        ("2" + "^2" * 300, "deeper than 50"),
        ("1" * 1001, "longer than 1000"),
    ],
)
def test_formulas_that_do_not_parse(text: str, says: str) -> None:
    with pytest.raises(FormulaError, match=re_escape(says)):
        parse(text, VALUES)


@pytest.mark.parametrize("text", ["name / zero", "sqrt(-1)", "exp(1000)", "(-8) ^ 0.5", "log(0)"])
def test_formulas_without_a_value(text: str) -> None:
    formula = parse(text, VALUES)
    with pytest.raises(FormulaError, match="has no value here"):
        formula.evaluate(VALUES)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)
