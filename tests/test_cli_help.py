"""`tuneforge --help` as a user's shell runs it: quick to start (it loads the command line
only: no pydantic, settings, database, HTTP client or training library), and every command's
help wrapped by paragraph, never broken where a docstring's lines happened to end, never
cut off with "..." in the middle of a sentence."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
import typer
from typer._click.core import Context  # typer's own copy of click
from typer.core import TyperGroup

# Modules `--help` must not load: each costs tenths of a second (torch whole seconds).
HEAVY = ("torch", "transformers", "fastapi", "starlette", "uvicorn", "pydantic",
         "pydantic_settings", "sqlalchemy", "httpx", "numpy", "yaml", "markdown_it")
WIDTH = 80


def test_help_loads_only_the_command_line() -> None:
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.argv = ['tuneforge', '--help']\n"
         "from tuneforge.cli import app\n"
         "try:\n    app()\nexcept SystemExit:\n    pass\n"
         f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"],
        capture_output=True, text=True, check=True, env=dict(os.environ, COLUMNS=str(WIDTH)))
    assert probe.stdout.strip().splitlines()[-1] == "[]", probe.stdout
    assert "Commands:" in probe.stdout and "jobs" in probe.stdout


def commands(group: TyperGroup, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's and group's path, the top one first."""
    found = [path]
    ctx = Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, TyperGroup):
            found += commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def description(text: str) -> list[list[str]]:
    """The paragraphs of a help page's description (between the usage line and the first
    section), each as its lines."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Usage:")) + 1
    paragraphs: list[list[str]] = []
    current: list[str] = []
    for line in lines[start:]:
        if line.endswith(":") and not line.startswith(" "):
            break  # "Options:", "Arguments:", "Commands:"
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(current)
            current = []
    return paragraphs + ([current] if current else [])


def test_help_wraps_by_paragraph_and_lists_whole_sentences() -> None:
    from tuneforge.cli import app
    from tuneforge.cli.help import first_sentence

    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    checked = 0
    for path in commands(root):
        # The help page as `tuneforge <path> --help` prints it in an 80-column terminal.
        command = root
        ctx = Context(root, info_name="tuneforge", terminal_width=WIDTH)
        for name in path:
            command = command.get_command(ctx, name)  # type: ignore[union-attr]
            ctx = Context(command, info_name=name, parent=ctx)
        output = command.get_help(ctx)
        source = inspect.cleandoc(command.help or "").split("\f")[0]
        paragraphs = [" ".join(p.split()) for p in source.split("\n\n") if p.strip()]
        shown_paragraphs = description(output)
        # Each docstring paragraph is one wrapped paragraph, in order ...
        assert [" ".join(p) for p in shown_paragraphs] == paragraphs, path
        # ... filled line by line: a line ends early only where the next word did not fit.
        for lines in shown_paragraphs:
            for line, following in zip(lines, lines[1:], strict=False):
                room = WIDTH - 2 - 2  # click's width less its margin, less the indent
                assert len(line) + 1 + len(following.split()[0]) > room, (path, line)
        # A group lists each command with its whole first sentence.
        if isinstance(command, TyperGroup):
            listed = " ".join(output.split("Commands:", 1)[1].split())
            for name in command.list_commands(Context(command)):
                sub = command.get_command(Context(command), name)
                assert sub is not None
                assert f"{name} {first_sentence(sub.help)}" in listed, (path, name)
        checked += 1
    assert checked > 40


@pytest.mark.parametrize("text, first", [
    ("Run it.\nThen stop.", "Run it."),
    ("List a job's checkpoints, oldest\nfirst: with metrics.\n\nMore.", 
     "List a job's checkpoints, oldest first: with metrics."),
    ("No full stop at all", "No full stop at all"),
])
def test_first_sentence(text: str, first: str) -> None:
    from tuneforge.cli.help import first_sentence

    assert first_sentence(text) == first
