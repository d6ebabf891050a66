"""Problems found in a data file, and the bounded log a validation collects them in.

A file of ten million bad lines has ten million problems; the report lists the first
`MAX_REPORTED_PROBLEMS` (by line, then column) and counts all of them by code, so the log
keeps only what the report shows: memory does not grow with the file.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

MAX_REPORTED_PROBLEMS = 100

# Values from a file are shown in messages through this: a few levels, a few items, a few
# dozen characters. A cell nested 900 deep or a 10 MB string makes a short message.
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel = 3
_SHOWN.maxstring = 80
_SHOWN.maxother = 80
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 6


def shown(value: Any) -> str:
    """A short repr of a value read from a file, for a problem's message."""
    try:
        return _SHOWN.repr(value)
    except (RecursionError, ValueError):  # a huge int, a structure deeper than repr goes
        return f"<{type(value).__name__}>"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data file: where, what (a stable code) and why, in words."""

    code: str
    message: str
    line: int | None = None
    column: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "column": self.column,
            "code": self.code,
            "message": self.message,
        }


def _order(entry: tuple[int, Problem]) -> tuple[int, str, int]:
    seq, problem = entry
    return (problem.line or 0, problem.column or "", seq)


class ProblemLog:
    """Every problem counted by code; the first `keep` of them (by line, then column, then the
    order they came in) kept for the report. Behaves like the list it replaces where the
    checks use one: `append`, `extend`, `len` (all problems, kept or not), truthiness.

    `explain` rewrites each problem as it comes in (a kind's wording of a reader's problem)."""

    def __init__(
        self,
        keep: int = MAX_REPORTED_PROBLEMS,
        explain: Callable[[Problem], Problem] | None = None,
    ):
        self.keep = keep
        self.explain = explain
        self.by_code: dict[str, int] = {}
        self._count = 0
        self._kept: list[tuple[int, Problem]] = []

    def append(self, problem: Problem) -> None:
        if self.explain is not None:
            problem = self.explain(problem)
        self.by_code[problem.code] = self.by_code.get(problem.code, 0) + 1
        self._kept.append((self._count, problem))
        self._count += 1
        # Sorting in bulk keeps appends cheap; twice `keep` bounds what is held.
        if len(self._kept) >= 2 * self.keep + 16:
            self._kept = sorted(self._kept, key=_order)[: self.keep]

    def extend(self, problems: Iterable[Problem]) -> None:
        for problem in problems:
            self.append(problem)

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[Problem]:
        """The kept problems, in report order."""
        return iter(self.first())

    def first(self) -> list[Problem]:
        return [p for _, p in sorted(self._kept, key=_order)[: self.keep]]

    def report_fields(self) -> dict[str, Any]:
        """`problem_count`, `problems_by_code` and `problems` of a validation report."""
        return {
            "problem_count": self._count,
            "problems_by_code": dict(self.by_code),
            "problems": [p.to_dict() for p in self.first()],
        }


@dataclass
class Checks:
    """Where the problems of a file go, the line being checked, and the tokens no text may hold."""

    problems: ProblemLog
    special: re.Pattern[str]
    line: int = 0

    def add(self, code: str, message: str, column: str | None = None) -> None:
        self.problems.append(Problem(code, message, line=self.line, column=column))


def type_name(value: Any) -> str:
    """A JSON value's type, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)
