"""The answer of `/health`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public


class HealthPublic(Public):
    status: Literal["ok"] = "ok"
    version: str
    worker: str | None = Field(..., description="This server's own worker, when it runs one.")
    jobs: dict[str, int] = Field(..., description="Jobs by status.")
