"""`tuneforge synthetic`: synthetic training data generated from template prompts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from tuneforge.cli.client import ApiClient
from tuneforge.cli.console import console, fail
from tuneforge.cli.options import DEFAULT_URL, Url
from tuneforge.jobs.status import TERMINAL, JobStatus

app = typer.Typer(help="Synthetic training data from template prompts.", no_args_is_help=True)


@app.command("create")
def create_synthetic_command(
    config: Annotated[Path, typer.Argument(help="YAML or JSON: the request body.")],
    wait: Annotated[bool, typer.Option(help="Wait until the dataset is made.")] = True,
    url: Url = DEFAULT_URL,
) -> None:
    """Generate synthetic data from template prompts (seed 004's request, as a file)."""
    import yaml

    body = yaml.safe_load(config.read_text(encoding="utf-8"))
    api = ApiClient(url)
    job = api.post("/v1/synthetic-data", json=body)
    console.print(f"[bold]{job['id']}[/] {job['status']}")
    while wait and job["status"] not in TERMINAL:
        time.sleep(1)
        job = api.get(f"/v1/synthetic-data/{job['id']}")
    if job["status"] == JobStatus.FAILED:
        fail(f"{job['error']['code']}: {job['error']['message']}")
    if job["status"] == JobStatus.SUCCEEDED:
        result = job["result"]
        console.print(
            f"Dataset [bold]{result['dataset_id']}[/]: {result['kept']} of "
            f"{result['generated']} answers kept (removed: {result['removed'] or 'none'})."
        )
