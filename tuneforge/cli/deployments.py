"""`tuneforge deployments`: registered versions taken to an Ollama server, a Hugging Face Hub
repository or tuneforge's own endpoints, health-checked before they count as live, and rolled
back."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape

from tuneforge.cli.client import ApiClient
from tuneforge.cli.console import console, fail, table, when
from tuneforge.cli.options import DEFAULT_URL, Url
from tuneforge.jobs.status import TERMINAL, JobStatus

app = typer.Typer(
    help="Deployments: create (to Ollama, a Hub repository or an alias here), list, show, "
    "rollback.",
    no_args_is_help=True,
)


@app.command("create")
def create_deployment(
    model: Annotated[str, typer.Argument(help="The version: name@v2, name@alias or ft:….")],
    ollama: Annotated[
        str | None, typer.Option(help="An Ollama server's URL, e.g. http://localhost:11434.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="ollama: the model's name there.")] = None,
    quantization: Annotated[str, typer.Option(help="ollama: the GGUF type.")] = "q4_k_m",
    alias: Annotated[
        str | None, typer.Option(help="Deploy here instead: the alias to move (e.g. production).")
    ] = None,
    hub: Annotated[
        str | None,
        typer.Option(help="A Hub repository, org/name (token: the server's HF_TOKEN)."),
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="hub: another hub's URL (default: the server's HF_ENDPOINT).")
    ] = None,
    public: Annotated[
        bool, typer.Option("--public", help="hub: create the repository public (default private).")
    ] = False,
    no_rollback: Annotated[
        bool, typer.Option("--no-rollback", help="Keep the new model when its check fails.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Wait for the deployment to finish.")] = True,
    url: Url = DEFAULT_URL,
) -> None:
    """Deploy a registered version (POST /v1/deployments) and wait for its health check."""
    if sum(x is not None for x in (ollama, hub, alias)) != 1:
        fail("Name one target: --ollama URL, --hub ORG/NAME, or --alias ALIAS for this "
             "server's endpoints.")
    target: dict[str, Any]
    if ollama is not None:
        target = {"type": "ollama", "url": ollama, "quantization": quantization}
    elif hub is not None:
        target = {"type": "huggingface", "repo_id": hub, "private": not public}
        if endpoint is not None:
            target["endpoint"] = endpoint
    else:
        target = {"type": "local", "alias": alias}
    if name is not None:
        target["name"] = name
    api = ApiClient(url)
    body = {"model": model, "target": target, "rollback_on_failure": not no_rollback}
    _follow(api, api.post("/v1/deployments", json=body), wait)


@app.command("rollback")
def rollback(
    deployment_id: Annotated[str, typer.Argument(help="A deployment to the target to roll back.")],
    wait: Annotated[bool, typer.Option(help="Wait for the rollback to finish.")] = True,
    url: Url = DEFAULT_URL,
) -> None:
    """Deploy again the version that was live on the target before the live one."""
    api = ApiClient(url)
    _follow(api, api.post(f"/v1/deployments/{deployment_id}/rollback"), wait)


@app.command("list")
def list_deployments(
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20, url: Url = DEFAULT_URL
) -> None:
    """List deployments, newest first."""
    shown = table("id", "version", "target", "status", "check", "created")
    for d in ApiClient(url).get("/v1/deployments", limit=limit)["data"]:
        check = d["health_check"]
        shown.add_row(
            d["id"],
            escape(f"{d['name']}@v{d['version']}"),
            escape(d["target_key"]),
            d["status"] + (" (rollback)" if d["rollback_of"] else ""),
            "" if check is None else ("passed" if check["passed"] else "failed"),
            when(d["created_at"]),
        )
    console.print(shown)


@app.command("show")
def show_deployment(deployment_id: str, url: Url = DEFAULT_URL) -> None:
    """One deployment: its target, health check and outcome."""
    _print(ApiClient(url).get(f"/v1/deployments/{deployment_id}"))


def _follow(api: ApiClient, deployment: dict[str, Any], wait: bool) -> None:
    console.print(f"Deployment {deployment['id']} {deployment['status']}.", soft_wrap=True)
    if not wait:
        return
    while deployment["status"] not in TERMINAL:
        time.sleep(1)
        deployment = api.get(f"/v1/deployments/{deployment['id']}")
    _print(deployment)
    if deployment["status"] != JobStatus.SUCCEEDED:
        raise typer.Exit(1)


def _print(d: dict[str, Any]) -> None:
    console.print(
        escape(f"{d['id']}: {d['name']}@v{d['version']} to {d['target_key']}: {d['status']}"),
        soft_wrap=True,
    )
    check = d["health_check"]
    if check:
        console.print(escape(
            f"Health check: {'passed' if check['passed'] else 'failed'}"
            + (f", agreement {check['agreement']:.0%}" if "agreement" in check else "")
            + (f" ({check['summary']})" if "summary" in check else "")
        ))
    if d["error"]:
        console.print(escape(f"Error ({d['error']['code']}): {d['error']['message']}"),
                      soft_wrap=True)
