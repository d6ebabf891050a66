"""OpenAI's `integrations`: a job with `{"type": "wandb", ...}` logs its metrics to Weights &
Biases. wandb is optional (`pip install 'tuneforge[wandb]'`); it needs an API key
(`WANDB_API_KEY`, or `wandb login` on the server) or its offline mode (`WANDB_MODE=offline`,
which writes the run under `wandb/` for a later `wandb sync` and needs no network)."""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from tuneforge.errors import InvalidRequestError
from tuneforge.training.spec import JobCreate, WandbSettings

OFFLINE_MODES = ("offline", "dryrun", "disabled")


def wandb_unavailable() -> str | None:
    """Why this server cannot log to Weights & Biases, or None when it can."""
    if find_spec("wandb") is None:
        return "the wandb package is not installed on the server (pip install 'tuneforge[wandb]')"
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in OFFLINE_MODES or os.environ.get("WANDB_API_KEY"):
        return None
    netrc = Path.home() / ".netrc"  # where `wandb login` keeps the key
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(encoding="utf-8", errors="replace"):
        return None
    return (
        "the server has no Weights & Biases key: set WANDB_API_KEY (or run `wandb login`), "
        "or WANDB_MODE=offline to write runs locally"
    )


def check_integrations(request: JobCreate) -> None:
    """InvalidRequestError (400) when the request asks for an integration this server cannot
    serve, saying what is missing; nothing is queued then."""
    if not request.integrations:
        return
    reason = wandb_unavailable()
    if reason is not None:
        raise InvalidRequestError(
            f"The wandb integration cannot be used: {reason}.", param="integrations"
        )


class WandbRun:
    """One job's Weights & Biases run; a resumed job continues the same run (its id is the
    job's)."""

    def __init__(self, job_id: str, wandb: WandbSettings, config: dict[str, Any]):
        import wandb as wandb_client

        self._run = wandb_client.init(
            project=wandb.project,
            entity=wandb.entity,
            name=wandb.name or job_id,
            tags=wandb.tags,
            id=job_id,
            resume="allow",
            config=config,
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        self._run.log(values, step=step)


def job_runs(job_id: str, spec: dict[str, Any]) -> list[WandbRun]:
    """The runs a job's metrics go to (none without integrations)."""
    request = JobCreate.model_validate(spec)
    return [
        WandbRun(job_id, integration.wandb, spec["method"])
        for integration in request.integrations or []
    ]
