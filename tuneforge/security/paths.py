"""Every artefact path is resolved and must stay under the data folder."""

from __future__ import annotations

from pathlib import Path

from tuneforge.errors import NotFoundError


def inside(root: Path, *parts: str | Path) -> Path:
    """`root / parts`, resolved (links followed), or NotFoundError if that lands outside
    `root` or a part holds a NUL byte. Stored paths and names from requests go through here
    before anything is opened, so no `..`, absolute path or link can reach other files."""
    for part in parts:
        if "\0" in str(part):
            raise NotFoundError("No such file.", param="file")
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and not path.is_relative_to(base):
        raise NotFoundError("No such file.", param="file")
    return path
