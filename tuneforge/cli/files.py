"""`tuneforge files`: upload, list, show and delete training files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuneforge.cli.client import ApiClient
from tuneforge.cli.console import console, err_console, print_problems, table, when
from tuneforge.cli.options import DEFAULT_URL, Url

app = typer.Typer(help="Upload, list and delete training files.", no_args_is_help=True)


@app.command("upload")
def upload_file(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="JSONL, CSV or Parquet file."
        ),
    ],
    purpose: Annotated[str, typer.Option(help="What the file is for.")] = "fine-tune",
    url: Url = DEFAULT_URL,
) -> None:
    """Upload a training file; it is validated at once. Exits 1 if it has problems."""
    api = ApiClient(url)
    with path.open("rb") as f:
        uploaded = api.request(
            "POST",
            "/v1/files",
            files={"file": (path.name, f)},
            data={"purpose": purpose},
            timeout=None,
        )
    console.print(uploaded["id"], soft_wrap=True)
    dataset = api.get(f"/v1/datasets/{uploaded['id']}")
    if uploaded["status"] != "error":
        console.print(
            f"status: [green]{uploaded['status']}[/] ({dataset['format']}, "
            f"{dataset['layout']}, {dataset['statistics']['rows']} rows)"
        )
        return
    console.print(
        f"status: [red]{uploaded['status']}[/] ({escape(uploaded['status_details'] or '')})",
        soft_wrap=True,
    )
    err_console.print(
        f"[bold red]{escape(path.name)} is not valid training data:[/]", soft_wrap=True
    )
    print_problems(dataset["problems"], dataset["problem_count"])
    raise typer.Exit(1)


@app.command("list")
def list_files(url: Url = DEFAULT_URL) -> None:
    """List uploaded files, newest first."""
    files = ApiClient(url).get("/v1/files")["data"]
    shown = table("id", "filename", "bytes", "format", "status", "created")
    for f in files:
        shown.add_row(
            f["id"],
            escape(f["filename"]),
            str(f["bytes"]),
            f["format"],
            f["status"],
            when(f["created_at"]),
        )
    console.print(shown)


@app.command("get")
def get_file(file_id: str, url: Url = DEFAULT_URL) -> None:
    """Show a file object as JSON."""
    console.print_json(data=ApiClient(url).get(f"/v1/files/{file_id}"))


@app.command("delete")
def delete_file(file_id: str, url: Url = DEFAULT_URL) -> None:
    """Delete a file (refused while an unfinished job uses it)."""
    ApiClient(url).delete(f"/v1/files/{file_id}")
    console.print(f"Deleted {file_id}.", soft_wrap=True)
