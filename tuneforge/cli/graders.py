"""`tuneforge graders`: OpenAI's grader endpoints from the shell (POST
/v1/fine_tuning/alpha/graders/run and /validate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tuneforge.cli.client import ApiClient
from tuneforge.cli.console import console, fail, table
from tuneforge.cli.options import DEFAULT_URL, Url

app = typer.Typer(help="Run and validate graders (OpenAI's grader objects).", no_args_is_help=True)

GraderFile = Annotated[Path, typer.Argument(help="A grader object, as JSON or YAML.")]


def _grader(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except (OSError, yaml.YAMLError) as exc:
        fail(f"Cannot read {path}: {exc}")


@app.command("validate")
def validate(grader: GraderFile, url: Url = DEFAULT_URL) -> None:
    """Check a grader without running it: fields, templates, formula, judge models."""
    answer = ApiClient(url).post(
        "/v1/fine_tuning/alpha/graders/validate", json={"grader": _grader(grader)}
    )
    console.print(f"{escape(answer['grader']['name'])}: valid {answer['grader']['type']} grader")


@app.command("run")
def run(
    grader: GraderFile,
    sample: Annotated[str, typer.Option("--sample", "-s", help="The model's answer graded.")],
    item: Annotated[str, typer.Option("--item", "-i", help="The data line, a JSON object.")] = "{}",
    as_json: Annotated[bool, typer.Option("--json", help="Print the response as JSON.")] = False,
    url: Url = DEFAULT_URL,
) -> None:
    """Grade one answer: the reward, sub-rewards, and the errors that occurred."""
    try:
        data = json.loads(item)
    except ValueError as exc:
        fail(f"--item is no JSON: {exc}")
    answer = ApiClient(url).post(
        "/v1/fine_tuning/alpha/graders/run",
        json={"grader": _grader(grader), "model_sample": sample, "item": data},
    )
    if as_json:
        console.print_json(data=answer)
        return
    metadata = answer["metadata"]
    console.print(f"reward {answer['reward']:.4f} ({escape(metadata['name'])}, {metadata['type']})")
    if answer["sub_rewards"]:
        rewards = table("grader", "reward")
        for key, value in answer["sub_rewards"].items():
            rewards.add_row(escape(key), f"{value:.4f}")
        console.print(rewards)
    for name, value in metadata["errors"].items():
        if value is True:
            detail = metadata["errors"].get(f"{name}_details") or ""
            console.print(f"[red]{name}[/] {escape(detail)}")
