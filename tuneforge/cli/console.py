"""What the commands print: the two consoles, errors in the API's shape, and tables."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Without a terminal (piped, captured), rich would wrap at 80 columns: keep ids and names on
# one line instead, for grep and copying, unless COLUMNS asks for a width.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 250
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)


def fail(message: str) -> NoReturn:
    """Print an error and end the command with exit code 1."""
    err_console.print(f"[bold red]Error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(1)


def print_api_error(error: dict[str, Any]) -> None:
    """An error in the API's shape (`message`, `param`, `code`, `details`), with every field
    error or dataset problem that its details carry."""
    details = error.get("details")
    code = f" [{error['code']}]" if error.get("code") else ""
    if isinstance(details, list) and details:
        err_console.print(
            f"[bold red]Error{escape(code)}:[/] {len(details)} invalid field(s):", soft_wrap=True
        )
        print_field_errors(details)
        return
    err_console.print(
        f"[bold red]Error{escape(code)}:[/] {escape(str(error.get('message')))}", soft_wrap=True
    )
    if error.get("param"):
        err_console.print(f"  param: {escape(error['param'])}", soft_wrap=True)
    if isinstance(details, dict) and details.get("problems"):
        print_problems(details["problems"], sum(details.get("problems_by_code", {}).values()))


def print_warnings(job: dict[str, Any]) -> None:
    """A job's warnings (what trains, but not as asked), one a line, before anything else."""
    for item in job.get("warnings") or []:
        err_console.print(
            f"[bold yellow]Warning \\[{escape(str(item.get('code')))}]:[/] "
            f"{escape(str(item.get('message')))}",
            soft_wrap=True,
        )


def print_field_errors(errors: list[dict[str, Any]]) -> None:
    """Field errors (`param`, `message`), one a line, the field by its dotted path."""
    for item in errors:
        err_console.print(
            f"  {escape(str(item.get('param') or 'body'))}: {escape(str(item.get('message')))}",
            soft_wrap=True,
        )


def print_problems(problems: list[dict[str, Any]], total: int | None = None) -> None:
    """Dataset problems, one a line: where (line, column), code and message."""
    for problem in problems:
        where = f"line {problem['line']}" if problem.get("line") is not None else "file"
        if problem.get("column"):
            where += f", column {problem['column']!r}"
        err_console.print(
            f"  {escape(where)}: {escape(problem['code'])}: {escape(problem['message'])}",
            soft_wrap=True,
        )
    if total and total > len(problems):
        err_console.print(f"  ... and {total - len(problems)} more problem(s).")


def when(timestamp: float | None) -> str:
    """A stored timestamp as local `YYYY-MM-DD HH:MM`; empty for none."""
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else ""


def table(*columns: str, title: str | None = None) -> Table:
    """A table with these columns; id columns never wrap."""
    result = Table(title=title, title_justify="left")
    for name in columns:
        # Ids stay whole on one line: they are copied into the next command.
        is_id = name == "id" or name.endswith("_id")
        result.add_column(name, no_wrap=is_id, overflow="fold")
    return result
