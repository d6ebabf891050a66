"""`tuneforge feedback`: ratings of a model's answers, exported into datasets and retraining
on them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tuneforge.cli.client import ApiClient
from tuneforge.cli.console import console, fail, table, when
from tuneforge.cli.options import DEFAULT_URL, Url

app = typer.Typer(
    help="Ratings of a model's answers, exported into datasets.", no_args_is_help=True
)


@app.command("add")
def add_feedback_command(
    model: Annotated[str, typer.Option(help="The model that answered (id or NAME@alias).")],
    prompt: Annotated[str, typer.Option(help="The user's prompt.")],
    output: Annotated[str, typer.Option(help="The model's answer.")],
    rating: Annotated[str, typer.Option(help="up, down or edited.")],
    corrected: Annotated[str | None, typer.Option(help="edited: the corrected answer.")] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Record a rating of a model's answer."""
    body = {"model": model, "prompt": prompt, "output": output, "rating": rating}
    if corrected is not None:
        body["corrected_output"] = corrected
    row = ApiClient(url).post("/v1/feedback", json=body)
    console.print(f"[bold]{row['id']}[/] ({row['rating']}, {row['model']})")


@app.command("list")
def list_feedback_command(
    model: str | None = None,
    registered_model: str | None = None,
    rating: str | None = None,
    limit: int = 100,
    url: Url = DEFAULT_URL,
) -> None:
    """Feedback, newest first."""
    rows = ApiClient(url).get(
        "/v1/feedback", model=model, registered_model=registered_model, rating=rating, limit=limit
    )["data"]
    shown = table("id", "created", "model", "rating", "prompt", "answer")
    for r in rows:
        answer = r["corrected_output"] or r["output"]
        shown.add_row(
            r["id"], when(r["created_at"]), escape(r["model"]), r["rating"],
            escape(r["messages"][-1]["content"][:60]), escape(answer[:60]),
        )  # fmt: skip
    console.print(shown)


@app.command("export")
def export_feedback_command(
    kind: Annotated[str, typer.Option(help="supervised or dpo.")] = "supervised",
    model: str | None = None,
    registered_model: str | None = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Turn feedback into a dataset (SFT examples or DPO preference pairs)."""
    body = {"kind": kind, "model": model, "registered_model": registered_model}
    done = ApiClient(url).post("/v1/feedback/export", json=body)
    sources = ", ".join(f"{k} {v}" for k, v in done["by_source"].items())
    console.print(f"[bold]{done['dataset']['id']}[/]: {done['rows']} {kind} rows ({sources})")


@app.command("retrain")
def retrain_command(
    registered_model: str,
    kind: Annotated[
        str | None, typer.Option(help="supervised (the default) or dpo.", show_default=False)
    ] = None,
    alias: Annotated[
        str | None,
        typer.Option(help="The version to start from and promote [default: production]."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML or JSON: more of the request (method, min_delta, seed, since, …); "
            "the options above win."
        ),
    ] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Export a registered model's feedback and fine-tune its production version on it."""
    import yaml

    body: dict[str, Any] = {}
    if config is not None:
        try:
            body = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            fail(f"Cannot read {config}: {error}")
        if not isinstance(body, dict):
            fail(f"{config} must hold a mapping of the request's fields.")
    given = {"registered_model": registered_model, "kind": kind, "alias": alias}
    body.update({k: v for k, v in given.items() if v is not None})
    done = ApiClient(url).post("/v1/feedback/retrain", json=body)
    console.print(
        f"Job [bold]{done['job']['id']}[/] queued on {done['export']['dataset']['id']} "
        f"({done['export']['rows']} rows); follow it with `tuneforge jobs watch`."
    )
