"""Options and input files that several commands share: the server's URL, the embedding
loss, comma-separated lists and YAML specs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from tuneforge.cli.console import fail
from tuneforge.defaults import DEFAULT_HOST, DEFAULT_PORT, LOSSES

DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
Url = Annotated[
    str, typer.Option("--url", envvar="TUNEFORGE_URL", help="Base URL of the tuneforge server.")
]
# The loss names come from the job spec, so that typer offers and checks the same choices.
Loss = Literal[LOSSES]  # type: ignore[valid-type]


def split_list(value: str | None) -> list[str] | None:
    """`a, b,c` as `["a", "b", "c"]`; None when nothing is given."""
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    return items or None


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping a YAML spec holds (empty for an empty file); anything else ends the
    command with exit code 1."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        fail(f"Cannot read {path}: {exc}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        fail(f"{path} must hold a mapping (the job spec), not {type(data).__name__}.")
    return data
