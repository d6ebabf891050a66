"""The browser dashboard's files: plain HTML, CSS and JavaScript modules in `static/`,
served by `tuneforge.api.routes.dashboard`."""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"
SERVED_SUFFIXES = (".html", ".js", ".css", ".svg")


def asset(name: str) -> Path | None:
    """The static file called `name`, or None: only files directly in `static/`, by their
    plain name, so no request reaches anything else."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    path = STATIC / name
    return path if path.suffix in SERVED_SUFFIXES and path.is_file() else None
