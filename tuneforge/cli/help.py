"""How `--help` lists commands: each with the first sentence of its help, whole (wrapped to
the terminal by click), never cut off with "..." in the middle of a sentence."""

from __future__ import annotations

import re

from typer.core import TyperGroup

# The end of a sentence: a full stop (or ! or ?) followed by a space or the end.
SENTENCE_END = re.compile(r"(?<=[.!?])(\s|$)")


def first_sentence(text: str | None) -> str:
    """The first sentence of a help text's first paragraph, its line breaks undone."""
    paragraph = (text or "").strip().split("\n\n")[0].split("\f")[0]
    joined = " ".join(paragraph.split())
    end = SENTENCE_END.search(joined)
    return joined[: end.start()] if end else joined


class HelpGroup(TyperGroup):
    """A command group whose `--help` lists each command with its whole first sentence."""

    def format_commands(self, ctx, formatter) -> None:  # type: ignore[no-untyped-def]
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            rows.append((name, command.short_help or first_sentence(command.help)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
