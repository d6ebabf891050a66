"""`tuneforge studies`: hyperparameter studies over fine-tuning jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuneforge.cli.client import ApiClient
from tuneforge.cli.console import console, table, when
from tuneforge.cli.options import DEFAULT_URL, Url, read_yaml

app = typer.Typer(
    help="Hyperparameter studies: create, list, show, cancel, promote.", no_args_is_help=True
)


@app.command("create")
def create_study(
    file: Annotated[
        Path,
        typer.Option(
            "-f", "--file", exists=True, dir_okay=False, help="YAML study spec (the request)."
        ),
    ],
    url: Url = DEFAULT_URL,
) -> None:
    """Start a study from a YAML spec (job, search_space, objective, n_trials, pruner)."""
    study = ApiClient(url).post("/v1/studies", json=read_yaml(file))
    console.print(study["id"], soft_wrap=True)
    console.print(
        f"{study['n_trials']} trials, {study['parallelism']} at a time; objective "
        f"{study['objective']['direction']} {study['objective']['metric']}."
    )


@app.command("list")
def list_studies(
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20, url: Url = DEFAULT_URL
) -> None:
    """List studies, newest first."""
    studies = ApiClient(url).get("/v1/studies", limit=limit)["data"]
    shown = table("id", "name", "status", "trials", "best", "created")
    for s in studies:
        done = sum(n for state, n in s["trial_counts"].items() if state != "running")
        best = s["best_trial"]
        shown.add_row(
            s["id"],
            escape(s["name"]),
            s["status"],
            f"{done}/{s['n_trials']}",
            f"{best['value']:.4g} (#{best['number']})" if best else "",
            when(s["created_at"]),
        )
    console.print(shown)


@app.command("show")
def show_study(
    study_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the study object.")] = False,
    url: Url = DEFAULT_URL,
) -> None:
    """A study's trials table, best trial, parameter importances and registered model."""
    study = ApiClient(url).get(f"/v1/studies/{study_id}")
    if as_json:
        console.print_json(data=study)
        return
    objective = study["objective"]
    console.print(
        f"[bold]{study['id']}[/] ({escape(study['name'])}): {study['status']}; "
        f"{objective['direction']} {objective['metric']}",
        soft_wrap=True,
    )
    names = list(study["search_space"])
    trials = table("#", "state", *names, "value", "last step", "job_id", title="Trials")
    for t in study["trials"]:
        trials.add_row(
            str(t["number"]),
            t["state"],
            *(escape(str(t["params"].get(n, ""))) for n in names),
            f"{t['value']:.4g}" if t["value"] is not None else "",
            str(t["last_step"] or ""),
            t["job_id"] or "",
        )
    console.print(trials)
    best = study["best_trial"]
    if best:
        params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        console.print(f"Best: trial {best['number']}, {best['value']:.4g} ({escape(params)})")
    if study["param_importances"]:
        importances = table("parameter", "importance", title="Parameter importances")
        for name, value in study["param_importances"].items():
            importances.add_row(escape(name), f"{value:.3f}")
        console.print(importances)
    elif study["param_importances_note"]:
        console.print(f"Parameter importances: {escape(study['param_importances_note'])}")
    registered = study["registered_model"]
    if registered:
        console.print(
            f"Registered: {escape(registered['name'])} version {registered['version']}"
            + (f" (alias {registered['alias']})" if registered.get("alias") else "")
        )


@app.command("cancel")
def cancel_study(study_id: str, url: Url = DEFAULT_URL) -> None:
    """Cancel a study and its unfinished trial jobs."""
    study = ApiClient(url).post(f"/v1/studies/{study_id}/cancel")
    console.print(f"{study['id']}: cancellation requested.", soft_wrap=True)


@app.command("promote")
def promote_study(
    study_id: str,
    alias: Annotated[str, typer.Option(help="Registry alias to move.")] = "production",
    url: Url = DEFAULT_URL,
) -> None:
    """Point a registry alias at the best trial's model version."""
    done = ApiClient(url).post(f"/v1/studies/{study_id}/promote", json={"alias": alias})
    console.print(f"{done['alias']} -> {escape(done['name'])} version {done['version']}")
